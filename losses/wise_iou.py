"""Wise-IoU v1, v2, v3 (Tong, Chen, Xu & Yu, arXiv 2301.10051, 2023).

- v1: L = R_WIoU * L_IoU, R_WIoU = exp(rho^2 / (Wg^2 + Hg^2)^*), L_IoU = 1 - IoU, with
  Wg, Hg the enclosing box and ^* meaning detached (no gradient through the denominator).
- v2: L = (L_IoU^* / mean(L_IoU))^gamma * L_v1, gamma = 0.5 (monotonic focusing).
- v3: L = r * L_v1, r = beta / (delta * alpha^(beta - delta)), beta = L_IoU^* / mean(L_IoU),
  alpha = 1.9, delta = 3 (non-monotonic focusing: r = 1 at beta = delta, largest at
  beta = 1 / ln(alpha), small for both very good and very poor boxes).

How the running mean is kept (v2, v3). ``state["iou_mean"]`` is a 0-dim tensor on the
input's device (created as 1.0, the reference's initial value). On every call whose state
lacks ``"frozen"`` it is updated under no_grad by an exponential moving average of the
batch mean of L_IoU, *before* it is used for that batch, as the reference does:

    mean <- (1 - m) * mean + m * mean_over_batch(L_IoU),   m = 1 - 0.5 ** (1 / 7000)

(the authors' published ``WIoU_Scale`` / ``IoU_Cal`` code: a half-life of 7000 steps; the
paper's rule m = 1 - 0.05 ** (1 / (n t)) for n batches per epoch and t epochs is reachable
through the ``momentum`` parameter). :class:`losses.BoxLoss` passes its ``self.state`` in
train mode and a copy marked ``"frozen": True`` in eval mode, so evaluation reads the mean
without moving it. Unlike the reference (a class attribute updated with ``.item()``), the
update never leaves the device, and each loss object keeps its own mean. Empty batches do
not update it. The detector's objectness target is the plain IoU (the authors' README:
"the confidence of the bounding box uses IoU instead of L_WIoU").
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from scabench.losses.iou import center_distance_sq, enclosing_wh, iou_of, unpack
from scabench.losses.registry import register

#: The authors' published running-mean momentum (WIoU_Scale._momentum).
WIOU_MOMENTUM = 1 - 0.5 ** (1 / 7000)


def _v1_parts(pred: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(L_IoU, L_WIoUv1). eps is added to the detached squared diagonal (the reference has
    none; with it, points and coincident zero-size boxes stay finite)."""
    p = unpack(pred, target)
    iou, _ = iou_of(p, eps)
    cw, ch = enclosing_wh(p)
    diag_sq = (cw * cw + ch * ch).detach() + eps
    l_iou = 1 - iou
    return l_iou, torch.exp(center_distance_sq(p) / diag_sq) * l_iou


def running_iou_mean(l_iou: Tensor, state: dict[str, Any] | None, momentum: float) -> Tensor:
    """The running mean of L_IoU to use for this batch, updated in ``state`` unless frozen.

    Returns a detached 0-dim tensor on ``l_iou``'s device. No host sync: the update is
    tensor arithmetic; the only Python branches are on the state's keys and the shape.
    """
    if state is None:
        state = {}
    mean = state.get("iou_mean")
    if mean is None:
        mean = torch.ones((), dtype=l_iou.dtype, device=l_iou.device)
    else:
        mean = mean.to(device=l_iou.device)
    if not state.get("frozen", False):
        if l_iou.numel() > 0:
            with torch.no_grad():
                batch_mean = l_iou.detach().mean().to(mean.dtype)
                mean = mean * (1 - momentum) + batch_mean * momentum
        state["iou_mean"] = mean
    return mean.detach()


def _beta(l_iou: Tensor, mean: Tensor, eps: float) -> Tensor:
    """Outlier degree beta = L_IoU^* / mean, detached; the mean is floored at eps."""
    return l_iou.detach() / mean.clamp(min=eps)


def focusing_v3(beta: Tensor, alpha: float, delta: float) -> Tensor:
    """r = beta / (delta * alpha^(beta - delta)), written as beta/delta * exp((delta - beta) ln alpha)
    so that huge beta gives 0 rather than inf/inf."""
    return beta / delta * torch.exp((delta - beta) * math.log(alpha))


@register(
    "wiou-v1",
    formula="exp(rho^2 / (Wg^2 + Hg^2)^*) * (1 - IoU), ^* detached",
    paper="Tong et al., Wise-IoU: bounding box regression loss with dynamic focusing mechanism, arXiv 2301.10051 (2023)",
    reference="Instinct323/wiou iou.py _WIoU (denominator detached)",
    similarity="iou",
    detaches=True,
)
def wiou_v1_loss(pred: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Wise-IoU v1: distance attention R_WIoU in [1, e) times the IoU loss; stateless."""
    return _v1_parts(pred, target, eps)[1]


@register(
    "wiou-v2",
    formula="(L_IoU^* / mean L_IoU)^gamma * L_WIoUv1, running mean by EMA",
    paper="Tong et al., Wise-IoU, arXiv 2301.10051 (2023)",
    reference="authors' WIoU_Scale (monotonous=True: sqrt, momentum 1 - 0.5**(1/7000), initial mean 1)",
    similarity="iou",
    stateful=True,
    detaches=True,
)
def wiou_v2_loss(
    pred: Tensor,
    target: Tensor,
    *,
    gamma: float = 0.5,
    momentum: float = WIOU_MOMENTUM,
    state: dict[str, Any] | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Wise-IoU v2: monotonic focusing (L_IoU^*/mean)^gamma, gamma = 0.5, on top of v1."""
    l_iou, v1 = _v1_parts(pred, target, eps)
    mean = running_iou_mean(l_iou, state, momentum)
    return _beta(l_iou, mean, eps) ** gamma * v1


@register(
    "wiou-v3",
    formula="r * L_WIoUv1, r = beta / (delta alpha^(beta - delta)), beta = L_IoU^* / mean L_IoU",
    paper="Tong et al., Wise-IoU, arXiv 2301.10051 (2023)",
    reference="authors' WIoU_Scale (monotonous=False, alpha 1.9, delta 3, momentum 1 - 0.5**(1/7000), initial mean 1)",
    similarity="iou",
    stateful=True,
    detaches=True,
)
def wiou_v3_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.9,
    delta: float = 3.0,
    momentum: float = WIOU_MOMENTUM,
    state: dict[str, Any] | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Wise-IoU v3: non-monotonic focusing r(beta) on top of v1 (alpha 1.9, delta 3)."""
    l_iou, v1 = _v1_parts(pred, target, eps)
    mean = running_iou_mean(l_iou, state, momentum)
    return focusing_v3(_beta(l_iou, mean, eps), alpha, delta) * v1
