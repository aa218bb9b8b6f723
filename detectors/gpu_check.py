"""GPU check (prepared, run on a CUDA machine): :func:`run_gpu_check`.

1. yolov3-tiny (full width, 3 classes) at 640 px, batch 64, AMP + channels_last + the SCA box
   loss in float32, pinned-memory loader with persistent workers, EMA: a few hundred
   iterations of the trainer's :func:`detectors.optim.train_step` on synthetic-shapes. Reports
   training images/s through the real loader and with a batch held on the GPU (compute alone),
   and checks that the loss falls (mean of the last 50 iterations below the first 50). The
   published figure for this model is about 205 img/s on one V100 (300 epochs of COCO at
   640 px in about 2 days, REFERENCES 4).
2. ``detectors.train`` for two short epochs on CUDA (evaluation, checkpoint, summary), so the
   CUDA paths of the trainer itself run once.

Prints one JSON line with the numbers; returns 1 if the loss did not fall or a step failed,
2 without CUDA. Takes about 2-4 minutes on an H100 (most of it generating and decoding the data).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from scabench.detectors.config import HYP_SCRATCH, TrainConfig
from scabench.detectors.data import ImageStore, endless, load_dataset, train_loader
from scabench.detectors.speed import Step, seeded_train_step
from scabench.detectors.trainer import train

RAM_CACHE_BYTES = 16 * 2**30  # keep the 640 px images decoded in memory
WARMUP_ITERS = 20  # untimed iterations before the loop is timed


def run_gpu_check(
    *, iters: int = 300, batch: int = 64, img: int = 640, train_size: int = 2048, workers: int | None = None, skip_train: bool = False
) -> int:
    """Run both parts (``skip_train``: only part 1); ``workers`` default: CPUs - 2, at most 12."""
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    workers = min(12, max((os.cpu_count() or 4) - 2, 1)) if workers is None else workers
    torch.backends.cudnn.benchmark = True
    report: dict = {"device": torch.cuda.get_device_name(0), "img": img, "batch": batch, "workers": workers}

    t0 = time.perf_counter()
    info = load_dataset("synthetic-shapes", train_size=train_size, val_size=64)
    store = ImageStore(info.train.records, img, info.problems, threads=os.cpu_count() or 4, ram_cache_bytes=RAM_CACHE_BYTES)
    report["data_seconds"] = round(time.perf_counter() - t0, 1)
    loader = train_loader(store, dict(HYP_SCRATCH), batch, workers=workers, pin_memory=True, prefetch_factor=4, drop_last=True)
    step, optimizer = seeded_train_step("yolov3-tiny", info.num_classes, 1.0, img, "cuda", amp=True)
    batches = endless(loader)
    report.update(_loop(step, optimizer, batches, iters, batch))
    report["step_img_per_s"] = _compute_alone(step, next(batches), batch)
    report["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["published_v100_img_per_s"] = 205
    del loader

    ok = report["finite"] and report["loss_last50"] < report["loss_first50"]
    if not skip_train:
        report["train_fn"] = _train_once(img, batch, workers)
        ok = ok and "error" not in report["train_fn"]
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


def _loop(step: Step, optimizer: torch.optim.Optimizer, batches, iters: int, batch: int) -> dict:
    """Loader + step for ``iters`` timed iterations, lr ramped linearly over the first 50."""
    history = []
    for i in range(WARMUP_ITERS + iters):
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * min(1.0, (i + 1) / 50)
        if i == WARMUP_ITERS:
            torch.cuda.synchronize()
            timed_start = time.perf_counter()
        history.append(step(*next(batches)))
    torch.cuda.synchronize()
    loop_ips = iters * batch / (time.perf_counter() - timed_start)
    values = torch.stack(history).float().cpu()
    first, last = float(values[:50].mean()), float(values[-50:].mean())
    return {
        "loop_img_per_s": round(loop_ips, 1),
        "loss_first50": round(first, 4),
        "loss_last50": round(last, 4),
        "finite": bool(torch.isfinite(values).all()),
    }


def _compute_alone(step: Step, sample, batch: int) -> float:
    """Images/s of the step on one batch kept on the GPU (10 untimed, 50 timed)."""
    images, targets = (t.to("cuda") for t in sample)
    for _ in range(10):
        step(images, targets)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        step(images, targets)
    torch.cuda.synchronize()
    return round(50 * batch / (time.perf_counter() - t0), 1)


def _train_once(img: int, batch: int, workers: int) -> dict:
    """``detectors.train`` for 2 epochs of 512 images on CUDA: its speed and AP50, or the error."""
    cfg = TrainConfig(
        data="synthetic-shapes", train_size=512, val_size=64, img_size=img, epochs=2, batch_size=batch,
        loss="sca", device="cuda", workers=workers,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            summary = train(cfg, Path(tmp) / "run", progress=False)
        except Exception as exc:  # noqa: BLE001 - report and fail
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "images_per_second": summary["images_per_second"],
        "AP50": round(summary["metrics"]["AP50"], 4),
        "loss_box": summary["metrics"]["loss_box"],
    }
