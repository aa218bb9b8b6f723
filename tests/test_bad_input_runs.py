"""Issue 11, items 2 and 6: a user loss's source is part of its cell's identity, and the messages
of a run say what happened (no markup eaten, no checkpoint promised that does not exist, a way
to start over from a corrupt one, one word for a killed cell)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scabench.bench.cell import config_to_run
from scabench.bench.config import load_grid
from scabench.bench.grid import config_hash
from scabench.bench.runner import RunOutcome, _accountant, prepare
from scabench.results import GridFolder, RunFolder
from tests.test_runner import scabench

ROOT = Path(__file__).resolve().parents[1]
FAKE_CELL = f"{Path(__file__).parent / 'test_runner.py'}:fake_cell"
USER_LOSSES = '''
def l2(pred, target, *, weight: float = 1.0):
    """weight * squared corner offset"""
    return weight * ((pred - target) ** 2).sum(-1)
'''


def write_grid(folder: Path, loss: str, name: str = "byo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    grid = folder / "grid.yaml"
    grid.write_text(
        f"name: {name}\ndetectors: [{{name: yolov3-tiny, width: 0.25}}]\n"
        f"train: {{epochs: 1, img_size: 64}}\nlosses: [iou, '{loss}']\n"
    )
    return grid


def cells_by_loss(grid_file: Path) -> dict[str, object]:
    return {cell.config["loss"]: cell for cell in load_grid(grid_file, check_trainer=False).cells}


# --------------------------------------------------------------------------------------
# Item 2: the source of a user loss takes part in the cell id


def test_built_in_cells_keep_their_ids():
    """The ids of docs/results/quick (run before user-loss hashing) are still quick.yaml's, and a
    built-in cell's id is still the hash of its config alone."""
    cells = load_grid(ROOT / "experiments" / "quick.yaml", check_trainer=False).cells
    published = {row["id"] for row in csv.DictReader(open(ROOT / "docs" / "results" / "quick" / "cells.csv"))}
    assert published and published <= {cell.id for cell in cells}
    assert all(cell.id == config_hash(cell.config) and not cell.loss_refs for cell in cells)


def test_editing_a_user_loss_file_makes_a_new_cell_and_run_says_why(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    grid = write_grid(exp, "my_losses.py:l2")
    (exp / "my_losses.py").write_text(USER_LOSSES)
    monkeypatch.chdir(exp)
    out = tmp_path / "results"
    env = {"SCABENCH_CELL_FN": FAKE_CELL, "COLUMNS": "200"}
    first = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], env, monkeypatch)
    assert first.returncode == 0, first.stdout + first.stderr
    before = cells_by_loss(grid)

    (exp / "my_losses.py").write_text(USER_LOSSES + "# tuned\n")
    after = cells_by_loss(grid)
    assert after["iou"].id == before["iou"].id  # a built-in loss's cell is untouched
    assert after["my_losses.py:l2"].id != before["my_losses.py:l2"].id
    again = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], env, monkeypatch)
    assert again.returncode == 0, again.stdout + again.stderr
    text = again.stdout + again.stderr
    assert "source of my_losses.py:l2 changed" in text and before["my_losses.py:l2"].id in text, text
    assert "1 done now, 1 done before" in text
    record = RunFolder(out / "cells" / after["my_losses.py:l2"].id).read_record()
    assert record["loss_sources"]["my_losses.py:l2"]["sha256"] == hashlib.sha256((exp / "my_losses.py").read_bytes()).hexdigest()


def test_editing_a_user_loss_module_makes_a_new_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "issue11_losses", raising=False)
    (tmp_path / "issue11_losses.py").write_text(USER_LOSSES)
    grid = write_grid(tmp_path, "issue11_losses:l2")
    before = cells_by_loss(grid)["issue11_losses:l2"]
    assert set(before.loss_refs) == {"issue11_losses:l2"}
    (tmp_path / "issue11_losses.py").write_text(USER_LOSSES + "# tuned\n")
    assert cells_by_loss(grid)["issue11_losses:l2"].id != before.id
    sys.modules.pop("issue11_losses", None)


def test_relative_loss_file_is_found_beside_the_grid_not_in_the_current_folder(tmp_path, monkeypatch):
    exp, elsewhere = tmp_path / "exp", tmp_path / "elsewhere"
    grid = write_grid(exp, "my_losses.py:l2")
    (exp / "my_losses.py").write_text(USER_LOSSES)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cell = cells_by_loss(grid)["my_losses.py:l2"]
    assert cell.config["loss"] == "my_losses.py:l2"  # named as written: the id does not depend on the checkout path
    assert cell.loss_refs["my_losses.py:l2"]["path"] == f"{exp.resolve() / 'my_losses.py'}:l2"
    assert config_to_run(cell.record())["loss"] == f"{exp.resolve() / 'my_losses.py'}:l2"


def test_a_cell_refuses_to_run_code_edited_after_it_was_planned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_losses.py").write_text(USER_LOSSES)
    cell = cells_by_loss(write_grid(tmp_path, "my_losses.py:l2"))["my_losses.py:l2"]
    meta = cell.record()
    (tmp_path / "my_losses.py").write_text(USER_LOSSES + "# edited while the grid waits in a queue\n")
    with pytest.raises(ValueError, match="source of my_losses.py:l2 changed since this cell was planned"):
        config_to_run(meta)


