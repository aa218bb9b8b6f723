"""Every registered loss, new ones included, passes the same contract (timm-style registry test)."""

import pytest
import torch

import losses
from tests.conftest import RELATIONS, random_pairs

NAMES = losses.available()


def degenerate_cases(dtype=torch.float32):
    """Where users get hurt (REFERENCES 3): (name, pred, target)."""
    t = lambda *rows: torch.tensor(rows, dtype=dtype)
    unit = [10.0, 10.0, 20.0, 30.0]
    return {
        "zero-width pred": (t([5.0, 5.0, 5.0, 9.0]), t(unit)),
        "zero-height pred": (t([12.0, 15.0, 18.0, 15.0]), t(unit)),
        "zero-width both, same x": (t([5.0, 5.0, 5.0, 9.0]), t([5.0, 6.0, 5.0, 12.0])),
        "point pred": (t([15.0, 15.0, 15.0, 15.0]), t(unit)),
        "point vs same point": (t([3.0, 3.0, 3.0, 3.0]), t([3.0, 3.0, 3.0, 3.0])),
        "point vs other point": (t([3.0, 3.0, 3.0, 3.0]), t([4.0, 5.0, 4.0, 5.0])),
        "identical": (t(unit), t(unit)),
        "disjoint": (t([100.0, 100.0, 120.0, 110.0]), t(unit)),
        "huge coordinates": (t([1e5, 1e5, 1.5e5, 1.2e5]), t([1.1e5, 0.9e5, 1.6e5, 1.3e5])),
        "huge identical": (t([1e5, 1e5, 1.5e5, 1.2e5]), t([1e5, 1e5, 1.5e5, 1.2e5])),
        "tiny coordinates": (t([1e-4, 2e-4, 3e-4, 5e-4]), t([1.5e-4, 1e-4, 4e-4, 4e-4])),
        "tiny identical": (t([1e-4, 2e-4, 3e-4, 5e-4]), t([1e-4, 2e-4, 3e-4, 5e-4])),
    }


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_batch_dims(name):
    pred, target = random_pairs(6, "overlap", dtype=torch.float32)
    value = losses.get_loss(name)(pred.view(2, 3, 4), target.view(2, 3, 4))
    assert value.shape == (2, 3) and value.dtype == torch.float32
    flat = losses.get_loss(name)(pred, target)
    torch.testing.assert_close(value.reshape(-1), flat)


@pytest.mark.parametrize("name", NAMES)
def test_nonnegative_and_minimal_at_identical_boxes(name):
    for relation in RELATIONS:
        pred, target = random_pairs(128, relation, seed=7)
        loss = losses.get_loss(name)
        value = loss(pred, target)
        at_target = loss(target, target)
        assert (value >= -1e-6).all(), f"{name} negative on {relation}"
        assert (at_target <= value + 1e-6).all(), f"{name}: identical boxes are not the minimum ({relation})"
        assert (at_target.abs() < 1e-5).all(), f"{name}: identical boxes give {at_target.abs().max()}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(degenerate_cases()))
def test_finite_value_and_gradient_on_degenerate_boxes(name, case):
    pred, target = degenerate_cases()[case]
    pred = pred.clone().requires_grad_(True)
    target = target.clone().requires_grad_(True)
    value = losses.get_loss(name)(pred, target)
    value.sum().backward()
    assert torch.isfinite(value).all(), f"{name} on {case}: value {value}"
    assert torch.isfinite(pred.grad).all(), f"{name} on {case}: grad {pred.grad}"
    assert torch.isfinite(target.grad).all(), f"{name} on {case}: target grad {target.grad}"


@pytest.mark.parametrize("name", NAMES)
def test_empty_input_backpropagates(name):
    pred = torch.zeros(0, 4, requires_grad=True)
    value = losses.get_loss(name)(pred, torch.zeros(0, 4))
    assert value.shape == (0,)
    value.sum().backward()
    assert pred.grad is not None and pred.grad.shape == (0, 4)


@pytest.mark.parametrize("name", NAMES)
def test_half_inputs_and_autocast_compute_in_float32(name):
    pred, target = random_pairs(32, "overlap", dtype=torch.float32, seed=2)
    reference = losses.get_loss(name)(pred, target)
    for dtype in (torch.float16, torch.bfloat16):
        value = losses.get_loss(name)(pred.to(dtype), target.to(dtype))
        assert value.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.get_loss(name)(pred, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference)


@pytest.mark.parametrize("name", [n for n in NAMES if not losses.spec(n).detaches])
def test_gradcheck_float64(name):
    for relation in ("overlap", "disjoint", "nested"):
        pred, target = random_pairs(8, relation, seed=5)
        loss = losses.get_loss(name)
        assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred.requires_grad_(True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_similarity_is_detached_and_shaped(name):
    pred, target = random_pairs(16, "overlap", dtype=torch.float32, seed=6)
    pred.requires_grad_(True)
    s = losses.get_loss(name).similarity(pred, target)
    assert s.shape == (16,) and not s.requires_grad and torch.isfinite(s).all()
    assert (s <= 1 + 1e-6).all()


def test_registry_has_docs_and_refuses_duplicates():
    assert len(NAMES) >= 15, NAMES
    for name in NAMES:
        spec = losses.spec(name)
        assert spec.fn.__doc__ and spec.paper and spec.reference and spec.formula
    with pytest.raises(ValueError, match="already registered"):
        losses.register("iou", formula="x", paper="x", reference="x")(lambda p, t, *, eps=1e-7: p)
