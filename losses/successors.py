"""Successors of the IoU family: EIoU, Focal-EIoU, SIoU, alpha-IoU, MPDIoU, Inner-IoU,
Focaler-IoU, Shape-IoU and Powerful-IoU (Wise-IoU lives in :mod:`losses.wise_iou`).

Every function takes element-wise xyxy pairs ``[..., 4]`` and returns ``[...]`` (no reduction).
Each docstring names the paper, the reference code it follows, and where the two disagree.

Conventions shared with :mod:`losses.iou` (torchvision's): IoU = inter / (union + eps), with
inverted boxes counting as zero area; eps is added where the reference code adds it (the
squared enclosing diagonal, EIoU's squared enclosing sides). Where the reference code divides
with no eps, we divide exactly and define the ratio as 0 where its denominator is 0 (only
degenerate boxes reach that branch: points, zero-width pairs); the guard is a ``torch.where``
on the *denominator*, so no NaN reaches the backward pass and nothing syncs with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scabench.losses.iou import (
    Pair,
    aspect_term,
    center_deltas,
    center_distance_sq,
    enclosing_wh,
    iou_of,
    safe_div,
    unpack,
)
from scabench.losses.registry import register

# --------------------------------------------------------------------------------------
# Helpers (degenerate-safe arithmetic)


def _pow0(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent for x >= 0, with 0 ** exponent = 0 and a finite gradient at 0.

    ``x ** a`` has an infinite derivative at 0 for a < 1; selecting the base keeps it finite.
    """
    ok = x > 0
    return torch.where(ok, torch.where(ok, x, torch.ones_like(x)) ** exponent, torch.zeros_like(x))


def _sizes(p: Pair) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(w, h, gw, gh) as coordinate differences (negative for inverted boxes)."""
    return p.x2 - p.x1, p.y2 - p.y1, p.gx2 - p.gx1, p.gy2 - p.gy1


def _shape_cost(w: Tensor, gw: Tensor, weight: Tensor | float, theta: float) -> Tensor:
    """(1 - exp(-weight * |w - gw| / max(w, gw))) ** theta, widths of inverted boxes as 0."""
    w, gw = w.clamp(min=0), gw.clamp(min=0)
    omega = weight * safe_div((w - gw).abs(), torch.maximum(w, gw), 0.0)
    return (1 - torch.exp(-omega)) ** theta


# --------------------------------------------------------------------------------------
# Efficient-IoU and Focal-EIoU (Zhang et al.)


def _eiou(p: Pair, eps: float) -> tuple[Tensor, Tensor]:
    iou, _ = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    w, h, gw, gh = _sizes(p)
    cw2, ch2 = cw * cw, ch * ch
    loss = (
        1
        - iou
        + center_distance_sq(p) / (cw2 + ch2 + eps)
        + (w - gw) ** 2 / (cw2 + eps)
        + (h - gh) ** 2 / (ch2 + eps)
    )
    return loss, iou


@register(
    "eiou",
    formula="1 - IoU + rho^2/c^2 + (w - wg)^2/cw^2 + (h - hg)^2/ch^2",
    paper="Zhang et al., Focal and efficient IOU loss (Efficient-IoU), Neurocomputing 2022",
    reference="YOLOv5-style bbox_iou(EIoU=True) as shared by the Wise-IoU/Alpha-IoU code (eps in c^2, cw^2, ch^2)",
)
def eiou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Efficient-IoU loss (Zhang, Ren, Zhang, Jia, Wang, Tan 2022).

    1 - IoU + rho^2(b, bg) / c^2 + (w - wg)^2 / cw^2 + (h - hg)^2 / ch^2, with cw, ch the
    sides and c the diagonal of the smallest enclosing box; eps is added to c^2, cw^2 and ch^2
    as the YOLOv5-style reference code does. Widths are raw coordinate differences.

    Not mmdetection's ``EIoULoss``: that one is *Extended*-IoU (Peng & Yu, smooth_point
    0.1), a different loss with the same acronym.
    """
    return _eiou(unpack(pred, target), eps)[0]


