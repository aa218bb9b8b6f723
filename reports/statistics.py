"""Aggregate runs over seeds and compare each loss with the baseline of its block.

- Each value: the mean over seeds and its 95 % confidence interval, Student t with n-1 degrees
  of freedom, ``mean ± t(0.975, n-1) * s / sqrt(n)`` (``ci_half``; none with one seed); the
  sample std (ddof=1) stays in the frame; and the relative change against the baseline loss of
  the same detector and settings, in the paper's style ``19.9 (+5.85%)``.
- The paired difference to that baseline over the seeds both share (same seed: same initial
  weights, same batches), with its 95 % CI, when at least 2 seeds are shared. Two intervals
  (``interval=``):

  ``"t"`` (default): Student t over the per-seed differences, ``d̄ ± t(0.975, n-1) * s_d /
  sqrt(n)``. Exact if the differences are roughly normal, and honest with few seeds: the t
  quantile grows as seeds get scarce (12.71 with 2 seeds, 4.30 with 3, 2.78 with 5).

  ``"bootstrap"``: the percentile bootstrap of the mean difference (10,000 resamples of the
  seeds, fixed RNG seed). It assumes nothing about the shape, but with n seeds it can never be
  wider than the differences' range, and with 3 seeds there are only 10 distinct resamples: it
  is far too narrow with few seeds. Use it with 10 seeds or more.

  A difference is ``significant`` when its CI excludes 0; every other is within seed noise.
  Each interval covers one comparison: among 20 comparisons, about one is marked by chance.
- For the paper's grids, the published numbers (:mod:`reports.paper`) go beside ours where the
  setting is the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from scabench.reports import paper as paper_mod
from scabench.reports.loading import DEFAULT_METRICS, present, setting_columns

N_BOOT = 10_000
LEVEL = 0.95
INTERVALS = ("t", "bootstrap")
INTERVAL_NAMES = {"t": "Student t", "bootstrap": "percentile bootstrap"}
OPTIONAL_COLUMNS = (
    "ci_half", "baseline_mean", "rel_change_pct", "n_paired", "diff_mean", "diff_low", "diff_high",
    "significant", "diff_interval", "paper", "paper_rel_change_pct",
)


def t_interval(values: Iterable[float], *, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and its Student-t CI ``(mean, low, high)`` with n-1 degrees of freedom; the bounds
    are NaN with fewer than 2 values."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if v.size < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(1 - (1 - level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


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


def excludes_zero(low: Any, high: Any) -> bool:
    """True when a CI ``[low, high]`` lies wholly above or below 0 (a significant difference)."""
    return present(low) and present(high) and (low > 0 or high < 0)


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
    interval: str = "t"

    @property
    def has_differences(self) -> bool:
        """Whether any group has a paired CI against the baseline (2 shared seeds or more)."""
        return bool(self.frame["diff_low"].notna().any()) if "diff_low" in self.frame else False


def display(value: Any) -> str:
    """A setting's value as a table shows it (``0.5``, not ``0.500000``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def block_label(ident: dict[str, Any], settings: list[str]) -> str:
    """A detector x settings block as tables and figures name it: ``yolov3-tiny (w=0.25), obj_target=iou``."""
    return ", ".join([str(ident["detector"]), *(f"{name}={ident[name]}" for name in settings)])


def choose_baseline(requested: str | None, options: dict[str, Any], runs: pd.DataFrame) -> tuple[str, bool]:
    """The baseline loss: ``requested``, else the grid's (``options``), else ``iou``; and whether
    it is among the losses of ``runs`` (if not, nothing is compared)."""
    name = requested or options.get("baseline") or "iou"
    return name, runs.empty or name in set(runs["loss"])


