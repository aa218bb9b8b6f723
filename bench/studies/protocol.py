"""The DIoU paper's convergence protocol: its 1,715,000 regression cases and step schedule.

Zheng et al., "Distance-IoU Loss", AAAI 2020, ``Zzh-tju/DIoU`` ``simulation experiment/
test_1715k.m``: 7 targets of area 1 centred at (10, 10) with aspect ratios 1/4 ... 4; anchor
centres uniform in the disc of radius 3 around (10, 10) (r = 3 sqrt(u), theta = 2 pi v, as the
MATLAB code draws them); at every centre, anchors of area k in {0.5, 0.67, 0.75, 1, 1.33, 1.5,
2} times the same 7 aspect ratios: ``points x 343`` cases (1,715,000 at 5000 points). Each
case is regressed for T = 200 steps ``B <- B - eta_t (2 - IoU(B, G)) dL/dB`` in (x, y, w, h),
eta = 0.1 for t <= 160, 0.01 for t <= 180, 0.001 after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert

from scabench.bench.studies.defaults import POINTS, SCHEDULE
from scabench.bench.studies.inputs import positive

ASPECT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 1.0, 2.0, 3.0, 4.0)  # w / h
ANCHOR_SCALES = (0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0)  # anchor area / target area
CENTER = (10.0, 10.0)
RADIUS = 3.0
CASES_PER_POINT = len(ASPECT_RATIOS) ** 3  # 7 targets x 7 scales x 7 ratios = 343

Schedule = str | Sequence[tuple[float, int | None]]


def parse_schedule(schedule: Schedule) -> list[tuple[float, int | None]]:
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
                    f"cannot read schedule entry {item!r} in {schedule!r}; write 'lr:until,...,lr', e.g. {SCHEDULE!r}"
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


def schedule_rates(schedule: Schedule, iterations: int) -> list[float]:
    """The step size of each step t = 1 .. iterations."""
    parts = parse_schedule(schedule)
    return [next(lr for lr, until in parts if until is None or t <= until) for t in range(1, iterations + 1)]


def state_to_xyxy(state: Tensor) -> Tensor:
    """[4, ...] (cx, cy, w, h), structure of arrays -> [..., 4] (x1, y1, x2, y2).

    The studies' hot loop, so written out: ``box_convert(state.movedim(0, -1), "cxcywh",
    "xyxy")`` gives the same values and gradients bit for bit (halving is exact) but measured
    4-20% slower per autograd step of the convergence study (205,800 cases, one thread).
    """
    x, y, w, h = state.unbind(0)
    return torch.stack((x - w / 2, y - h / 2, x + w / 2, y + h / 2), dim=-1)


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
        xyxy = box_convert(self.targets, "cxcywh", "xyxy").to(dtype=dtype, device=device).view(1, -1, 1, 4)
        return xyxy.expand(self.n_points, -1, self.anchors.shape[1], 4)


def sample_points(points: int, seed: int = 0) -> Tensor:
    """[points, 2] centres uniform in the radius-3 disc around (10, 10), float64, seeded."""
    points = positive("points", points)
    generator = torch.Generator().manual_seed(int(seed))
    u = torch.rand(2, points, generator=generator, dtype=torch.float64)
    r = RADIUS * torch.sqrt(u[0])
    theta = 2 * math.pi * u[1]
    return torch.stack((CENTER[0] + r * torch.cos(theta), CENTER[1] + r * torch.sin(theta)), dim=-1)


def convergence_cases(points: int = POINTS, seed: int = 0) -> ConvergenceCases:
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
