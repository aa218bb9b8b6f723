"""The loss contract: the properties every built-in loss passes, runnable on any loss.

``scabench check-loss NAME`` prints it; the test suite asserts the same cases on every
registered loss. Properties that training needs (right shape, finite values and gradients)
are *required*: a failure there exits 1. Invariances and symmetry are reported, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scabench import losses
from scabench.losses import BoxLoss

RELATIONS = ("overlap", "disjoint", "nested", "enclosing", "near")
SPEED_PAIRS = 1_000_000  # box pairs the speed check times (0 skips it)


def random_pairs(
    n: int, relation: str, *, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random xyxy (pred, target) pairs in one geometric relation (see ``RELATIONS``)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    xy = rand(n, 2) * 50
    wh = rand(n, 2) * 20 + 1
    target = torch.cat([xy, xy + wh], -1)
    if relation == "overlap":
        pxy = xy + (rand(n, 2) - 0.5) * wh
        pred = torch.cat([pxy, pxy + wh * (rand(n, 2) + 0.5)], -1)
    elif relation == "disjoint":
        pxy = xy + wh + rand(n, 2) * 10 + 0.5
        pred = torch.cat([pxy, pxy + wh * (rand(n, 2) + 0.5)], -1)
    elif relation == "nested":  # pred strictly inside target
        pred = torch.cat([xy + rand(n, 2) * 0.3 * wh, xy + (1 - rand(n, 2) * 0.3) * wh], -1)
    elif relation == "enclosing":  # pred strictly contains target
        pred = target + (rand(n, 4) * 5 + 0.1) * torch.tensor([-1, -1, 1, 1], dtype=dtype)
    elif relation == "near":  # near-identical
        pred = target + (rand(n, 4) - 0.5) * 1e-3
    else:
        raise ValueError(f"unknown relation {relation!r}; one of {RELATIONS}")
    return pred, target


FINITE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)  # check_finite's inputs


def degenerate_cases(dtype: torch.dtype = torch.float32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Where users get hurt (zero sizes, points, identical, disjoint, huge and tiny coordinates).

    Cases whose coordinates ``dtype`` cannot hold are left out (float16 ends at 65504: no
    "huge" case); the others are the same numbers rounded to ``dtype``.
    """
    cases = {name: (pred.to(dtype), target.to(dtype)) for name, (pred, target) in _degenerate_float64().items()}
    return {name: pair for name, pair in cases.items() if all(torch.isfinite(box).all() for box in pair)}


def _degenerate_float64() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    box = [10.0, 10.0, 20.0, 30.0]
    return {
        "zero-width pred": (t([5.0, 5.0, 5.0, 9.0]), t(box)),
        "zero-height pred": (t([12.0, 15.0, 18.0, 15.0]), t(box)),
        "zero-width both, same x": (t([5.0, 5.0, 5.0, 9.0]), t([5.0, 6.0, 5.0, 12.0])),
        "point pred": (t([15.0, 15.0, 15.0, 15.0]), t(box)),
        "point vs same point": (t([3.0, 3.0, 3.0, 3.0]), t([3.0, 3.0, 3.0, 3.0])),
        "point vs other point": (t([3.0, 3.0, 3.0, 3.0]), t([4.0, 5.0, 4.0, 5.0])),
        "identical": (t(box), t(box)),
        "disjoint": (t([100.0, 100.0, 120.0, 110.0]), t(box)),
        "huge coordinates": (t([1e5, 1e5, 1.5e5, 1.2e5]), t([1.1e5, 0.9e5, 1.6e5, 1.3e5])),
        "huge identical": (t([1e5, 1e5, 1.5e5, 1.2e5]), t([1e5, 1e5, 1.5e5, 1.2e5])),
        "tiny coordinates": (t([1e-4, 2e-4, 3e-4, 5e-4]), t([1.5e-4, 1e-4, 4e-4, 4e-4])),
        "tiny identical": (t([1e-4, 2e-4, 3e-4, 5e-4]), t([1e-4, 2e-4, 3e-4, 5e-4])),
    }


