"""Every registered loss, new ones included, passes the contract that `scabench check-loss`
runs (timm-style: a new registry entry is tested for free)."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scabench import losses
from scabench.bench.cli import app
from scabench.bench.contract import check_loss, random_pairs

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
