"""Figures from a results folder (PNG and PDF, one seaborn style, readable in print).

``scabench plot DIR [--out DIR/figures]`` draws:

- ``map_per_epoch``: mAP@[.5:.95] per epoch, one line per loss (mean over seeds, band = std),
  one panel per detector x setting block -- the paper's convergence figure;
- ``ap_by_iou``: AP at each IoU threshold (50, 65, 75, 80, 90) per loss, mean with std bars;
- ``paired_differences``: the answer in one picture. Per metric (AP, AP50 ... AP90), each
  loss's paired difference to the baseline in AP points with its 95 % CI as an error bar (the
  report's interval: Student t by default, :mod:`reports.statistics`), losses side by side, a
  line at 0; a filled marker where the CI excludes 0. Drawn only where 2 seeds or more are
  shared with the baseline;
- the simulation figures of every finished ``simulate`` cell, through
  ``reports.simulation_figures.plot_simulations`` (into ``simulation/<study>/``).

A loss has the same colour in every figure (its order of first appearance in the grid).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scabench.reports.loading import (DEFAULT_METRICS, grid_options, load_epochs, load_runs, not_in_table, present,
                                      read_cells, setting_columns)
from scabench.reports.statistics import INTERVAL_NAMES, Summary, block_label, choose_baseline, display, summarize
from scabench.reports.style import MARKERS
from scabench.reports.style import palette as loss_palette
from scabench.reports.style import save as _save
from scabench.reports.style import set_style
from scabench.results import GridFolder

THRESHOLDS = (("AP50", 50), ("AP65", 65), ("AP75", 75), ("AP80", 80), ("AP90", 90))


def _panels(frame: pd.DataFrame, settings: list[str]) -> pd.Series:
    labels = frame["detector"].astype(str)
    for column in settings:
        name = column.removeprefix("setting:")
        labels = labels + ", " + name + "=" + frame[column].map(lambda v: display(v) if present(v) else "-")
    return labels


def _facets(data: pd.DataFrame, *, x: str, y: str, palette: dict, several: bool,
            title: str, labels: tuple[str, str], **line: Any) -> Any:
    """A seaborn FacetGrid: one panel per detector x setting block, one line per loss (band or
    bars: std over seeds). The caller adjusts the axes and saves ``grid.figure``."""
    import seaborn as sns

    panels = list(dict.fromkeys(data["panel"]))
    grid = sns.relplot(
        data=data, x=x, y=y, hue="loss", hue_order=list(palette), palette=palette, col="panel", col_order=panels,
        col_wrap=min(3, len(panels)), kind="line", errorbar="sd" if several else None, height=3.6, aspect=1.3,
        facet_kws={"sharey": False}, **line,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels(*labels)
    grid.figure.suptitle(title + (" (mean ± std over seeds)" if several else ""), y=1.03)
    return grid


def plot_map_per_epoch(epochs: pd.DataFrame, out: Path, *, settings: list[str], palette: dict) -> list[Path]:
    """mAP@[.5:.95] per epoch: the paper's convergence figure."""
    from matplotlib.ticker import MaxNLocator

    data = epochs.dropna(subset=["AP"]).copy()
    if data.empty:
        return []
    data["panel"] = _panels(data, settings)
    several = data.groupby(["panel", "loss", "epoch"])["seed"].nunique().max() > 1
    grid = _facets(data, x="epoch", y="AP", palette=palette, several=several,
                         title="mAP per epoch", labels=("epoch", "mAP@[.5:.95] (%)"))
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(grid.figure, out, "map_per_epoch")


def plot_ap_by_iou(runs: pd.DataFrame, out: Path, *, settings: list[str], palette: dict) -> list[Path]:
    """AP at each IoU threshold (50, 65, 75, 80, 90) per loss."""
    present_metrics = [(m, t) for m, t in THRESHOLDS if m in runs]
    if not present_metrics:
        return []
    data = runs.copy()
    data["panel"] = _panels(data, settings)
    long = data[["panel", "loss", "seed"] + [m for m, _ in present_metrics]].melt(
        id_vars=["panel", "loss", "seed"], var_name="metric", value_name="AP"
    )
    long["IoU threshold"] = long["metric"].map(dict(present_metrics))
    long = long.dropna(subset=["AP"])
    if long.empty:
        return []
    several = long.groupby(["panel", "loss", "metric"])["seed"].nunique().max() > 1
    grid = _facets(long, x="IoU threshold", y="AP", palette=palette, several=several,
                         title="AP at each IoU threshold", labels=("IoU threshold (%)", "AP (%)"), marker="o", err_style="bars")
    for ax in grid.axes.flat:
        ax.set_xticks([t for _, t in present_metrics])
    return _save(grid.figure, out, "ap_by_iou")


