"""Bring your own loss, end to end: a loss in a user's file goes through the synthetic studies,
the trainer and a grid, and the grid records which code made each result (issue 6)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from scabench.bench.cli import app
from tests.test_runner import scabench

USER_FILE = Path(__file__).resolve().parent / "fixtures" / "my_losses.py"
USER_LOSS = f"{USER_FILE}:l2_corner"


def test_simulate_takes_a_user_loss(tmp_path):
    result = CliRunner().invoke(
        app,
        ["simulate", "convergence", "--losses", f"giou,{USER_LOSS}", "--points", "4", "--iterations", "30",
         "--out", str(tmp_path), "--no-figures"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    curves = pd.read_csv(tmp_path / "convergence.csv")
    assert set(curves["loss"]) == {"giou", USER_LOSS}
    mine = curves[curves["loss"] == USER_LOSS].sort_values("iteration")["error"].to_numpy()
    assert mine[-1] < 0.5 * mine[0]  # the squared corner offset pulls every case towards its target


def test_trainer_takes_a_user_loss(tmp_path):
    from scabench.detectors import TrainConfig, train

    config = TrainConfig(
        data="synthetic-shapes", train_size=32, val_size=8, width=0.125, img_size=64, epochs=1,
        batch_size=16, nominal_batch=16, loss=USER_LOSS, loss_params={"weight": 0.5}, workers=0,
    )
    summary = train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["config"]["loss"] == USER_LOSS and len(rows) == 1
    assert rows[0]["loss_box"] > 0


def test_grid_names_the_user_loss_as_written_and_records_its_source(tmp_path, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: byo\n"
        "detectors: [{name: yolov3-tiny, width: 0.25}]\n"
        "train: {epochs: 2, img_size: 64}\n"
        f"losses: [iou, {{name: '{USER_LOSS}', weight: 2.0}}]\n"
    )
    out = tmp_path / "results"
    runner_env = {"SCABENCH_CELL_FN": f"{Path(__file__).parent / 'test_runner.py'}:fake_cell", "COLUMNS": "200"}
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], runner_env, monkeypatch)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(p.read_text()) for p in out.glob("cells/*/record.json")]
    mine = [r for r in records if USER_LOSS in r["label"]]
    assert len(mine) == 1 and mine[0]["status"] == "done"
    assert mine[0]["loss_sources"][USER_LOSS]["sha256"] == hashlib.sha256(USER_FILE.read_bytes()).hexdigest()
    report = scabench(["report", str(out), "--format", "csv"], runner_env, monkeypatch)
    assert report.returncode == 0 and USER_LOSS in report.stdout
