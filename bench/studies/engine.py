"""The generic engine of the convergence study: plain autograd, any loss, any device.

One autograd pass over every case per step: ``B <- B - eta_t (2 - IoU(B, G)) dL/dB`` on the
(x, y, w, h) state, with the *exact* gradient of the loss (the MATLAB code's hand-written
gradients differ, see :mod:`scabench.bench.studies.convergence`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from scabench import losses as loss_zoo
from scabench.bench.studies.inputs import ProgressFn
from scabench.bench.studies.protocol import ConvergenceCases, state_to_xyxy
from scabench.losses.iou import box_iou_pairwise


def point_errors(state: Tensor, target: Tensor) -> Tensor:
    """Per anchor point, sum of |dx| + |dy| + |dw| + |dh| over its cases, in float64."""
    err = (state[0] - target[0]).abs() + (state[1] - target[1]).abs()
    err = err + (state[2] - target[2]).abs() + (state[3] - target[3]).abs()
    return err.to(torch.float64).sum(dim=(1, 2))


def autograd_step(loss: loss_zoo.BoxLoss, state: Tensor, target: Tensor, eta: float) -> Tensor:
    """One step ``B <- B - eta (2 - IoU(B, G)) dL/dB`` of the [4, ...] (x, y, w, h) state."""
    leaf = state.detach().requires_grad_(True)
    pred = state_to_xyxy(leaf)
    (grad,) = torch.autograd.grad(loss(pred, target).sum(), leaf)
    with torch.no_grad():
        iou = box_iou_pairwise(pred.detach(), target, eps=loss.eps)
        return state - (eta * (2 - iou)) * grad


def run_autograd(
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
    out[:, 0] = point_errors(state, target_c)
    for t, eta in enumerate(rates):
        state = autograd_step(loss, state, target, eta)
        out[:, t + 1] = point_errors(state, target_c)
        if progress is not None:
            progress(label, (t + 1) / len(rates))
    return out.cpu().numpy()