@register(
    "focal-eiou",
    formula="IoU^gamma (detached) * EIoU",
    paper="Zhang et al., Focal and efficient IOU loss, Neurocomputing 2022",
    reference="YOLOv5-style code: lbox = iou_gamma.detach() * (1 - eiou), gamma 0.5",
    similarity="iou",
    detaches=True,
)
def focal_eiou_loss(pred: Tensor, target: Tensor, *, gamma: float = 0.5, eps: float = 1e-7) -> Tensor:
    """Focal-EIoU: IoU^gamma * L_EIoU with gamma = 0.5 (the paper's choice).

    The IoU^gamma weight is detached, as the widely used YOLOv5/v8 code does
    (``iou[1].detach() * (1 - iou[0])``), so it reweights boxes without adding its own
    gradient. Per-box values: the batch normalisation by the summed weights that some
    implementations apply is left to the caller's reduction. Disjoint boxes get weight 0.
    """
    loss, iou = _eiou(unpack(pred, target), eps)
    with torch.no_grad():
        weight = _pow0(iou, gamma)
    return weight * loss


# --------------------------------------------------------------------------------------
# SIoU (Gevorgyan)


@register(
    "siou",
    formula="1 - IoU + (Delta + Omega)/2, Delta = sum_t 1 - exp(-(2 - Lambda) rho_t), Omega = sum_t (1 - exp(-omega_t))^theta",
    paper="Gevorgyan, SIoU loss: more powerful learning for bounding box regression, arXiv 2205.12740 (2022)",
    reference="YOLOv6 / mmyolo SIoU (= mmdetection SIoULoss with neg_gamma=True), no clamp, no eps offsets",
)
def siou_loss(pred: Tensor, target: Tensor, *, theta: float = 4.0, eps: float = 1e-7) -> Tensor:
    """SIoU loss: IoU with angle-aware distance cost and shape cost.

    - Angle cost Lambda = 1 - 2 sin^2(arcsin(sin a) - pi/4) = sin(2a), a the angle of the
      centre offset to the x axis; written here as 2 |dx| |dy| / (dx^2 + dy^2), which is the
      same number with no arcsin (whose derivative is infinite at 1) and is 0 at equal centres.
    - Distance cost Delta = sum over x, y of 1 - exp(-gamma rho_t), rho_x = (dx / cw)^2,
      rho_y = (dy / ch)^2 with cw, ch the enclosing box, gamma = 2 - Lambda.
    - Shape cost Omega = sum over w, h of (1 - exp(-omega_t))^theta,
      omega_w = |w - wg| / max(w, wg); theta = 4.

    Sign of gamma: the paper's Delta = sum 1 - exp(-(2 - Lambda) rho_t) is in [0, 2) and grows
    with the centre distance. YOLOv6 and mmyolo write ``gamma = angle_cost - 2`` and
    ``2 - exp(gamma rho_x) - exp(gamma rho_y)``: the same thing. mmdetection's ``SIoULoss``
    defaults to ``neg_gamma=False``, i.e. exp(+(2 - Lambda) rho): its "distance cost" is
    negative and *decreases* as the boxes move apart: for pred [0,0,2,2] and target
    [s,0,s+2,2], s = 2, 3, 4, 6 (touching, then disjoint), its 1 - SIoU is 0.676, 0.473, 0.284,
    then 0 (1 - SIoU would be -0.040; mmdetection clamps SIoU to [-1, 1]), so its gradient
    pushes disjoint boxes apart; the paper's sign gives 1.197, 1.257, 1.294, 1.338. We follow
    the paper / YOLOv6 sign (tests/test_successors.py checks these numbers). We do not clamp
    1 - SIoU to [0, 2] as mmdetection/mmyolo do, and add no eps to the centre offsets (YOLOv6
    does).
    """
    p = unpack(pred, target)
    iou, _ = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    dx, dy = center_deltas(p)
    dx2, dy2 = dx * dx, dy * dy
    angle = safe_div(2 * dx.abs() * dy.abs(), dx2 + dy2, 0.0)
    gamma = 2 - angle
    rho_x = safe_div(dx2, cw * cw, 0.0)
    rho_y = safe_div(dy2, ch * ch, 0.0)
    distance = 2 - torch.exp(-gamma * rho_x) - torch.exp(-gamma * rho_y)
    w, h, gw, gh = _sizes(p)
    shape = _shape_cost(w, gw, 1.0, theta) + _shape_cost(h, gh, 1.0, theta)
    return 1 - iou + 0.5 * (distance + shape)


