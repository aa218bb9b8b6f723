"""Grid files: schema, line-numbered errors, expansion into cells and their hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scabench.bench.config import GridError, load_grid, parse_grid
from scabench.bench.grid import canonical_json, config_hash, expand

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

# A small grid used as a fixture by the hash and expansion tests (the first quick.yaml).
QUICK = """\
name: quick
data: synthetic-shapes
detectors:
  - {name: yolov3-tiny, width: 0.25}
train: {epochs: 10, img_size: 128, batch_size: 32}
losses: [iou, giou, diou, ciou, sca]
seeds: [0]
"""

def grid(text: str, name: str = "g.yaml", check_trainer: bool = False):
    return parse_grid(text, name, check_trainer=check_trainer)


def test_quick_yaml_is_the_paired_benchmark_of_the_five_paper_losses():
    """The main job (issue 10): the five paper losses x 3 seeds, one recipe for all of them,
    two one-thread cells at a time; each seed's cells differ in the loss alone."""
    g = load_grid(EXPERIMENTS / "quick.yaml")
    cells = expand(g)
    assert [c.labels["loss"] for c in cells[:5]] == ["iou", "giou", "diou", "ciou", "sca"]
    assert len(cells) == 15 and sorted({c.config["seed"] for c in cells}) == [0, 1, 2]
    assert {c.labels["detector"] for c in cells} == {"yolov3-tiny (w=0.25)"}
    assert g.config.resources.cpu_cells_at_once == 2 and g.config.baseline == "iou"
    for seed in (0, 1, 2):
        same_seed = [dict(c.config) for c in cells if c.config["seed"] == seed]
        for config in same_seed:
            config.pop("loss"), config.pop("loss_params", None)
        assert all(config == same_seed[0] for config in same_seed)
    sca = cells[4].config
    assert sca["hyp"] == {"cls": 2.0, "mosaic": 0.0} and sca["loss_params"] == {"alpha": 1.0}
    assert (sca["epochs"], sca["img_size"], sca["nominal_batch"], sca["val_interval"]) == (7, 128, 32, 4)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_is_valid(path):
    cells = expand(load_grid(path))  # also checked against detectors.TrainConfig when importable
    assert cells
    assert len({c.id for c in cells}) == len(cells)


def test_expansion_crosses_detectors_axes_losses_and_seeds_seed_major():
    g = grid("""
name: x
detectors: [yolov3-tiny, {name: yolov3, width: 0.5}]
losses: [iou, {name: sca, alpha: 0.5}, iou+cd]
axes: {obj_target: [iou, loss], hyp.lr0: [0.01, 0.02]}
seeds: [0, 1, 2]
simulate: {studies: [gradients]}
""")
    cells = expand(g)
    assert cells[0].kind == "simulate" and cells[0].config["study"] == "gradients"
    train = [c for c in cells if c.kind == "train"]
    assert len(train) == 2 * 3 * 2 * 2 * 3
    assert [c.labels["seed"] for c in train] == sorted(c.labels["seed"] for c in train)  # seed-major
    first = train[:24]  # seed 0: 2 detectors x 2 x 2 axes values x 3 losses
    assert {(c.labels["detector"], c.labels["axes"]["obj_target"], c.labels["axes"]["hyp.lr0"], c.labels["loss"]) for c in first} == {
        (d, o, lr, l)
        for d in ("yolov3-tiny", "yolov3 (w=0.5)")
        for o in ("iou", "loss")
        for lr in (0.01, 0.02)
        for l in ("iou", "sca(alpha=0.5)", "iou+cd")
    }
    cell = next(c for c in train if c.labels["loss"] == "sca(alpha=0.5)" and c.labels["axes"]["hyp.lr0"] == 0.02)
    assert cell.config["hyp"] == {"lr0": 0.02} and cell.config["loss_params"] == {"alpha": 0.5}
    assert "obj_target=" in cell.label and "seed" in cell.label


