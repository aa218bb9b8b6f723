"""Tables from a results folder: mean +- std over seeds, change vs a baseline, paired bootstrap.

``scabench report DIR`` reads every finished cell under ``DIR/cells`` (folders merged from
several machines included), and prints one row per detector x loss (x each setting that
differs between cells, e.g. an ablation axis). Metrics are in percent, like the paper.

- Each value: the mean over seeds, ``± std`` (sample std, ddof=1) with two seeds or more, and
  its relative change against the baseline loss of the same detector and settings, in the
  paper's style: ``19.9 (+5.85%)``.
- With two or more seeds shared with the baseline, a paired comparison: the per-seed
  differences are resampled (percentile bootstrap, 10,000 draws, fixed RNG seed) for a 95 %
  confidence interval of the mean difference. A ``*`` marks gains whose interval excludes 0.
  With few seeds the interval is coarse: it can only be as wide as the seeds disagree.
- For the paper's grids (``paper: true`` in the grid file, or ``--paper``), the published
  numbers (:mod:`reports.paper`) appear as rows beside ours.

Formats: Markdown (``to_markdown``), LaTeX (pandas ``Styler``: booktabs rules, best value per
column and block in bold) and CSV (the long, tidy frame with every number).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from scabench.reports import paper as paper_mod

DEFAULT_METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90")
ALL_METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl")
IDENTITY = ("kind", "seed", "detector", "width", "depth", "loss", "loss_params")
N_BOOT = 10_000
LEVEL = 0.95
SIGNIFICANT = "*"


# --------------------------------------------------------------------------------------
# Reading


def is_ap_metric(name: str) -> bool:
    """AP, AP50 ... AP90, APs/APm/APl (fractions in the files, percent in the tables)."""
    return name in ALL_METRICS or (name.startswith("AP") and name[2:].isalnum())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cell_dirs(root: Path) -> list[Path]:
    cells = root / "cells"
    base = cells if cells.is_dir() else root
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / "config.json").exists()) if base.is_dir() else []


def _plan_order(root: Path) -> dict[str, int]:
    path = root / "plan.csv"
    if not path.exists():
        return {}
    try:
        plan = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    return {str(i): int(o) for i, o in zip(plan["id"], plan["order"])}


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if key in IDENTITY:
            continue
        if isinstance(value, dict):
            for sub, item in value.items():
                flat[f"{key}.{sub}"] = item
        else:
            flat[key] = value
    return flat


def load_runs(root: str | Path, *, all_cells: bool = False) -> pd.DataFrame:
    """One row per finished training cell: labels, settings, seed and metrics in percent.

    Columns: ``id, detector, detector_name, width, depth, loss, loss_name, seed, order`` plus
    one ``setting:<key>`` column per config key beyond the identity ones, plus the metrics.
    """
    root = Path(root)
    order = _plan_order(root)
    rows = []
    for path in _cell_dirs(root):
        meta = _read_json(path / "config.json") or {}
        if meta.get("kind") != "train":
            continue
        summary = _read_json(path / "summary.json")
        if summary is None and not all_cells:
            continue
        config = meta.get("config", {})
        labels = meta.get("labels", {})
        row: dict[str, Any] = {
            "id": path.name,
            "detector": labels.get("detector", config.get("detector")),
            "detector_name": config.get("detector"),
            "width": config.get("width"),
            "depth": config.get("depth"),
            "loss": labels.get("loss", config.get("loss")),
            "loss_name": config.get("loss"),
            "seed": config.get("seed", 0),
            "order": order.get(path.name, 10**9),
        }
        for key, value in _flatten(config).items():
            row[f"setting:{key}"] = value
        metrics = (summary or {}).get("metrics", {}) or {}
        for metric, value in metrics.items():
            if not is_ap_metric(metric):
                continue  # the summary may carry the last epoch's losses, lr, ...
            # COCOeval writes -1 where a metric is undefined (e.g. APl without large objects)
            row[metric] = float(value) * 100.0 if value is not None and float(value) >= 0 else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["order", "id"], kind="stable").reset_index(drop=True)


def load_epochs(root: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every training cell (AP.. in percent), one row per cell and epoch."""
    root = Path(root)
    runs = load_runs(root, all_cells=True)
    frames = []
    for _, run in runs.iterrows():
        by_epoch: dict[Any, dict] = {}
        path = root / "cells" / run["id"] / "metrics.jsonl"
        if not path.exists():
            path = root / run["id"] / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if isinstance(item, dict) and "epoch" in item:
                by_epoch[item["epoch"]] = item  # a resumed epoch keeps its last version
        if not by_epoch:
            continue
        frame = pd.DataFrame(list(by_epoch.values()))
        for metric in ALL_METRICS:
            if metric in frame:
                values = pd.to_numeric(frame[metric], errors="coerce")
                frame[metric] = values.where(values >= 0) * 100.0  # -1: undefined (COCOeval)
        for key in run.index:
            if not is_ap_metric(key) and key not in frame:
                frame[key] = run[key]
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values(["order", "id", "epoch"], kind="stable").reset_index(drop=True)


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """``setting:*`` columns whose values differ between runs (the table's extra keys)."""
    out = []
    for column in [c for c in runs.columns if c.startswith("setting:")]:
        values = runs[column].map(lambda v: json.dumps(v, sort_keys=True, default=str) if _present(v) else "-")
        if values.nunique() > 1:
            out.append(column)
    return out


