import torch
import pytest


def random_pairs(n: int, relation: str, *, dtype=torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random xyxy pairs in one geometric relation: overlap, disjoint, nested, enclosing, near."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 50
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 20 + 1
    target = torch.cat([xy, xy + wh], -1)
    if relation == "overlap":
        shift = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * wh
        scale = torch.rand(n, 2, generator=g, dtype=dtype) * 1.0 + 0.5
        pxy = xy + shift
        pred = torch.cat([pxy, pxy + wh * scale], -1)
    elif relation == "disjoint":
        pxy = xy + wh + torch.rand(n, 2, generator=g, dtype=dtype) * 10 + 0.5
        pred = torch.cat([pxy, pxy + wh * (torch.rand(n, 2, generator=g, dtype=dtype) + 0.5)], -1)
    elif relation == "nested":  # pred strictly inside target
        lo = torch.rand(n, 2, generator=g, dtype=dtype) * 0.3
        hi = 1 - torch.rand(n, 2, generator=g, dtype=dtype) * 0.3
        pred = torch.cat([xy + lo * wh, xy + hi * wh], -1)
    elif relation == "enclosing":  # pred strictly contains target
        pad = torch.rand(n, 4, generator=g, dtype=dtype) * 5 + 0.1
        pred = target + pad * torch.tensor([-1, -1, 1, 1], dtype=dtype)
    elif relation == "near":  # near-identical
        pred = target + (torch.rand(n, 4, generator=g, dtype=dtype) - 0.5) * 1e-3
    else:
        raise ValueError(relation)
    return pred, target


RELATIONS = ["overlap", "disjoint", "nested", "enclosing", "near"]


@pytest.fixture(params=RELATIONS)
def relation(request):
    return request.param