def test_simulation_cells_take_study_losses_and_options():
    from scabench.bench.studies.defaults import GRADIENT_LOSSES

    g = grid("""
name: s
simulate:
  losses: [iou, {name: sca, alpha: 0.5}]
  options: {points: 50, pairs_per_bin: 20}
  studies:
    convergence: {iterations: 10}
    gradients: {}
    corner-center: {losses: [iou+cd, iou+center], iterations: 30}
""")
    conv, grad, cc = expand(g)
    assert conv.config == {
        "kind": "simulate", "study": "convergence", "seed": 0,
        "losses": [{"name": "iou", "params": {}}, {"name": "sca", "params": {"alpha": 0.5}}],
        "options": {"iterations": 10, "points": 50},  # the shared pairs_per_bin is not convergence's
    }
    assert grad.config["options"] == {"pairs_per_bin": 20}
    assert cc.labels["losses"] == ["iou+cd", "iou+center"] and cc.config["options"] == {"iterations": 30}
    assert grad.labels["losses"] == ["iou", "sca(alpha=0.5)"]
    default = expand(grid("name: d\nsimulate: {studies: [gradients]}\n"))[0]
    assert default.labels["losses"] == list(GRADIENT_LOSSES)
    with pytest.raises(GridError) as info:
        grid("name: d\nsimulate:\n  studies:\n    gradients: {pointz: 5}\n")
    assert "g.yaml:4: simulate.studies.gradients.pointz: unknown option of gradients; allowed: losses, pairs_per_bin, bins" in str(info.value)


def test_cell_id_is_the_hash_of_the_resolved_config():
    cell = expand(grid(QUICK))[0]
    assert cell.id == config_hash(cell.config) == __import__("hashlib").sha256(canonical_json(cell.config).encode()).hexdigest()[:12]
    assert len(cell.id) == 12 and json.loads(canonical_json(cell.config)) == cell.config


def test_hash_is_stable_across_spelling_and_placement():
    a = expand(grid(QUICK))
    b = expand(grid("""
seeds: [0]
losses:
  - iou
  - giou
  - diou
  - ciou
  - {name: sca, alpha: 1.0}      # the default, spelled out
train:
  batch_size: 32
  img_size: 128
  epochs: 10
  device: cpu                    # where a cell runs is not what it computes
  workers: 0
detectors: [{width: 0.25, name: yolov3-tiny}]
data: {source: synthetic-shapes}
name: other-name
resources: {gpus_per_cell: 2}
"""))
    assert [c.id for c in a] == [c.id for c in b]
    assert b[0].runtime == {"device": "cpu", "workers": 0}


def test_hash_changes_with_anything_that_changes_the_result():
    base = {c.labels["loss"]: c.id for c in expand(grid(QUICK))}
    variants = [
        QUICK.replace("sca]", "{name: sca, alpha: 0.5}]"),
        QUICK.replace("epochs: 10", "epochs: 11"),
        QUICK.replace("seeds: [0]", "seeds: [1]"),
        QUICK.replace("width: 0.25", "width: 0.5"),
        QUICK.replace("data: synthetic-shapes", "data: {source: synthetic-shapes, train_size: 100}"),
        QUICK.replace("batch_size: 32}", "batch_size: 32, obj_target: iou}"),
        QUICK.replace("batch_size: 32}", "batch_size: 32, hyp: {lr0: 0.02}}"),
    ]
    for text in variants:
        ids = {c.labels["loss"]: c.id for c in expand(grid(text))}
        changed = [k for k in ids if ids[k] != base.get(k)]
        assert changed, text
    assert len(set(base.values())) == 5


