"""Forward + backward time of every registered loss on N box pairs, as a ratio to torchvision's
CIoU measured in the same run (``scabench bench-losses`` prints it).

Timings interleave the candidates round by round and keep each one's median, so a busy
machine slows all of them alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torchvision import ops

from scabench import losses
from scabench.devices import resolve_device

BASELINES: dict[str, Callable] = {
    "torchvision.giou": ops.generalized_box_iou_loss,
    "torchvision.diou": ops.distance_box_iou_loss,
    "torchvision.ciou": ops.complete_box_iou_loss,
}


def random_boxes(n: int, device: str | torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random xyxy (pred, target) pairs with corners in [0, 600) and sides in [1, 101)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    xy = torch.rand(2, n, 2, generator=g) * 500
    wh = torch.rand(2, n, 2, generator=g) * 100 + 1
    boxes = torch.cat([xy, xy + wh], -1).to(device)
    return boxes[0], boxes[1]


def _time_once(fn: Callable, pred: torch.Tensor, target: torch.Tensor) -> float:
    p = pred.detach().requires_grad_(True)
    if p.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(p, target).sum().backward()
    if p.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(fn: Callable, pred: torch.Tensor, target: torch.Tensor, repeats: int = 5) -> float:
    """Median forward+backward seconds of ``fn`` after one warm-up call."""
    _time_once(fn, pred, target)
    return statistics.median(_time_once(fn, pred, target) for _ in range(repeats))


def measure(
    names: list[str] | None = None, *, pairs: int = 1_000_000, repeats: int = 7, device: str = "cpu"
) -> list[dict]:
    """Median forward+backward ms per candidate (``names``: default every registered loss, plus
    torchvision's GIoU/DIoU/CIoU) and its ratio to torchvision's CIoU, timed round by round.

    ``device`` is ``auto | cpu | cuda[:N]``; ValueError if it names a device absent here.
    """
    pred, target = random_boxes(pairs, resolve_device(device))
    candidates = dict(BASELINES)
    candidates.update({name: losses.get_loss(name) for name in (names or losses.available())})
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for name, fn in candidates.items():  # warm-up
        _time_once(fn, pred, target)
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(_time_once(fn, pred, target))
    baseline = statistics.median(times["torchvision.ciou"])
    return [
        {"loss": name, "ms": 1e3 * statistics.median(t), "vs_torchvision_ciou": statistics.median(t) / baseline}
        for name, t in times.items()
    ]
