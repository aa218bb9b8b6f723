"""Synthetic-box studies: how a loss steers a box before anyone trains a detector.

Three studies, each a function that computes without IO and returns tidy data, plus
:func:`run_study` that writes the CSVs (atomically) and the figures beside them:

``convergence`` (:func:`simulate_convergence`)
    The DIoU paper's simulation (Zheng et al., AAAI 2020, ``test_1715k.m``): 7 targets of area 1
    centred at (10, 10) with aspect ratios 1/4 ... 4; anchor centres uniform in the disc of
    radius 3 around (10, 10) (r = 3 sqrt(u), theta = 2 pi v, as the MATLAB code draws them);
    at every centre, anchors of area k in {0.5, 0.67, 0.75, 1, 1.33, 1.5, 2} times the same 7
    aspect ratios: ``points x 343`` regression cases (1,715,000 at 5000 points). Each case is
    regressed for T = 200 steps ``B <- B - eta_t (2 - IoU(B, G)) dL/dB`` in (x, y, w, h), with
    eta = 0.1 for t <= 160, 0.01 for t <= 180, 0.001 after, and the *exact* gradient of the
    chosen loss (the MATLAB code uses hand-written gradients, see below).
    E(t) = sum over cases of |dx| + |dy| + |dw| + |dh| after step t (t = 0 is the start).
    The state is float32 by default (``dtype="float64"`` on request); sums are float64.

``gradients`` (:func:`simulate_gradients`)
    Mean L2 norm of dL/d(pred) (pred in xyxy) per IoU bin, the SCALoss paper's Fig. 1 left.
    Pairs (scale-normalised, see :func:`gradient_pairs`): target of area 1 at the origin with
    aspect ratio log-uniform in [1/4, 4]; the prediction moves each side of the target by
    ``s * n * (target width or height)``, n ~ N(0, 1) per side, s log-uniform in [0.01, 2];
    candidates are drawn until every IoU bin (and the disjoint bin, IoU = 0) holds
    ``pairs_per_bin`` pairs.

``corner-center`` (:func:`simulate_corner_center`)
    IoU + corner alignment (``iou+cd``) vs IoU + centre alignment (``iou+center``), the SCALoss
    paper's Fig. 1 right: a batch of starts at IoU exactly ``start_iou`` (0.05), plain
    gradient descent ``B <- B - lr dL/dB`` in (x, y, w, h) for 1500 steps, mean IoU per step.
    Starts (:func:`corner_center_starts`): targets of area 1 with the 7 aspect ratios; the
    prediction has one of the 7 aspect ratios and area 0.5, 1 or 2, and is pushed from the
    target centre along a random direction until its IoU is ``start_iou`` (bisection).
    Step size ``lr = 0.01``: with a fixed step, boxes that have arrived bounce around the
    target (the corner distance is a norm, its gradient does not vanish at 0), so the mean
    IoU flattens with small wiggles instead of creeping to 1.

Where the MATLAB code (``Zzh-tju/DIoU``, ``simulation experiment/``) differs from exact
gradients, which we use: ``In.m``/``dUbox.m`` keep the intersection unclamped, so for disjoint
boxes GIoU's union and its gradient are wrong (with that union our GIoU stalls at ~0.22 E(0),
as the paper's GIoU curve does; with the exact one it converges); ``to_xywh.m`` takes
dL/dw = dL/dr - dL/dl (twice the chain rule's); ``dDIOU.m`` flips the sign of the
enclosing-box term and mixes the width and height derivatives; ``dCIOU.m`` drops the
1/(w^2 + h^2) of the aspect term's gradient (as the CIoU paper recommends).

Speed. The convergence study is the hot loop (1,715,000 cases x 200 steps per loss). Any
loss runs on the generic path (``engine="autograd"``): plain PyTorch autograd, one pass over
all cases per step, on any device. For the built-in ``iou, giou, diou, ciou, sca`` on a CPU,
``engine="auto"`` uses a fused kernel instead: their gradients written out by hand (checked
against autograd in the tests) in a small C file compiled once with the system C compiler and
cached under ``~/.cache/scabench/kernels`` (``SCABENCH_CACHE_DIR`` moves it). The kernel
keeps each case's box in registers for all T steps, so it reads the state once instead of T
times; lanes are anchor points sorted by radius, and the IoU kernel stops a lane group as soon
as none of its boxes moves (all disjoint: the rest would repeat exactly). Results match the
generic engine to rounding (tested). ``python -m bench.simulate --bench`` prints per-loss
times against a memory-copy floor, fresh (compiling) and cached.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from scabench.results import atomic_path
from torch import Tensor

from scabench import losses as loss_zoo
from scabench.losses.iou import box_iou_pairwise

ProgressFn = Callable[[str, float], None]
"""``progress(label, fraction_done)``: called as work finishes (fraction in [0, 1])."""

STUDIES = ("convergence", "gradients", "corner-center")

# The DIoU protocol (REFERENCES section 7; test_1715k.m).
ASPECT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 1.0, 2.0, 3.0, 4.0)  # w / h
ANCHOR_SCALES = (0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0)  # anchor area / target area
CENTER = (10.0, 10.0)
RADIUS = 3.0
CASES_PER_POINT = len(ASPECT_RATIOS) ** 3  # 7 targets x 7 scales x 7 ratios = 343
DEFAULT_POINTS = 5000
DEFAULT_ITERATIONS = 200
DEFAULT_SCHEDULE = "0.1:160,0.01:180,0.001"

CONVERGENCE_LOSSES = ("iou", "giou", "diou", "ciou", "sca")
GRADIENT_LOSSES = ("sca", "so", "giou", "diou", "iou")  # the curves of the paper's Fig. 1 left
CORNER_CENTER_LOSSES = ("iou+cd", "iou+center")
VARIANT_NAMES = {"iou+cd": "corner", "iou+center": "center"}

KERNEL_LOSSES = ("iou", "giou", "diou", "ciou", "sca")
ENGINES = ("auto", "kernel", "autograd")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ======================================================================================
# Small helpers


@dataclass(frozen=True)
class LossRef:
    """A loss as a study names it: ``label`` (the CSV's ``loss`` column), registry name, params."""

    label: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def build(self) -> loss_zoo.BoxLoss:
        return loss_zoo.get_loss(self.name, **dict(self.params))


LossSpecs = str | Sequence[str | tuple[str, dict[str, Any]] | dict[str, Any] | LossRef]


def _label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
    return f"{name}({shown})"


def resolve_losses(losses: LossSpecs) -> list[LossRef]:
    """Loss specs -> :class:`LossRef`, each checked with :func:`losses.get_loss`.

    Accepts ``"a,b,c"``, or a list whose entries are a name (registered, composed such as
    ``iou+cd``, or ``module:function``), a ``(name, params)`` pair or ``{"name", "params"}``.
    Raises ValueError naming the bad entry and listing the registered names.
    """
    entries: list[Any] = [n.strip() for n in losses.split(",")] if isinstance(losses, str) else list(losses)
    refs = []
    for entry in entries:
        if isinstance(entry, LossRef):
            refs.append(entry)
            continue
        if isinstance(entry, dict):
            name, params = entry.get("name"), dict(entry.get("params") or {})
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            name, params = entry[0], dict(entry[1] or {})
        else:
            name, params = entry, {}
        if not isinstance(name, str):
            raise ValueError(f"cannot read loss entry {entry!r}: give a name or (name, params)")
        name = name.strip()
        if not name:
            continue
        try:
            loss_zoo.get_loss(name, **params)
        except (KeyError, ValueError, TypeError) as error:
            message = error.args[0] if error.args else str(error)
            raise ValueError(str(message)) from None
        refs.append(LossRef(_label(name, params), name, tuple(sorted(params.items()))))
    if not refs:
        raise ValueError("no loss given; available: " + ", ".join(loss_zoo.available()))
    labels = [r.label for r in refs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"losses repeat in {labels}")
    return refs


def parse_losses(losses: LossSpecs) -> list[str]:
    """The labels of :func:`resolve_losses` (``"a,b"`` -> ``["a", "b"]``)."""
    return [r.label for r in resolve_losses(losses)]


def parse_schedule(schedule: str | Sequence[tuple[float, int | None]]) -> list[tuple[float, int | None]]:
    """``"0.1:160,0.01:180,0.001"`` -> [(0.1, 160), (0.01, 180), (0.001, None)].

    Each ``lr:until`` applies to steps t <= until (t counts from 1, as the MATLAB loops do);
    the last entry, with no ``:until``, applies to every later step.
    """
    if not isinstance(schedule, str):
        parts = [(float(lr), None if until is None else int(until)) for lr, until in schedule]
    else:
        parts = []
        for item in schedule.split(","):
            item = item.strip()
            lr, sep, until = item.partition(":")
            try:
                parts.append((float(lr), int(until) if sep else None))
            except ValueError:
                raise ValueError(
                    f"cannot read schedule entry {item!r} in {schedule!r}; write 'lr:until,...,lr', "
                    f"e.g. {DEFAULT_SCHEDULE!r}"
                ) from None
    if not parts:
        raise ValueError("empty schedule")
    bounds = [u for _, u in parts[:-1]]
    if any(u is None for u in bounds) or parts[-1][1] is not None:
        raise ValueError(f"schedule {schedule!r}: every entry but the last needs ':until', the last none")
    if any(b <= a for a, b in zip(bounds, bounds[1:])) or (bounds and bounds[0] < 1):
        raise ValueError(f"schedule {schedule!r}: 'until' steps must increase from 1")
    if any(not math.isfinite(lr) or lr < 0 for lr, _ in parts):
        raise ValueError(f"schedule {schedule!r}: learning rates must be finite and >= 0")
    return parts


def schedule_rates(schedule: str | Sequence[tuple[float, int | None]], iterations: int) -> list[float]:
    """The step size of each step t = 1 .. iterations."""
    parts = parse_schedule(schedule)
    rates = []
    for t in range(1, iterations + 1):
        rates.append(next(lr for lr, until in parts if until is None or t <= until))
    return rates


def xywh_to_xyxy(state: Tensor) -> Tensor:
    """[4, ...] (x, y, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    x, y, w, h = state.unbind(0)
    return torch.stack((x - w / 2, y - h / 2, x + w / 2, y + h / 2), dim=-1)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")
    return path


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ======================================================================================
# The convergence study: cases


@dataclass(frozen=True)
class ConvergenceCases:
    """The regression cases of the DIoU protocol, in float64 on the CPU.

    Case (p, t, a) is anchor point p, target t (7) and anchor a = (scale, ratio) (49), the
    MATLAB code's order. ``points``: [P, 2] centres; ``targets``: [7, 4] (cx, cy, w, h);
    ``anchors``: [7, 49, 2] (w, h) of the anchors of each target.
    """

    points: Tensor
    targets: Tensor
    anchors: Tensor

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_cases(self) -> int:
        return self.n_points * int(self.anchors.shape[0] * self.anchors.shape[1])

    def __len__(self) -> int:
        return self.n_cases

    def start_state(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Tensor:
        """[4, P, 7, 49]: (x, y, w, h) of every anchor, structure of arrays."""
        P, (nt, na) = self.n_points, self.anchors.shape[:2]
        x = self.points[:, 0].view(P, 1, 1).expand(P, nt, na)
        y = self.points[:, 1].view(P, 1, 1).expand(P, nt, na)
        w = self.anchors[..., 0].expand(P, nt, na)
        h = self.anchors[..., 1].expand(P, nt, na)
        return torch.stack((x, y, w, h)).to(dtype=dtype, device=device).contiguous()

    def target_state(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Tensor:
        """[4, 1, 7, 1]: (cx, cy, w, h) of the targets, broadcastable against the state."""
        return self.targets.T.reshape(4, 1, -1, 1).to(dtype=dtype, device=device)

    def target_boxes(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Tensor:
        """[P, 7, 49, 4] xyxy targets (an expanded view, no copy), computed in float64."""
        cx, cy, w, h = self.targets.unbind(-1)
        xyxy = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)
        xyxy = xyxy.to(dtype=dtype, device=device).view(1, -1, 1, 4)
        return xyxy.expand(self.n_points, -1, self.anchors.shape[1], 4)


def sample_points(points: int, seed: int = 0) -> Tensor:
    """[points, 2] centres uniform in the radius-3 disc around (10, 10), float64, seeded."""
    points = _positive("points", points)
    generator = torch.Generator().manual_seed(int(seed))
    u = torch.rand(2, points, generator=generator, dtype=torch.float64)
    r = RADIUS * torch.sqrt(u[0])
    theta = 2 * math.pi * u[1]
    return torch.stack((CENTER[0] + r * torch.cos(theta), CENTER[1] + r * torch.sin(theta)), dim=-1)


def convergence_cases(points: int = DEFAULT_POINTS, seed: int = 0) -> ConvergenceCases:
    """The ``points x 343`` cases of the DIoU protocol for a seed."""
    sqrt_r = torch.tensor(ASPECT_RATIOS, dtype=torch.float64).sqrt()
    # Targets: area 1, w / h = ratio -> w = sqrt(ratio), h = 1 / sqrt(ratio).
    targets = torch.stack(
        (torch.full_like(sqrt_r, CENTER[0]), torch.full_like(sqrt_r, CENTER[1]), sqrt_r, 1 / sqrt_r), dim=-1
    )
    sqrt_k = torch.tensor(ANCHOR_SCALES, dtype=torch.float64).sqrt()
    # Anchors: area k * (target area = 1), the 7 ratios; the same for every target.
    aw = (sqrt_k[:, None] * sqrt_r[None, :]).reshape(-1)
    ah = (sqrt_k[:, None] / sqrt_r[None, :]).reshape(-1)
    anchors = torch.stack((aw, ah), dim=-1).expand(len(ASPECT_RATIOS), -1, 2).contiguous()
    return ConvergenceCases(sample_points(points, seed), targets, anchors)


def start_error(cases: ConvergenceCases) -> float:
    """E(0) in float64: sum over cases of |x - cx| + |y - cy| + |w - gw| + |h - gh|."""
    state = cases.start_state(torch.float64)
    return float((state - cases.target_state(torch.float64)).abs().sum())


# ======================================================================================
# The convergence study: the generic engine (plain autograd, any loss, any device)


def _point_errors(state: Tensor, target: Tensor) -> Tensor:
    """Per anchor point, sum of |dx| + |dy| + |dw| + |dh| over its cases, in float64."""
    err = (state[0] - target[0]).abs() + (state[1] - target[1]).abs()
    err = err + (state[2] - target[2]).abs() + (state[3] - target[3]).abs()
    return err.to(torch.float64).sum(dim=(1, 2))


def _run_autograd(
    loss: loss_zoo.BoxLoss,
    cases: ConvergenceCases,
    rates: Sequence[float],
    *,
    dtype: torch.dtype,
    device: torch.device,
    progress: ProgressFn | None = None,
    label: str = "",
) -> np.ndarray:
    """[P, T + 1] per-point errors, one autograd pass over every case per step."""
    state = cases.start_state(dtype, device)
    target_c = cases.target_state(dtype, device)
    target = cases.target_boxes(dtype, device)
    out = torch.empty(cases.n_points, len(rates) + 1, dtype=torch.float64, device=device)
    out[:, 0] = _point_errors(state, target_c)
    for t, eta in enumerate(rates):
        leaf = state.detach().requires_grad_(True)
        pred = xywh_to_xyxy(leaf)
        (grad,) = torch.autograd.grad(loss(pred, target).sum(), leaf)
        with torch.no_grad():
            iou = box_iou_pairwise(pred.detach(), target, eps=loss.eps)
            state = state - (eta * (2 - iou)) * grad
        out[:, t + 1] = _point_errors(state, target_c)
        if progress is not None:
            progress(label, (t + 1) / len(rates))
    return out.cpu().numpy()


# ======================================================================================
# The convergence study: the fused CPU kernel for the built-in five


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be built or used here (no C compiler, other device, ...)."""


_C_PRELUDE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* d min(a, b) / d a and d max(a, b) / d a as torch.minimum / torch.maximum: ties share 1/2. */
#define DMIN(a, b) ((a) < (b) ? 1 : ((a) == (b) ? 0.5f : 0))
#define DMAX(a, b) ((a) > (b) ? 1 : ((a) == (b) ? 0.5f : 0))

/* Single-precision arctangent (Cephes atanf: range reduction, degree-9 odd polynomial;
   relative error below 2e-7), branch-free so that the lane loop vectorises. */
static inline float atan_f32(float x) {
    const float ax = fabsf(x);
    const int big = ax > 2.414213562373095f, mid = ax > 0.4142135623730950f;
    const float num = big ? -1.0f : (mid ? ax - 1.0f : ax);
    const float den = big ? ax : (mid ? ax + 1.0f : 1.0f);
    const float xr = num / den;
    const float y0 = big ? 1.5707963267948966f : (mid ? 0.7853981633974483f : 0.0f);
    const float z = xr * xr;
    const float r = y0 + ((((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z
                          - 3.33329491539e-1f) * z * xr + xr);
    return x < 0 ? -r : r;
}
"""

# One function per (loss, precision). Lanes are anchor points: a block of LANES points runs
# every (target, anchor) case for all T steps with the boxes in registers; per-point error
# sums go to out[p, t] in double. The shared part computes IoU, the enclosing box and the
# reverse-mode adjoints of x1..y2 (as torch's autograd: clamp passes gradient at >= 0, ties
# of minimum/maximum split it in half); each loss only seeds the adjoints of its terms.
_C_KERNEL = r"""
void sim_{LOSS}_{SUFFIX}(
    int64_t n_points, const {REAL}* px, const {REAL}* py,
    int64_t n_targets, const {REAL}* tgt,  /* per target: gx1 gy1 gx2 gy2 cx cy w h atan(w/h) */
    int64_t n_anchors, const {REAL}* anc,  /* per target and anchor: w h */
    int64_t T, const {REAL}* etas, {REAL} eps, {REAL} alpha,
    double* out)                            /* [n_points, T + 1] */
{{
    double* acc = (double*)malloc(sizeof(double) * (size_t)(T + 1) * LANES);
    if (!acc) return;
    for (int64_t p0 = 0; p0 < n_points; p0 += LANES) {{
        {REAL} PX[LANES], PY[LANES];
        for (int l = 0; l < LANES; l++) {{
            const int64_t p = p0 + l < n_points ? p0 + l : n_points - 1;
            PX[l] = px[p]; PY[l] = py[p];
        }}
        for (int64_t i = 0; i < (T + 1) * LANES; i++) acc[i] = 0.0;
        for (int64_t t = 0; t < n_targets; t++) {{
            const {REAL}* g = tgt + 9 * t;
            const {REAL} gx1 = g[0], gy1 = g[1], gx2 = g[2], gy2 = g[3];
            const {REAL} gcx = g[4], gcy = g[5], gw = g[6], gh = g[7], gatan = g[8];
            const {REAL} area_g = MAX(gx2 - gx1, 0) * MAX(gy2 - gy1, 0);
            for (int64_t a = 0; a < n_anchors; a++) {{
                const {REAL} aw = anc[2 * (t * n_anchors + a)], ah = anc[2 * (t * n_anchors + a) + 1];
                {REAL} X[LANES], Y[LANES], W[LANES], H[LANES], E[LANES];
                for (int l = 0; l < LANES; l++) {{
                    X[l] = PX[l]; Y[l] = PY[l]; W[l] = aw; H[l] = ah;
                    E[l] = FABS(X[l] - gcx) + FABS(Y[l] - gcy) + FABS(W[l] - gw) + FABS(H[l] - gh);
                }}
                for (int l = 0; l < LANES; l++) acc[l] += (double)E[l];
                for (int64_t it = 0; it < T; it++) {{
                    const {REAL} eta = etas[it];
                    int moved = 0;
                    #pragma omp simd reduction(|:moved)
                    for (int l = 0; l < LANES; l++) {{
                        const {REAL} x = X[l], y = Y[l], w = W[l], h = H[l];
                        const {REAL} x1 = x - w / 2, x2 = x + w / 2, y1 = y - h / 2, y2 = y + h / 2;
                        const {REAL} iwr = MIN(x2, gx2) - MAX(x1, gx1), ihr = MIN(y2, gy2) - MAX(y1, gy1);
                        const {REAL} iw = MAX(iwr, 0), ih = MAX(ihr, 0);
                        const {REAL} inter = iw * ih;
                        const {REAL} pwr = x2 - x1, phr = y2 - y1;
                        const {REAL} pw = MAX(pwr, 0), ph = MAX(phr, 0);
                        const {REAL} uni = pw * ph + area_g - inter;
                        const {REAL} rU = 1 / (uni + eps);
                        const {REAL} iou = inter * rU;
                        const {REAL} cw = MAX(x2, gx2) - MIN(x1, gx1), ch = MAX(y2, gy2) - MIN(y1, gy1);
                        {REAL} a_x1 = 0, a_y1 = 0, a_x2 = 0, a_y2 = 0;
                        {REAL} a_iou = 0, a_uni = 0, a_cw = 0, a_ch = 0, a_iwr = 0, a_ihr = 0;
                        /* ---- the loss's own terms ---- */
{BODY}
                        /* ---- shared backward: IoU, union, intersection, enclosing box ---- */
                        {REAL} a_inter = a_iou * rU;
                        a_uni += -a_iou * (iou * rU);
                        a_inter -= a_uni;
                        a_iwr += iwr >= 0 ? a_inter * ih : 0;
                        a_ihr += ihr >= 0 ? a_inter * iw : 0;
                        /* min(x2, gx2) takes share s of d/dx2 and max(x2, gx2) the rest, 1 - s */
                        const {REAL} s_x2 = DMIN(x2, gx2), s_y2 = DMIN(y2, gy2);
                        const {REAL} s_x1 = DMAX(x1, gx1), s_y1 = DMAX(y1, gy1);
                        const {REAL} g_pw = pwr >= 0 ? a_uni * ph : 0, g_ph = phr >= 0 ? a_uni * pw : 0;
                        a_x2 += a_iwr * s_x2 + a_cw * (1 - s_x2) + g_pw;
                        a_x1 -= a_iwr * s_x1 + a_cw * (1 - s_x1) + g_pw;
                        a_y2 += a_ihr * s_y2 + a_ch * (1 - s_y2) + g_ph;
                        a_y1 -= a_ihr * s_y1 + a_ch * (1 - s_y1) + g_ph;
                        /* ---- the DIoU-protocol step in (x, y, w, h) ---- */
                        const {REAL} step = eta * (2 - iou);
                        const {REAL} nx = x - step * (a_x1 + a_x2);
                        const {REAL} ny = y - step * (a_y1 + a_y2);
                        const {REAL} nw = w - step * ((a_x2 - a_x1) / 2);
                        const {REAL} nh = h - step * ((a_y2 - a_y1) / 2);
                        moved |= (nx != x) | (ny != y) | (nw != w) | (nh != h);
                        X[l] = nx; Y[l] = ny; W[l] = nw; H[l] = nh;
                        E[l] = FABS(nx - gcx) + FABS(ny - gcy) + FABS(nw - gw) + FABS(nh - gh);
                    }}
                    double* row = acc + (it + 1) * LANES;
                    for (int l = 0; l < LANES; l++) row[l] += (double)E[l];
                    if (FREEZE && !moved) {{
                        /* No box of the group moved: every later step repeats this one exactly
                           (a zero gradient, e.g. IoU on disjoint boxes), so its error stands. */
                        for (int64_t rest = it + 2; rest <= T; rest++)
                            for (int l = 0; l < LANES; l++) acc[rest * LANES + l] += (double)E[l];
                        break;
                    }}
                }}
            }}
        }}
        for (int l = 0; l < LANES && p0 + l < n_points; l++)
            for (int64_t it = 0; it <= T; it++) out[(p0 + l) * (T + 1) + it] = acc[it * LANES + l];
    }}
    free(acc);
}}
"""

_C_DIOU_PENALTY = """
                        {{  /* DIoU: rho^2 / (cw^2 + ch^2 + eps) */
                            const {REAL} rD = 1 / (cw * cw + ch * ch + eps);
                            const {REAL} dxc = (x1 + x2 - gx1 - gx2) * 0.5f, dyc = (y1 + y2 - gy1 - gy2) * 0.5f;
                            const {REAL} a_D = -((dxc * dxc + dyc * dyc) * rD) * rD;
                            a_cw += 2 * cw * a_D; a_ch += 2 * ch * a_D;
                            const {REAL} a_dxc = 2 * dxc * rD, a_dyc = 2 * dyc * rD;
                            a_x1 += a_dxc * 0.5f; a_x2 += a_dxc * 0.5f; a_y1 += a_dyc * 0.5f; a_y2 += a_dyc * 0.5f;
                        }}"""

_C_BODIES = {
    # 1 - IoU
    "iou": "                        a_iou = -1;",
    # 1 - IoU + (C - U) / (C + eps)
    "giou": """
                        a_iou = -1;
                        {{
                            const {REAL} C = cw * ch, rCE = 1 / (C + eps);
                            const {REAL} a_C = rCE - ((C - uni) * rCE) * rCE;
                            a_uni += -rCE;
                            a_cw += a_C * ch; a_ch += a_C * cw;
                        }}""",
    "diou": "                        a_iou = -1;\n" + _C_DIOU_PENALTY,
    # DIoU + alpha v, v = 4/pi^2 (atan(gw/gh) - atan(w / max(h, eps)))^2, alpha = v/(1 - IoU + v + eps) detached
    "ciou": "                        a_iou = -1;\n"
    + _C_DIOU_PENALTY
    + """
                        {{
                            const {REAL} rhc = 1 / MAX(phr, eps);
                            const {REAL} q = pwr * rhc;
                            const {REAL} dat = gatan - ATAN(q);
                            const {REAL} v = ({REAL})(4 / (M_PI * M_PI)) * dat * dat;
                            /* alpha = v / (1 - IoU + v + eps), detached; d v / d q = -(8/pi^2) dat / (1 + q^2) */
                            const {REAL} a_q = -(v * ({REAL})(8 / (M_PI * M_PI)) * dat) / ((1 - iou + v + eps) * (1 + q * q));
                            const {REAL} a_wr = a_q * rhc;
                            const {REAL} a_hr = phr >= eps ? -a_q * (q * rhc) : 0;
                            a_x2 += a_wr; a_x1 -= a_wr; a_y2 += a_hr; a_y1 -= a_hr;
                        }}""",
    # (2 - w_in/w_out - h_in/h_out) + alpha (d_lt + d_rb) / (diag + eps)
    "sca": """
                        {{
                            /* SO = w_in / w_out + h_in / h_out (a ratio is 1 where w_out = 0), loss 2 - SO */
                            const {REAL} rcw = cw > 0 ? 1 / cw : 0, rch = ch > 0 ? 1 / ch : 0;
                            a_iwr += -rcw; a_ihr += -rch;
                            a_cw += (iwr * rcw) * rcw; a_ch += (ihr * rch) * rch;
                            /* CD = alpha (d_lt + d_rb) / (diag + eps), eps inside each difference */
                            const {REAL} ex1 = x1 - gx1 + eps, ey1 = y1 - gy1 + eps;
                            const {REAL} ex2 = x2 - gx2 + eps, ey2 = y2 - gy2 + eps;
                            const {REAL} dlt = SQRT(ex1 * ex1 + ey1 * ey1), drb = SQRT(ex2 * ex2 + ey2 * ey2);
                            const {REAL} dg = SQRT((cw + eps) * (cw + eps) + (ch + eps) * (ch + eps));
                            const {REAL} rDG = 1 / (dg + eps);
                            const {REAL} a_lt = alpha * rDG / dlt, a_rb = alpha * rDG / drb;
                            const {REAL} a_dg = -alpha * ((dlt + drb) * rDG) * rDG / dg;
                            a_x1 += a_lt * ex1; a_y1 += a_lt * ey1;
                            a_x2 += a_rb * ex2; a_y2 += a_rb * ey2;
                            a_cw += a_dg * (cw + eps); a_ch += a_dg * (ch + eps);
                        }}""",
}

# (suffix, C type, lanes, fabs, sqrt, atan) per precision
_C_PRECISIONS = {
    torch.float32: ("f32", "float", 16, "fabsf", "sqrtf", "atan_f32"),
    torch.float64: ("f64", "double", 8, "fabs", "sqrt", "atan"),
}
_C_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-fPIC", "-shared"]
_C_NATIVE = ["-march=native"]


def kernel_source(dtype: torch.dtype = torch.float32) -> str:
    """The C source of the five losses' kernels in one precision (float32 or float64)."""
    parts = [_C_PRELUDE]
    for suffix, real, lanes, fabs, sqrt, atan in [_C_PRECISIONS[dtype]]:
        parts.append(
            f"#undef LANES\n#define LANES {lanes}\n#undef FABS\n#define FABS {fabs}\n"
            f"#undef SQRT\n#define SQRT {sqrt}\n#undef ATAN\n#define ATAN {atan}\n"
        )
        for loss, body in _C_BODIES.items():
            # Only the IoU loss has zero-gradient regions (disjoint boxes); the check costs the others.
            parts.append(f"#undef FREEZE\n#define FREEZE {int(loss == 'iou')}\n")
            parts.append(_C_KERNEL.format(LOSS=loss, SUFFIX=suffix, REAL=real, BODY=body.format(REAL=real)))
    return "\n".join(parts)


def kernel_cache_dir() -> Path:
    """Where compiled kernels live: $SCABENCH_CACHE_DIR/kernels or ~/.cache/scabench/kernels."""
    root = os.environ.get("SCABENCH_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "scabench" / "kernels"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _machine_fingerprint() -> str:
    """What -march=native depends on: the CPU model and flags (so a cache is not shared wrongly)."""
    text = platform.machine() + platform.platform()
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [ln for ln in handle if ln.startswith(("model name", "flags", "Features"))]
        text += "".join(dict.fromkeys(lines))
    except OSError:
        text += platform.processor()
    return text


@dataclass
class _Kernel:
    lib: ctypes.CDLL
    path: Path
    compile_seconds: float  # 0.0 when the cached library was loaded


_KERNELS: dict[torch.dtype, _Kernel] = {}  # loaded in this process, per precision
_KERNEL_LOCK = threading.Lock()


def load_kernel(
    dtype: torch.dtype = torch.float32, cache_dir: Path | None = None, *, rebuild: bool = False
) -> _Kernel:
    """Compile (or load from the cache) the fused kernels of one precision; raises KernelUnavailable.

    The library's name is a hash of the source, the flags, the compiler's version and the
    machine, so a changed kernel or another CPU never loads a stale build. Writes are atomic.
    """
    if dtype not in _C_PRECISIONS:
        raise ValueError(f"the fused kernel exists in float32 and float64, not {dtype}")
    with _KERNEL_LOCK:
        if dtype in _KERNELS and cache_dir is None and not rebuild:
            return _KERNELS[dtype]
        cc = _compiler()
        if cc is None:
            raise KernelUnavailable("no C compiler found (set CC, or install gcc)")
        source = kernel_source(dtype)
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise KernelUnavailable(f"cannot run the C compiler {cc!r}: {error}") from None
        key = hashlib.sha256(
            "\0".join([source, " ".join(_C_FLAGS + _C_NATIVE), version, _machine_fingerprint()]).encode()
        ).hexdigest()[:20]
        folder = Path(cache_dir) if cache_dir is not None else kernel_cache_dir()
        path = folder / f"simulate_{_C_PRECISIONS[dtype][0]}_{key}.so"
        seconds = 0.0
        if rebuild or not path.exists():
            start = time.perf_counter()
            _compile(cc, source, path)
            seconds = time.perf_counter() - start
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise KernelUnavailable(f"cannot load {path}: {error}") from None
        kernel = _Kernel(lib, path, seconds)
        if cache_dir is None:
            _KERNELS[dtype] = kernel
        return kernel


def _compile(cc: str, source: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scabench-kernel-") as tmp:
        c_file = Path(tmp) / "simulate.c"
        c_file.write_text(source)
        so_tmp = Path(tmp) / "simulate.so"
        errors = ""
        for native in (_C_NATIVE, []):  # -march=native is not known to every compiler
            result = subprocess.run(
                [cc, *_C_FLAGS, *native, "-o", str(so_tmp), str(c_file), "-lm"],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                break
            errors = result.stderr
        else:
            raise KernelUnavailable(f"compiling the simulation kernel with {cc} failed:\n{errors[-2000:]}")
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        shutil.copyfile(so_tmp, staged)
        os.replace(staged, path)


def kernel_supports(loss: loss_zoo.BoxLoss, device: torch.device) -> str | None:
    """None if the fused kernel can run ``loss`` on ``device``, else the reason it cannot."""
    if device.type != "cpu":
        return f"the fused kernel runs on the CPU only (device {device})"
    if type(loss) is not loss_zoo.BoxLoss or loss.spec.name not in KERNEL_LOSSES:
        return f"no fused kernel for {loss.name!r} (only {', '.join(KERNEL_LOSSES)})"
    if loss.spec.fn.__module__ not in ("scabench.losses.iou", "scabench.losses.sca"):
        return f"{loss.name!r} is not the built-in loss"
    return None


def _run_kernel(
    loss: loss_zoo.BoxLoss,
    cases: ConvergenceCases,
    rates: Sequence[float],
    *,
    dtype: torch.dtype,
    threads: int,
    progress: ProgressFn | None = None,
    label: str = "",
    kernel: _Kernel | None = None,
) -> np.ndarray:
    """[P, T + 1] per-point errors from the fused kernel (CPU, built-in losses)."""
    kernel = kernel or load_kernel(dtype)
    suffix, _, lanes, *_ = _C_PRECISIONS[dtype]
    fn = getattr(kernel.lib, f"sim_{loss.spec.name}_{suffix}")
    real = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
    ptr = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int64, ptr, ptr, ctypes.c_int64, ptr, ctypes.c_int64, ptr, ctypes.c_int64, ptr, real, real, ptr]
    fn.restype = None

    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    # Lanes in order of distance from the centre: a lane group then tends to be all disjoint
    # (or all overlapping), so the IoU kernel can stop groups that no longer move. Each
    # point's result is independent of its lane mates; rows go back to the input order.
    order = np.argsort(np.hypot(*(cases.points.numpy() - np.asarray(CENTER)).T), kind="stable")
    points = cases.points.to(dtype).numpy()[order]
    px, py = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    boxes = cases.target_boxes(dtype)[0, :, 0]  # [7, 4] xyxy, float64 -> dtype as the generic path
    centre = cases.targets.to(dtype)  # [7, 4] (cx, cy, w, h)
    eps = loss.eps
    # atan(w / max(h, eps)) of the target, in the working precision, as losses.iou.aspect_term
    gatan = torch.atan((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]).clamp(min=eps))
    tgt = np.ascontiguousarray(torch.cat((boxes, centre, gatan[:, None]), dim=1).numpy().astype(np_dtype))
    anc = np.ascontiguousarray(cases.anchors.to(dtype).numpy())
    etas = np.asarray(rates, dtype=np_dtype)
    T, P = len(rates), cases.n_points
    out = np.zeros((P, T + 1), dtype=np.float64)
    alpha = float(loss.params.get("alpha", 1.0))

    # Blocks of whole lane groups; enough of them to balance the threads and move the bar.
    n_blocks = max(1, min(math.ceil(P / lanes), threads * 8))
    per_block = math.ceil(math.ceil(P / lanes) / n_blocks) * lanes
    starts = list(range(0, P, per_block))
    done = [0]
    lock = threading.Lock()

    def work(start: int) -> None:
        stop = min(start + per_block, P)
        fn(
            stop - start,
            px[start:].ctypes.data,
            py[start:].ctypes.data,
            tgt.shape[0],
            tgt.ctypes.data,
            anc.shape[1],
            anc.ctypes.data,
            T,
            etas.ctypes.data,
            eps,
            alpha,
            out[start:].ctypes.data,
        )
        if progress is not None:
            with lock:
                done[0] += stop - start
                progress(label, done[0] / P)

    if threads <= 1 or len(starts) == 1:
        for start in starts:
            work(start)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:  # ctypes calls release the GIL
            list(pool.map(work, starts))
    unsorted = np.empty_like(out)
    unsorted[order] = out
    return unsorted


# ======================================================================================
# The convergence study: public API


@dataclass
class ConvergenceResult:
    """What :func:`simulate_convergence` computed.

    ``curves``: loss, iteration, error (E(t), t = 0 .. T); ``by_point``: loss, x, y, error
    (final error summed over the point's 343 cases); ``engines``: loss -> engine used;
    ``seconds``: loss -> wall seconds of its regression (kernel compile not included);
    ``cpu_seconds``: the same in CPU seconds of this process (all threads; on a shared
    machine, cpu_seconds / threads is what the wall time would be with the cores to itself);
    ``compile_seconds``: time spent compiling the kernel in this call (0 when cached).
    """

    curves: pd.DataFrame
    by_point: pd.DataFrame
    cases: int
    points: int
    iterations: int
    engines: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    compile_seconds: float = 0.0


def simulate_convergence(
    losses: LossSpecs = CONVERGENCE_LOSSES,
    *,
    points: int = DEFAULT_POINTS,
    iterations: int = DEFAULT_ITERATIONS,
    schedule: str | Sequence[tuple[float, int | None]] = DEFAULT_SCHEDULE,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    engine: str = "auto",
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> ConvergenceResult:
    """Run the DIoU convergence protocol for each loss (see the module docstring).

    ``engine``: ``"auto"`` (the fused kernel where it applies, else autograd), ``"kernel"``
    (fail if it cannot be used) or ``"autograd"`` (plain autograd for every loss). The state
    is kept in ``dtype`` (float32 by default); error sums are always accumulated in float64.
    """
    refs = resolve_losses(losses)
    points = _positive("points", points)
    iterations = _positive("iterations", iterations)
    rates = schedule_rates(schedule, iterations)
    dev, dt = _device(device), _dtype(dtype)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    threads = _positive("threads", threads) if threads is not None else max(1, torch.get_num_threads())
    cases = convergence_cases(points, seed)

    plans: dict[str, tuple[loss_zoo.BoxLoss, str]] = {}
    for ref in refs:
        loss = ref.build()
        reason = kernel_supports(loss, dev) if engine != "autograd" else "autograd asked for"
        if engine == "kernel" and reason:
            raise ValueError(f"engine 'kernel' cannot run {ref.label!r}: {reason}")
        plans[ref.label] = (loss, "autograd" if reason else "kernel")

    compile_seconds = 0.0
    if any(kind == "kernel" for _, kind in plans.values()):
        try:
            kernel = load_kernel(dt)
            compile_seconds = kernel.compile_seconds
            kernel.compile_seconds = 0.0  # counted once per process
        except KernelUnavailable as error:
            if engine == "kernel":
                raise
            import warnings

            warnings.warn(f"fused kernel unavailable, using autograd: {error}", RuntimeWarning, stacklevel=2)
            plans = {n: (loss, "autograd") for n, (loss, _) in plans.items()}

    curves, maps, seconds, cpu_seconds, engines = [], [], {}, {}, {}
    xy = cases.points.numpy()
    for name, (loss, kind) in plans.items():
        start, cpu_start = time.perf_counter(), time.process_time()
        if kind == "kernel":
            per_point = _run_kernel(loss, cases, rates, dtype=dt, threads=threads, progress=progress, label=name)
        else:
            per_point = _run_autograd(loss, cases, rates, dtype=dt, device=dev, progress=progress, label=name)
        seconds[name], engines[name] = time.perf_counter() - start, kind
        cpu_seconds[name] = time.process_time() - cpu_start
        curves.append(pd.DataFrame({"loss": name, "iteration": np.arange(iterations + 1), "error": per_point.sum(0)}))
        maps.append(pd.DataFrame({"loss": name, "x": xy[:, 0], "y": xy[:, 1], "error": per_point[:, -1]}))
    return ConvergenceResult(
        curves=pd.concat(curves, ignore_index=True),
        by_point=pd.concat(maps, ignore_index=True),
        cases=cases.n_cases,
        points=points,
        iterations=iterations,
        engines=engines,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        compile_seconds=compile_seconds,
    )


# ======================================================================================
# The gradient-magnitude study


def _iou_bins(iou: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """(bin index, bin centre): -1 / 0.0 for disjoint pairs (IoU = 0), else bins of width 1/bins."""
    index = torch.clamp((iou * bins).floor().long(), 0, bins - 1)
    index = torch.where(iou > 0, index, torch.full_like(index, -1))
    centre = torch.where(index >= 0, (index.double() + 0.5) / bins, torch.zeros_like(iou, dtype=torch.float64))
    return index, centre


def gradient_pairs(
    pairs_per_bin: int = 1000, *, bins: int = 10, seed: int = 0, max_rounds: int = 500
) -> tuple[Tensor, Tensor]:
    """Box pairs (pred, target) [N, 4] xyxy float64, ``pairs_per_bin`` per IoU bin and disjoint.

    Target: area 1 at the origin, aspect ratio log-uniform in [1/4, 4]. Prediction: each side
    of the target moved by ``s * n * (target w or h)``, n ~ N(0, 1) per side, s log-uniform in
    [0.01, 2]; inverted or thinner than a tenth of the target are redrawn. Candidates are
    drawn in rounds until every bin is full (first come, first kept: deterministic per seed).
    """
    pairs_per_bin, bins = _positive("pairs_per_bin", pairs_per_bin), _positive("bins", bins)
    generator = torch.Generator().manual_seed(int(seed))
    need = {b: pairs_per_bin for b in range(-1, bins)}
    kept_pred, kept_target = [], []
    batch = max(4096, 8 * pairs_per_bin * (bins + 1))
    for _ in range(max_rounds):
        if not any(need.values()):
            break
        u = torch.rand(3, batch, generator=generator, dtype=torch.float64)
        ratio = torch.exp((2 * u[0] - 1) * math.log(4))
        w, h = ratio.sqrt(), 1 / ratio.sqrt()
        target = torch.stack((-w / 2, -h / 2, w / 2, h / 2), dim=-1)
        s = torch.exp(math.log(0.01) + u[1] * (math.log(2) - math.log(0.01)))
        noise = torch.randn(batch, 4, generator=generator, dtype=torch.float64)
        scale = torch.stack((w, h, w, h), dim=-1) * s[:, None]
        pred = target + noise * scale
        ok = (pred[:, 2] - pred[:, 0] > 0.1 * w) & (pred[:, 3] - pred[:, 1] > 0.1 * h)
        pred, target = pred[ok], target[ok]
        index, _ = _iou_bins(box_iou_pairwise(pred, target), bins)
        for b in list(need):
            if need[b]:
                hits = (index == b).nonzero().flatten()[: need[b]]
                kept_pred.append(pred[hits])
                kept_target.append(target[hits])
                need[b] -= len(hits)
    return torch.cat(kept_pred), torch.cat(kept_target)


def gradient_table(
    losses: LossSpecs,
    pred: Tensor,
    target: Tensor,
    *,
    bins: int = 10,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Mean ||dL/d(pred)||_2 per IoU bin for each loss: columns loss, iou, grad_norm, n.

    ``iou`` is the bin centre ((i + 0.5) / bins), or 0.0 for the disjoint pairs (IoU = 0).
    Gradients are taken in float64 with respect to the xyxy prediction.
    """
    refs = resolve_losses(losses)
    dev = _device(device)
    pred = pred.to(dtype=torch.float64, device=dev)
    target = target.to(dtype=torch.float64, device=dev)
    index, centre = _iou_bins(box_iou_pairwise(pred, target), _positive("bins", bins))
    rows = []
    for ref in refs:
        loss, name = ref.build(), ref.label
        leaf = pred.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(leaf, target).sum(), leaf)
        norm = grad.norm(dim=-1)
        for b in sorted(set(index.tolist())):
            sel = index == b
            rows.append(
                {
                    "loss": name,
                    "iou": float(centre[sel][0]),
                    "grad_norm": float(norm[sel].mean()),
                    "n": int(sel.sum()),
                }
            )
    return pd.DataFrame(rows, columns=["loss", "iou", "grad_norm", "n"])


def simulate_gradients(
    losses: LossSpecs = GRADIENT_LOSSES,
    *,
    pairs_per_bin: int = 1000,
    bins: int = 10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """Gradient magnitude vs IoU (the SCALoss paper's Fig. 1 left) on :func:`gradient_pairs`."""
    refs = resolve_losses(losses)
    pred, target = gradient_pairs(pairs_per_bin, bins=bins, seed=seed)
    frames = []
    for ref in refs:
        frames.append(gradient_table([ref], pred, target, bins=bins, device=device))
        if progress is not None:
            progress(ref.label, 1.0)
    return pd.concat(frames, ignore_index=True)


# ======================================================================================
# The corner vs centre study


def _place_at_iou(target: Tensor, wh: Tensor, direction: Tensor, iou: float, steps: int = 80) -> Tensor:
    """Centres of boxes of size ``wh`` pushed from the target centre along ``direction`` until
    their IoU with ``target`` (cx, cy, w, h) equals ``iou`` (bisection; IoU falls with distance)."""

    def iou_at(d: Tensor) -> Tensor:
        centre = target[:, :2] + d[:, None] * direction
        pred = torch.cat((centre - wh / 2, centre + wh / 2), dim=-1)
        tgt = torch.cat((target[:, :2] - target[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2), dim=-1)
        return box_iou_pairwise(pred, tgt, eps=0.0)

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
    *, start_iou: float = 0.05, directions: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """(pred, target) [N, 4] in (cx, cy, w, h), float64: the documented batch of starts.

    Targets: area 1 at the origin, the 7 aspect ratios. Predictions: the 7 aspect ratios x
    areas {0.5, 1, 2} x ``directions`` random directions (seeded), each placed along its
    direction at IoU exactly ``start_iou``. N = 7 x 7 x 3 x directions (1176 by default).
    """
    if not 0 < start_iou < 0.13:
        raise ValueError(f"start_iou must be in (0, 0.13) so that every start shape reaches it, got {start_iou}")
    directions = _positive("directions", directions)
    ratios = torch.tensor(ASPECT_RATIOS, dtype=torch.float64)
    areas = torch.tensor((0.5, 1.0, 2.0), dtype=torch.float64)
    rt, rp, ap, _ = torch.meshgrid(ratios, ratios, areas, torch.arange(directions, dtype=torch.float64), indexing="ij")
    rt, rp, ap = rt.reshape(-1), rp.reshape(-1), ap.reshape(-1)
    target = torch.stack((torch.zeros_like(rt), torch.zeros_like(rt), rt.sqrt(), 1 / rt.sqrt()), dim=-1)
    wh = torch.stack(((ap * rp).sqrt(), (ap / rp).sqrt()), dim=-1)
    generator = torch.Generator().manual_seed(int(seed))
    angle = 2 * math.pi * torch.rand(len(rt), generator=generator, dtype=torch.float64)
    direction = torch.stack((angle.cos(), angle.sin()), dim=-1)
    centre = _place_at_iou(target, wh, direction, start_iou)
    return torch.cat((centre, wh), dim=-1), target


def simulate_corner_center(
    losses: LossSpecs = CORNER_CENTER_LOSSES,
    *,
    iterations: int = 1500,
    lr: float = 0.01,
    start_iou: float = 0.05,
    directions: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float64",
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """Mean IoU per step of plain gradient descent from IoU ``start_iou``: variant, iteration, iou.

    ``variant`` is ``corner`` for ``iou+cd``, ``center`` for ``iou+center``, else the loss name.
    """
    refs = resolve_losses(losses)
    iterations = _positive("iterations", iterations)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive, got {lr}")
    dev, dt = _device(device), _dtype(dtype)
    pred0, target_c = corner_center_starts(start_iou=start_iou, directions=directions, seed=seed)
    target = xywh_to_xyxy(target_c.T.contiguous()).to(dtype=dt, device=dev)
    frames = []
    for ref in refs:
        loss, name = ref.build(), ref.label
        state = pred0.T.contiguous().to(dtype=dt, device=dev)  # [4, N]
        ious = torch.empty(iterations + 1, dtype=torch.float64, device=dev)
        for t in range(iterations + 1):
            leaf = state.detach().requires_grad_(True)
            pred = xywh_to_xyxy(leaf)
            with torch.no_grad():
                ious[t] = box_iou_pairwise(pred, target).to(torch.float64).mean()
            if t == iterations:
                break
            (grad,) = torch.autograd.grad(loss(pred, target).sum(), leaf)
            state = (state - lr * grad).detach()
            if progress is not None and (t + 1) % 50 == 0:
                progress(name, (t + 1) / iterations)
        if progress is not None:
            progress(name, 1.0)
        frames.append(
            pd.DataFrame(
                {"variant": VARIANT_NAMES.get(name, name), "iteration": np.arange(iterations + 1), "iou": ious.cpu().numpy()}
            )
        )
    return pd.concat(frames, ignore_index=True)


# ======================================================================================
# Writing a study: CSVs first, figures beside them


STUDY_OPTIONS = {
    "convergence": ("points", "iterations", "schedule", "dtype", "engine", "threads"),
    "gradients": ("pairs_per_bin", "bins"),
    "corner-center": ("iterations", "lr", "start_iou", "directions", "dtype"),
}


def run_study(
    study: str,
    losses: LossSpecs | None,
    out: Path | str,
    *,
    seed: int = 0,
    device: str = "cpu",
    figures: bool = True,
    progress: ProgressFn | None = None,
    **options: Any,
) -> list[Path]:
    """Run ``study`` ("convergence", "gradients", "corner-center") and write its CSVs and figures.

    ``losses``: see :func:`resolve_losses` (names, ``"a,b,c"``, ``(name, params)`` pairs);
    None or empty takes the study's default. ``options`` are the study's own (``STUDY_OPTIONS``):
    an option no study knows raises ValueError; one that only another study knows is ignored
    (a grid may share one options mapping between its studies). Returns the written paths:
    ``convergence.csv`` and ``final_error_by_point.csv``; ``gradients.csv``;
    ``corner_center.csv``; then the figures (PNG and PDF) unless ``figures=False``.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
    known = {name for names in STUDY_OPTIONS.values() for name in names}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"study {study!r} has no option(s) {unknown}; its options: {', '.join(STUDY_OPTIONS[study])}"
        )
    options = {k: v for k, v in options.items() if k in STUDY_OPTIONS[study]}
    out = Path(out)
    written: list[Path] = []
    if study == "convergence":
        result = simulate_convergence(
            losses or CONVERGENCE_LOSSES, seed=seed, device=device, progress=progress, **options
        )
        written.append(_write_csv(result.curves, out / "convergence.csv"))
        written.append(_write_csv(result.by_point, out / "final_error_by_point.csv"))
    elif study == "gradients":
        frame = simulate_gradients(losses or GRADIENT_LOSSES, seed=seed, device=device, progress=progress, **options)
        written.append(_write_csv(frame, out / "gradients.csv"))
    else:
        frame = simulate_corner_center(
            losses or CORNER_CENTER_LOSSES, seed=seed, device=device, progress=progress, **options
        )
        written.append(_write_csv(frame, out / "corner_center.csv"))
    if figures:
        from scabench.reports import simulation_figures

        for csv in list(written):
            written.extend(simulation_figures.plot_csv(csv, out))
    return written


# ======================================================================================
# Timing: per-loss time per step against a memory-copy floor


def memory_floor_ms(n_cases: int, dtype: torch.dtype = torch.float32, repeats: int = 15) -> float:
    """Time (ms) to read and write the (x, y, w, h) state of ``n_cases`` once: a copy.

    The faster of a single-threaded copy (numpy) and torch's threaded ``copy_`` (median of
    ``repeats`` each): on a busy machine torch's thread pool can make a copy several times
    slower than one thread does, and the floor should be the best this machine can do now.
    """
    src = torch.rand(4, n_cases, dtype=dtype)
    dst = torch.empty_like(src)
    src_np, dst_np = src.numpy(), dst.numpy()

    def median_ms(copy: Callable[[], Any]) -> float:
        copy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    return min(median_ms(lambda: dst.copy_(src)), median_ms(lambda: np.copyto(dst_np, src_np)))


def benchmark(
    losses: Sequence[str] = CONVERGENCE_LOSSES,
    *,
    points: int = DEFAULT_POINTS,
    iterations: int = DEFAULT_ITERATIONS,
    dtype: str = "float32",
    engine: str = "auto",
    threads: int | None = None,
    fresh: bool = True,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Time the convergence study: a row per loss and phase (``fresh``: compile included,
    into an empty cache; ``cached``: the library from that cache), with ms per step and its
    ratio to :func:`memory_floor_ms` measured just before each phase (so that both see the
    same machine load). Returns (table, totals); totals include the load average at start."""
    dt = _dtype(dtype)
    n_cases = points * CASES_PER_POINT
    rows, totals = [], {"load_average": _load_average()}
    phases = ["fresh", "cached"] if fresh else ["cached"]
    with tempfile.TemporaryDirectory(prefix="scabench-bench-") as tmp:
        saved = os.environ.get("SCABENCH_CACHE_DIR")
        saved_kernels = dict(_KERNELS)
        try:
            if fresh:
                os.environ["SCABENCH_CACHE_DIR"] = tmp
            for phase in phases:
                _KERNELS.clear()  # load (or build) from the cache folder as a new process would
                floor = memory_floor_ms(n_cases, dt)
                start = time.perf_counter()
                result = simulate_convergence(
                    losses, points=points, iterations=iterations, dtype=dt, engine=engine, threads=threads
                )
                totals[phase] = time.perf_counter() - start
                totals[f"{phase}_compile"] = result.compile_seconds
                for name in result.seconds:
                    per_step = 1000 * result.seconds[name] / iterations
                    rows.append(
                        {
                            "phase": phase,
                            "loss": name,
                            "engine": result.engines[name],
                            "seconds": result.seconds[name],
                            "cpu_seconds": result.cpu_seconds[name],
                            "ms_per_step": per_step,
                            "floor_ms": floor,
                            "ratio_to_floor": per_step / floor,
                            "E0": float(result.curves.query("loss == @name")["error"].iloc[0]),
                            "E_final": float(result.curves.query("loss == @name")["error"].iloc[-1]),
                        }
                    )
        finally:
            if saved is None:
                os.environ.pop("SCABENCH_CACHE_DIR", None)
            else:
                os.environ["SCABENCH_CACHE_DIR"] = saved
            _KERNELS.clear()
            _KERNELS.update(saved_kernels)
    return pd.DataFrame(rows), totals


def _load_average() -> float:
    """1-minute load average (nan where the OS has none): how shared the machine was."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def print_benchmark(table: pd.DataFrame, totals: dict[str, float], *, points: int, iterations: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    n = points * CASES_PER_POINT
    rt = Table(
        title=f"convergence study: {n:,} cases x {iterations} steps, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {totals.get('load_average', float('nan')):.2f} at start"
    )
    for column in ("phase", "loss", "engine", "s", "cpu s", "ms/step", "floor ms", "x floor", "E(0)", f"E({iterations})"):
        rt.add_column(column, justify="left" if column in ("phase", "loss", "engine") else "right")
    for row in table.itertuples():
        rt.add_row(
            row.phase,
            row.loss,
            row.engine,
            f"{row.seconds:.2f}",
            f"{row.cpu_seconds:.2f}",
            f"{row.ms_per_step:.2f}",
            f"{row.floor_ms:.2f}",
            f"{row.ratio_to_floor:.2f}",
            f"{row.E0:.4g}",
            f"{row.E_final:.4g}",
        )
    console.print(rt)
    console.print(
        "floor: one copy of the (x, y, w, h) state (read + write), what an implementation that passes "
        "over the state once per step cannot beat; the fused kernel keeps boxes in registers for all steps."
    )
    for phase in ("fresh", "cached"):
        if phase in totals:
            console.print(
                f"{phase}: {totals[phase]:.2f} s in total (kernel compile {totals[phase + '_compile']:.2f} s)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="time the convergence study (the default action)")
    parser.add_argument("--losses", default=",".join(CONVERGENCE_LOSSES))
    parser.add_argument("--points", type=int, default=DEFAULT_POINTS)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--engine", default="auto", choices=list(ENGINES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cached-only", action="store_true", help="skip the fresh (compile) phase")
    args = parser.parse_args(argv)
    try:
        names = parse_losses(args.losses)
        table, totals = benchmark(
            names,
            points=args.points,
            iterations=args.iterations,
            dtype=args.dtype,
            engine=args.engine,
            threads=args.threads,
            fresh=not args.cached_only,
        )
    except (ValueError, KernelUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_benchmark(table, totals, points=args.points, iterations=args.iterations)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
