"""Built-in detectors, end to end on CPU: it learns, it resumes exactly, it fails cleanly, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from scabench import detectors
from scabench.detectors import NonFiniteLossError, TrainConfig, load_checkpoint, train
from scabench.detectors import trainer as train_module

KEYS = [
    "epoch", "loss_box", "loss_obj", "loss_cls", "lr", "val_loss_box", "val_loss_obj", "val_loss_cls",
    "AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl", "P", "R", "fitness", "per_class", "seconds",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SCABENCH_CACHE", str(tmp_path_factory.getbasetemp() / "scabench-cache"))


def tiny(**kw) -> TrainConfig:
    """A run of a few seconds: 48 synthetic images at 64 px, 2 epochs."""
    base = dict(
        data="synthetic-shapes", train_size=48, val_size=16, img_size=64, width=0.25, epochs=2, batch_size=16,
        loss="sca", workers=0, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _without_seconds(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def test_short_training_learns(tmp_path):
    """yolov3-tiny x0.25 on 600 synthetic images at 128 px, 8 epochs of batch 16 with one step
    per batch (nominal_batch 16) and a 4x class gain (the reference's nc/80 scaling leaves 3
    classes almost untrained in a short run): AP50 clearly above chance (a blind detector scores
    about 0.005; this run reaches about 0.10) and rising over the epochs. About 50 s of CPU."""
    cfg = TrainConfig(
        data="synthetic-shapes", train_size=600, val_size=100, img_size=128, width=0.25, epochs=8, batch_size=16,
        nominal_batch=16, loss="sca", workers=1, device="cpu", hyp={"cls": 2.0},
    )  # fmt: skip
    out = tmp_path / "run"
    summary = train(cfg, out, progress=False)
    assert set(summary) == {
        "config", "metrics", "epochs", "params", "train_seconds", "images_per_second", "best_epoch", "best_fitness",
        "stopped_early", "val_images",
    }  # fmt: skip
    assert list(summary["metrics"]) == KEYS
    assert summary["config"] == cfg.model_dump() and summary["epochs"] == 8
    assert summary["params"] == detectors.count_parameters(detectors.build_model("yolov3-tiny", 3, 0.25))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 9)) and all(list(r) == KEYS for r in lines)
    assert summary["metrics"]["AP50"] > 0.05, summary["metrics"]
    assert lines[-1]["AP50"] > 4 * lines[0]["AP50"]
    assert lines[-1]["loss_box"] < lines[0]["loss_box"]

    # the checkpoint evaluates to the same numbers through `scabench val`
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    result = CliRunner().invoke(app, ["val", "--weights", str(out / "last.pt"), "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    val = json.loads(result.stdout)
    assert {k: val[k] for k in detectors.METRICS} == pytest.approx({k: summary["metrics"][k] for k in detectors.METRICS})

    # a finished run returns its summary at once; another config in the folder is refused
    assert train(cfg, out, progress=False) == summary
    with pytest.raises(ValueError, match="different config"):
        train(cfg.model_copy(update={"loss": "iou"}), out, progress=False)


@pytest.mark.parametrize("loss", ["sca", "iou+0.5*wiou-v3"])  # the second keeps a running mean in the checkpoint
def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch, loss):
    cfg = tiny(epochs=3, loss=loss)
    whole = train(cfg, tmp_path / "whole", progress=False)

    calls = {"n": 0}
    original = train_module._Run._check_finite

    def interrupt(self, *args, **kwargs):  # every iteration on CPU; stop in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(train_module._Run, "_check_finite", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module._Run, "_check_finite", original)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "cut" / "summary.json").exists()
    # a line a kill might leave behind for an unfinished epoch is dropped on resume
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "AP": 0.0}) + "\n")

    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert _without_seconds(resumed["metrics"]) == _without_seconds(whole["metrics"])
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [_without_seconds(r) for r in lines] == [_without_seconds(r) for r in ref]
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert "resume after epoch 1" in (tmp_path / "cut" / "train.log").read_text()
    assert str(a["loss_state"]) == str(b["loss_state"])


def test_non_finite_loss_stops_with_a_record(tmp_path, monkeypatch):
    original = detectors.loss.YoloLoss.__call__
    calls = {"n": 0}

    def poisoned(self, preds, targets):
        calls["n"] += torch.is_grad_enabled()  # training steps only, not the validation losses
        total, items = original(self, preds, targets)
        if calls["n"] >= 5:  # epoch 2 (3 iterations per epoch)
            total = total * float("nan")
        return total, items

    monkeypatch.setattr(detectors.loss.YoloLoss, "__call__", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 2 iteration 2"):
        train(tiny(), out, progress=False)
    failure = json.loads((out / "failure.json").read_text())
    assert failure["epoch"] == 2 and failure["iteration"] == 2 and failure["last_good_epoch"] == 1
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the last good epoch, intact
    assert not (out / "summary.json").exists()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_seeded_cpu_runs_repeat(tmp_path):
    a = train(tiny(epochs=1, loss="giou", obj_target="iou"), tmp_path / "a", progress=False)
    b = train(tiny(epochs=1, loss="giou", obj_target="iou"), tmp_path / "b", progress=False)
    assert _without_seconds(a["metrics"]) == _without_seconds(b["metrics"])


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo): rank 0 writes the files, both agree on the summary."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "scabench.bench.cli", "train", "--data", "synthetic-shapes", "--train-size", "32", "--val-size", "16",
        "--img-size", "64", "--width", "0.25", "--epochs", "2", "--batch-size", "8", "--device", "cpu",
        "--workers", "0", "--loss", "sca", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and list(summary["metrics"]) == KEYS
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["resolved"]["world_size"] == 2 and ckpt["epoch"] == 2
    assert "device cpu x2" in (out / "train.log").read_text()


def test_train_on_a_coco_folder_skipping_bad_data(tmp_path):
    """A user COCO folder (non-contiguous image and category ids, a 64x48 image size) with one
    annotation outside its image: bad_data='skip' trains, and the run's log counts the skip."""
    from PIL import Image, ImageDraw

    root = tmp_path / "coco"
    root.mkdir()
    images, anns = [], []
    rng = torch.Generator().manual_seed(0)
    for k in range(12):
        img = Image.new("RGB", (64, 48), (40, 40, 40))
        draw = ImageDraw.Draw(img)
        x, y = (int(v) for v in torch.randint(0, 30, (2,), generator=rng))
        draw.rectangle([x, y, x + 20, y + 14], fill=(220, 200, 30))
        img.save(root / f"im{k}.png")
        images.append({"id": 100 + k, "file_name": f"im{k}.png", "width": 64, "height": 48})
        anns.append({"id": 500 + k, "image_id": 100 + k, "category_id": 7 if k % 2 else 9, "bbox": [x, y, 21, 15], "area": 315, "iscrowd": 0})
    anns.append({"id": 999, "image_id": 100, "category_id": 7, "bbox": [50, 40, 30, 30], "area": 900, "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}]}
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(json.dumps(coco))
    with pytest.raises(detectors.BadDataError, match="annotation id 999"):
        train(tiny(data=str(root), epochs=1), tmp_path / "strict", progress=False)
    summary = train(tiny(data=str(root), epochs=1, bad_data="skip", batch_size=4), tmp_path / "run", progress=False)
    assert summary["epochs"] == 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipped 2 box outside image" in log and "annotation id 999" in log  # train and val splits
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["resolved"]["category_ids"] == [7, 9] and ckpt["resolved"]["names"] == ["a", "b"]


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """A real kill (SIGKILL) of a training process once epoch 1 is written; resuming gives the
    uninterrupted run's numbers, and the folder never holds a half-written file."""
    import signal
    import time

    cfg = tiny(epochs=3, train_size=96)
    out = tmp_path / "killed"
    code = (
        "import json, sys; from scabench.detectors import TrainConfig, train; "
        f"train(TrainConfig.model_validate(json.loads({json.dumps(cfg.model_dump_json())})), {str(out)!r}, progress=False)"
    )
    # the same thread count as this process: CPU results repeat for a fixed number of threads
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (out / "summary.json").exists() or proc.returncode == 0
    assert not list(out.glob(".*.tmp*")) or load_checkpoint(out / "last.pt")["epoch"] >= 1
    resumed = train(cfg, out, progress=False)
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert _without_seconds(resumed["metrics"]) == _without_seconds(whole["metrics"])
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


class _FirstStep(Exception):
    """Raised by the recording train_step to stop a run at its first batch."""


def _first_step(cfg: TrainConfig, out, monkeypatch) -> dict:
    """The model's weights, the batch and the assigned targets at the first training step."""
    seen = {}

    def record(model, criterion, images, targets, *args, **kwargs):
        seen["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seen["images"], seen["targets"] = images.clone(), targets.clone()
        raise _FirstStep

    monkeypatch.setattr(train_module, "train_step", record)
    with pytest.raises(_FirstStep):
        train(cfg, out, progress=False)
    return seen


def test_one_seed_is_one_pairing_across_losses(tmp_path, monkeypatch):
    """The paired design (issue 10): for one seed, every loss starts from the same weights and
    sees the same first batch with the same augmentation, so a per-seed difference between two
    losses measures the losses, not the draw. A different seed draws both anew."""
    iou = _first_step(tiny(loss="iou", seed=3), tmp_path / "iou", monkeypatch)
    sca = _first_step(tiny(loss="sca", seed=3, obj_target="iou"), tmp_path / "sca", monkeypatch)
    other = _first_step(tiny(loss="iou", seed=4), tmp_path / "other", monkeypatch)
    assert iou["weights"].keys() == sca["weights"].keys()
    assert all(torch.equal(iou["weights"][k], sca["weights"][k]) for k in iou["weights"])
    assert torch.equal(iou["images"], sca["images"]) and torch.equal(iou["targets"], sca["targets"])
    assert not torch.equal(iou["images"], other["images"])
    assert not all(torch.equal(iou["weights"][k], other["weights"][k]) for k in iou["weights"])


def test_recipe_options_adamw_close_mosaic_and_validation_interval(tmp_path):
    """optimizer adamw, close_mosaic and val_interval train end to end: rows of epochs that were
    not validated carry no AP (every 2nd epoch and the last are), and the summary always does."""
    cfg = tiny(epochs=5, optimizer="adamw", hyp={"lr0": 0.002, "momentum": 0.9}, close_mosaic=1, val_interval=2)
    summary = train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [("AP" in r) for r in lines] == [False, True, False, True, True]
    assert 0.0 <= summary["metrics"]["AP"] <= 1.0 and summary["config"]["optimizer"] == "adamw"
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["optimizer"]["param_groups"][0]["betas"][0] == pytest.approx(0.9)
