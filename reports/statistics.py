"""Aggregate runs over seeds and compare each loss with the baseline of its block.

- Each value: the mean over seeds, its sample std (ddof=1) with two seeds or more, and its
  relative change against the baseline loss of the same detector and settings, in the paper's
  style: ``19.9 (+5.85%)``.
- With two or more seeds shared with the baseline, a paired comparison: the per-seed
  differences are resampled (percentile bootstrap, 10,000 draws, fixed RNG seed) for a 95 %
  confidence interval of the mean difference. With few seeds the interval is coarse: it can
  only be as wide as the seeds disagree.
- For the paper's grids, the published numbers (:mod:`reports.paper`) go beside ours where the
  setting is the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from scabench.reports import paper as paper_mod
from scabench.reports.loading import DEFAULT_METRICS, present, setting_columns

N_BOOT = 10_000
LEVEL = 0.95
OPTIONAL_COLUMNS = ("baseline_mean", "rel_change_pct", "n_paired", "diff_mean", "ci_low", "ci_high", "paper", "paper_rel_change_pct")


def paired_bootstrap(
    diffs: Iterable[float], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile-bootstrap CI ``(mean, low, high)``."""
    d = np.asarray(list(diffs), dtype=float)
    if d.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(d.mean()), float(low), float(high)


@dataclass
class Summary:
    """The long frame and how to lay it out."""

    frame: pd.DataFrame  # one row per (group, metric)
    keys: list[str]  # row keys: detector, settings..., loss
    settings: list[str]  # setting column names (display names)
    metrics: list[str]
    baseline: str | None
    n_seeds: list[int]
    has_paper: bool


def display(value: Any) -> str:
    """A setting's value as a table shows it (``0.5``, not ``0.500000``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def summarize(
    runs: pd.DataFrame,
    *,
    metrics: Iterable[str] = DEFAULT_METRICS,
    baseline: str | None = "iou",
    paper: bool = False,
    n_boot: int = N_BOOT,
) -> Summary:
    """Aggregate runs over seeds; compare each group with the baseline loss of its block."""
    metrics = [m for m in metrics if m in runs.columns] if not runs.empty else []
    settings_raw = setting_columns(runs) if not runs.empty else []
    settings = [c.removeprefix("setting:") for c in settings_raw]
    if runs.empty or not metrics:
        empty = pd.DataFrame(columns=["detector", *settings, "loss", "metric", "n", "mean", "std"])
        return Summary(empty, ["detector", *settings, "loss"], settings, metrics, baseline, [], paper)
    runs = runs.copy()
    for raw, name in zip(settings_raw, settings):
        runs[name] = runs[raw].map(lambda v: display(v) if present(v) else "-")
    block = ["detector", *settings]
    keys = [*block, "loss"]
    first = runs.groupby(keys, sort=False)["order"].min()
    rows = []
    for key, group in runs.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(keys, key))
        base = _baseline_runs(runs, block, ident, baseline)
        published = _published(group, ident) if paper else None
        for metric in metrics:
            row = {**ident, "metric": metric, "order": int(first[key])}
            row.update(_compare(group.set_index("seed")[metric].dropna(), base, metric, ident["loss"] != baseline, n_boot))
            if published and metric in published:
                row["paper"] = published[metric]
                row["paper_rel_change_pct"] = paper_mod.relative_change(group["detector_name"].iloc[0], ident["loss"], metric)
            rows.append(row)
    frame = pd.DataFrame(rows).sort_values("order", kind="stable").drop(columns="order").reset_index(drop=True)
    for column in OPTIONAL_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    n_seeds = sorted(set(frame.loc[frame["n"] > 0, "n"].astype(int)))
    return Summary(frame, keys, settings, metrics, baseline, n_seeds, bool(paper and frame["paper"].notna().any()))


def _baseline_runs(runs: pd.DataFrame, block: list[str], ident: dict, baseline: str | None) -> pd.DataFrame | None:
    """The baseline loss's runs in the same block (detector and settings), or None."""
    if baseline is None:
        return None
    mask = runs["loss"].to_numpy() == baseline
    for column in block:
        mask &= runs[column].to_numpy() == ident[column]
    return runs[mask] if mask.any() else None


def _compare(values: pd.Series, base: pd.DataFrame | None, metric: str, paired: bool, n_boot: int) -> dict[str, Any]:
    """n, mean, std and seeds of one group's metric; against the baseline its relative change
    and, with two shared seeds or more (``paired``: not the baseline itself), the paired bootstrap."""
    row: dict[str, Any] = {
        "n": int(values.size),
        "mean": float(values.mean()) if values.size else math.nan,
        "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
        "seeds": " ".join(str(s) for s in sorted(values.index)),
    }
    if base is None:
        return row
    base_values = base.set_index("seed")[metric].dropna()
    base_mean = float(base_values.mean()) if base_values.size else math.nan
    row["baseline_mean"] = base_mean
    row["rel_change_pct"] = (row["mean"] - base_mean) / base_mean * 100.0 if base_mean else math.nan
    common = sorted(set(values.index) & set(base_values.index))
    row["n_paired"] = len(common)
    if len(common) >= 2 and paired:
        diff, low, high = paired_bootstrap([values[s] - base_values[s] for s in common], n_boot=n_boot)
        row.update(diff_mean=diff, ci_low=low, ci_high=high)
    return row


def _published(group: pd.DataFrame, ident: dict) -> dict[str, float] | None:
    """The paper's numbers for this group where the setting is the paper's: its detector at full
    size, and the loss's own similarity as objectness target (the authors' code)."""
    default_size = all(not present(group[c].iloc[0]) or group[c].iloc[0] == 1 for c in ("width", "depth"))
    if not default_size or ident.get("obj_target", "loss") not in ("loss", "-"):
        return None
    return paper_mod.published(group["detector_name"].iloc[0], ident["loss"])
