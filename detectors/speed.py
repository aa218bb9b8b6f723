"""CPU speed of the built-in detectors: :func:`measure_speed` (a benchmark, not a test).

For yolov3-tiny at width 0.25 / 128 px and at width 1.0 / 320 px (batch 32 and 8) on
synthetic-shapes it measures images per second of

- the data loader alone (mosaic, affine, HSV, flip; ``workers`` processes),
- one training step alone (the trainer's :func:`detectors.optim.train_step`: forward, loss,
  backward, SGD step, EMA) on a batch held in memory,
- the whole loop (loader + step), as the trainer runs it,

and the ratios loader / step (how much headroom the loader has: it must be well above 1) and
loop / step (what the loader costs the loop). REFERENCES 8 quotes about 230 img/s (0.25 / 128)
and about 8 img/s (1.0 / 320) for forward + backward on this 2-core machine.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch
from torch import Tensor

from scabench import losses
from scabench.detectors.config import HYP_SCRATCH
from scabench.detectors.data import ImageStore, endless, load_dataset, train_loader
from scabench.detectors.loss import YoloLoss
from scabench.detectors.models import build_model
from scabench.detectors.optim import ModelEMA, sgd, train_step

CASES = [("yolov3-tiny", 0.25, 128, 32), ("yolov3-tiny", 1.0, 320, 8)]

Step = Callable[[Tensor, Tensor], Tensor]


def seeded_train_step(
    detector: str, num_classes: int, width: float, img_size: int, device: str | torch.device = "cpu", *, amp: bool = False
) -> tuple[Step, torch.optim.Optimizer]:
    """``step(images, targets) -> loss``: the trainer's step (SCA box loss, hyp.scratch SGD, EMA,
    channels_last, AMP when ``amp``) on a model seeded with 0; and its optimizer (for schedules)."""
    torch.manual_seed(0)
    model = build_model(detector, num_classes, width).to(device).to(memory_format=torch.channels_last).train()
    hyp = dict(HYP_SCRATCH)
    criterion = YoloLoss(losses.get_loss("sca"), model.detect.anchors.clone(), num_classes, hyp, img_size).to(device)
    optimizer = sgd(model, hyp, hyp["weight_decay"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    ema = ModelEMA(model)

    def step(images: Tensor, targets: Tensor) -> Tensor:
        return train_step(model, criterion, images, targets, optimizer, scaler, ema=ema, amp=amp)[0]

    return step, optimizer


def loader_speed(loader, batches: int) -> float:
    """Images per second of ``batches`` batches (after the first, which starts the workers)."""
    it = endless(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def step_speed(step: Step, batch: tuple[Tensor, Tensor], iters: int) -> float:
    """Images per second of ``iters`` steps on one batch held in memory (after one warm-up step)."""
    step(*batch)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(*batch)
    return batch[0].shape[0] * iters / (time.perf_counter() - t0)


def loop_speed(step: Step, loader, iters: int) -> float:
    """Images per second of loader + step, as the trainer's loop (after one warm-up step)."""
    it = endless(loader)
    step(*next(it))
    t0 = time.perf_counter()
    n = 0
    for _ in range(iters):
        images, targets = next(it)
        step(images, targets)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def measure_speed(*, iters: int = 10, workers: int = 1, train_size: int = 512, quick: bool = False) -> list[dict]:
    """One row per case (``quick``: only the 0.25 / 128 px one).

    ``iters`` timed training iterations per case, ``workers`` loader processes,
    ``train_size`` synthetic-shapes images loaded. Rows: case, loader, step, loop (img/s),
    loader/step, loop/step, and the machine's load average after the case (other processes
    slow these numbers down). Threads: ``torch.get_num_threads()``.
    """
    info = load_dataset("synthetic-shapes", train_size=train_size, val_size=16)
    hyp = dict(HYP_SCRATCH)
    rows = []
    for detector, width, img_size, batch in CASES[:1] if quick else CASES:
        store = ImageStore(info.train.records, img_size, info.problems)
        loader = train_loader(store, hyp, batch, workers=workers)
        load = loader_speed(loader, max(iters, 10))
        step, _ = seeded_train_step(detector, info.num_classes, width, img_size)
        compute = step_speed(step, next(iter(train_loader(store, hyp, batch))), iters)
        loop = loop_speed(step, loader, iters)
        del loader
        rows.append(
            {"case": f"{detector} x{width} {img_size}px b{batch}", "loader": load, "step": compute, "loop": loop,
             "loader/step": load / compute, "loop/step": loop / compute, "load_average": os.getloadavg()[0]}
        )  # fmt: skip
    return rows
