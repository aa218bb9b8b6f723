"""scabench runs from a research folder whose own files are named like its layers (issue 9).

The folder holds ``losses.py`` (the user's losses, plus junk under scabench's names),
``detectors/__init__.py``, ``bench.py`` and ``reports.py`` (each raising ImportError if
imported). The real ``scabench`` command, started there, must check, train and run a grid with
the user's ``losses:focal``, and never import any of those files in place of its own layers.
Also: ``scabench --help`` and ``scabench report`` do not import torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCABENCH = Path(sys.executable).with_name("scabench")

USER_LOSSES = '''\
"""The user's own losses module (shadows nothing: scabench's layers are scabench.losses, ...)."""

import torch

get_loss = available = spec = iou = sca = "junk: scabench must never read this module as its own"


def focal(pred, target):
    """1 - IoU (a user's loss)"""
    lt = torch.maximum(pred[..., :2], target[..., :2])
    rb = torch.minimum(pred[..., 2:], target[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[..., 2:] - pred[..., :2]).clamp(min=0).prod(-1)
    area_t = (target[..., 2:] - target[..., :2]).clamp(min=0).prod(-1)
    return 1 - inter / (area_p + area_t - inter + 1e-7)
'''

SHADOW = "raise ImportError('the user file {name} was imported in place of scabench.{name}')\n"

# The smallest training that still runs every stage (tests/test_detectors_training.py's scale).
TINY = {"train_size": 16, "val_size": 8, "img_size": 64, "width": 0.125, "epochs": 1, "batch_size": 8, "nominal_batch": 8}

GRID = f"""\
name: shadowed
data: {{source: synthetic-shapes, train_size: {TINY["train_size"]}, val_size: {TINY["val_size"]}}}
detectors: [{{name: yolov3-tiny, width: {TINY["width"]}}}]
train: {{epochs: {TINY["epochs"]}, img_size: {TINY["img_size"]}, batch_size: {TINY["batch_size"]}, nominal_batch: {TINY["nominal_batch"]}, workers: 0, device: cpu}}
losses: ['losses:focal']
"""


@pytest.fixture
def research_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "research"
    (folder / "detectors").mkdir(parents=True)
    (folder / "losses.py").write_text(USER_LOSSES)
    (folder / "detectors" / "__init__.py").write_text(SHADOW.format(name="detectors"))
    (folder / "bench.py").write_text(SHADOW.format(name="bench"))
    (folder / "reports.py").write_text(SHADOW.format(name="reports"))
    (folder / "g.yaml").write_text(GRID)
    return folder


def scabench(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "SCABENCH_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([str(SCABENCH), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"scabench {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    assert "imported in place of" not in result.stdout + result.stderr
    return result


def test_check_loss_takes_the_users_losses_module(research_folder, tmp_path):
    result = scabench(["check-loss", "losses:focal", "--speed-pairs", "0"], research_folder, tmp_path)
    assert "loss contract: losses:focal" in result.stdout and "required properties failed" not in result.stdout


@pytest.mark.slow
def test_train_with_the_users_loss(research_folder, tmp_path):
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    args = ["train", "--out", "run", "--loss", "losses:focal", "--workers", "0", "--device", "cpu", "--no-progress", *options]
    scabench(args, research_folder, tmp_path)
    summary = json.loads((research_folder / "run" / "summary.json").read_text())
    assert summary["config"]["loss"] == "losses:focal" and summary["epochs"] == 1


@pytest.mark.slow
def test_a_grid_cell_process_and_the_report_with_the_users_loss(research_folder, tmp_path):
    scabench(["run", "--grid", "g.yaml", "--out", "results", "--no-report"], research_folder, tmp_path)
    records = [json.loads(p.read_text()) for p in (research_folder / "results").glob("cells/*/record.json")]
    assert [r["status"] for r in records] == ["done"], records
    report = scabench(["report", "results", "--format", "csv"], research_folder, tmp_path)
    assert "losses:focal" in report.stdout


@pytest.mark.parametrize("args", [["--help"], ["report", "{results}"]], ids=["help", "report"])
def test_help_and_report_do_not_import_torch(args, tmp_path):
    (tmp_path / "results" / "cells").mkdir(parents=True)  # an empty results folder
    argv = ["scabench", *(a.format(results=tmp_path / "results") for a in args)]
    program = (
        "import sys\n"
        "from scabench.bench.cli import main\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-P", "-c", program], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch imported: False"), result.stdout[-500:]
