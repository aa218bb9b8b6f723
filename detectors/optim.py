"""The optimisation recipe of the reference trainer and ``train_step``, the one training step.

ultralytics/yolov3 v9.6.0 with hyp.scratch (REFERENCES 4): SGD (nesterov) with three parameter
groups (BatchNorm weights and biases without weight decay), gradient accumulation to a nominal
batch of 64 images, a warmup of learning rate (bias group from ``warmup_bias_lr`` down, the
others from 0 up), momentum (0.8 -> 0.937) and accumulation, then a cosine schedule from lr0
to lr0 * lrf, and an EMA of the weights (decay 0.9999 (1 - exp(-updates / 2000))).

:func:`train_step` is what the trainer, the speed benchmark and the GPU check all run.
"""

from __future__ import annotations

import math
from copy import deepcopy

import numpy as np
import torch
from torch import Tensor, nn

NOMINAL_BATCH = 64  # images per optimizer step of the reference; weight decay is per 64 images


def warmup_iterations(warmup_epochs: float, iters_per_epoch: int, total_iters: int) -> int:
    """Warmup length in iterations (batches).

    Reference: max(warmup_epochs epochs, 1000 iterations), made for 300-epoch COCO runs where it
    is about 1 % of the run. A short run would spend most of itself warming up (3 of 10 epochs,
    or all of it), so the warmup is capped at a tenth of the run, but kept at no less than
    min(50 iterations, a third of the run). COCO-sized runs get exactly the reference value.
    """
    reference = max(round(warmup_epochs * iters_per_epoch), 1000)
    cap = max(total_iters // 10, min(50, total_iters // 3))
    return max(1, min(reference, cap))


def cosine(epoch: int, epochs: int, lrf: float) -> float:
    """Learning-rate factor: 1 at epoch 0 down to lrf at the last epoch (one cosine half-wave)."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def warmup(optimizer: torch.optim.Optimizer, ni: int, nw: int, lr_epoch: float, hyp: dict, accumulate_final: float) -> int:
    """Set the groups' lr and momentum for iteration ``ni`` of a warmup of ``nw``; returns the accumulation.

    Linear in ``ni`` as the reference: accumulation 1 -> ``accumulate_final`` (nominal / batch),
    lr of the bias group (index 2) ``warmup_bias_lr`` -> ``lr_epoch``, of the others 0 -> ``lr_epoch``,
    momentum ``warmup_momentum`` -> ``momentum``.
    """
    x = [0, nw]
    for j, g in enumerate(optimizer.param_groups):
        g["lr"] = float(np.interp(ni, x, [hyp["warmup_bias_lr"] if j == 2 else 0.0, lr_epoch]))
        set_momentum(g, float(np.interp(ni, x, [hyp["warmup_momentum"], hyp["momentum"]])))
    return max(1, int(np.interp(ni, x, [1, accumulate_final]).round()))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[BatchNorm weights (no decay), other weights (decay), biases (no decay)]."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            biases.append(bias)
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            (bn_weights if isinstance(module, nn.modules.batchnorm._BatchNorm) else weights).append(weight)
    return [
        {"params": bn_weights, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


def set_momentum(group: dict, momentum: float) -> None:
    """SGD's momentum, or AdamW's first beta (ultralytics warms both up the same way)."""
    if "betas" in group:
        group["betas"] = (momentum, group["betas"][1])
    else:
        group["momentum"] = momentum


def make_optimizer(name: str, model: nn.Module, hyp: dict, weight_decay: float) -> torch.optim.Optimizer:
    """``sgd``: the reference, nesterov SGD at ``lr0``; ``adamw``: AdamW at ``lr0`` with betas
    (``momentum``, 0.999), what ultralytics picks for short runs. Both over :func:`parameter_groups`."""
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=hyp["lr0"], betas=(hyp["momentum"], 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")
    for g in optimizer.param_groups:
        g["initial_lr"] = hyp["lr0"]
    return optimizer


def sgd(model: nn.Module, hyp: dict, weight_decay: float) -> torch.optim.SGD:
    """The reference optimizer: nesterov SGD over :func:`parameter_groups` at ``lr0``."""
    return make_optimizer("sgd", model, hyp, weight_decay)


class ModelEMA:
    """Exponential moving average of a model's floating-point state (weights and BN statistics)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        src = model.state_dict()
        dst = self.ema.state_dict()
        keys = [k for k, v in dst.items() if v.dtype.is_floating_point]
        self._dst = [dst[k] for k in keys]
        self._src = [src[k] for k in keys]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, ema: ModelEMA | None = None) -> None:
    """Apply the accumulated gradients (through the AMP scaler), clear them, update the EMA."""
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update()


def train_step(
    model: nn.Module,
    criterion,
    images: Tensor,
    targets: Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    ema: ModelEMA | None = None,
    amp: bool = False,
    step: bool = True,
    loss_gain: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One batch: forward (autocast when ``amp``), loss, backward; ``step=True`` also steps.

    ``images``: uint8 ``[b, 3, h, w]`` (moved to the model's device, channels_last, scaled to
    [0, 1]); ``targets``: ``[n, 6]`` as ``collate_train`` gives. ``criterion``: a
    :class:`detectors.loss.YoloLoss` (float32, box loss included). Gradients accumulate until
    a call with ``step=True`` applies them (:func:`optimizer_step`). ``loss_gain`` multiplies
    the loss before backward (the world size under DDP, which averages gradients).
    Returns the detached batch loss (before ``loss_gain``) and its [box, obj, cls] items.
    """
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    images = images.float() / 255
    with torch.autocast(device.type, enabled=amp):
        preds = model(images)
    loss, items = criterion(preds, targets.to(device, non_blocking=True))
    scaler.scale(loss * loss_gain if loss_gain != 1 else loss).backward()
    if step:
        optimizer_step(optimizer, scaler, ema)
    return loss.detach(), items
