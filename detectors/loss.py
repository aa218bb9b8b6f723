"""Target assignment and the YOLOv3 loss, with the box loss taken from the registry (REFERENCES 4).

Assignment, per level: a target matches an anchor when the larger of w/a_w, a_w/w, h/a_h, a_h/h
is below ``anchor_t`` (4.0); each match takes its own cell and up to two neighbouring cells
whose centre lies within half a cell of the target centre (left or right, up or down), so up
to three cells. All indices are integer tensors (the reference indexed with floats, which
current torch refuses).

Loss: box = mean over matches of ``box_loss(pred, target)`` (xyxy in grid units, relative to
the cell); objectness BCE against the detached similarity clamped at 0 (``obj_target="loss"``:
``box_loss.similarity``, what the SCALoss code did) or against plain IoU (``"iou"``); class
BCE against one-hot targets when there is more than one class. Levels weighted [4.0, 1.0, 0.4]
(two levels: [4.0, 1.0]); gains box * 3/nl, obj * (img/640)^2 * 3/nl, cls * nc/80 * 3/nl;
the total is multiplied by the batch size. Everything is computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scabench.losses.iou import box_iou_pairwise

# centre cell, then the neighbours: left, up, right, down (offsets subtracted from the centre)
_NEIGHBOURS = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]])


@dataclass
class LevelTargets:
    """Matches on one level: image, anchor, row, column (long), box (x, y, w, h in grid units,
    x and y relative to the cell's corner), the matched anchor's size and the class."""

    image: Tensor
    anchor: Tensor
    gj: Tensor
    gi: Tensor
    box: Tensor
    anchor_wh: Tensor
    cls: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])


def build_targets(
    targets: Tensor, anchors: Tensor, shapes: list[tuple[int, int]], anchor_t: float = 4.0, near: float = 0.5
) -> list[LevelTargets]:
    """Assign ``targets`` [n, 6] = (image, class, x, y, w, h), xywh normalised to [0, 1], to cells.

    ``anchors``: [levels, anchors, 2] in grid units of each level; ``shapes``: (ny, nx) per level.
    """
    device = targets.device
    out = []
    neighbours = _NEIGHBOURS.to(device)
    for level, (ny, nx) in enumerate(shapes):
        size = torch.tensor([nx, ny], device=device, dtype=targets.dtype)
        xy = targets[:, 2:4] * size
        wh = targets[:, 4:6] * size
        ratio = wh[None] / anchors[level][:, None].to(targets.dtype)  # [na, n, 2]
        match = torch.maximum(ratio, 1 / ratio).amax(2) < anchor_t
        a, t = match.nonzero(as_tuple=True)
        gxy, gwh = xy[t], wh[t]
        frac = gxy % 1.0
        inv = size - gxy
        use = torch.stack(
            (
                torch.ones_like(frac[:, 0], dtype=torch.bool),
                (frac[:, 0] < near) & (gxy[:, 0] > 1.0),  # left neighbour
                (frac[:, 1] < near) & (gxy[:, 1] > 1.0),  # upper neighbour
                ((inv[:, 0] % 1.0) < near) & (inv[:, 0] > 1.0),  # right neighbour
                ((inv[:, 1] % 1.0) < near) & (inv[:, 1] > 1.0),  # lower neighbour
            )
        )  # [5, m]
        k, m = use.nonzero(as_tuple=True)
        centre = gxy[m]
        cell = (centre - neighbours[k]).floor().long()
        gi = cell[:, 0].clamp(0, nx - 1)
        gj = cell[:, 1].clamp(0, ny - 1)
        rel = centre - torch.stack((gi, gj), 1).to(centre.dtype)
        tt = t[m]
        out.append(
            LevelTargets(
                image=targets[tt, 0].long(),
                anchor=a[m],
                gj=gj,
                gi=gi,
                box=torch.cat((rel, gwh[m]), 1),
                anchor_wh=anchors[level][a[m]].to(targets.dtype),
                cls=targets[tt, 1].long(),
            )
        )
    return out


def _xywh_to_xyxy(b: Tensor) -> Tensor:
    half = b[:, 2:4] / 2
    return torch.cat((b[:, :2] - half, b[:, :2] + half), 1)


class FocalBCE(nn.Module):
    """BCE with logits times (1 - p_t)^gamma and alpha balance (used when hyp fl_gamma > 0)."""

    def __init__(self, pos_weight: Tensor | None, gamma: float, alpha: float = 0.25):
        super().__init__()
        self.pos_weight, self.gamma, self.alpha = pos_weight, gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight, reduction="none")
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha * (1.0 - p_t) ** self.gamma).mean()


class YoloLoss:
    """``loss(preds, targets) -> (total, items)``; ``items`` = detached [box, obj, cls] (means).

    ``box_loss``: a registry :class:`losses.BoxLoss`; ``anchors``: [levels, anchors, 2] grid units.
    """

    def __init__(self, box_loss, anchors: Tensor, num_classes: int, hyp: dict, img_size: int, obj_target: str = "loss"):
        if obj_target not in ("loss", "iou"):
            raise ValueError(f"obj_target must be 'loss' or 'iou', got {obj_target!r}")
        self.box_loss = box_loss
        self.anchors = anchors.float()
        self.nc = num_classes
        self.nl = anchors.shape[0]
        self.obj_target = obj_target
        self.anchor_t = hyp["anchor_t"]
        self.balance = [4.0, 1.0, 0.4] if self.nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][: self.nl]
        self.gain_box = hyp["box"] * 3 / self.nl
        self.gain_obj = hyp["obj"] * (img_size / 640) ** 2 * 3 / self.nl
        self.gain_cls = hyp["cls"] * num_classes / 80 * 3 / self.nl
        device = self.anchors.device
        cls_pw, obj_pw = torch.tensor([hyp["cls_pw"]], device=device), torch.tensor([hyp["obj_pw"]], device=device)
        if hyp["fl_gamma"] > 0:
            self.bce_cls, self.bce_obj = FocalBCE(cls_pw, hyp["fl_gamma"]), FocalBCE(obj_pw, hyp["fl_gamma"])
        else:
            self.bce_cls = nn.BCEWithLogitsLoss(pos_weight=cls_pw)
            self.bce_obj = nn.BCEWithLogitsLoss(pos_weight=obj_pw)

    def to(self, device) -> "YoloLoss":
        self.anchors = self.anchors.to(device)
        for bce in (self.bce_cls, self.bce_obj):
            bce.pos_weight = bce.pos_weight.to(device)
        return self

    def __call__(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        preds = [p.float() for p in preds]
        device = preds[0].device
        shapes = [(p.shape[2], p.shape[3]) for p in preds]
        assigned = build_targets(targets.to(device).float(), self.anchors, shapes, self.anchor_t)
        zero = torch.zeros((), device=device)
        lbox, lobj, lcls = zero, zero, zero
        for level, (p, t) in enumerate(zip(preds, assigned)):
            tobj = torch.zeros_like(p[..., 4])
            if len(t):
                ps = p[t.image, t.anchor, t.gj, t.gi]  # [m, 5 + nc]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                pbox = _xywh_to_xyxy(torch.cat((pxy, pwh), 1))
                tbox = _xywh_to_xyxy(t.box)
                value = self.box_loss(pbox, tbox)
                lbox = lbox + value.mean()
                if self.obj_target == "loss":
                    score = self.box_loss.similarity(pbox, tbox, loss=value)
                else:
                    score = box_iou_pairwise(pbox.detach(), tbox)
                tobj[t.image, t.anchor, t.gj, t.gi] = score.detach().clamp(min=0).to(tobj.dtype)
                if self.nc > 1:
                    onehot = torch.zeros_like(ps[:, 5:])
                    onehot[torch.arange(len(t), device=device), t.cls] = 1.0
                    lcls = lcls + self.bce_cls(ps[:, 5:], onehot)
            lobj = lobj + self.bce_obj(p[..., 4], tobj) * self.balance[level]
        lbox = lbox * self.gain_box
        lobj = lobj * self.gain_obj
        lcls = lcls * self.gain_cls
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.stack((lbox, lobj, lcls)).detach()