# --------------------------------------------------------------------------------------
# Item 6: messages


def _rich_console():
    from rich.console import Console

    stream = io.StringIO()
    return Console(file=stream, width=200, color_system=None), stream


def test_failed_line_keeps_text_in_square_brackets(tmp_path):
    folder = GridFolder(tmp_path)
    cell = SimpleNamespace(id="abc123", label="yolov3-tiny | sca | seed 0")
    reason = "NonFiniteLossError: non-finite loss (mean box/obj/cls so far [nan, nan, 0.0378])"
    folder.cell(cell.id).path.mkdir(parents=True)
    folder.cell(cell.id).write_record({"status": "failed", "reason": reason})
    console, stream = _rich_console()
    outcome = RunOutcome()
    _accountant(folder, outcome, console)(cell, "failed", 1.0)
    assert "[nan, nan, 0.0378]" in stream.getvalue(), stream.getvalue()
    assert outcome.failed == [(cell, reason)]


def _non_finite_message(tmp_path: Path, with_checkpoint: bool) -> str:
    from scabench.detectors.trainer import NonFiniteLossError, _Run

    files = RunFolder(tmp_path)
    files.path.mkdir(parents=True)
    if with_checkpoint:
        files.checkpoint.write_bytes(b"a checkpoint")
    run = SimpleNamespace(files=files, config=SimpleNamespace(loss="sca"), history=[{"epoch": 1}] if with_checkpoint else [],
                          ctx=SimpleNamespace(world=1, main=True))
    with pytest.raises(NonFiniteLossError) as info:
        _Run._check_finite(run, torch.tensor(3), 1 if with_checkpoint else 0, torch.tensor([float("nan"), float("nan"), 0.0378]))
    return str(info.value)


def test_non_finite_failure_promises_a_checkpoint_only_where_one_exists(tmp_path):
    first_epoch = _non_finite_message(tmp_path / "a", with_checkpoint=False)
    assert "last good epoch" not in first_epoch and "no checkpoint was saved" in first_epoch
    later = _non_finite_message(tmp_path / "b", with_checkpoint=True)
    assert "last.pt holds the last good epoch (1)" in later


def test_corrupt_checkpoint_says_how_to_start_over(tmp_path):
    from scabench.detectors.checkpoint import load_checkpoint

    path = tmp_path / "last.pt"
    path.write_bytes(b"\x00 half a zip file")
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    first_line = str(info.value).splitlines()[0]  # the runner shows the reason's first line
    assert f"rm {path}" in first_line and "start the run over" in first_line
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match="start the run over"):
        load_checkpoint(path)


def test_report_and_plan_call_a_killed_cell_interrupted(tmp_path):
    """A record left at 'running' by a kill -9 (nobody holds the cell's lock): the report's list
    of missing cells and the plan use the same word."""
    from scabench.bench.cli_grid import plan_table
    from scabench.reports.loading import not_in_table

    grid = write_grid(tmp_path, "giou")
    cells = load_grid(grid, check_trainer=False).cells
    folder = prepare(cells, tmp_path / "results")
    folder.cell(cells[0].id).write_record({"status": "running", "attempts": [{"status": "running"}]})
    statuses = {label: status for label, status, _ in not_in_table(tmp_path / "results")}
    assert statuses[cells[0].label] == "interrupted"
    console, stream = _rich_console()
    console.print(plan_table(cells, folder, title="plan"))
    row = next(line for line in stream.getvalue().splitlines() if cells[0].id in line)
    assert "interrupted" in row and "running" not in row, stream.getvalue()
    assert json.loads(folder.cell(cells[0].id).record.read_text())["status"] == "running"  # read, not rewritten


def test_run_explains_new_ids_of_cells_planned_before_sources_were_hashed(tmp_path, monkeypatch):
    """A results folder from before: config.json without loss_refs (id = hash of the config
    alone), record.json with the SHA-256 the loss had when it ran."""
    from scabench.bench.runner import why_new

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_losses.py").write_text(USER_LOSSES)
    cells = load_grid(write_grid(tmp_path, "my_losses.py:l2"), check_trainer=False).cells
    mine = next(cell for cell in cells if cell.loss_refs)
    folder = GridFolder(tmp_path / "results")
    old = folder.cell(config_hash(mine.config))
    old.path.mkdir(parents=True)
    old.write_config({k: v for k, v in mine.record().items() if k != "loss_refs"} | {"id": old.path.name})
    assert [(cell, reason) for cell, reason in why_new(cells, folder)] == [
        (mine, f"cell ids now include the SHA-256 of my_losses.py:l2's source (the earlier cell's id did not); the earlier cell is {old.path.name}")
    ]
    old.write_record({"status": "done", "loss_sources": {"my_losses.py:l2": {"sha256": "0" * 64}}})
    (reason,) = [reason for _, reason in why_new(cells, folder)]
    assert reason.startswith("source of my_losses.py:l2 changed (SHA-256 000000000000 -> ")