# --------------------------------------------------------------------------------------
# alpha-IoU (He et al.)


@register(
    "alpha-iou",
    formula="1 - IoU^alpha",
    paper="He et al., Alpha-IoU: a family of power intersection over union losses, NeurIPS 2021",
    reference="Jacobi93/Alpha-IoU bbox_alpha_iou (without its eps inside the power)",
)
def alpha_iou_loss(pred: Tensor, target: Tensor, *, alpha: float = 3.0, eps: float = 1e-7) -> Tensor:
    """Power IoU loss 1 - IoU^alpha, alpha = 3 (the paper's recommended value).

    The authors' code takes ``(inter/union + eps) ** alpha``; we take IoU ** alpha with
    IoU = inter / (union + eps) as every other loss here, so identical boxes give ~0.
    """
    iou, _ = iou_of(unpack(pred, target), eps)
    return 1 - _pow0(iou, alpha)


@register(
    "alpha-ciou",
    formula="1 - IoU^alpha + (rho^2/c^2)^alpha + (beta v)^alpha, beta = v/(1 - IoU + v) detached",
    paper="He et al., Alpha-IoU: a family of power intersection over union losses, NeurIPS 2021",
    reference="the paper's alpha-CIoU (Eq. 8); CIoU's beta as torchvision (detached, no gate)",
    detaches=True,
)
def alpha_ciou_loss(pred: Tensor, target: Tensor, *, alpha: float = 3.0, eps: float = 1e-7) -> Tensor:
    """alpha-CIoU: every CIoU term raised to alpha (= 3).

    Follows the paper: the centre term is (rho^2 / c^2)^alpha with c^2 + eps. The authors'
    code departs from it for alpha != 1: it computes (|dx|^{2a} + |dy|^{2a}) / 2^{2a} over
    cw^{2a} + ch^{2a} + eps (per-axis powers), which is not (rho^2/c^2)^a; we keep the paper.
    beta = v / (1 - IoU + v + eps) is computed under no_grad from the plain IoU, as CIoU.
    """
    p = unpack(pred, target)
    iou, _ = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    centre = center_distance_sq(p) / (cw * cw + ch * ch + eps)
    v = aspect_term(p, eps)
    with torch.no_grad():
        beta = v / (1 - iou + v + eps)
    return 1 - _pow0(iou, alpha) + _pow0(centre, alpha) + _pow0(beta * v, alpha)


# --------------------------------------------------------------------------------------
# MPDIoU (Ma & Xu)


@register(
    "mpdiou",
    formula="1 - IoU + d_tl^2/(W^2 + H^2) + d_br^2/(W^2 + H^2), W, H the image size",
    paper="Ma & Xu, MPDIoU: a loss for efficient and accurate bounding box regression, arXiv 2307.07662 (2023)",
    reference="the paper's Eq.; image size as parameters (YOLOv8 ports pass imgsz)",
)
def mpdiou_loss(
    pred: Tensor,
    target: Tensor,
    *,
    image_width: float = 640.0,
    image_height: float = 640.0,
    eps: float = 1e-7,
) -> Tensor:
    """Minimum-point-distance IoU loss: IoU minus the squared top-left and bottom-right
    corner distances, each over the squared *image* diagonal W^2 + H^2.

    A per-box loss does not see the image, so W and H are parameters (default 640 x 640,
    the YOLO training size); pass the real input size. Boxes in pixels, like W and H.
    """
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"mpdiou: image_width and image_height must be > 0, got {image_width}, {image_height}")
    p = unpack(pred, target)
    iou, _ = iou_of(p, eps)
    d_tl = (p.x1 - p.gx1) ** 2 + (p.y1 - p.gy1) ** 2
    d_br = (p.x2 - p.gx2) ** 2 + (p.y2 - p.gy2) ** 2
    return 1 - iou + (d_tl + d_br) / (float(image_width) ** 2 + float(image_height) ** 2)


