"""SCALoss: Side and Corner Aligned loss (Zheng et al., AAAI 2022), and its two parts.

As the authors' code (a fork of ultralytics/yolov3 v9.6.0) computes it, on xyxy boxes:

- side overlap  SO = w_in / w_out + h_in / h_out, with w_in = min(x2, gx2) - max(x1, gx1)
  *not* clamped (negative when the boxes are apart) and w_out the enclosing width;
- corner distance CD = alpha * (d_lt + d_rb) / (diag + eps), Euclidean corner distances with
  eps inside each coordinate difference, over the un-squared enclosing diagonal
  diag = sqrt((w_out + eps)^2 + (h_out + eps)^2);
- similarity s = SO - CD - 1 (1 for a perfect match); loss = 1 - s = (2 - SO) + alpha * CD.

The code divides w_in / w_out with no eps; we do the same, and define the ratio as 1 where
w_out == 0 (both boxes have zero width at the same x), and CD as 0 where both boxes are the
same point, which keeps points and lines finite (and a point on itself at the minimum, 0)
without touching ordinary boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scabench.losses.iou import Pair, safe_div, unpack
from scabench.losses.registry import register


def side_overlap(p: Pair) -> tuple[Tensor, Tensor, Tensor]:
    """(SO, w_out, h_out): SO = w_in/w_out + h_in/h_out in (-2, 2]."""
    w_in = torch.minimum(p.x2, p.gx2) - torch.maximum(p.x1, p.gx1)
    h_in = torch.minimum(p.y2, p.gy2) - torch.maximum(p.y1, p.gy1)
    w_out = torch.maximum(p.x2, p.gx2) - torch.minimum(p.x1, p.gx1)
    h_out = torch.maximum(p.y2, p.gy2) - torch.minimum(p.y1, p.gy1)
    return safe_div(w_in, w_out, 1.0) + safe_div(h_in, h_out, 1.0), w_out, h_out


def corner_distance(p: Pair, w_out: Tensor, h_out: Tensor, eps: float) -> Tensor:
    """(d_lt + d_rb) / (diag + eps), without alpha; 0 where both boxes are the same point.

    For a point on the same point the corner distances are 0 and so is the diagonal: with the
    code's eps in every difference the ratio would be 2 sqrt(2) eps / ((sqrt(2) + 1) eps) = 1.17
    with a gradient ~ 1 / eps. The enclosing box is then empty (w_out = h_out = 0) and the
    distance is defined as 0, its minimum, as SO defines its ratio as 1 there.
    """
    d_lt = torch.sqrt((p.x1 - p.gx1 + eps) ** 2 + (p.y1 - p.gy1 + eps) ** 2)
    d_rb = torch.sqrt((p.x2 - p.gx2 + eps) ** 2 + (p.y2 - p.gy2 + eps) ** 2)
    diag = torch.sqrt((w_out + eps) ** 2 + (h_out + eps) ** 2)
    ratio = (d_lt + d_rb) / (diag + eps)
    same_point = (w_out <= 0) & (h_out <= 0)
    return torch.where(same_point, torch.zeros_like(ratio), ratio)


@register(
    "sca",
    formula="(2 - SO) + alpha * (d_lt + d_rb) / diag",
    paper="Zheng et al., SCALoss, AAAI 2022",
    reference="SCALoss authors' code (yolov3 fork, bbox_iou SCA branch)",
)
def sca_loss(pred: Tensor, target: Tensor, *, alpha: float = 1.0, eps: float = 1e-7) -> Tensor:
    """Side and Corner Aligned loss: side overlap plus alpha times corner distance."""
    p = unpack(pred, target)
    so, w_out, h_out = side_overlap(p)
    return (2 - so) + alpha * corner_distance(p, w_out, h_out, eps)


@register(
    "so",
    formula="2 - SO, SO = w_in/w_out + h_in/h_out",
    paper="Zheng et al., SCALoss, AAAI 2022 (side overlap term)",
    reference="SCALoss authors' code, SO part",
)
def so_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Side-overlap term alone, 2 - SO (0 for a perfect match, up to 4)."""
    return 2 - side_overlap(unpack(pred, target))[0]


@register(
    "cd",
    formula="alpha * (d_lt + d_rb) / diag",
    paper="Zheng et al., SCALoss, AAAI 2022 (corner distance term)",
    reference="SCALoss authors' code, CD part",
)
def cd_loss(pred: Tensor, target: Tensor, *, alpha: float = 1.0, eps: float = 1e-7) -> Tensor:
    """Corner-distance term alone; ``iou+cd`` is the paper's 'corner alignment'."""
    p = unpack(pred, target)
    _, w_out, h_out = side_overlap(p)
    return alpha * corner_distance(p, w_out, h_out, eps)
