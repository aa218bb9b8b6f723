"""``--set KEY=VALUE`` overrides (bench/overrides.py) of grid files (`scabench run`) and of
training configs (`scabench train`): parsing, applying, validation naming the key, and what
they do to cells (ids, config.json, resume). No training here."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from scabench.bench.cli import app
from scabench.bench.config import GridError, load_grid
from scabench.bench.grid import expand
from scabench.bench.overrides import apply_overrides, load_grid_with_overrides, parse_overrides
from scabench.bench.runner import prepare, why_new
from scabench.reports.loading import grid_options
from scabench.results import GridFolder, read_json
from tests.test_runner import FAKE, scabench, write_grid


def test_values_are_yaml_and_keys_are_dotted_paths():
    sets = parse_overrides(["train.epochs=1", "train.device=cpu", "train.hyp.lr0=0.02", "losses=[iou, sca]", "detectors.0.width=0.5",
                            "axes.hyp.lr0=[0.01, 0.02]", "train.amp=false", "baseline=null"])  # fmt: skip
    assert [(o.path, o.value) for o in sets] == [
        (("train", "epochs"), 1), (("train", "device"), "cpu"), (("train", "hyp", "lr0"), 0.02), (("losses",), ["iou", "sca"]),
        (("detectors", 0, "width"), 0.5), (("axes", "hyp.lr0"), [0.01, 0.02]), (("train", "amp"), False), (("baseline",), None),
    ]  # fmt: skip
    for bad in ("epochs", "=1", "train..epochs=1", "train.epochs=[1"):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides([bad])


def test_applying_creates_missing_maps_and_leaves_the_input_alone():
    data = {"train": {"epochs": 7}, "detectors": [{"name": "yolov3-tiny"}], "data": "synthetic-shapes"}
    changed = apply_overrides(data, parse_overrides(["train.hyp.lr0=0.02", "resources.cpu_cells_at_once=2", "detectors.0.width=0.5"]))
    assert changed == {
        "train": {"epochs": 7, "hyp": {"lr0": 0.02}}, "detectors": [{"name": "yolov3-tiny", "width": 0.5}],
        "data": "synthetic-shapes", "resources": {"cpu_cells_at_once": 2},
    }  # fmt: skip
    assert data == {"train": {"epochs": 7}, "detectors": [{"name": "yolov3-tiny"}], "data": "synthetic-shapes"}
    with pytest.raises(ValueError, match=r"data is 'synthetic-shapes', not a mapping"):
        apply_overrides(data, parse_overrides(["data.train_size=100"]))
    with pytest.raises(ValueError, match=r"detectors is a list of 1: index it with 0..0"):
        apply_overrides(data, parse_overrides(["detectors.3.width=1"]))


def test_grid_overrides_are_in_every_cell_config_and_decide_its_id(tmp_path):
    path = write_grid(tmp_path, losses="iou, sca", epochs=3)
    plain = expand(load_grid(path))
    on_cpu = expand(load_grid_with_overrides(path, ["train.device=cpu", "train.workers=0"]))
    short = expand(load_grid_with_overrides(path, ["train.epochs=1", "train.hyp.lr0=0.02"]))
    # where a cell runs is not part of its id; what it computes is
    assert [c.id for c in on_cpu] == [c.id for c in plain] and on_cpu[0].runtime == {"device": "cpu", "workers": 0}
    assert not {c.id for c in short} & {c.id for c in plain}
    assert all(c.config["epochs"] == 1 and c.config["hyp"] == {"lr0": 0.02} for c in short)
    assert short[0].trainer_kwargs()["epochs"] == 1 and short[0].epochs == 1

    # config.json carries them; the grid copy says which were given and reads back as YAML
    grid = load_grid_with_overrides(path, ["train.epochs=1", "baseline=sca"])
    folder = prepare(expand(grid), tmp_path / "out", grid)
    for cell in expand(grid):
        assert read_json(folder.cell(cell.id).config)["config"]["epochs"] == 1
    assert folder.grid_copy.read_text().startswith(f"# {path} with --set train.epochs=1 --set baseline=sca")
    assert grid_options(tmp_path / "out")["baseline"] == "sca"
    # the same overrides again: the same cells (resume); no "why new" note for built-in losses
    again = expand(load_grid_with_overrides(path, ["train.epochs=1", "baseline=sca"]))
    assert [c.id for c in again] == [c.id for c in expand(grid)] and why_new(again, GridFolder(tmp_path / "out")) == []


def test_grid_override_problems_name_the_override_and_file_problems_their_line(tmp_path):
    path = write_grid(tmp_path, extra="seeds: [0, 0]\n")  # a problem of the file itself, on line 6
    with pytest.raises(GridError) as info:
        load_grid_with_overrides(path, ["train.epochs=abc", "train.patiencex=3", "colour=red"])
    messages = info.value.messages()
    assert any(m.startswith("--set train.epochs=abc: train.epochs: Input should be a valid integer") for m in messages), messages
    assert any(m.startswith("--set train.patiencex=3: train.patiencex: unknown") for m in messages), messages
    assert any(m.startswith("--set colour=red: colour: unknown key; allowed: name,") for m in messages), messages
    assert any(m.startswith(f"{path}:6: seeds: seeds repeat") for m in messages), messages


def test_scabench_run_with_overrides(tmp_path, monkeypatch):
    """The CLI: a bad --set exits 2 naming the key; a good one trains cells of its config
    (a stand-in cell function), and the same command again finds them done."""
    path = write_grid(tmp_path, losses="iou, sca", epochs=3)
    out = tmp_path / "out"
    env = {"SCABENCH_CELL_FN": FAKE, "FAKE_EVENTS": str(tmp_path / "events.log"), "COLUMNS": "200"}
    bad = scabench(["run", "--grid", str(path), "--out", str(out), "--set", "train.epochs=-1"], env, monkeypatch)
    assert bad.returncode == 2 and "--set train.epochs=-1: train.epochs:" in bad.stderr, bad.stderr
    malformed = scabench(["run", "--grid", str(path), "--out", str(out), "--set", "train.epochs"], env, monkeypatch)
    assert malformed.returncode == 2 and "expected KEY=VALUE" in malformed.stderr

    args = ["run", "--grid", str(path), "--out", str(out), "--no-report", "--set", "train.epochs=2", "--set", "train.device=cpu"]
    first = scabench(args, env, monkeypatch)
    assert first.returncode == 0, first.stdout + first.stderr
    configs = [read_json(p / "config.json") for p in sorted((out / "cells").iterdir())]
    assert len(configs) == 2 and all(c["config"]["epochs"] == 2 and c["runtime"]["device"] == "cpu" for c in configs)
    assert all(read_json(p / "summary.json")["epochs"] == 2 for p in (out / "cells").iterdir())
    second = scabench(args, env, monkeypatch)
    assert second.returncode == 0 and "0 done now, 2 done before" in second.stdout, second.stdout


def test_scabench_train_overrides(tmp_path, monkeypatch):
    """``scabench train --set`` sets TrainConfig keys (dotted into hyp), last; bad ones exit 2 naming the key."""
    import scabench.detectors as detectors

    seen = {}

    def fake_train(cfg, out, progress=True):
        seen["cfg"] = cfg
        return {"metrics": {m: 0.1 for m in detectors.METRICS}, "epochs": cfg.epochs, "params": 1, "images_per_second": 1.0}

    monkeypatch.setattr(detectors, "train", fake_train)
    runner = CliRunner()
    args = ["train", "--out", str(tmp_path / "run"), "--epochs", "5", "--set", "epochs=1", "--set", "hyp.lr0=0.02", "--set", "patience=3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen["cfg"].epochs, seen["cfg"].hyp, seen["cfg"].patience) == (1, {"lr0": 0.02}, 3)
    for given, key in (("epochs=abc", "--set epochs=abc: epochs:"), ("patiencex=1", "--set patiencex=1: patiencex: unknown key"),
                       ("hyp.lr0x=1", "--set hyp.lr0x=1: hyp: unknown hyperparameter")):  # fmt: skip
        result = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--set", given])
        assert result.exit_code == 2 and key in result.stderr, result.stderr
