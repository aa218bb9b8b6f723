"""The corner vs centre study: IoU + corner alignment vs IoU + centre alignment (SCALoss Fig. 1 right).

``iou+cd`` (corner) and ``iou+center`` (centre): a batch of starts at IoU exactly
``start_iou`` (0.05), plain gradient descent ``B <- B - lr dL/dB`` in (x, y, w, h) for 1500
steps, mean IoU per step. Starts (:func:`corner_center_starts`): targets of area 1 with the 7
aspect ratios; the prediction has one of the 7 aspect ratios and area 0.5, 1 or 2, and is
pushed from the target centre along a random direction until its IoU is ``start_iou``
(bisection). Step size ``lr = 0.01``: with a fixed step, boxes that have arrived bounce around
the target (the corner distance is a norm, its gradient does not vanish at 0), so the mean
IoU flattens with small wiggles instead of creeping to 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchvision.ops import box_convert

from scabench.bench.studies.defaults import (
    CORNER_CENTER_DTYPE,
    CORNER_CENTER_ITERATIONS,
    CORNER_CENTER_LOSSES,
    CORNER_CENTER_LR,
    DEVICE,
    DIRECTIONS,
    MAX_START_IOU,
    SEED,
    START_IOU,
    VARIANT_NAMES,
)
from scabench.bench.studies.inputs import LossSpecs, ProgressFn, as_device, as_dtype, positive, resolve_losses
from scabench.bench.studies.protocol import ASPECT_RATIOS, state_to_xyxy
from scabench.losses import BoxLoss
from scabench.losses.iou import box_iou_pairwise

START_AREAS = (0.5, 1.0, 2.0)  # prediction area / target area


def _place_at_iou(target: Tensor, wh: Tensor, direction: Tensor, iou: float, steps: int = 80) -> Tensor:
    """Centres of boxes of size ``wh`` pushed from the target centre along ``direction`` until
    their IoU with ``target`` (cx, cy, w, h) equals ``iou`` (bisection; IoU falls with distance)."""
    target_xyxy = box_convert(target, "cxcywh", "xyxy")

    def iou_at(d: Tensor) -> Tensor:
        centre = target[:, :2] + d[:, None] * direction
        return box_iou_pairwise(box_convert(torch.cat((centre, wh), dim=-1), "cxcywh", "xyxy"), target_xyxy, eps=0.0)

    lo = torch.zeros(len(target), dtype=torch.float64)
    hi = (target[:, 2:] + wh).sum(-1)  # far enough to be disjoint along any direction
    if bool((iou_at(lo) < iou).any()):
        raise ValueError(f"some start shapes cannot reach IoU {iou} even when concentric")
    for _ in range(steps):
        mid = (lo + hi) / 2
        above = iou_at(mid) > iou
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return target[:, :2] + ((lo + hi) / 2)[:, None] * direction


def corner_center_starts(
    *, start_iou: float = START_IOU, directions: int = DIRECTIONS, seed: int = SEED
) -> tuple[Tensor, Tensor]:
    """(pred, target) [N, 4] in (cx, cy, w, h), float64: the documented batch of starts.

    Targets: area 1 at the origin, the 7 aspect ratios. Predictions: the 7 aspect ratios x
    areas {0.5, 1, 2} x ``directions`` random directions (seeded), each placed along its
    direction at IoU exactly ``start_iou``. N = 7 x 7 x 3 x directions (1176 by default).
    """
    if not 0 < start_iou < MAX_START_IOU:
        raise ValueError(
            f"start_iou must be in (0, {MAX_START_IOU}) so that every start shape reaches it, got {start_iou}"
        )
    directions = positive("directions", directions)
    ratios = torch.tensor(ASPECT_RATIOS, dtype=torch.float64)
    areas = torch.tensor(START_AREAS, dtype=torch.float64)
    rt, rp, ap, _ = torch.meshgrid(ratios, ratios, areas, torch.arange(directions, dtype=torch.float64), indexing="ij")
    rt, rp, ap = rt.reshape(-1), rp.reshape(-1), ap.reshape(-1)
    target = torch.stack((torch.zeros_like(rt), torch.zeros_like(rt), rt.sqrt(), 1 / rt.sqrt()), dim=-1)
    wh = torch.stack(((ap * rp).sqrt(), (ap / rp).sqrt()), dim=-1)
    generator = torch.Generator().manual_seed(int(seed))
    angle = 2 * math.pi * torch.rand(len(rt), generator=generator, dtype=torch.float64)
    direction = torch.stack((angle.cos(), angle.sin()), dim=-1)
    centre = _place_at_iou(target, wh, direction, start_iou)
    return torch.cat((centre, wh), dim=-1), target


def corner_center_starts_count(directions: int = DIRECTIONS) -> int:
    """How many starts :func:`corner_center_starts` makes: 7 x 7 x 3 x ``directions``."""
    return len(ASPECT_RATIOS) ** 2 * len(START_AREAS) * directions


def _descend(
    loss: BoxLoss, state: Tensor, target: Tensor, iterations: int, lr: float, progress: ProgressFn | None, label: str
) -> Tensor:
    """Mean IoU at t = 0 .. iterations of ``state <- state - lr dL/dstate`` ([4, N] cx cy w h)."""
    ious = torch.empty(iterations + 1, dtype=torch.float64, device=state.device)
    for t in range(iterations + 1):
        leaf = state.detach().requires_grad_(True)
        pred = state_to_xyxy(leaf)
        with torch.no_grad():
            ious[t] = box_iou_pairwise(pred, target).to(torch.float64).mean()
        if t == iterations:
            break
        (grad,) = torch.autograd.grad(loss(pred, target).sum(), leaf)
        state = (state - lr * grad).detach()
        if progress is not None and (t + 1) % 50 == 0:
            progress(label, (t + 1) / iterations)
    return ious


def _descend_fast(loss: BoxLoss, state: Tensor, target: Tensor, iterations: int, lr: float,
                  progress: ProgressFn | None, label: str, engine: str) -> Tensor:
    """:func:`~scabench.bench.studies.compiled.descend_compiled` unless ``engine`` is autograd
    or (under auto) the step cannot be compiled; then :func:`_descend`."""
    from scabench.bench.studies import compiled
    from scabench.bench.studies.convergence import warn_eager_once

    if engine != "autograd":
        try:
            return compiled.descend_compiled(loss, state, target, iterations, lr, progress, label)
        except compiled.CompileUnavailable as error:
            if engine == "compiled":
                raise
            warn_eager_once(str(error))
    return _descend(loss, state, target, iterations, lr, progress, label)


def simulate_corner_center(
    losses: LossSpecs = CORNER_CENTER_LOSSES,
    *,
    iterations: int = CORNER_CENTER_ITERATIONS,
    lr: float = CORNER_CENTER_LR,
    start_iou: float = START_IOU,
    directions: int = DIRECTIONS,
    seed: int = SEED,
    device: str | torch.device = DEVICE,
    dtype: str | torch.dtype = CORNER_CENTER_DTYPE,
    progress: ProgressFn | None = None,
    engine: str = "auto",
) -> pd.DataFrame:
    """Mean IoU per step of plain gradient descent from IoU ``start_iou``: variant, iteration, iou.

    ``variant`` is ``corner`` for ``iou+cd``, ``center`` for ``iou+center``, else the loss name.
    ``engine``: ``auto`` (compiled steps, :mod:`.compiled`, else eager with a warning),
    ``compiled`` or ``autograd`` (eager). The compiled loop pays off once inductor's cache is
    warm (1500 steps: about 5 s eager per loss).
    """
    if engine not in ("auto", "compiled", "autograd"):
        raise ValueError(f"engine must be auto, compiled or autograd, got {engine!r}")
    refs = resolve_losses(losses)
    iterations = positive("iterations", iterations)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive, got {lr}")
    dev, dt = as_device(device), as_dtype(dtype)
    pred0, target_c = corner_center_starts(start_iou=start_iou, directions=directions, seed=seed)
    target = box_convert(target_c, "cxcywh", "xyxy").to(dtype=dt, device=dev)
    frames = []
    for ref in refs:
        state = pred0.T.contiguous().to(dtype=dt, device=dev)  # [4, N]
        ious = _descend_fast(ref.build(), state, target, iterations, lr, progress, ref.label, engine)
        if progress is not None:
            progress(ref.label, 1.0)
        variant = VARIANT_NAMES.get(ref.label, ref.label)
        steps = np.arange(iterations + 1)
        frames.append(pd.DataFrame({"variant": variant, "iteration": steps, "iou": ious.cpu().numpy()}))
    return pd.concat(frames, ignore_index=True)