# --------------------------------------------------------------------------------------
# Inner-IoU, Focaler-IoU, Shape-IoU (Zhang, Xu, Zhang)


def _scaled_about_centre(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor, ratio: float):
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half_w, half_h = (x2 - x1) * (0.5 * ratio), (y2 - y1) * (0.5 * ratio)
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


@register(
    "inner-iou",
    formula="1 - IoU(inner boxes), inner box = box scaled about its centre by ratio",
    paper="Zhang, Xu & Zhang, Inner-IoU: more effective IoU loss with auxiliary bounding box, arXiv 2311.02877 (2023)",
    reference="malagoutou/Inner-IoU (inner_iou part); ratio 0.75 from the paper's VOC range, code default 1.0",
)
def inner_iou_loss(pred: Tensor, target: Tensor, *, ratio: float = 0.75, eps: float = 1e-7) -> Tensor:
    """Inner-IoU loss: 1 - IoU of auxiliary boxes, both scaled by ``ratio`` about their centres.

    ratio < 1 (smaller auxiliary boxes) speeds up high-IoU samples, ratio > 1 low-IoU ones;
    the paper recommends [0.5, 1.5] and its VOC runs use 0.7-0.8. The authors' code defaults
    to ratio = 1.0, which makes this plain 1 - IoU; we default to 0.75, the middle of the
    range the paper reports best. (The paper's Inner-X losses are L_X + IoU - IoU_inner;
    only the plain Inner-IoU loss 1 - IoU_inner is registered here.)
    """
    if ratio <= 0:
        raise ValueError(f"inner-iou: ratio must be > 0, got {ratio}")
    p = unpack(pred, target)
    inner = Pair(
        *_scaled_about_centre(p.x1, p.y1, p.x2, p.y2, ratio),
        *_scaled_about_centre(p.gx1, p.gy1, p.gx2, p.gy2, ratio),
    )
    return 1 - iou_of(inner, eps)[0]


@register(
    "focaler-iou",
    formula="1 - clamp((IoU - d)/(u - d), 0, 1)",
    paper="Zhang & Zhang, Focaler-IoU: more focused intersection over union loss, arXiv 2401.10525 (2024)",
    reference="malagoutou/Focaler-IoU (d = 0.00, u = 0.95)",
    similarity="iou",
)
def focaler_iou_loss(pred: Tensor, target: Tensor, *, d: float = 0.0, u: float = 0.95, eps: float = 1e-7) -> Tensor:
    """Focaler-IoU loss: IoU linearly remapped from [d, u] onto [0, 1], then 1 - that.

    Boxes with IoU below d get no gradient, above u the loss is 0; the authors' code
    defaults to d = 0.00, u = 0.95. (Their Focaler-X losses add IoU - IoU_focaler to L_X.)
    """
    if not u > d:
        raise ValueError(f"focaler-iou: need u > d, got d={d}, u={u}")
    iou, _ = iou_of(unpack(pred, target), eps)
    return 1 - ((iou - d) / (u - d)).clamp(0, 1)