BAD = [
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\ncolour: red\n", 4, "colour", "unknown key; allowed: name, description"),
    ("name: b\ndetectors:\n  - {name: yolov3-tiny, widht: 0.25}\nlosses: [iou]\n", 3, "detectors[0].widht", "unknown key; allowed: name, width, depth"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou, giouu]\n", 3, "losses[1]", "unknown loss 'giouu'; available:"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses:\n  - iou\n  - {name: sca, alpah: 2}\n", 5, "losses[1].alpah", "its parameters: alpha=1.0"),
    ("name: b\ndetectors: [yolov3-tiny]\ntrain: {epochs: ten}\nlosses: [iou]\n", 3, "train.epochs", "valid integer"),
    ("name: b\ndetectors: [yolov3-tiny]\ntrain:\n  epochs: 3\n  lr0: 0.1\nlosses: [iou]\n", 5, "train.lr0", "unknown key"),
    ("name: b\ndetectors: [yolov3-tiny]\ntrain: {seed: 3}\nlosses: [iou]\n", 3, "train.seed", "set it under seeds:"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: []\n", 3, "losses", "empty list"),
    ("name: b\ndetectors: []\nlosses: [iou]\n", 2, "detectors", "empty list"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\nseeds: []\n", 4, "seeds", "empty list"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\naxes:\n  obj_target: []\n", 5, "axes.obj_target", "empty list"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\naxes:\n  lr0: [0.1]\n", 5, "axes.lr0", "unknown axis; use one of"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\naxes:\n  obj_target: [iou, bogus]\n", 5, "axes.obj_target[1]", "'bogus' is not allowed"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou, sca]\nbaseline: giou\n", 4, "baseline", "not one of the grid's losses"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\nlosses: [sca]\n", 4, "losses", "duplicate key (also set on line 3)"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou, sca, iou]\n", 3, "losses[2]", "listed twice"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\nseeds: [0, 0]\n", 4, "seeds", "seeds repeat"),
    ("name: b\nsimulate: {studies: [convergence, bogus]}\n", 2, "simulate.studies.bogus", "not allowed"),
    ("name: b\ndetectors: [yolov3-tiny]\n", 2, "detectors", "detectors need losses"),
    ("name: b\ndetectors: [yolov3-tiny\nlosses: [iou]\n", 3, None, "invalid YAML"),
    # parameter types are checked by losses.get_loss, at load, at the key that is wrong
    ("name: b\ndetectors: [yolov3-tiny]\nlosses:\n  - iou\n  - {name: sca, alpha: big}\n", 5, "losses[1].alpha",
     "parameter alpha must be a finite number (float) like its default 1.0, got 'big' (str)"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses:\n  - iou\n  - {name: sca, alpha: .nan}\n", 5, "losses[1].alpha",
     "parameter alpha must be a finite number (float) like its default 1.0, got nan"),
    ("name: b\nsimulate:\n  losses: [{name: sca, alpha: true}]\n", 3, "simulate.losses[0].alpha", "got True (bool)"),
    # a cell's config is stored as JSON: every number is finite
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\naxes:\n  hyp.lr0: [0.01, .inf]\n", 5, "axes.hyp.lr0[1]", "inf is not a finite number"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\ntrain:\n  hyp: {lr0: .nan}\n", 5, "train.hyp.lr0", "nan is not a finite number"),
    # one meaning of a device string, in every section that takes one
    ("name: b\nsimulate: {device: gpu}\n", 2, "simulate.device", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou]\ntrain: {device: 'cuda:x'}\n", 4, "train.device", "device must be auto"),
]


@pytest.mark.parametrize("text, line, key, message", BAD, ids=[b[2] or "yaml" for b in BAD])
def test_bad_grids_say_file_line_key_and_what_is_wrong(text, line, key, message):
    with pytest.raises(GridError) as info:
        grid(text, "experiments/bad.yaml")
    prefix = f"experiments/bad.yaml:{line}: " + (f"{key}: " if key else "")
    lines = str(info.value).splitlines()
    assert any(l.startswith(prefix) and message in l for l in lines), lines


def test_all_problems_are_reported_at_once_in_line_order():
    text = "name: b\ndetectors:\n  - {name: yolov3-tiny, widht: 1}\ntrain: {epochs: 0}\nlosses: [iou, nope]\nseeds: []\n"
    with pytest.raises(GridError) as info:
        grid(text)
    lines = str(info.value).splitlines()
    assert [l.split(":")[1] for l in lines] == ["3", "4", "5", "6"], lines


