"""Figures from a results folder (PNG and PDF, one seaborn style, readable in print).

``scabench plot DIR [--out DIR/figures]`` draws:

- ``map_per_epoch``: mAP@[.5:.95] per epoch, one line per loss (mean over seeds, band = std),
  one panel per detector x setting block -- the paper's convergence figure;
- ``ap_by_iou``: AP at each IoU threshold (50, 65, 75, 80, 90) per loss, mean with std bars;
- the simulation figures of every finished ``simulate`` cell, through
  ``reports.simulation_figures.plot_simulations`` (into ``simulation/<study>/``).

A loss has the same colour in every figure (its order of first appearance in the grid).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from scabench.reports.style import palette as loss_palette
from scabench.reports.style import save as _save
from scabench.reports.style import set_style
from scabench.reports.tables import _cell_dirs, _read_json, load_epochs, load_runs, setting_columns

THRESHOLDS = (("AP50", 50), ("AP65", 65), ("AP75", 75), ("AP80", 80), ("AP90", 90))


def _panels(frame: pd.DataFrame, settings: list[str]) -> pd.Series:
    labels = frame["detector"].astype(str)
    for column in settings:
        name = column.removeprefix("setting:")
        labels = labels + ", " + name + "=" + frame[column].map(lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}" if isinstance(v, float) else str(v))
    return labels


def plot_map_per_epoch(epochs: pd.DataFrame, out: Path, *, settings: list[str], palette: dict) -> list[Path]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = epochs.dropna(subset=["AP"]).copy()
    if data.empty:
        return []
    data["panel"] = _panels(data, settings)
    panels = list(dict.fromkeys(data["panel"]))
    several = data.groupby(["panel", "loss", "epoch"])["seed"].nunique().max() > 1
    grid = sns.relplot(
        data=data, x="epoch", y="AP", hue="loss", hue_order=list(palette), palette=palette,
        col="panel", col_order=panels, col_wrap=min(3, len(panels)), kind="line",
        errorbar="sd" if several else None, height=3.6, aspect=1.3, facet_kws={"sharey": False},
    )
    from matplotlib.ticker import MaxNLocator

    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    grid.set_titles("{col_name}")
    grid.set_axis_labels("epoch", "mAP@[.5:.95] (%)")
    grid.figure.suptitle("mAP per epoch" + (" (mean ± std over seeds)" if several else ""), y=1.03)
    paths = _save(grid.figure, out, "map_per_epoch")
    plt.close(grid.figure)
    return paths


def plot_ap_by_iou(runs: pd.DataFrame, out: Path, *, settings: list[str], palette: dict) -> list[Path]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    present = [(m, t) for m, t in THRESHOLDS if m in runs]
    if not present:
        return []
    data = runs.copy()
    data["panel"] = _panels(data, settings)
    long = data[["panel", "loss", "seed"] + [m for m, _ in present]].melt(
        id_vars=["panel", "loss", "seed"], var_name="metric", value_name="AP (%)"
    ).rename(columns={"AP (%)": "AP"})
    long["IoU threshold"] = long["metric"].map(dict(present))
    long = long.dropna(subset=["AP"])
    if long.empty:
        return []
    panels = list(dict.fromkeys(data["panel"]))
    several = long.groupby(["panel", "loss", "metric"])["seed"].nunique().max() > 1
    grid = sns.relplot(
        data=long, x="IoU threshold", y="AP", hue="loss", hue_order=list(palette), palette=palette,
        col="panel", col_order=panels, col_wrap=min(3, len(panels)), kind="line", marker="o",
        errorbar="sd" if several else None, err_style="bars", height=3.6, aspect=1.3,
        facet_kws={"sharey": False},
    )
    for ax in grid.axes.flat:
        ax.set_xticks([t for _, t in present])
    grid.set_titles("{col_name}")
    grid.set_axis_labels("IoU threshold (%)", "AP (%)")
    grid.figure.suptitle("AP at each IoU threshold" + (" (mean ± std over seeds)" if several else ""), y=1.03)
    paths = _save(grid.figure, out, "ap_by_iou")
    plt.close(grid.figure)
    return paths


def plot_simulation_cells(root: Path, out: Path, *, log: Any = None) -> list[Path]:
    """The simulation figures of every finished ``simulate`` cell (needs reports.simulation_figures)."""
    cells = []
    for path in _cell_dirs(root):
        meta = _read_json(path / "config.json") or {}
        if meta.get("kind") == "simulate" and (path / "summary.json").exists():
            cells.append((path, (meta.get("config") or {}).get("study", path.name)))
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
        target = out / study
        if hasattr(simulation_figures, "plot_simulations"):
            paths += [Path(p) for p in (simulation_figures.plot_simulations(path, target) or [])]
        elif hasattr(simulation_figures, "plot_csv"):
            target.mkdir(parents=True, exist_ok=True)
            for csv in sorted(path.glob("*.csv")):
                paths += [Path(p) for p in (simulation_figures.plot_csv(csv, target) or [])]
    return paths


def plot(root: str | Path, out: str | Path | None = None, *, log: Any = None) -> list[Path]:
    """Every figure a results folder supports; returns the files written."""
    import matplotlib.pyplot as plt

    root = Path(root)
    out = Path(out) if out is not None else root / "figures"
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
    paths += plot_simulation_cells(root, out / "simulation", log=log)
    plt.close("all")
    return paths