@register(
    "shape-iou",
    formula="1 - IoU + (hh dx^2 + ww dy^2)/c^2 + 0.5 sum_t (1 - exp(-omega_t))^4, ww, hh from the target's shape",
    paper="Zhang & Zhang, Shape-IoU: more accurate metric considering bounding box shape and scale, arXiv 2312.17663 (2023)",
    reference="malagoutou/Shape-IoU shapeiou.py (scale = 0, eps in c^2)",
)
def shape_iou_loss(pred: Tensor, target: Tensor, *, scale: float = 0.0, eps: float = 1e-7) -> Tensor:
    """Shape-IoU loss: distance and shape costs weighted by the target box's shape.

    ww = 2 wg^s / (wg^s + hg^s), hh = 2 hg^s / (wg^s + hg^s) (s = ``scale``, tied to the
    targets' size in the dataset; the authors' code defaults to 0, which makes ww = hh = 1);
    distance = (hh dx^2 + ww dy^2) / (c^2 + eps) with c the enclosing diagonal; shape cost
    sum over t of (1 - exp(-omega_t))^4 with omega_w = hh |w - wg| / max(w, wg),
    omega_h = ww |h - hg| / max(h, hg); loss = 1 - IoU + distance + 0.5 shape.
    Target sides are floored at eps inside the weights only (so 0-size targets stay finite).
    """
    p = unpack(pred, target)
    iou, _ = iou_of(p, eps)
    w, h, gw, gh = _sizes(p)
    sw, sh = gw.clamp(min=eps) ** scale, gh.clamp(min=eps) ** scale
    ww, hh = 2 * sw / (sw + sh), 2 * sh / (sw + sh)
    cw, ch = enclosing_wh(p)
    dx, dy = center_deltas(p)
    distance = (hh * dx * dx + ww * dy * dy) / (cw * cw + ch * ch + eps)
    shape = _shape_cost(w, gw, hh, 4.0) + _shape_cost(h, gh, ww, 4.0)
    return 1 - iou + distance + 0.5 * shape


# --------------------------------------------------------------------------------------
# Powerful-IoU (Liu et al.)


def _piou(p: Pair, eps: float) -> tuple[Tensor, Tensor]:
    """(L_PIoU, P): L_PIoU = 1 - IoU + 1 - exp(-P^2), P the target-size-adaptive edge penalty."""
    iou, _ = iou_of(p, eps)
    _, _, gw, gh = _sizes(p)
    gw, gh = gw.clamp(min=eps), gh.clamp(min=eps)
    penalty = (
        ((p.x1 - p.gx1).abs() + (p.x2 - p.gx2).abs()) / gw + ((p.y1 - p.gy1).abs() + (p.y2 - p.gy2).abs()) / gh
    ) * 0.25
    return 1 - iou + 1 - torch.exp(-penalty * penalty), penalty


@register(
    "piou",
    formula="1 - IoU + 1 - exp(-P^2), P = (|dx1|/wg + |dx2|/wg + |dy1|/hg + |dy2|/hg)/4",
    paper="Liu et al., Powerful-IoU, Neural Networks 170 (2024)",
    reference="fppccc/Powerful-IoU YOLOv8/piou.py (PIoU=True)",
)
def piou_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Powerful-IoU (v1): IoU loss plus 1 - exp(-P^2), P the mean edge distance in units of
    the target's width and height. Target sides are floored at eps (the code adds eps to h)."""
    return _piou(unpack(pred, target), eps)[0]


@register(
    "piou-v2",
    formula="u(lambda q) * L_PIoU, q = exp(-P), u(x) = 3 x exp(-x^2)",
    paper="Liu et al., Powerful-IoU, Neural Networks 170 (2024)",
    reference="fppccc/Powerful-IoU YOLOv8/piou.py (PIoU2=True, Lambda 1.3; attention not detached)",
    similarity="iou",
)
def piou_v2_loss(pred: Tensor, target: Tensor, *, lam: float = 1.3, eps: float = 1e-7) -> Tensor:
    """Powerful-IoU v2: PIoU with the non-monotonic attention u(x) = 3 x exp(-x^2) of
    x = lambda q, q = exp(-P) in (0, 1] the anchor quality; lambda = 1.3 (paper and code).

    As the authors' code, the attention factor is not detached (it carries gradient).
    """
    loss, penalty = _piou(unpack(pred, target), eps)
    x = lam * torch.exp(-penalty)
    return 3 * x * torch.exp(-x * x) * loss