def value_and_grad(loss, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value, d sum / d pred, d sum / d target), inputs left untouched."""
    pred = pred.detach().clone().requires_grad_(True)
    target = target.detach().clone().requires_grad_(True)
    value = loss(pred, target)
    grad_pred, grad_target = torch.autograd.grad(value.sum(), (pred, target), allow_unused=True)
    zeros = torch.zeros_like
    return (
        value.detach(),
        grad_pred if grad_pred is not None else zeros(pred),
        grad_target if grad_target is not None else zeros(target),
    )


@dataclass
class Check:
    property: str
    status: str  # "pass", "fail" or "info"
    detail: str = ""
    required: bool = False

    @property
    def failed_required(self) -> bool:
        return self.required and self.status == "fail"


def _try(prop: str, required: bool, body) -> Check:
    try:
        status, detail = body()
    except Exception as error:  # a crash is a failure of that property, reported with its reason
        status, detail = "fail", f"raised {type(error).__name__}: {error}"
    if len(detail) > 240:
        detail = detail[:237] + "..."
    return Check(prop, status, detail, required)


def check_shape(loss: BoxLoss) -> Check:
    def body():
        pred, target = random_pairs(6, "overlap", dtype=torch.float32)
        flat = loss(pred, target)
        batched = loss(pred.view(2, 3, 4), target.view(2, 3, 4))
        if flat.shape != (6,):
            return "fail", f"[6, 4] inputs gave shape {tuple(flat.shape)}, expected (6,)"
        if batched.shape != (2, 3):
            return "fail", f"[2, 3, 4] inputs gave shape {tuple(batched.shape)}, expected (2, 3)"
        empty = loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4))
        if empty.shape != (0,):
            return "fail", f"empty input gave shape {tuple(empty.shape)}"
        return "pass", "[N,4] -> [N], batch dims kept, empty input ok"

    return _try("output shape", True, body)


def check_finite(loss: BoxLoss, dtypes: tuple[torch.dtype, ...] = FINITE_DTYPES) -> list[Check]:
    """One check per degenerate case: value and both gradients finite for inputs of every dtype
    that can hold the case (the detail gives the value of the first dtype)."""
    by_dtype = {dtype: degenerate_cases(dtype) for dtype in dtypes}
    checks = []
    for case in by_dtype[dtypes[0]]:
        def body(case=case):
            values = []
            for dtype, cases in by_dtype.items():
                if case not in cases:
                    continue
                pred, target = cases[case]
                value, g_pred, g_target = value_and_grad(loss, pred, target)
                for what, tensor in (("value", value), ("grad wrt pred", g_pred), ("grad wrt target", g_target)):
                    if not torch.isfinite(tensor).all():
                        return "fail", f"{what} {tensor.tolist()} for {dtype} pred {pred.tolist()} target {target.tolist()}"
                values.append(value.item())
            return "pass", f"value {values[0]:.4g} (finite in {len(values)} dtypes)"

        checks.append(_try(f"finite value+grad: {case}", True, body))
    return checks


def check_precision(loss: BoxLoss) -> Check:
    def body():
        pred, target = random_pairs(32, "overlap", dtype=torch.float32, seed=2)
        reference = loss(pred, target)
        dtypes = {str(loss(pred.to(d), target.to(d)).dtype) for d in (torch.float16, torch.bfloat16)}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = loss(pred, target)
        dtypes.add(str(under_autocast.dtype))
        if dtypes != {"torch.float32"} or reference.dtype != torch.float32:
            return "fail", f"half inputs / autocast gave {sorted(dtypes)}; float32 inputs gave {reference.dtype}"
        if not torch.allclose(under_autocast, reference, rtol=1e-5, atol=1e-6):
            return "fail", "autocast changed the value"
        return "pass", "float32 in, float32 out; fp16/bf16 and autocast computed in float32"

    return _try("float32 / autocast", False, body)


def check_minimum(loss: BoxLoss) -> Check:
    """The loss at identical boxes is finite and no larger than anywhere else (NaN fails: it
    compares false with everything, so a plain ``>`` would let it pass)."""

    def body():
        for relation in RELATIONS:
            pred, target = random_pairs(128, relation, seed=7)
            value, at_target = loss(pred, target), loss(target, target)
            for what, tensor in (("at identical boxes", at_target), (f"on {relation} pairs", value)):
                if not torch.isfinite(tensor).all():
                    i = int((~torch.isfinite(tensor)).nonzero()[0])
                    return "fail", f"the loss {what} is {tensor[i].item()} (target {target[i].tolist()})"
            worse = (at_target > value + 1e-6).nonzero()
            if len(worse):
                i = int(worse[0])
                return "fail", f"{relation}: loss({pred[i].tolist()}) = {value[i]:.4g} < loss at target {at_target[i]:.4g}"
        return "pass", f"identical boxes give {at_target.abs().max():.2g}, the minimum"

    return _try("minimum at identical boxes", False, body)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp(min=1e-12)).max())


def check_invariances(loss: BoxLoss) -> list[Check]:
    pred, target = random_pairs(64, "overlap", seed=8)
    base = lambda: loss(pred, target)  # noqa: E731
    cases = {
        "translation invariance": lambda: loss(pred + 37.0, target + 37.0),
        "scale invariance": lambda: loss(pred * 3.0, target * 3.0),
        "symmetry in (pred, target)": lambda: loss(target, pred),
    }
    checks = []
    for prop, transformed in cases.items():
        def body(transformed=transformed):
            diff = _max_rel(transformed(), base())
            return "info", ("invariant" if diff < 1e-6 else "not invariant") + f" (max relative change {diff:.2g})"

        checks.append(_try(prop, False, body))
    return checks


def check_gradcheck(loss: BoxLoss) -> Check:
    def body():
        if loss.spec.detaches:
            return "info", "skipped: a term is computed under no_grad by design"
        for relation in ("overlap", "disjoint", "nested"):
            pred, target = random_pairs(8, relation, seed=5)
            torch.autograd.gradcheck(lambda p: loss(p, target), (pred.requires_grad_(True),), eps=1e-6, atol=1e-5)
        return "pass", "float64, overlap/disjoint/nested"

    return _try("gradcheck (float64)", False, body)


def check_speed(loss: BoxLoss, pairs: int) -> Check:
    from scabench.bench.loss_speed import median_seconds, random_boxes
    from torchvision.ops import complete_box_iou_loss

    def body():
        pred, target = random_boxes(pairs, "cpu")
        ours = median_seconds(loss, pred, target)
        reference = median_seconds(complete_box_iou_loss, pred, target)
        return "info", f"{ours * 1e3:.1f} ms fwd+bwd on {pairs:,} pairs = {ours / reference:.2f}x torchvision CIoU"

    return _try("speed", False, body)


def check_against(loss: BoxLoss, reference: BoxLoss, rtol: float = 1e-6) -> Check:
    def body():
        worst = (0.0, "")
        for relation in RELATIONS:
            pred, target = random_pairs(128, relation, seed=9)
            v1, g1, _ = value_and_grad(loss, pred, target)
            v2, g2, _ = value_and_grad(reference, pred, target)
            for what, a, b in (("value", v1, v2), ("gradient", g1, g2)):
                rel = float(((a - b).abs() / (b.abs() + 1e-12)).max())
                if not torch.allclose(a, b, rtol=rtol, atol=1e-9) and rel > worst[0]:
                    worst = (rel, f"{what} on {relation} pairs: max relative difference {rel:.3g}")
        if worst[1]:
            return "fail", worst[1]
        return "pass", f"values and gradients equal within {rtol:g} (float64, {len(RELATIONS)} relations)"

    return _try(f"equals {reference.name}", True, body)


def run_contract(loss: BoxLoss, *, against: BoxLoss | None = None, speed_pairs: int = SPEED_PAIRS) -> list[Check]:
    """All properties of the contract, in report order.

    Stateful losses (Wise-IoU v2/v3) are checked in eval mode, their running mean frozen,
    so that repeated calls are comparable.
    """
    loss.eval()
    if against is not None:
        against.eval()
    checks = [check_shape(loss), *check_finite(loss), check_precision(loss), check_minimum(loss)]
    checks += [*check_invariances(loss), check_gradcheck(loss)]
    if against is not None:
        checks.append(check_against(loss, against))
    if speed_pairs:
        checks.append(check_speed(loss, speed_pairs))
    return checks


def check_loss(name: str, *, against: str | None = None, speed_pairs: int = SPEED_PAIRS) -> list[Check]:
    """Resolve names (registered or ``module:function``) and run the contract."""
    return run_contract(
        losses.get_loss(name),
        against=losses.get_loss(against) if against else None,
        speed_pairs=speed_pairs,
    )
