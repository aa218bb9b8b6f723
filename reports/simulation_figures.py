"""Figures of the synthetic-box studies, drawn from their CSVs only (PNG and PDF).

One function per figure, each taking the study's tidy frame and an output folder:

- :func:`plot_convergence` (``convergence.csv``): E(t) of every loss on one log-scale axis,
  the DIoU paper's regression-error curves;
- :func:`plot_error_maps` (``final_error_by_point.csv``): one panel per loss, the final error
  summed over each anchor point's 343 cases, drawn over the radius-3 disc (shared colour scale);
- :func:`plot_gradients` (``gradients.csv``): mean ||dL/d(pred)|| per IoU bin, one curve per
  loss (the disjoint bin as separate markers at IoU 0), the SCALoss paper's Fig. 1 left;
- :func:`plot_corner_center` (``corner_center.csv``): mean IoU per step of the corner and
  centre variants, the SCALoss paper's Fig. 1 right.

:func:`plot_simulations` draws whatever of those CSVs a results folder holds (``scabench plot``
calls it); :func:`plot_csv` draws the figures of one CSV. Curves differ by colour *and* line
style and marker, so the figures stay readable printed in grey.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from scabench.reports.style import LINESTYLES, MARKERS
from scabench.reports.style import palette as _palette
from scabench.reports.style import save as _save
from scabench.reports.style import set_style as _style

FIGSIZE = (6.4, 4.2)  # the line figures (convergence, gradients, corner vs centre)


def _order(frame: pd.DataFrame, column: str) -> list[str]:
    return list(dict.fromkeys(frame[column].astype(str)))


def _line_style(i: int) -> dict[str, Any]:
    """The i-th curve's line style and marker (colour comes from the palette)."""
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)], "markersize": 5}


def _new_axes() -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    _style()
    return plt.subplots(figsize=FIGSIZE)


