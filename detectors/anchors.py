"""Anchor fit and k-means anchors for a custom dataset.

A label fits an anchor when the worse of its width and height ratios, min(r, 1/r), is above
1/anchor_t (the assignment rule of :mod:`detectors.loss`). The best possible recall (BPR) is
the share of training labels that fit at least one anchor. ``anchors="auto"`` keeps the
model's anchors when BPR >= 0.98 (the reference trainer's rule) and otherwise computes
k-means anchors (whitened k-means, then a short seeded evolution of the fitness), kept only if
they fit better.
"""

from __future__ import annotations

import numpy as np
import torch

BPR_THRESHOLD = 0.98


def label_sizes(records, img_size: int) -> np.ndarray:
    """[n, 2] widths and heights of all training boxes, in pixels of the training size."""
    sizes = []
    for r in records:
        if len(r.boxes):
            scale = img_size / max(r.width, r.height)
            sizes.append((r.boxes[:, 2:4] - r.boxes[:, :2]) * scale)
    return np.concatenate(sizes).astype(np.float64) if sizes else np.zeros((0, 2))


def _ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[n, k]: min over w and h of min(r, 1/r) for each label and anchor."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> float:
    if not len(wh):
        return 1.0
    best = _ratio_metric(wh, anchors.reshape(-1, 2)).max(1)
    return float((best > 1 / anchor_t).mean())


def fitness(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> float:
    best = _ratio_metric(wh, anchors).max(1)
    return float((best * (best > 1 / anchor_t)).mean())


def kmeans_anchors(wh: np.ndarray, n: int, anchor_t: float = 4.0, seed: int = 0, generations: int = 300) -> np.ndarray:
    """``n`` anchors [n, 2] sorted by area: k-means on whitened sizes, then evolution of ``fitness``."""
    rng = np.random.default_rng(seed)
    wh = wh[(wh >= 2).all(1)] if (wh >= 2).all(1).sum() >= n else wh
    if len(wh) < n:
        raise ValueError(f"k-means anchors need at least {n} labels, got {len(wh)}")
    if len(wh) > 20000:
        wh = wh[rng.choice(len(wh), 20000, replace=False)]
    std = wh.std(0) + 1e-9
    x = wh / std
    centres = x[rng.choice(len(x), n, replace=False)]
    for _ in range(100):
        assign = ((x[:, None] - centres[None]) ** 2).sum(2).argmin(1)
        moved = np.array([x[assign == k].mean(0) if (assign == k).any() else centres[k] for k in range(n)])
        if np.allclose(moved, centres):
            break
        centres = moved
    anchors = centres * std
    best = fitness(wh, anchors, anchor_t)
    for _ in range(generations):
        mutation = np.ones_like(anchors)
        while (mutation == 1).all():
            mutation = ((rng.random(anchors.shape) < 0.9) * rng.random() * rng.standard_normal(anchors.shape) * 0.1 + 1).clip(0.3, 3.0)
        candidate = (anchors * mutation).clip(min=2.0)
        f = fitness(wh, candidate, anchor_t)
        if f > best:
            best, anchors = f, candidate
    return anchors[np.argsort(anchors.prod(1))]


def choose_anchors(mode: str, default: torch.Tensor, records, img_size: int, anchor_t: float, seed: int) -> tuple[torch.Tensor, str]:
    """Anchors (pixels, [levels, anchors, 2]) for a run and a line saying why."""
    shape = default.shape
    if mode == "default":
        return default, "model's default anchors"
    wh = label_sizes(records, img_size)
    bpr = best_possible_recall(wh, default.numpy(), anchor_t)
    if mode == "auto" and bpr >= BPR_THRESHOLD:
        return default, f"model's default anchors (best possible recall {bpr:.3f})"
    if len(wh) < shape[0] * shape[1]:
        return default, f"model's default anchors (too few labels for k-means; BPR {bpr:.3f})"
    new = kmeans_anchors(wh, shape[0] * shape[1], anchor_t, seed)
    new_bpr = best_possible_recall(wh, new, anchor_t)
    if mode == "auto" and fitness(wh, new, anchor_t) <= fitness(wh, default.reshape(-1, 2).numpy(), anchor_t):
        return default, f"model's default anchors (k-means fitted no better; BPR {bpr:.3f})"
    anchors = torch.tensor(np.round(new, 1), dtype=torch.float32).view(shape)
    return anchors, f"k-means anchors (best possible recall {bpr:.3f} -> {new_bpr:.3f})"
