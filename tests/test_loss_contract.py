"""Every registered loss, new ones included, passes the contract that `scabench check-loss`
runs (timm-style: a new registry entry is tested for free)."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scabench import losses
from scabench.bench.cli import app
from scabench.bench.contract import FINITE_DTYPES, check_finite, check_loss, degenerate_cases, random_pairs, value_and_grad

NAMES = losses.available()


USER_FILE = Path(__file__).parent / "fixtures" / "my_losses.py"


def invoke(args):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


@pytest.mark.parametrize("name", NAMES)
def test_registered_loss_passes_the_contract(name):
    failures = [f"{c.property}: {c.detail}" for c in check_loss(name, speed_pairs=0) if c.status == "fail"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_nonnegative(name):
    for relation in ("overlap", "disjoint", "nested", "enclosing", "near"):
        value = losses.get_loss(name)(*random_pairs(128, relation, seed=7))
        assert (value >= -1e-6).all(), f"{name} negative on {relation}: {value.min()}"


@pytest.mark.parametrize("name", NAMES)
def test_similarity_is_detached_and_bounded(name):
    pred, target = random_pairs(16, "overlap", dtype=torch.float32, seed=6)
    s = losses.get_loss(name).similarity(pred.requires_grad_(True), target)
    assert s.shape == (16,) and not s.requires_grad and torch.isfinite(s).all()
    assert (s <= 1 + 1e-6).all()


def test_registry_has_docs_and_refuses_duplicates():
    assert len(NAMES) >= 15, NAMES
    for name in NAMES:
        spec = losses.spec(name)
        assert spec.fn.__doc__ and spec.paper and spec.reference and spec.formula, name
    with pytest.raises(ValueError, match="already registered"):
        losses.register("iou", formula="x", paper="x", reference="x")(lambda p, t, *, eps=1e-7: p)


def test_contract_catches_a_broken_loss_and_cli_exits_1():
    checks = check_loss(f"{USER_FILE}:broken", speed_pairs=0)
    failed = {c.property for c in checks if c.failed_required}
    assert "output shape" in failed and "finite value+grad: identical" in failed
    result = invoke(["check-loss", f"{USER_FILE}:broken", "--speed-pairs", "0"])
    assert result.exit_code == 1, result.output
    assert "required properties failed" in result.output


def test_check_loss_cli_passes_a_good_user_loss_and_compares_against_a_reference():
    result = invoke(["check-loss", f"{USER_FILE}:l2_corner", "--speed-pairs", "2000"])
    assert result.exit_code == 0, result.output
    assert "torchvision CIoU" in result.output
    same = invoke(["check-loss", "so+cd", "--against", "sca", "--speed-pairs", "0"])
    assert same.exit_code == 0 and "equals" in same.output, same.output
    different = invoke(["check-loss", "giou", "--against", "diou", "--speed-pairs", "0"])
    assert different.exit_code == 1


def test_unknown_loss_is_a_usage_error():
    result = invoke(["check-loss", "gio"])
    assert result.exit_code == 2 and "available" in result.output


def test_half_gradients_saturate_instead_of_overflowing():
    """GIoU of two zero-width boxes at the same x: area_c = 0, so d/dcw of |C - U| / (|C| + eps)
    is h_c / eps = 6 / 1e-7 = 6e7 in float32; cast back to float16 (max 65504) it was inf.
    CIoU of a point prediction (aspect term ~ 1 / eps) likewise."""
    cases = degenerate_cases(torch.float16)
    for name, case in (("giou", "zero-width both, same x"), ("ciou", "point pred"), ("ciou-yolo", "point pred")):
        pred, target = cases[case]
        _, g_pred, g_target = value_and_grad(losses.get_loss(name), pred, target)
        assert g_pred.dtype == torch.float16 and torch.isfinite(g_pred).all() and torch.isfinite(g_target).all(), name
        _, g32, _ = value_and_grad(losses.get_loss(name), pred.float(), target.float())
        assert g32.abs().max() > torch.finfo(torch.float16).max, name  # the case the saturation is for
    pred, target = cases["zero-width both, same x"]
    _, g_pred, _ = value_and_grad(losses.get_loss("giou"), pred, target)
    assert g_pred.abs().max() == torch.finfo(torch.float16).max  # saturated, sign kept


@pytest.mark.parametrize("name", ["sca", "cd", "so", "so+cd", "l1", "smooth-l1"])
def test_point_on_the_same_point_is_the_minimum_of_distance_losses(name, dtype):
    """Corner distances and side ratios of a point on itself are 0 / 0 in the formula: defined
    as their minimum (SCA's code with eps in every difference gave 2 sqrt 2 eps / ((sqrt 2 + 1)
    eps) = 1.17, with float16 gradients of inf)."""
    pred, target = degenerate_cases(dtype)["point vs same point"]
    value, g_pred, g_target = value_and_grad(losses.get_loss(name), pred, target)
    assert value.item() == 0.0
    assert torch.isfinite(g_pred).all() and torch.isfinite(g_target).all()


@pytest.mark.parametrize("name", NAMES)
def test_identical_boxes_give_zero_in_every_dtype(name, dtype):
    """Every registered loss is ~0 at identical (non-degenerate) boxes whatever the input dtype.
    (A point on itself has no area: the IoU family's eps in the union makes that 1 - 0/eps = 1.)"""
    cases = degenerate_cases(dtype)
    for case in ("identical", "huge identical"):
        if case in cases:
            value = losses.get_loss(name).eval()(*cases[case])
            assert value.abs().item() < 1e-6, (case, value)


def test_check_finite_runs_every_dtype_and_leaves_out_what_a_dtype_cannot_hold():
    assert {torch.float16, torch.bfloat16, torch.float32, torch.float64} <= set(FINITE_DTYPES)
    assert "huge coordinates" in degenerate_cases(torch.float32)
    assert "huge coordinates" not in degenerate_cases(torch.float16)  # 1e5 > 65504
    checks = {c.property: c for c in check_finite(losses.get_loss("giou"))}
    assert checks["finite value+grad: zero-width both, same x"].status == "pass"
    assert "4 dtypes" in checks["finite value+grad: identical"].detail


NAN_WHEN_IDENTICAL = """
import torch

def nan_when_identical(pred, target):
    \"\"\"L1 divided by itself: 0 / 0 = NaN at identical boxes (a comparison with NaN is False).\"\"\"
    d = (pred - target).abs().sum(-1)
    return d / d
"""


def test_minimum_check_fails_a_loss_that_is_nan_at_identical_boxes(tmp_path):
    (tmp_path / "nan_loss.py").write_text(NAN_WHEN_IDENTICAL)
    reference = f"{tmp_path / 'nan_loss.py'}:nan_when_identical"
    minimum = {c.property: c for c in check_loss(reference, speed_pairs=0)}["minimum at identical boxes"]
    assert minimum.status == "fail" and "nan" in minimum.detail, minimum
    result = invoke(["check-loss", reference, "--speed-pairs", "0"])
    line = next(line for line in result.output.splitlines() if "minimum at identical boxes" in line)
    assert "pass" not in line and "nan" in line, result.output