def plot_paired_differences(summary: Summary, out: Path, *, palette: dict) -> list[Path]:
    """Paired difference to the baseline per metric with its CI (error bar), one marker per loss
    dodged around the metric, a line at 0; one panel per detector x setting block."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    frame = summary.frame[summary.frame["diff_low"].notna()]
    if frame.empty:
        return []
    metrics = [m for m in summary.metrics if m in set(frame["metric"])]
    losses = list(dict.fromkeys(frame["loss"]))
    panels = list(frame.groupby(summary.keys[:-1], sort=False))
    columns = min(3, len(panels))
    fig, axes = plt.subplots(math.ceil(len(panels) / columns), columns, squeeze=False,
                             figsize=(1.0 + 0.9 * len(metrics) * columns, 3.8 * math.ceil(len(panels) / columns)))
    step = 0.7 / len(losses)
    marker_of = {loss: MARKERS[list(palette).index(loss) % len(MARKERS)] for loss in losses}
    for ax, (key, data) in zip(axes.flat, panels):
        key = key if isinstance(key, tuple) else (key,)
        for i, loss in enumerate(losses):
            rows = data[data["loss"] == loss].set_index("metric").reindex(metrics)
            x = np.arange(len(metrics)) + (i - (len(losses) - 1) / 2) * step
            mean, low, high = (rows[c].to_numpy(dtype=float) for c in ("diff_mean", "diff_low", "diff_high"))
            colour, marker = palette[loss], marker_of[loss]
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=colour, elinewidth=1.5, capsize=3)
            filled = rows["significant"].fillna(False).to_numpy(dtype=bool)
            ax.scatter(x, mean, marker=marker, s=36, zorder=3, edgecolors=[colour] * len(x),
                       facecolors=[colour if f else "white" for f in filled], linewidths=1.5)
        ax.axhline(0, color="0.25", linewidth=1, zorder=1)
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_title(block_label(dict(zip(summary.keys[:-1], key)), summary.settings))
        ax.set_ylabel(f"difference to {summary.baseline} (AP points)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=palette[loss], marker=marker_of[loss], linestyle="none", label=loss) for loss in losses]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    fig.suptitle(f"Paired difference to {summary.baseline}: mean and 95% {INTERVAL_NAMES[summary.interval]} CI "
                 "over seeds (filled: CI excludes 0)", y=1.02)
    fig.tight_layout()
    return _save(fig, out, "paired_differences")


def plot_simulation_cells(root: Path, out: Path, *, log: Any = None) -> list[Path]:
    """The simulation figures of every finished ``simulate`` cell (through reports.simulation_figures)."""
    cells = [(run.path, (meta.get("config") or {}).get("study", run.path.name))
             for run, state, meta in read_cells(root, "simulate") if state.status == "done"]
    if not cells:
        return []
    try:
        from scabench.reports import simulation_figures
    except ImportError as exc:
        if log:
            log(f"simulation figures skipped: reports.simulation_figures is not available ({exc})")
        return []
    paths: list[Path] = []
    for path, study in cells:
        paths += [Path(p) for p in (simulation_figures.plot_simulations(path, out / study) or [])]
    return paths


def plot(root: str | Path, out: str | Path | None = None, *, log: Any = None, baseline: str | None = None,
         interval: str = "t") -> list[Path]:
    """Every figure a results folder supports; returns the files written. Broken cells are
    left out and named through ``log``. ``baseline`` (default: the grid's, else iou) and
    ``interval`` (``"t"`` or ``"bootstrap"``) as in ``tables.report``."""
    import matplotlib.pyplot as plt

    root = Path(root)
    for label, status, reason in not_in_table(root):
        if status == "broken" and log:
            log(f"left out, broken: {label}: {reason}")
    out = Path(out) if out is not None else GridFolder(root).figures_dir
    set_style()
    paths: list[Path] = []
    runs = load_runs(root)
    if not runs.empty:
        settings = setting_columns(runs)
        palette = loss_palette(list(dict.fromkeys(runs["loss"])))
        epochs = load_epochs(root)
        if not epochs.empty and "AP" in epochs:
            epochs = epochs[epochs["loss"].isin(palette)]
            paths += plot_map_per_epoch(epochs, out, settings=settings, palette=palette)
        paths += plot_ap_by_iou(runs, out, settings=settings, palette=palette)
        baseline, among_losses = choose_baseline(baseline, grid_options(root), runs)
        if among_losses:
            summary = summarize(runs, metrics=DEFAULT_METRICS, baseline=baseline, interval=interval)
            paths += plot_paired_differences(summary, out, palette=palette)
    paths += plot_simulation_cells(root, out / "simulation", log=log)
    plt.close("all")
    return paths
