"""IoU, GIoU, DIoU and CIoU losses, and the box geometry every other loss reuses.

All functions take element-wise pairs of xyxy boxes ``[..., 4]`` and return ``[...]``.
The values follow torchvision.ops (``generalized_box_iou_loss``, ``distance_box_iou_loss``,
``complete_box_iou_loss``): eps added to the union, to the enclosing area and to the squared
enclosing diagonal. Two deliberate departures keep degenerate boxes finite without changing
ordinary boxes: widths and heights of inverted boxes count as 0 in areas, and CIoU's aspect
ratio divides by a height clamped at eps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from scabench.losses.registry import register


class Pair(NamedTuple):
    """The coordinates of a prediction (x1..y2) and its target (gx1..gy2), one tensor each."""

    x1: Tensor
    y1: Tensor
    x2: Tensor
    y2: Tensor
    gx1: Tensor
    gy1: Tensor
    gx2: Tensor
    gy2: Tensor


def unpack(pred: Tensor, target: Tensor) -> Pair:
    return Pair(*pred.unbind(-1), *target.unbind(-1))


def inter_union(p: Pair, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """Intersection and union (+ eps) areas; inverted boxes have zero area.

    eps joins the target's area, which needs no gradient: one op fewer in the backward pass.
    """
    inter_w = (torch.minimum(p.x2, p.gx2) - torch.maximum(p.x1, p.gx1)).clamp(min=0)
    inter_h = (torch.minimum(p.y2, p.gy2) - torch.maximum(p.y1, p.gy1)).clamp(min=0)
    inter = inter_w * inter_h
    area_pred = (p.x2 - p.x1).clamp(min=0) * (p.y2 - p.y1).clamp(min=0)
    area_target = (p.gx2 - p.gx1).clamp(min=0) * (p.gy2 - p.gy1).clamp(min=0)
    return inter, area_pred + (area_target + eps) - inter


def iou_of(p: Pair, eps: float) -> tuple[Tensor, Tensor]:
    """(IoU, union) with eps in the denominator, as torchvision."""
    inter, union_eps = inter_union(p, eps)
    return inter / union_eps, union_eps - eps


def enclosing_wh(p: Pair) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing both."""
    return (
        torch.maximum(p.x2, p.gx2) - torch.minimum(p.x1, p.gx1),
        torch.maximum(p.y2, p.gy2) - torch.minimum(p.y1, p.gy1),
    )


def center_deltas(p: Pair) -> tuple[Tensor, Tensor]:
    """Centre offsets (pred - target) along x and y."""
    return ((p.x1 + p.x2) - (p.gx1 + p.gx2)) * 0.5, ((p.y1 + p.y2) - (p.gy1 + p.gy2)) * 0.5


def center_distance_sq(p: Pair) -> Tensor:
    """Squared distance between the box centres (halving once, after the sum)."""
    dx2 = (p.x1 + p.x2) - (p.gx1 + p.gx2)
    dy2 = (p.y1 + p.y2) - (p.gy1 + p.gy2)
    return (dx2 * dx2 + dy2 * dy2) * 0.25


def safe_div(num: Tensor, den: Tensor, fallback: float) -> Tensor:
    """num / den where den > 0, else ``fallback``; exact elsewhere, and no NaN in backward.

    The guard selects the *denominator* (a where on the output alone still back-propagates
    0/0): this is how degenerate boxes (points, zero-width pairs) stay finite.
    """
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.full_like(num, fallback))


