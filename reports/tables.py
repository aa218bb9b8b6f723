"""Tables from a results folder: Markdown, LaTeX and CSV of :func:`reports.statistics.summarize`.

``scabench report DIR`` reads every finished cell (:mod:`reports.loading`) and prints one row
per detector x loss (x each setting that differs between cells, e.g. an ablation axis), each
value the mean over seeds ``± the half-width of its 95 % t CI`` and its change against the
baseline in the paper's style, ``19.9 ± 0.8 (+5.85%)``. With 2 seeds or more shared with the
baseline, a second table gives the paired difference to the baseline with its 95 % CI
(Student t by default, ``--interval bootstrap`` for the percentile bootstrap: see
:mod:`reports.statistics`), and a few lines under it say in words which differences are real:
a trailing ``*`` (in every format) marks a difference whose CI excludes 0; all others are
within seed noise. With one seed the caption says that nothing can be told from seed noise.
For the paper's grids (``paper: true`` in the grid file, or ``--paper``) the published numbers
appear as rows beside ours. Cells not in the table (failed, unfinished, broken: with the file
and what is wrong) are listed under it.

Formats: Markdown (``to_markdown``), LaTeX (pandas ``Styler``: booktabs rules, best value per
column and block in bold, the differences as a second table) and CSV (the long, tidy frame
with every number: mean, std, ci_half, n, diff_mean, diff_low, diff_high, significant, ...).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from scabench.reports import paper as paper_mod
from scabench.reports.loading import ALL_METRICS, DEFAULT_METRICS, grid_options, load_runs, not_in_table, present, read_cells
from scabench.reports.statistics import INTERVAL_NAMES, N_BOOT, Summary, block_label, choose_baseline, summarize

SIGNIFICANT = "*"
NOISE_NOTE = (f"Differences without {SIGNIFICANT} are within seed noise (their 95% CI contains 0). Each CI is "
              "for one comparison: with no real difference anywhere, about 1 in 20 would still be marked.")


# --------------------------------------------------------------------------------------
# Layout


def _significant(row: pd.Series) -> bool:
    """Whether the row's paired CI excludes 0 (False where there is no CI)."""
    value = row.get("significant")
    return bool(pd.notna(value) and value)


def _mark(row: pd.Series) -> str:
    return SIGNIFICANT if _significant(row) else ""


