"""The gradient-magnitude study: mean ||dL/d(pred)|| per IoU bin (the SCALoss paper's Fig. 1 left).

Pairs (scale-normalised, :func:`gradient_pairs`): a target of area 1 at the origin with aspect
ratio log-uniform in [1/4, 4]; the prediction moves each side of the target by
``s * n * (target width or height)``, n ~ N(0, 1) per side, s log-uniform in [0.01, 2];
candidates are drawn until every IoU bin (and the disjoint bin, IoU = 0) holds
``pairs_per_bin`` pairs. Gradients are taken in float64 with respect to the xyxy prediction.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor
from torchvision.ops import box_convert

from scabench.bench.studies.defaults import BINS, DEVICE, GRADIENT_LOSSES, PAIRS_PER_BIN, SEED
from scabench.bench.studies.inputs import LossSpecs, ProgressFn, as_device, positive, resolve_losses
from scabench.losses.iou import box_iou_pairwise


def _iou_bins(iou: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """(bin index, bin centre): -1 / 0.0 for disjoint pairs (IoU = 0), else bins of width 1/bins."""
    index = torch.clamp((iou * bins).floor().long(), 0, bins - 1)
    index = torch.where(iou > 0, index, torch.full_like(index, -1))
    centre = torch.where(index >= 0, (index.double() + 0.5) / bins, torch.zeros_like(iou, dtype=torch.float64))
    return index, centre


def _candidate_pairs(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One round of candidate (pred, target) pairs, xyxy float64 (see the module docstring)."""
    u = torch.rand(3, batch, generator=generator, dtype=torch.float64)
    ratio = torch.exp((2 * u[0] - 1) * math.log(4))
    w, h = ratio.sqrt(), 1 / ratio.sqrt()
    zero = torch.zeros_like(w)
    target = box_convert(torch.stack((zero, zero, w, h), dim=-1), "cxcywh", "xyxy")
    s = torch.exp(math.log(0.01) + u[1] * (math.log(2) - math.log(0.01)))
    noise = torch.randn(batch, 4, generator=generator, dtype=torch.float64)
    scale = torch.stack((w, h, w, h), dim=-1) * s[:, None]
    pred = target + noise * scale
    ok = (pred[:, 2] - pred[:, 0] > 0.1 * w) & (pred[:, 3] - pred[:, 1] > 0.1 * h)
    return pred[ok], target[ok]


def gradient_pairs(
    pairs_per_bin: int = PAIRS_PER_BIN, *, bins: int = BINS, seed: int = SEED, max_rounds: int = 500
) -> tuple[Tensor, Tensor]:
    """Box pairs (pred, target) [N, 4] xyxy float64, ``pairs_per_bin`` per IoU bin and disjoint.

    Predictions inverted or thinner than a tenth of the target are redrawn. Candidates are
    drawn in rounds until every bin is full (first come, first kept: deterministic per seed).
    """
    pairs_per_bin, bins = positive("pairs_per_bin", pairs_per_bin), positive("bins", bins)
    generator = torch.Generator().manual_seed(int(seed))
    need = {b: pairs_per_bin for b in range(-1, bins)}
    kept_pred, kept_target = [], []
    batch = max(4096, 8 * pairs_per_bin * (bins + 1))
    for _ in range(max_rounds):
        if not any(need.values()):
            break
        pred, target = _candidate_pairs(batch, generator)
        index, _ = _iou_bins(box_iou_pairwise(pred, target), bins)
        for b in list(need):
            if need[b]:
                hits = (index == b).nonzero().flatten()[: need[b]]
                kept_pred.append(pred[hits])
                kept_target.append(target[hits])
                need[b] -= len(hits)
    return torch.cat(kept_pred), torch.cat(kept_target)


def gradient_table(
    losses: LossSpecs, pred: Tensor, target: Tensor, *, bins: int = BINS, device: str | torch.device = DEVICE
) -> pd.DataFrame:
    """Mean ||dL/d(pred)||_2 per IoU bin for each loss: columns loss, iou, grad_norm, n.

    ``iou`` is the bin centre ((i + 0.5) / bins), or 0.0 for the disjoint pairs (IoU = 0).
    """
    refs = resolve_losses(losses)
    dev = as_device(device)
    pred = pred.to(dtype=torch.float64, device=dev)
    target = target.to(dtype=torch.float64, device=dev)
    index, centre = _iou_bins(box_iou_pairwise(pred, target), positive("bins", bins))
    rows = []
    for ref in refs:
        leaf = pred.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(ref.build()(leaf, target).sum(), leaf)
        norm = grad.norm(dim=-1)
        for b in sorted(set(index.tolist())):
            sel = index == b
            rows.append(
                {"loss": ref.label, "iou": float(centre[sel][0]), "grad_norm": float(norm[sel].mean()), "n": int(sel.sum())}
            )
    return pd.DataFrame(rows, columns=["loss", "iou", "grad_norm", "n"])


def simulate_gradients(
    losses: LossSpecs = GRADIENT_LOSSES,
    *,
    pairs_per_bin: int = PAIRS_PER_BIN,
    bins: int = BINS,
    seed: int = SEED,
    device: str | torch.device = DEVICE,
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """Gradient magnitude vs IoU (the SCALoss paper's Fig. 1 left) on :func:`gradient_pairs`."""
    refs = resolve_losses(losses)
    as_device(device)  # a bad device fails before the pairs are drawn
    pred, target = gradient_pairs(pairs_per_bin, bins=bins, seed=seed)
    frames = []
    for ref in refs:
        frames.append(gradient_table([ref], pred, target, bins=bins, device=device))
        if progress is not None:
            progress(ref.label, 1.0)
    return pd.concat(frames, ignore_index=True)