def box_iou_pairwise(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Element-wise IoU of xyxy pairs (not the NxM matrix of torchvision.ops.box_iou)."""
    return iou_of(unpack(pred, target), eps)[0]


def aspect_term(p: Pair, eps: float) -> Tensor:
    """CIoU's v = 4/pi^2 (atan(wg/hg) - atan(w/h))^2, heights clamped at eps.

    atan2(w, h) equals atan(w / h) for h > 0 and is one fused op (value and gradient).
    """
    atan_target = torch.atan2(p.gx2 - p.gx1, (p.gy2 - p.gy1).clamp(min=eps))
    atan_pred = torch.atan2(p.x2 - p.x1, (p.y2 - p.y1).clamp(min=eps))
    d = atan_target - atan_pred
    return (4 / math.pi**2) * (d * d)


def diou_parts(p: Pair, eps: float) -> tuple[Tensor, Tensor]:
    """(IoU, rho^2 / c^2): the DIoU centre penalty over the squared enclosing diagonal + eps."""
    iou, _ = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    return iou, center_distance_sq(p) / (cw * cw + ch * ch + eps)


# --------------------------------------------------------------------------------------


@register(
    "iou",
    formula="1 - IoU",
    paper="Yu et al., UnitBox, ACM MM 2016",
    reference="torchvision.ops box IoU (eps in the union)",
)
def iou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """1 - IoU. No gradient for disjoint boxes: the failure GIoU/DIoU/SCA address."""
    return 1 - box_iou_pairwise(pred, target, eps=eps)


@register(
    "giou",
    formula="1 - IoU + |C - A∪B| / |C|",
    paper="Rezatofighi et al., CVPR 2019",
    reference="torchvision.ops.generalized_box_iou_loss",
)
def giou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Generalized IoU loss (Rezatofighi et al. 2019); equals torchvision's."""
    p = unpack(pred, target)
    iou, union = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    area_c = cw * ch
    return 1 - iou + (area_c - union) / (area_c + eps)


@register(
    "diou",
    formula="1 - IoU + rho^2(b, bg) / c^2",
    paper="Zheng et al., Distance-IoU loss, AAAI 2020",
    reference="torchvision.ops.distance_box_iou_loss",
)
def diou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Distance-IoU loss (Zheng et al. 2020); equals torchvision's."""
    iou, penalty = diou_parts(unpack(pred, target), eps)
    return 1 - iou + penalty


@register(
    "center",
    formula="rho^2(b, bg) / c^2",
    paper="Zheng et al., Distance-IoU loss, AAAI 2020 (its penalty term)",
    reference="torchvision.ops.distance_box_iou_loss (penalty only)",
)
def center_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """DIoU's centre-distance penalty alone; ``iou+center`` is the paper's 'centre alignment'."""
    p = unpack(pred, target)
    cw, ch = enclosing_wh(p)
    return center_distance_sq(p) / (cw * cw + ch * ch + eps)


def _ciou(pred: Tensor, target: Tensor, eps: float, alpha_rule: str) -> Tensor:
    p = unpack(pred, target)
    iou, penalty = diou_parts(p, eps)
    v = aspect_term(p, eps)
    with torch.no_grad():
        if alpha_rule == "torchvision":
            alpha = v / (1 - iou + v + eps)
        elif alpha_rule == "gated":
            alpha = torch.where(iou > 0.5, v / (1 - iou + v + eps), torch.zeros_like(v))
        else:  # ultralytics
            alpha = v / (v - iou + (1 + eps))
    return 1 - iou + penalty + alpha * v


@register(
    "ciou",
    formula="1 - IoU + rho^2/c^2 + alpha v, alpha = v/(1 - IoU + v) detached",
    paper="Zheng et al., Enhancing geometric factors (CIoU), AAAI 2020 / TCYB 2021",
    reference="torchvision.ops.complete_box_iou_loss",
    detaches=True,
)
def ciou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Complete-IoU loss as torchvision: alpha detached, no IoU > 0.5 gate."""
    return _ciou(pred, target, eps, "torchvision")


@register(
    "ciou-gated",
    formula="as ciou, alpha = 0 where IoU <= 0.5",
    paper="Zheng et al., Enhancing geometric factors (CIoU), TCYB 2021",
    reference="official CIoU code / mmdetection CIoULoss",
    detaches=True,
)
def ciou_gated_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """CIoU with the IoU > 0.5 gate on the aspect term (official code, mmdetection)."""
    return _ciou(pred, target, eps, "gated")


@register(
    "ciou-yolo",
    formula="as ciou, alpha = v/(v - IoU + 1 + eps) detached",
    paper="Zheng et al., CIoU, AAAI 2020 (as YOLOv3 v9.6.0/YOLOv5 compute it)",
    reference="ultralytics bbox_iou(CIoU=True): the CIoU the SCALoss paper trained with",
    detaches=True,
)
def ciou_yolo_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """CIoU with ultralytics' alpha = v / (v - IoU + 1 + eps), the SCALoss code's baseline."""
    return _ciou(pred, target, eps, "ultralytics")
