"""Bring your own loss: module:function, file.py:function and the scabench.losses entry points."""

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from scabench import losses
from scabench.losses import registry

USER_FILE = Path(__file__).parent / "fixtures" / "my_losses.py"


def test_file_reference_with_parameters_and_source_hash():
    loss = losses.get_loss(f"{USER_FILE}:l2_corner", weight=2.0)
    pred = torch.tensor([[0.0, 0.0, 3.0, 4.0]])
    target = torch.tensor([[1.0, 0.0, 4.0, 4.0]])
    # two corners each off by 1 on x: sum of squares 2, over 2 * diag^2 = 2 * 25, times weight 2
    torch.testing.assert_close(loss(pred, target), torch.tensor([2 * 2 / 50.0]))
    assert loss.params == {"weight": 2.0}
    assert loss.spec.source["sha256"] == hashlib.sha256(USER_FILE.read_bytes()).hexdigest()
    assert loss.spec.formula.startswith("weight * mean squared corner offset")


def test_module_reference(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_FILE.parent))
    loss = losses.get_loss("my_losses:l2_corner")
    assert loss(torch.zeros(2, 4) + torch.tensor([0, 0, 1, 1.0]), torch.zeros(2, 4) + torch.tensor([0, 0, 1, 1.0])).shape == (2,)
    with pytest.raises(ValueError, match="no parameter"):
        losses.get_loss("my_losses:l2_corner", alpha=1)


def test_reference_errors_are_clear():
    with pytest.raises(ValueError, match="has no function 'nope'; it has: .*l2_corner"):
        losses.get_loss(f"{USER_FILE}:nope")
    with pytest.raises(ValueError, match="no file"):
        losses.get_loss("missing/file.py:fn")
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        losses.get_loss("no_such_module_xyz:fn")


def test_user_loss_composes_with_registered_ones():
    pred, target = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.5, 0, 2.5, 2]])
    combo = losses.get_loss(f"iou+0.5*{USER_FILE}:l2_corner")
    expected = losses.get_loss("iou")(pred, target) + 0.5 * losses.get_loss(f"{USER_FILE}:l2_corner")(pred, target)
    torch.testing.assert_close(combo(pred, target), expected)


def test_entry_point_losses_are_registered(tmp_path, monkeypatch):
    (tmp_path / "ep_losses.py").write_text(
        "def half_l1(pred, target, *, eps=1e-7):\n"
        "    '''0.5 * L1 over the corners'''\n"
        "    return 0.5 * (pred - target).abs().sum(-1)\n"
    )
    dist = tmp_path / "ep_losses-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-losses\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[scabench.losses]\nhalf-l1 = ep_losses:half_l1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "half-l1" in losses.available()
    value = losses.get_loss("half-l1")(torch.zeros(1, 4), torch.ones(1, 4))
    torch.testing.assert_close(value, torch.tensor([2.0]))
    assert losses.spec("half-l1").reference == "ep_losses:half_l1"
    sys.modules.pop("ep_losses", None)


def test_parameter_values_must_have_their_defaults_type(tmp_path):
    message = r"loss 'sca': parameter alpha must be a finite number \(float\) like its default 1.0, got 'big' \(str\)"
    with pytest.raises(ValueError, match=message):
        losses.get_loss("sca", alpha="big")
    for bad in (float("nan"), float("inf"), True, [1.0]):
        with pytest.raises(ValueError, match="parameter alpha must be a finite number"):
            losses.get_loss("sca", alpha=bad)
    assert losses.get_loss("sca", alpha=2).params == {"alpha": 2}  # an int is a number

    (tmp_path / "typed.py").write_text(
        "def typed(pred, target, *, n: int = 2, flag: bool = False, mode: str = 'sum', extra=None):\n"
        "    '''L1 with parameters of every kind'''\n"
        "    return (pred - target).abs().sum(-1)\n"
    )
    typed = f"{tmp_path / 'typed.py'}:typed"
    given = {"n": 3, "flag": True, "mode": "mean", "extra": {"anything": "goes"}}
    assert losses.get_loss(typed, **given).params == given
    refused = [("n", 2.5, "an integer"), ("n", False, "an integer"), ("flag", 1, "True or False"), ("mode", 3, "a str")]
    for key, value, expected in refused:
        with pytest.raises(ValueError, match=rf"parameter {key} must be {expected}.*got {value!r}"):
            losses.get_loss(typed, **{key: value})