def _curves(ax: Any, frame: pd.DataFrame, group: str, x: str, y: str, labels: dict[str, str], marks: int) -> int:
    """One curve of ``y`` over ``x`` per value of ``group`` (in order of first appearance), with
    about ``marks`` markers each; ``labels``: legend text per value. Returns the last ``x``."""
    names = _order(frame, group)
    palette = _palette(names)
    last = int(frame[x].max())
    for i, name in enumerate(names):
        data = frame[frame[group].astype(str) == name].sort_values(x)
        ax.plot(data[x], data[y], color=palette[name], markevery=max(1, last // marks), label=labels.get(name, name),
                **_line_style(i))
    return last


def plot_convergence(frame: pd.DataFrame, out: Path, *, name: str = "convergence") -> list[Path]:
    """E(t) per loss on one axis (log y): columns loss, iteration, error."""
    fig, ax = _new_axes()
    last = int(frame["iteration"].max())
    final = frame.sort_values("iteration").groupby(frame["loss"].astype(str))["error"].last()
    labels = {loss: f"{loss}  (E({last}) = {error:.3g})" for loss, error in final.items()}
    _curves(ax, frame.assign(error=frame["error"].clip(lower=1e-12)), "loss", "iteration", "error", labels, marks=8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("total regression error E(t)")
    ax.set_xlim(0, last)
    ax.set_title("Convergence of the simulated regression")
    ax.legend(frameon=True, fontsize="small")
    return _save(fig, out, name)


def plot_error_maps(frame: pd.DataFrame, out: Path, *, name: str = "final_error_maps") -> list[Path]:
    """One panel per loss: final error per anchor point over the disc (columns loss, x, y, error)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    _style()
    losses = _order(frame, "loss")
    n = len(losses)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols + 1.2, 3.3 * rows + 0.4), squeeze=False, sharex=True, sharey=True,
        layout="constrained",
    )
    errors = frame["error"].to_numpy(dtype=float)
    positive = errors[np.isfinite(errors) & (errors > 0)]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()) if positive.size else 1e-6, vmax * 1e-6)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    image = None
    for ax, loss in zip(axes.flat, losses):
        data = frame[frame["loss"].astype(str) == loss]
        values = data["error"].clip(lower=vmin).to_numpy(dtype=float)
        if len(data) >= 3:  # a surface over the Delaunay triangulation of the points (MATLAB's trimesh)
            image = ax.tripcolor(
                data["x"], data["y"], values, shading="gouraud", cmap="viridis", norm=norm, rasterized=True
            )
        else:
            image = ax.scatter(data["x"], data["y"], c=values, s=12, cmap="viridis", norm=norm, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(f"{loss}: sum {data['error'].sum():.3g}", fontsize="medium")
        ax.grid(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("anchor centre y")
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
        elif i + cols >= n:  # nothing drawn below it
            ax.set_xlabel("anchor centre x")
            ax.xaxis.set_tick_params(labelbottom=True)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label("final error per anchor point (343 cases)")
    fig.suptitle("Final regression error over the anchor disc (log colour scale)", fontweight="bold")
    return _save(fig, out, name)


def plot_gradients(frame: pd.DataFrame, out: Path, *, name: str = "gradients") -> list[Path]:
    """Mean gradient norm per IoU bin, one curve per loss (columns loss, iou, grad_norm, n)."""
    fig, ax = _new_axes()
    losses = _order(frame, "loss")
    palette = _palette(losses)
    for i, loss in enumerate(losses):
        data = frame[frame["loss"].astype(str) == loss].sort_values("iou")
        overlap, disjoint = data[data["iou"] > 0], data[data["iou"] <= 0]
        style = _line_style(i)
        ax.plot(overlap["iou"], overlap["grad_norm"], color=palette[loss], label=loss, **style)
        if len(disjoint):
            style["linestyle"] = "none"
            ax.plot(disjoint["iou"], disjoint["grad_norm"], color=palette[loss], fillstyle="none", **style)
    ax.set_xlabel("IoU (bin centre; hollow markers at 0: disjoint pairs)")
    ax.set_ylabel(r"mean $\|\partial L / \partial \mathrm{pred}\|_2$")
    ax.set_xlim(-0.03, 1.0)
    ax.set_ylim(bottom=0)
    ax.set_title("Gradient magnitude vs IoU")
    ax.legend(frameon=True, fontsize="small")
    return _save(fig, out, name)


def plot_corner_center(frame: pd.DataFrame, out: Path, *, name: str = "corner_center") -> list[Path]:
    """Mean IoU per step per variant (columns variant, iteration, iou)."""
    fig, ax = _new_axes()
    labels = {"corner": "IoU + corner alignment (iou+cd)", "center": "IoU + centre alignment (iou+center)"}
    last = _curves(ax, frame, "variant", "iteration", "iou", labels, marks=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean IoU with the target")
    ax.set_xlim(0, last)
    ax.set_ylim(0, 1)
    ax.set_title("Corner vs centre alignment")
    ax.legend(frameon=True, fontsize="small", loc="lower right")
    return _save(fig, out, name)


PLOTTERS: dict[str, list[Callable[[pd.DataFrame, Path], list[Path]]]] = {
    "convergence.csv": [plot_convergence],
    "final_error_by_point.csv": [plot_error_maps],
    "gradients.csv": [plot_gradients],
    "corner_center.csv": [plot_corner_center],
}


def plot_csv(csv: Path | str, out: Path | str | None = None) -> list[Path]:
    """The figures of one simulation CSV (by its file name) into ``out`` (default: beside it)."""
    csv = Path(csv)
    plotters = PLOTTERS.get(csv.name)
    if plotters is None:
        raise ValueError(f"{csv.name!r} is no simulation CSV; known: {', '.join(PLOTTERS)}")
    frame = pd.read_csv(csv)
    if frame.empty:
        return []
    out = Path(out) if out is not None else csv.parent
    paths: list[Path] = []
    for plot in plotters:
        paths += plot(frame, out)
    return paths


def plot_simulations(results_dir: Path | str, out_dir: Path | str | None = None) -> list[Path]:
    """Every simulation figure the CSVs under ``results_dir`` support; returns the files written.

    CSVs in sub-folders get their figures in the same sub-folder of ``out_dir`` (default:
    ``results_dir`` itself, i.e. beside the CSVs).
    """
    root = Path(results_dir)
    out_root = Path(out_dir) if out_dir is not None else root
    paths: list[Path] = []
    for name in PLOTTERS:
        for csv in sorted(root.rglob(name)):
            if any(part.startswith(".") for part in csv.relative_to(root).parts):
                continue
            paths += plot_csv(csv, out_root / csv.parent.relative_to(root))
    return paths
