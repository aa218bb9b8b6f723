"""Coordinate-regression baselines: L1 and smooth-L1 on the four xyxy coordinates.

Summed over the four coordinates per box, as torchvision.ops' box losses are per element and
detectors (Faster R-CNN, RetinaNet) sum them per box. Scale-dependent by design: they are the
non-IoU baseline the IoU family was proposed against.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from scabench.losses.registry import register


@register(
    "l1",
    formula="sum |b - bg| over x1, y1, x2, y2",
    paper="baseline (e.g. FCOS/DETR box L1)",
    reference="torch.nn.functional.l1_loss, summed per box",
    similarity="iou",
)
def l1_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """L1 distance between the corner coordinates."""
    return F.l1_loss(pred, target, reduction="none").sum(-1)


@register(
    "smooth-l1",
    formula="sum smoothL1_beta(b - bg) over x1, y1, x2, y2",
    paper="Girshick, Fast R-CNN, ICCV 2015",
    reference="torch.nn.functional.smooth_l1_loss, summed per box",
    similarity="iou",
)
def smooth_l1_loss(pred: Tensor, target: Tensor, *, beta: float = 1.0, eps: float = 1e-7) -> Tensor:
    """Huber-like smooth L1 with transition ``beta`` (1.0 as Fast R-CNN)."""
    return F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(-1)