def summarize(
    runs: pd.DataFrame,
    *,
    metrics: Iterable[str] = DEFAULT_METRICS,
    baseline: str | None = "iou",
    paper: bool = False,
    interval: str = "t",
    n_boot: int = N_BOOT,
) -> Summary:
    """Aggregate runs over seeds; compare each group with the baseline loss of its block."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; use {' or '.join(INTERVALS)}")
    metrics = [m for m in metrics if m in runs.columns] if not runs.empty else []
    settings_raw = setting_columns(runs) if not runs.empty else []
    settings = [c.removeprefix("setting:") for c in settings_raw]
    if runs.empty or not metrics:
        empty = pd.DataFrame(columns=["detector", *settings, "loss", "metric", "n", "mean", "std", *OPTIONAL_COLUMNS])
        return Summary(empty, ["detector", *settings, "loss"], settings, metrics, baseline, [], paper, interval)
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
            values = group.set_index("seed")[metric].dropna()
            row.update(_describe(values))
            if base is not None:
                row.update(_compare(values, base.set_index("seed")[metric].dropna(),
                                    paired=ident["loss"] != baseline, interval=interval, n_boot=n_boot))
            if published and metric in published:
                row["paper"] = published[metric]
                row["paper_rel_change_pct"] = paper_mod.relative_change(group["detector_name"].iloc[0], ident["loss"], metric)
            rows.append(row)
    frame = pd.DataFrame(rows).sort_values("order", kind="stable").drop(columns="order").reset_index(drop=True)
    for column in OPTIONAL_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    frame["significant"] = frame["significant"].astype("boolean")
    n_seeds = sorted(set(frame.loc[frame["n"] > 0, "n"].astype(int)))
    return Summary(frame, keys, settings, metrics, baseline, n_seeds, bool(paper and frame["paper"].notna().any()), interval)


def _baseline_runs(runs: pd.DataFrame, block: list[str], ident: dict, baseline: str | None) -> pd.DataFrame | None:
    """The baseline loss's runs in the same block (detector and settings), or None."""
    if baseline is None:
        return None
    mask = runs["loss"].to_numpy() == baseline
    for column in block:
        mask &= runs[column].to_numpy() == ident[column]
    return runs[mask] if mask.any() else None


def _describe(values: pd.Series) -> dict[str, Any]:
    """n, mean, std, the t half-width of the mean's 95 % CI, and the seeds of one group's metric."""
    mean, low, high = t_interval(values)
    return {
        "n": int(values.size),
        "mean": mean,
        "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
        "ci_half": (high - low) / 2 if present(low) else math.nan,
        "seeds": " ".join(str(s) for s in sorted(values.index)),
    }


def _compare(values: pd.Series, base: pd.Series, *, paired: bool, interval: str, n_boot: int) -> dict[str, Any]:
    """Against the baseline's values (by seed): the relative change of the means and, with two
    shared seeds or more (``paired``: not the baseline itself), the paired difference and its CI."""
    base_mean = float(base.mean()) if base.size else math.nan
    mean = float(values.mean()) if values.size else math.nan
    common = sorted(set(values.index) & set(base.index))
    row: dict[str, Any] = {
        "baseline_mean": base_mean,
        "rel_change_pct": (mean - base_mean) / base_mean * 100.0 if base_mean else math.nan,
        "n_paired": len(common),
    }
    if len(common) >= 2 and paired:
        diffs = [values[s] - base[s] for s in common]
        diff, low, high = t_interval(diffs) if interval == "t" else paired_bootstrap(diffs, n_boot=n_boot)
        row.update(diff_mean=diff, diff_low=low, diff_high=high, significant=excludes_zero(low, high), diff_interval=interval)
    return row


def _published(group: pd.DataFrame, ident: dict) -> dict[str, float] | None:
    """The paper's numbers for this group where the setting is the paper's: its detector at full
    size, and the loss's own similarity as objectness target (the authors' code)."""
    default_size = all(not present(group[c].iloc[0]) or group[c].iloc[0] == 1 for c in ("width", "depth"))
    if not default_size or ident.get("obj_target", "loss") not in ("loss", "-"):
        return None
    return paper_mod.published(group["detector_name"].iloc[0], ident["loss"])