def test_trainer_settings_are_checked_against_detectors_trainconfig():
    pytest.importorskip("scabench.detectors.config")
    text = "name: b\ndetectors: [yolov5]\ntrain:\n  img_size: 100\n  hyp: {lr00: 0.1}\nlosses: [iou]\n"
    with pytest.raises(GridError) as info:
        grid(text, check_trainer=True)
    message = str(info.value)
    assert "g.yaml:2: detectors[0]: 'yolov5' is not allowed" in message
    assert "g.yaml:4: train.img_size: img_size must be a multiple of 32" in message
    assert "g.yaml:5: train.hyp: unknown hyperparameter(s) ['lr00']" in message


def test_cli_exits_2_with_the_messages_and_no_traceback(tmp_path):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ndetectors: [yolov3-tiny]\nlosses: [iou, giouu]\n")
    result = CliRunner().invoke(app, ["run", "--grid", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert f"{bad}:3: losses[1]: unknown loss 'giouu'" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    missing = CliRunner().invoke(app, ["run", "--grid", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read the grid file" in missing.stderr


def test_a_missing_data_path_is_a_config_error_at_run_time(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    monkeypatch.delenv("SCABENCH_TEST_COCO", raising=False)
    path = tmp_path / "coco.yaml"
    path.write_text("name: c\ndata: ${SCABENCH_TEST_COCO}\ndetectors: [yolov3-tiny]\nlosses: [iou]\n")
    dry = CliRunner().invoke(app, ["run", "--grid", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    assert dry.exit_code == 2 and "SCABENCH_TEST_COCO" in dry.output  # the plan prints, then the missing data is named (issue 11)
    result = CliRunner().invoke(app, ["run", "--grid", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{path}:2: data: '${{SCABENCH_TEST_COCO}}': no such file or folder" in result.stderr


def test_a_bad_loss_parameter_exits_2_at_load_with_file_line_and_key(tmp_path):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ndetectors: [yolov3-tiny]\nlosses:\n  - iou\n  - {name: sca, alpha: big}\n")
    result = CliRunner().invoke(app, ["run", "--grid", str(bad), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert f"{bad}:5: losses[1].alpha: loss 'sca': parameter alpha must be a finite number" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr and not (tmp_path / "o").exists()


def test_each_loss_entry_is_resolved_once_at_load(monkeypatch):
    from scabench import losses

    calls = []
    real = losses.get_loss
    monkeypatch.setattr(losses, "get_loss", lambda name, **params: calls.append(name) or real(name, **params))
    grid("name: x\ndetectors: [yolov3-tiny, yolov3]\nlosses: [iou, {name: sca, alpha: 0.5}, iou+cd]\nseeds: [0, 1]\n")
    assert calls == ["iou", "sca", "iou+cd"]  # not once per cell, nor once per check


def test_a_command_expands_the_grid_once(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scabench.bench import grid as grid_module
    from scabench.bench.cli import app

    calls = []
    real = grid_module.training_cells
    monkeypatch.setattr(grid_module, "training_cells", lambda g: calls.append(g) or real(g))
    path = tmp_path / "quick.yaml"
    path.write_text(QUICK)
    result = CliRunner().invoke(app, ["run", "--grid", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1  # at load; the trainer check and the plan use the grid's cells
    loaded = grid(QUICK)
    assert expand(loaded) is expand(loaded) is loaded.cells


def test_device_auto_in_simulate_runs_its_cells(tmp_path, monkeypatch):
    """``simulate: {device: auto}`` validates and its cell runs (it failed every cell before)."""
    from tests.test_runner import scabench

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsimulate:\n  device: auto\n  studies:\n    gradients: {pairs_per_bin: 5, bins: 3}\n")
    (cell,) = expand(load_grid(path))
    assert cell.runtime == {"device": "auto"}
    out = tmp_path / "results"
    result = scabench(["run", "--grid", str(path), "--out", str(out), "--no-report"], {"COLUMNS": "200"}, monkeypatch)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((out / "cells" / cell.id / "record.json").read_text())
    assert record["status"] == "done", record
