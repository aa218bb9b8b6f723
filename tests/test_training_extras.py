"""The training conveniences beside the benchmark (issue 13): P, R and AP per class, validation
losses, best.pt by fitness and early stopping, TensorBoard event files, the progress lines.
Trainings here are tiny (48 images at 64 px, a few seconds on the CPU)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from scabench.bench.local_executor import format_eta, grid_eta
from scabench.detectors import TrainConfig, build_model, load_checkpoint, train
from scabench.detectors import evaluate as ev
from scabench.detectors import trainer as train_module
from tests.test_detectors_training import _cache  # noqa: F401  (autouse: the shared synthetic-data cache)
from tests.test_detectors_training import tiny as _tiny


def tiny(**kw) -> TrainConfig:
    """The training tests' tiny run, 3 epochs (so that best.pt and patience have a choice)."""
    return _tiny(**{"epochs": 3, **kw})


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# -- P, R, per-class AP, fitness -------------------------------------------------------------


def test_precision_recall_and_per_class_rows_on_a_known_case():
    """Class a: two boxes found exactly (score 0.9), plus a detection on a crowd box (ignored,
    as pycocotools ignores it); class b: two boxes, no detection. At every confidence up to 0.9
    the mean F1 is (1 + 0) / 2, so P = R = (1 + 0) / 2; per class P, R, AP50 and AP are 1 and 0."""
    images = [{"id": i, "width": 100, "height": 100} for i in (1, 2)]
    boxes = {"a": [(1, [10, 10, 30, 30]), (2, [50, 50, 20, 40])], "b": [(1, [60, 10, 20, 20]), (2, [5, 60, 30, 30])]}
    anns = [{"id": 10 * c + k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for c, name in ((1, "a"), (2, "b")) for k, (i, b) in enumerate(boxes[name])]  # fmt: skip
    anns.append({"id": 99, "image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 1})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets = [{"image_id": i, "category_id": 1, "bbox": b, "score": 0.9} for i, b in boxes["a"]]
    dets.append({"image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 40], "score": 0.95})
    out = ev.evaluate_coco(gt, dets, details=True)
    assert out["P"] == pytest.approx(0.5) and out["R"] == pytest.approx(0.5)
    assert out["per_class"] == [
        {"class": "a", "images": 2, "instances": 2, "P": 1.0, "R": 1.0, "AP50": 1.0, "AP": 1.0},
        {"class": "b", "images": 2, "instances": 2, "P": 0.0, "R": 0.0, "AP50": 0.0, "AP": 0.0},
    ]
    assert {k: out[k] for k in ev.METRICS} == ev.evaluate_coco(gt, dets)  # the nine metrics are unchanged
    assert ev.fitness(out) == pytest.approx(0.1 * out["AP50"] + 0.9 * out["AP"])

    from scabench.bench.cli_train import _class_table  # what `scabench val` and `scabench train` print

    buffer = io.StringIO()
    Console(file=buffer, width=120).print(_class_table(out, images=2))
    lines = [line.replace("│", " ").split() for line in buffer.getvalue().splitlines()]
    assert ["all", "2", "4", "50.0", "50.0", "50.0", "50.0"] in lines and ["b", "2", "2", "0.0", "0.0", "0.0", "0.0"] in lines


def test_a_false_positive_above_the_best_threshold_lowers_precision_only():
    """One class, four boxes, three found (0.9, 0.8, 0.7) and one false positive at 0.95: the
    best F1 keeps every detection (recall 3/4), so P = 3/4 and R = 3/4 (pycocotools matches)."""
    images = [{"id": 1, "width": 200, "height": 200}]
    found = [[10, 10, 20, 20], [50, 50, 20, 20], [100, 100, 30, 30]]
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, b in enumerate([*found, [150, 10, 20, 20]])]  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in zip(found, (0.9, 0.8, 0.7))]
    dets.append({"image_id": 1, "category_id": 1, "bbox": [150, 150, 20, 20], "score": 0.95})
    out = ev.evaluate_coco(gt, dets, details=True)
    assert out["R"] == pytest.approx(0.75, abs=0.01) and out["P"] == pytest.approx(0.75, abs=0.01)


# -- validation losses: the training loss on the raw head outputs of the eval forward --------


def test_raw_head_outputs_are_the_training_layout_and_targets_the_unaugmented_labels(tmp_path):
    from scabench.detectors.config import HYP_SCRATCH
    from scabench.detectors.data import ImageStore, TrainSet, ValSet, collate_train, collate_val, load_dataset

    model = build_model("yolov3-tiny", 3, 0.25).eval()
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8).float() / 255
    with torch.no_grad(), ev.raw_head_outputs(model) as raw:
        model(images)
        model.detect.train()
        expected = model(images)  # the head alone in training mode: its raw outputs
        model.detect.eval()
    assert len(raw) == 4 and len(expected) == 2  # both forwards were heard, one tensor per level each
    assert all(torch.equal(a, b) for a, b in zip(raw[:2], expected))

    info = load_dataset("synthetic-shapes", train_size=8, val_size=8, splits=("val",))
    store = ImageStore(info.val.records, 64, info.problems)
    _, meta = collate_val([ValSet(store, 64)[i] for i in range(4)])
    _, labels = collate_train([TrainSet(store, 64, HYP_SCRATCH, augment_=False)[i] for i in range(4)])
    boxes_of = {r.image_id: (r.boxes, r.classes) for r in store.records}
    assert torch.allclose(ev.letterboxed_targets(meta, boxes_of, 64), labels, atol=1e-5)


# -- a run: metrics.jsonl, best.pt, summary, TensorBoard, the epoch lines ---------------------


def test_a_run_writes_val_losses_pr_per_class_best_and_tensorboard(tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(tiny(val_interval=2), out, progress=True)  # validated: epochs 2 and 3
    rows = _rows(out)
    validated = [r for r in rows if "AP" in r]
    assert [r["epoch"] for r in validated] == [2, 3]
    for row in validated:
        assert all(np.isfinite(row[k]) and row[k] > 0 for k in train_module.VAL_LOSS_KEYS)
        assert 0 <= row["P"] <= 1 and 0 <= row["R"] <= 1 and row["fitness"] == ev.fitness(row)
        assert [c["class"] for c in row["per_class"]] == ["rectangle", "ellipse", "triangle"]
        assert sum(c["instances"] for c in row["per_class"]) > 0
    assert not any(k in rows[0] for k in ("P", "fitness", "per_class", *train_module.VAL_LOSS_KEYS))

    best = max(validated, key=lambda r: r["fitness"])
    assert (summary["best_epoch"], summary["best_fitness"], summary["stopped_early"]) == (best["epoch"], best["fitness"], False)
    assert load_checkpoint(out / "best.pt")["epoch"] == best["epoch"]
    assert load_checkpoint(out / "last.pt")["best_fitness"] == best["fitness"]
    assert {"P", "R", "per_class", "fitness"} <= set(summary["metrics"]) and summary["val_images"] == 16

    scalars = _scalars(out / train_module.TENSORBOARD_DIR)
    for tag in ("train/box_loss", "train/obj_loss", "train/cls_loss", "lr/pg0", "lr/pg2"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
    for tag in ("val/box_loss", "metrics/AP", "metrics/AP50", "metrics/P", "metrics/R", "metrics/fitness"):
        assert [step for step, _ in scalars[tag]] == [2, 3], tag
    assert [v for _, v in scalars["train/box_loss"]] == pytest.approx([r["loss_box"] for r in rows])

    printed = capsys.readouterr().out  # not a terminal: the epoch lines, no live bar
    assert "epoch 2/3 box" in printed and " R " in printed and "it/s" not in printed


def test_patience_stops_early_and_a_resume_keeps_the_best(tmp_path, monkeypatch):
    """Fitness 0.5, 0.4, 0.3, ... (scripted): with patience 2 the run ends after epoch 3, the
    second validated epoch without a better fitness; best.pt is epoch 1. The run is cut while
    saving epoch 3, after its TensorBoard scalars: the resume starts from epoch 2's checkpoint
    with its best fitness, stops at the same place, and TensorBoard holds each epoch once."""
    fitness_of = {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1}
    validate = train_module._Run._validate

    def scripted(self, iou, with_losses=False):
        metrics = validate(self, iou, with_losses)
        return {**metrics, "fitness": fitness_of.get(len(self.history) + 1, 0.0)}

    checkpoint = train_module._Run._checkpoint

    def cut_at_epoch_3(self, epochs_done):
        if epochs_done == 3:
            raise KeyboardInterrupt
        return checkpoint(self, epochs_done)

    monkeypatch.setattr(train_module._Run, "_validate", scripted)
    monkeypatch.setattr(train_module._Run, "_checkpoint", cut_at_epoch_3)
    cfg, out = tiny(epochs=6, patience=2), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False)
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["best_epoch"], ckpt["best_fitness"]) == (2, 1, 0.5)

    monkeypatch.setattr(train_module._Run, "_checkpoint", checkpoint)
    summary = train(cfg, out, progress=False)
    assert (summary["epochs"], summary["stopped_early"], summary["best_epoch"], summary["best_fitness"]) == (3, True, 1, 0.5)
    assert [r["epoch"] for r in _rows(out)] == [1, 2, 3] and load_checkpoint(out / "best.pt")["epoch"] == 1
    assert "early stop after epoch 3: no better fitness in 2 validated epochs" in (out / "train.log").read_text()
    assert [step for step, _ in _scalars(out / train_module.TENSORBOARD_DIR)["metrics/fitness"]] == [1, 2, 3]
    assert train(cfg, out, progress=False) == summary  # finished: returned at once


def test_patience_is_off_by_default_and_in_every_shipped_grid():
    from pathlib import Path

    from scabench.bench.config import load_grid
    from scabench.bench.grid import expand

    assert TrainConfig().patience is None
    grids = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))
    assert grids
    for path in grids:
        for cell in expand(load_grid(path, check_trainer=False)):
            if cell.kind == "train":
                assert "patience" not in cell.config, path  # so the trainer's default, off, applies


# -- progress lines -----------------------------------------------------------------------------


def test_the_epoch_bar_shows_losses_instances_rate_and_eta():
    bar = train_module._progress(True)
    task = bar.add_task("epoch 1/3", total=4, **train_module._progress_fields(torch.device("cpu"), 64))
    train_module._show_batch(bar, task, torch.tensor([0.1, 0.2, 0.3]), 1, 57, torch.device("cpu"), fresh=True)
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(bar.make_tasks_table(bar.tasks))
    line = buffer.getvalue()
    assert "epoch 1/3 box 0.1000 obj 0.2000 cls 0.3000 inst   57 64px" in line and "1/4" in line and "it/s" in line


def test_grid_eta_from_the_finished_cells():
    assert grid_eta([], 5, [10.0], 2) is None and format_eta(None) == "ETA -"
    # mean 60 s: 3 waiting cells (180 s) + a running one 20 s in (40 s left), over 2 places
    assert grid_eta([50.0, 70.0], 3, [20.0], 2) == pytest.approx(110.0)
    assert grid_eta([60.0], 0, [90.0], 1) == 0.0  # a running cell past the mean counts nothing
    assert format_eta(3725.4) == "ETA 1:02:05"