def _fmt_cell(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pm = r" $\pm$ " if latex else " ± "
    pct = r"\%" if latex else "%"
    if not present(row["mean"]):
        return "-"
    text = f"{row['mean']:.1f}"
    if present(row.get("ci_half")):
        text += f"{pm}{row['ci_half']:.1f}"
    if baseline is not None and row["loss"] != baseline and present(row.get("rel_change_pct")):
        text += f" ({row['rel_change_pct']:+.2f}{pct})"
    return text + _mark(row)


def _fmt_difference(row: pd.Series) -> str:
    """``+1.40 [+0.60, +2.20]*``: mean paired difference (AP points), its CI, the mark."""
    return f"{row['diff_mean']:+.2f} [{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]{_mark(row)}"


def _fmt_paper(row: pd.Series, *, latex: bool, baseline: str | None) -> str:
    pct = r"\%" if latex else "%"
    if not present(row.get("paper")):
        return "-"
    text = f"{row['paper']:.1f}"
    if row["loss"] != baseline and present(row.get("paper_rel_change_pct")):
        text += f" ({row['paper_rel_change_pct']:+.2f}{pct})"
    return text


def _groups(summary: Summary, frame: pd.DataFrame | None = None) -> Iterator[tuple[dict, dict[str, pd.Series], int]]:
    """(row keys, {metric: row of the long frame}, block id) per group, in the frame's order;
    block ids count the detector x settings blocks from 0 in order of appearance."""
    frame = summary.frame if frame is None else frame
    block_ids: dict[tuple, int] = {}
    for key, group in frame.groupby(summary.keys, sort=False):
        ident = dict(zip(summary.keys, key if isinstance(key, tuple) else (key,)))
        block = block_ids.setdefault(tuple(ident[k] for k in summary.keys[:-1]), len(block_ids))
        yield ident, {r["metric"]: r for _, r in group.iterrows()}, block


def wide_tables(summary: Summary, *, latex: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """(display strings, numeric means for 'best', block id per row): one row per group (+ paper)."""
    display_rows, numeric_rows, blocks = [], [], []
    for ident, by_metric, block in _groups(summary):
        display = {**ident, **({"source": "ours"} if summary.has_paper else {}),
                   "seeds": max(int(r["n"]) for r in by_metric.values())}
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


def difference_table(summary: Summary) -> tuple[pd.DataFrame, list[int]] | None:
    """Paired differences vs the baseline with their CI, and the block id per row (None without
    any group sharing 2 seeds with the baseline)."""
    if not summary.has_differences:
        return None
    rows, blocks = [], []
    for ident, by_metric, block in _groups(summary, summary.frame[summary.frame["diff_low"].notna()]):
        blocks.append(block)
        row = {**ident, "seeds": max(int(r["n_paired"]) for r in by_metric.values())}
        for metric in summary.metrics:
            r = by_metric.get(metric)
            row[metric] = _fmt_difference(r) if r is not None else "-"
        rows.append(row)
    return pd.DataFrame(rows), blocks


def verdict_lines(summary: Summary) -> list[str]:
    """The answer in words, one line per loss against the baseline of its block: the
    differences whose CI excludes 0, or that all are within seed noise."""
    if not summary.has_differences:
        return []
    several_blocks = summary.frame[summary.keys[:-1]].drop_duplicates().shape[0] > 1
    lines = []
    for ident, by_metric, _ in _groups(summary):
        if ident["loss"] == summary.baseline:
            continue
        where = f" ({block_label(ident, summary.settings)})" if several_blocks else ""
        rows = [by_metric[m] for m in summary.metrics if m in by_metric]
        marked = [f"{r['metric']} {_fmt_difference(r)}" for r in rows if _significant(r)]
        if not any(present(r.get("diff_low")) for r in rows):
            verdict = f"no interval (fewer than 2 seeds shared with {summary.baseline} in this block)"
        elif not marked:
            verdict = "every difference within seed noise"
        else:
            verdict = ", ".join(marked) + ("; the others within seed noise" if len(marked) < len(rows) else "")
        lines.append(f"- {ident['loss']} vs {summary.baseline}{where}: {verdict}")
    return lines


def _seeds_text(n: list[int]) -> str:
    return f"{n[0]} seed{'s' if n[0] != 1 else ''}" if len(n) == 1 else f"{min(n)}-{max(n)} seeds"


def _caption(summary: Summary) -> str:
    n = summary.n_seeds
    text = "AP (%) at the listed IoU thresholds: "
    if n and max(n) > 1:
        text += f"mean ± 95% CI half-width over {_seeds_text(n)} (Student t, n-1 degrees of freedom)"
        if min(n) == 1:
            text += "; rows of one seed have no interval"
    else:
        text += ("one seed, so no confidence interval and no paired comparison: a difference between "
                 "losses cannot be told from seed noise (run 3 seeds or more)")
    if summary.baseline:
        text += f"; in brackets the relative change against {summary.baseline}"
    if summary.has_differences:
        text += (f"; {SIGNIFICANT} the 95% {INTERVAL_NAMES[summary.interval]} CI of the paired difference "
                 f"against {summary.baseline} excludes 0")
    if summary.has_paper:
        text += f". 'paper' rows: {paper_mod.SOURCE}"
    return text + "."


def _difference_caption(summary: Summary) -> str:
    return (f"Paired difference against {summary.baseline} over shared seeds (AP points): mean "
            f"[95% {INTERVAL_NAMES[summary.interval]} CI]; {SIGNIFICANT} the CI excludes 0.")


# --------------------------------------------------------------------------------------
# Rendering


def to_markdown(summary: Summary) -> str:
    if summary.frame.empty:
        return "_No finished training cells._\n"
    display, _, _ = wide_tables(summary)
    parts = [_caption(summary), "", display.to_markdown(index=False, disable_numparse=True)]
    differences = difference_table(summary)
    if differences is not None:
        parts += ["", _difference_caption(summary), "", differences[0].to_markdown(index=False, disable_numparse=True),
                  "", *verdict_lines(summary), "", NOISE_NOTE]
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(summary: Summary, *, label: str = "tab:scabench") -> str:
    """A booktabs ``table`` via pandas' Styler; the best mean per column and block is bold. With
    paired differences, a second table of them (label ``<label>-diff``)."""
    if summary.frame.empty:
        return "% no finished training cells\n"
    display, numeric, blocks = wide_tables(summary, latex=True)
    text = _latex_table(display, summary.metrics, blocks, caption=_caption(summary), label=label, best=numeric)
    differences = difference_table(summary)
    if differences is not None:
        caption = _difference_caption(summary) + " " + NOISE_NOTE
        text += "\n" + _latex_table(differences[0], summary.metrics, differences[1], caption=caption, label=f"{label}-diff")
    return text


def _latex_table(display: pd.DataFrame, metrics: list[str], blocks: list[int], *, caption: str, label: str,
                 best: pd.DataFrame | None = None) -> str:
    """One booktabs table of display strings; with ``best`` (numeric values), the best value per
    metric column and block is bold; a ``\\midrule`` between blocks."""
    label_columns = [c for c in display.columns if c not in metrics]
    display = display.copy()
    for column in label_columns:
        display[column] = display[column].map(latex_escape)
    display.columns = [latex_escape(c) for c in display.columns]
    metric_columns = [latex_escape(m) for m in metrics]

    def bold(data: pd.DataFrame) -> pd.DataFrame:
        props = pd.DataFrame("", index=data.index, columns=data.columns)
        for metric, column in zip(metrics, metric_columns):
            values = best[metric]
            for block in set(blocks):
                idx = [i for i, b in enumerate(blocks) if b == block and present(values.iloc[i])]
                if len(idx) < 2:
                    continue
                top = max(values.iloc[i] for i in idx)
                for i in idx:
                    if round(values.iloc[i], 1) == round(top, 1):
                        props.iloc[i, list(data.columns).index(column)] = "textbf:--rwrap;"
        return props

    styler = display.style.hide(axis="index")
    if best is not None:
        styler = styler.apply(bold, axis=None)
    latex = styler.to_latex(
        hrules=True,
        column_format="l" * len(label_columns) + "r" * len(metric_columns),
        caption=latex_escape(caption).replace("±", r"$\pm$"),
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


def cells_csv(runs: pd.DataFrame) -> str:
    """One row per finished training cell: its id, detector, loss, seed, settings and final metrics (AP %)."""
    if runs.empty:
        return ""
    frame = runs.sort_values("order", kind="stable").drop(columns=["order"])
    return frame.rename(columns=lambda c: c.removeprefix("setting:")).to_csv(index=False)


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
    interval: str = "t",
    n_boot: int = N_BOOT,
) -> str:
    """The report text for a results folder (see the module docstring); ``interval``: ``"t"``
    or ``"bootstrap"``, the CI of the paired differences (:mod:`reports.statistics`)."""
    options = grid_options(root)
    paper = bool(options.get("paper", False)) if paper is None else paper
    runs = load_runs(root)
    chosen = list(metrics) if metrics else list(DEFAULT_METRICS)
    unknown = [m for m in chosen if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
    baseline, among_losses = choose_baseline(baseline, options, runs)
    summary = summarize(runs, metrics=chosen, baseline=baseline if among_losses else None, paper=paper,
                        interval=interval, n_boot=n_boot)
    if fmt == "markdown":
        sim = simulation_table(root)
        text = "" if summary.frame.empty and sim else to_markdown(summary)
        text += not_in_table_text(not_in_table(root))
        return text + ("\n" + sim if sim and text else sim or "")
    if fmt == "latex":
        return to_latex(summary)
    if fmt == "csv":
        return to_csv(summary)
    if fmt == "cells":
        return cells_csv(runs)
    raise ValueError(f"unknown format {fmt!r}; use markdown, latex, csv or cells")