def _present(value: Any) -> bool:
    return not (value is None or (isinstance(value, float) and math.isnan(value)))


def grid_options(root: str | Path) -> dict[str, Any]:
    """``baseline`` and ``paper`` as the grid file copied into ``root`` says (or {})."""
    import yaml

    try:
        data = yaml.safe_load((Path(root) / "grid.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: data[k] for k in ("baseline", "paper", "name") if isinstance(data, dict) and k in data}


# --------------------------------------------------------------------------------------
# Statistics


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
        runs[name] = runs[raw].map(lambda v: _display(v) if _present(v) else "-")
    block = ["detector", *settings]
    keys = [*block, "loss"]
    first = runs.groupby(keys, sort=False)["order"].min()
    rows = []
    for key, group in runs.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(keys, key))
        base = None
        if baseline is not None:
            mask = np.ones(len(runs), dtype=bool)
            for column in block:
                mask &= runs[column].to_numpy() == ident[column]
            mask &= runs["loss"].to_numpy() == baseline
            base = runs[mask] if mask.any() else None
        det_name = group["detector_name"].iloc[0]
        default_size = all(not _present(group[c].iloc[0]) or group[c].iloc[0] == 1 for c in ("width", "depth"))
        for metric in metrics:
            values = group.set_index("seed")[metric].dropna()
            row = {
                **ident,
                "metric": metric,
                "n": int(values.size),
                "mean": float(values.mean()) if values.size else math.nan,
                "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                "seeds": " ".join(str(s) for s in sorted(values.index)),
                "order": int(first[key]),
            }
            if base is not None:
                base_values = base.set_index("seed")[metric].dropna()
                base_mean = float(base_values.mean()) if base_values.size else math.nan
                row["baseline_mean"] = base_mean
                row["rel_change_pct"] = (row["mean"] - base_mean) / base_mean * 100.0 if base_mean else math.nan
                common = sorted(set(values.index) & set(base_values.index))
                row["n_paired"] = len(common)
                if len(common) >= 2 and ident["loss"] != baseline:
                    diff, low, high = paired_bootstrap([values[s] - base_values[s] for s in common], n_boot=n_boot)
                    row.update(diff_mean=diff, ci_low=low, ci_high=high)
            # The paper's rows go beside ours where the setting is the paper's: its detector at
            # full size, and the loss's own similarity as objectness target (the authors' code).
            if paper and default_size and ident.get("obj_target", "loss") in ("loss", "-"):
                published = paper_mod.published(det_name, ident["loss"])
                if published and metric in published:
                    row["paper"] = published[metric]
                    row["paper_rel_change_pct"] = paper_mod.relative_change(det_name, ident["loss"], metric)
            rows.append(row)
    frame = pd.DataFrame(rows).sort_values("order", kind="stable").drop(columns="order").reset_index(drop=True)
    for column in ("baseline_mean", "rel_change_pct", "n_paired", "diff_mean", "ci_low", "ci_high", "paper", "paper_rel_change_pct"):
        if column not in frame:
            frame[column] = math.nan
    n_seeds = sorted(set(frame.loc[frame["n"] > 0, "n"].astype(int)))
    return Summary(frame, keys, settings, metrics, baseline, n_seeds, bool(paper and frame["paper"].notna().any()))


def _display(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --------------------------------------------------------------------------------------
# Layout


def _fmt_cell(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pm = r" $\pm$ " if latex else " ± "
    pct = r"\%" if latex else "%"
    if not _present(row["mean"]):
        return "-"
    text = f"{row['mean']:.1f}"
    if _present(row.get("std")):
        text += f"{pm}{row['std']:.1f}"
    if baseline is not None and row["loss"] != baseline and _present(row.get("rel_change_pct")):
        text += f" ({row['rel_change_pct']:+.2f}{pct})"
    if _present(row.get("ci_low")) and (row["ci_low"] > 0 or row["ci_high"] < 0):
        text += SIGNIFICANT
    return text


def _fmt_paper(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pct = r"\%" if latex else "%"
    if not _present(row.get("paper")):
        return "-"
    text = f"{row['paper']:.1f}"
    if row["loss"] != baseline and _present(row.get("paper_rel_change_pct")):
        text += f" ({row['paper_rel_change_pct']:+.2f}{pct})"
    return text


def wide_tables(summary: Summary, *, latex: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """(display strings, numeric means for 'best', block id per row): one row per group (+ paper)."""
    frame = summary.frame
    keys = summary.keys
    display_rows, numeric_rows, blocks = [], [], []
    block_ids: dict[tuple, int] = {}
    for key, group in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(keys, key))
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        block = block_ids.setdefault(tuple(ident[k] for k in keys[:-1]), len(block_ids))
        n = int(group["n"].max())
        base = {**ident}
        if summary.has_paper:
            base["source"] = "ours"
        base["seeds"] = n
        display = dict(base)
        numeric = {}
        for metric in summary.metrics:
            row = by_metric.get(metric)
            display[metric] = _fmt_cell(row, latex=latex, baseline=summary.baseline) if row is not None else "-"
            numeric[metric] = row["mean"] if row is not None else math.nan
        display_rows.append(display)
        numeric_rows.append(numeric)
        blocks.append(block)
        if summary.has_paper and any(_present(r.get("paper")) for r in by_metric.values()):
            display = {**ident, "source": "paper", "seeds": 1}
            for metric in summary.metrics:
                row = by_metric.get(metric)
                display[metric] = _fmt_paper(row, latex=latex, baseline=summary.baseline) if row is not None else "-"
            display_rows.append(display)
            numeric_rows.append({m: math.nan for m in summary.metrics})  # bold: ours only
            blocks.append(block)
    return pd.DataFrame(display_rows), pd.DataFrame(numeric_rows), blocks


def ci_table(summary: Summary) -> pd.DataFrame | None:
    """Paired differences vs the baseline with their bootstrap CI (None with fewer than 2 seeds)."""
    frame = summary.frame
    if "ci_low" not in frame or frame["ci_low"].notna().sum() == 0:
        return None
    rows = []
    for key, group in frame[frame["ci_low"].notna()].groupby(summary.keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(summary.keys, key))
        row["seeds"] = int(group["n_paired"].max())
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        for metric in summary.metrics:
            r = by_metric.get(metric)
            if r is None or not _present(r["ci_low"]):
                row[metric] = "-"
            else:
                mark = SIGNIFICANT if (r["ci_low"] > 0 or r["ci_high"] < 0) else ""
                row[metric] = f"{r['diff_mean']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]{mark}"
        rows.append(row)
    return pd.DataFrame(rows)


def _caption(summary: Summary) -> str:
    n = summary.n_seeds
    seeds = f"{n[0]} seed{'s' if n[0] != 1 else ''}" if len(n) == 1 else f"{min(n)}-{max(n)} seeds"
    text = "AP (%) at the listed IoU thresholds: mean"
    if n and max(n) > 1:
        text += " ± std"
    text += f" over {seeds}"
    if summary.baseline:
        text += f"; in brackets the relative change against {summary.baseline}"
    if summary.frame.get("ci_low") is not None and summary.frame["ci_low"].notna().any():
        text += f"; {SIGNIFICANT} the 95% paired-bootstrap CI of the difference excludes 0"
    if summary.has_paper:
        text += f". 'paper' rows: {paper_mod.SOURCE}"
    return text + "."


# --------------------------------------------------------------------------------------
# Rendering


def to_markdown(summary: Summary) -> str:
    if summary.frame.empty:
        return "_No finished training cells._\n"
    display, _, _ = wide_tables(summary)
    parts = [_caption(summary), "", display.to_markdown(index=False, disable_numparse=True)]
    cis = ci_table(summary)
    if cis is not None:
        parts += [
            "",
            f"Paired difference against {summary.baseline} over shared seeds (AP points): "
            f"mean [95% bootstrap CI]{'; ' + SIGNIFICANT + ' excludes 0' if SIGNIFICANT else ''}.",
            "",
            cis.to_markdown(index=False, disable_numparse=True),
        ]
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(summary: Summary, *, label: str = "tab:scabench") -> str:
    """A booktabs ``table`` via pandas' Styler; the best mean per column and block is bold."""
    if summary.frame.empty:
        return "% no finished training cells\n"
    display, numeric, blocks = wide_tables(summary, latex=True)
    label_columns = [c for c in display.columns if c not in summary.metrics]
    for column in label_columns:
        display[column] = display[column].map(latex_escape)
    display.columns = [latex_escape(c) for c in display.columns]
    metric_columns = [latex_escape(m) for m in summary.metrics]

    def bold(data: pd.DataFrame) -> pd.DataFrame:
        props = pd.DataFrame("", index=data.index, columns=data.columns)
        for metric, column in zip(summary.metrics, metric_columns):
            values = numeric[metric]
            for block in set(blocks):
                idx = [i for i, b in enumerate(blocks) if b == block and _present(values.iloc[i])]
                if len(idx) < 2:
                    continue
                best = max(values.iloc[i] for i in idx)
                for i in idx:
                    if round(values.iloc[i], 1) == round(best, 1):
                        props.iloc[i, list(data.columns).index(column)] = "textbf:--rwrap;"
        return props

    styler = display.style.hide(axis="index").apply(bold, axis=None)
    column_format = "l" * len(label_columns) + "r" * len(metric_columns)
    latex = styler.to_latex(
        hrules=True,
        column_format=column_format,
        caption=latex_escape(_caption(summary)).replace("±", r"$\pm$"),
        label=label,
        position="t",
        position_float="centering",
    )
    return _block_rules(latex, blocks)


def _block_rules(latex: str, blocks: list[int]) -> str:
    """Insert ``\\midrule`` between detector/setting blocks."""
    lines = latex.splitlines()
    try:
        start = lines.index(r"\midrule") + 1
    except ValueError:
        return latex
    out = lines[:start]
    row = 0
    for line in lines[start:]:
        if line.startswith(r"\bottomrule"):
            out.append(line)
            row = -1
            continue
        if row >= 0 and line.rstrip().endswith(r"\\"):
            if row > 0 and blocks[row] != blocks[row - 1]:
                out.append(r"\midrule")
            row += 1
        out.append(line)
    return "\n".join(out) + "\n"


def to_csv(summary: Summary) -> str:
    return summary.frame.to_csv(index=False)


def simulation_table(root: str | Path) -> str | None:
    """Final error per loss of a finished convergence study (Markdown), if the folder holds one."""
    root = Path(root)
    for path in _cell_dirs(root):
        meta = _read_json(path / "config.json") or {}
        if meta.get("kind") != "simulate" or (meta.get("config") or {}).get("study") != "convergence":
            continue
        csv = path / "convergence.csv"
        if not (path / "summary.json").exists() or not csv.exists():
            continue
        try:
            frame = pd.read_csv(csv)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        step = next((c for c in ("iteration", "t", "step", "iter") if c in frame), None)
        error = next((c for c in ("error", "total_error", "E") if c in frame), None)
        if step is None or error is None or "loss" not in frame:
            continue
        order = {name: i for i, name in enumerate(dict.fromkeys(frame["loss"]))}
        last = frame.loc[frame.groupby("loss")[step].idxmax()].sort_values("loss", key=lambda c: c.map(order))
        first = frame.loc[frame.groupby("loss")[step].idxmin()]
        table = pd.DataFrame(
            {
                "loss": last["loss"].to_numpy(),
                f"E({int(first[step].min())})": first.set_index("loss").loc[last["loss"], error].map("{:.4g}".format).to_numpy(),
                f"E({int(last[step].max())})": last[error].map("{:.4g}".format).to_numpy(),
            }
        )
        return "Convergence simulation (DIoU protocol): total regression error at the first and last iteration.\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"
    return None


def unfinished(root: str | Path) -> list[tuple[str, str, str | None]]:
    """(label, status, reason) of the training cells without a summary."""
    out = []
    for path in _cell_dirs(Path(root)):
        meta = _read_json(path / "config.json") or {}
        if meta.get("kind") != "train" or (path / "summary.json").exists():
            continue
        record = _read_json(path / "record.json") or {}
        status = record.get("status") or ("partial" if (path / "metrics.jsonl").exists() else "pending")
        reason = (record.get("reason") or "").splitlines()[0] if record.get("reason") else None
        out.append((meta.get("label", path.name), status, reason))
    return out


def report(
    root: str | Path,
    *,
    fmt: str = "markdown",
    baseline: str | None = None,
    metrics: Iterable[str] | None = None,
    paper: bool | None = None,
    n_boot: int = N_BOOT,
) -> str:
    """The report text for a results folder (see the module docstring)."""
    options = grid_options(root)
    baseline = baseline or options.get("baseline") or "iou"
    paper = bool(options.get("paper", False)) if paper is None else paper
    runs = load_runs(root)
    chosen = list(metrics) if metrics else list(DEFAULT_METRICS)
    unknown = [m for m in chosen if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
    if not runs.empty and baseline not in set(runs["loss"]):
        baseline = None if baseline not in set(runs["loss"]) else baseline
    summary = summarize(runs, metrics=chosen, baseline=baseline, paper=paper, n_boot=n_boot)
    if fmt == "markdown":
        sim = simulation_table(root)
        text = "" if summary.frame.empty and sim else to_markdown(summary)
        missing = unfinished(root)
        if missing:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(pd.Series([s for _, s, _ in missing]).value_counts().items()))
            text += f"\nNot in the table: {len(missing)} unfinished cell{'s' if len(missing) > 1 else ''} ({counts}):\n\n"
            text += "\n".join(f"- {label} ({status}{': ' + reason if reason else ''})" for label, status, reason in missing[:20]) + "\n"
            if len(missing) > 20:
                text += f"- ... and {len(missing) - 20} more\n"
        return text + ("\n" + sim if sim and text else sim or "")
    if fmt == "latex":
        return to_latex(summary)
    if fmt == "csv":
        return to_csv(summary)
    raise ValueError(f"unknown format {fmt!r}; use markdown, latex or csv")
