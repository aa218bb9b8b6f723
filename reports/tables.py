"""Tables from a results folder: Markdown, LaTeX and CSV of :func:`reports.statistics.summarize`.

``scabench report DIR`` reads every finished cell (:mod:`reports.loading`) and prints one row
per detector x loss (x each setting that differs between cells, e.g. an ablation axis), each
value the mean over seeds ``± std`` and its change against the baseline in the paper's style,
``19.9 (+5.85%)``; a ``*`` marks gains whose 95 % paired-bootstrap interval excludes 0
(:mod:`reports.statistics`). For the paper's grids (``paper: true`` in the grid file, or
``--paper``) the published numbers appear as rows beside ours. Cells not in the table (failed,
unfinished, broken: with the file and what is wrong) are listed under it.

Formats: Markdown (``to_markdown``), LaTeX (pandas ``Styler``: booktabs rules, best value per
column and block in bold) and CSV (the long, tidy frame with every number).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from scabench.reports import paper as paper_mod
from scabench.reports.loading import ALL_METRICS, DEFAULT_METRICS, grid_options, load_runs, not_in_table, present, read_cells
from scabench.reports.statistics import N_BOOT, Summary, summarize

SIGNIFICANT = "*"


# --------------------------------------------------------------------------------------
# Layout


def _fmt_cell(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pm = r" $\pm$ " if latex else " ± "
    pct = r"\%" if latex else "%"
    if not present(row["mean"]):
        return "-"
    text = f"{row['mean']:.1f}"
    if present(row.get("std")):
        text += f"{pm}{row['std']:.1f}"
    if baseline is not None and row["loss"] != baseline and present(row.get("rel_change_pct")):
        text += f" ({row['rel_change_pct']:+.2f}{pct})"
    if present(row.get("ci_low")) and (row["ci_low"] > 0 or row["ci_high"] < 0):
        text += SIGNIFICANT
    return text


def _fmt_paper(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pct = r"\%" if latex else "%"
    if not present(row.get("paper")):
        return "-"
    text = f"{row['paper']:.1f}"
    if row["loss"] != baseline and present(row.get("paper_rel_change_pct")):
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
        if summary.has_paper and any(present(r.get("paper")) for r in by_metric.values()):
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
            if r is None or not present(r["ci_low"]):
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
                idx = [i for i, b in enumerate(blocks) if b == block and present(values.iloc[i])]
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
    for run, state, meta in read_cells(root, "simulate"):
        csv = run.path / "convergence.csv"
        if state.status != "done" or (meta.get("config") or {}).get("study") != "convergence" or not csv.exists():
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


def not_in_table_text(missing: list[tuple[str, str, str | None]], most: int = 20) -> str:
    """The list under the table: how many cells are left out, by status, and each one's reason."""
    if not missing:
        return ""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(pd.Series([s for _, s, _ in missing]).value_counts().items()))
    text = f"\nNot in the table: {len(missing)} unfinished cell{'s' if len(missing) > 1 else ''} ({counts}):\n\n"
    text += "\n".join(f"- {label} ({status}{': ' + reason if reason else ''})" for label, status, reason in missing[:most]) + "\n"
    if len(missing) > most:
        text += f"- ... and {len(missing) - most} more\n"
    return text


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
        baseline = None
    summary = summarize(runs, metrics=chosen, baseline=baseline, paper=paper, n_boot=n_boot)
    if fmt == "markdown":
        sim = simulation_table(root)
        text = "" if summary.frame.empty and sim else to_markdown(summary)
        text += not_in_table_text(not_in_table(root))
        return text + ("\n" + sim if sim and text else sim or "")
    if fmt == "latex":
        return to_latex(summary)
    if fmt == "csv":
        return to_csv(summary)
    raise ValueError(f"unknown format {fmt!r}; use markdown, latex or csv")
