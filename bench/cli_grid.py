"""``scabench run`` / ``report`` / ``plot``: grids of experiments, their tables and figures.

Registered on the main app in ``bench/cli.py`` with ``app.add_typer(grid_app)``.
Exit codes: 0 ok, 1 some cells failed (named), 2 usage or config error, 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from scabench.bench.console import console, err_console
from scabench.bench.console import fail as _fail

grid_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class Executor(str, Enum):
    local = "local"
    slurm = "slurm"


class Cluster(str, Enum):
    slurm = "slurm"
    local = "local"
    debug = "debug"
    auto = "auto"


class Format(str, Enum):
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    cells = "cells"


class Interval(str, Enum):
    """The CI of the paired differences (reports.statistics): Student t, or percentile bootstrap."""

    t = "t"
    bootstrap = "bootstrap"


INTERVAL_HELP = "CI of the paired differences: t (Student t over seeds, honest with few seeds) or bootstrap (percentile; 10+ seeds)"


def _load(grid_file: Path, check_trainer: bool = True, overrides: list[str] | None = None) -> tuple[Any, list]:
    """The grid of a file with its ``--set`` overrides (bench.overrides) and its cells; exit 2 on a problem."""
    from scabench.bench.config import GridError
    from scabench.bench.grid import expand
    from scabench.bench.overrides import load_grid_with_overrides

    try:
        grid = load_grid_with_overrides(grid_file, overrides, check_trainer=check_trainer)
        return grid, expand(grid)
    except GridError as exc:
        _fail(exc.messages())
    except ValueError as exc:  # a malformed --set
        _fail(str(exc))
    raise AssertionError  # unreachable


def plan_table(cells: list, folder: Any = None, title: str | None = None) -> Table:
    """The rich table of a grid's cells with their status in ``folder`` (a ``GridFolder``)."""
    axes = list(dict.fromkeys(k for c in cells if c.kind == "train" for k in c.labels.get("axes", {})))
    table = Table(title=title, show_lines=False, header_style="bold")
    kinds = {c.kind for c in cells}
    first = "detector / study" if len(kinds) > 1 else ("detector" if kinds == {"train"} else "study")
    for column in ["#", "cell", "kind", first, "loss", *axes, "seed", "status"]:
        if column == "kind" and len(kinds) == 1:
            continue
        table.add_column(column, overflow="fold", no_wrap=column in ("cell",))
    colours = {"done": "green", "failed": "red", "broken": "red", "running": "cyan", "interrupted": "yellow", "partial": "yellow"}
    for i, cell in enumerate(cells):
        status = "new"
        if folder is not None and folder.cell(cell.id).path.exists():
            state = folder.cell(cell.id).state()
            status = state.status
            if status in ("partial", "interrupted", "running") and cell.epochs:
                status += f" {state.epochs_done}/{cell.epochs}"
            status = f"[{colours.get(state.status, 'white')}]{status}[/]"
        if cell.kind == "train":
            row = [str(i), cell.id] + (["train"] if len(kinds) > 1 else []) + [cell.labels["detector"], cell.labels["loss"]]
            row += [str(cell.labels["axes"].get(a, "-")) for a in axes]
            row += [str(cell.labels["seed"]), status]
        else:
            losses = ", ".join(cell.labels.get("losses", []))
            row = [str(i), cell.id] + (["simulate"] if len(kinds) > 1 else []) + [cell.labels["study"], losses, *(["-"] * len(axes)), str(cell.config.get("seed", "-")), status]
        table.add_row(*row)
    return table


def _check_data(grid: Any) -> None:
    """The grid's data path exists here (every training cell reads the one ``data:``), else exit 2 at its line."""
    from scabench.bench.config import Problem

    data = grid.config.data
    if grid.config.detectors and data.is_path:
        resolved = data.resolved_source()
        if "$" in resolved or not Path(resolved).exists():
            hint = " (set the environment variable it names)" if "$" in data.source else ""
            _fail(grid.error([Problem(("data",), f"{data.source!r}: no such file or folder{hint}")]).messages())


def _parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"--gpus: give GPU indices like 0,1,2 (got {text!r})")
    return None


@grid_app.command("run")
def run_command(
    grid_file: Path = typer.Option(..., "--grid", "-g", help="grid YAML (see experiments/)", exists=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="results folder \\[default: results/<grid name>]"),
    executor: Executor = typer.Option(Executor.local, "--executor", "-e", help="local: in order (one cell per GPU); slurm: a submitit job array"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and stop"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run failed cells again"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPUs for the local executor, e.g. 0,1,2,3 \\[default: all visible]"),
    cluster: Cluster = typer.Option(Cluster.slurm, "--cluster", help="submitit backend for --executor slurm (local/debug: try it on this machine)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write the tables and figures when the run ends"),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", "-s", help="override a key of the grid file, KEY=VALUE (dotted key, YAML value), e.g. train.epochs=1; repeatable",
    ),
) -> None:
    """Run a grid of experiments: plan, run (resuming), then tables and figures."""
    from scabench.bench.runner import GridBusy, run_grid
    from scabench.results import GridFolder

    grid, cells = _load(grid_file, overrides=overrides)
    out = out or Path("results") / grid.name
    n_train = sum(c.kind == "train" for c in cells)
    console.print(plan_table(cells, GridFolder(out), title=f"{grid.name}: {len(cells)} cells ({n_train} training) -> {out}"))
    _check_data(grid)  # a dry run too: a missing data path is found before anything trains
    if dry_run:
        return
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        outcome = run_grid(
            cells, out, grid=grid, executor=executor.value, retry_failed=retry_failed,
            gpus=_parse_gpus(gpus), cluster=cluster.value, resources=grid.config.resources,
            console=err_console,
        )
    except GridBusy as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)

    if report and not outcome.interrupted:
        _write_outputs(out)
    console.print(
        f"cells: {len(outcome.done)} done now, {len(outcome.already_done)} done before, "
        f"{len(outcome.failed)} failed, {len(outcome.skipped_failed)} failed before (skipped), "
        f"{len(outcome.busy)} busy"
    )
    if outcome.interrupted:
        _fail("interrupted; run the same command again to resume", 130)
    problems = []
    for cell, reason in outcome.failed:
        problems.append(f"failed: {cell.label} ({cell.id}): {reason}")
    for cell, reason in outcome.skipped_failed:
        problems.append(f"failed earlier, not retried (use --retry-failed): {cell.label} ({cell.id}): {reason.splitlines()[0]}")
    for cell in outcome.busy:
        problems.append(f"busy: {cell.label} ({cell.id}) is being run by another process")
    if problems:
        for line in problems:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        from scabench.results import CELLS, LOG, RECORD

        err_console.print(f"records: {out}/{CELLS}/<cell>/{RECORD}, logs: {out}/{CELLS}/<cell>/{LOG}", soft_wrap=True)
        raise typer.Exit(1)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _write_outputs(out: Path) -> None:
    """Tables (report.md / report.tex / results.csv) and figures of a finished run; print the table."""
    from scabench.reports import tables
    from scabench.results import REPORTS, GridFolder, atomic_write_text

    folder = GridFolder(out)
    try:
        texts = {fmt: tables.report(out, fmt=fmt) for fmt in REPORTS}
        for fmt, text in texts.items():
            atomic_write_text(folder.report_file(fmt), text)
        typer.echo(texts["markdown"])
    except Exception as exc:  # noqa: BLE001  (a report problem must not hide the run's outcome)
        err_console.print(f"[yellow]report skipped:[/] {type(exc).__name__}: {exc}")
    try:
        from scabench.reports.figures import plot

        paths = plot(out, log=lambda m: err_console.print(f"[yellow]{m}[/]", highlight=False))
        if paths:
            console.print(f"figures: {len(paths)} files in {folder.figures_dir}")
    except Exception as exc:  # noqa: BLE001
        err_console.print(f"[yellow]figures skipped:[/] {type(exc).__name__}: {exc}")


def _results_dir(directory: Path) -> Path:
    from scabench.results import GridFolder

    if not directory.is_dir():
        _fail(f"{directory}: no such results folder")
    if not GridFolder(directory).is_results_folder():
        _fail(f"{directory}: not a scabench results folder (no cells/ inside)")
    return directory


@grid_app.command("report")
def report_command(
    directory: Path = typer.Argument(..., help="results folder of `scabench run`"),
    fmt: Format = typer.Option(Format.markdown, "--format", "-f", help="markdown, latex, csv (the table's long frame) or cells (one row per finished cell)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="loss to compare against \\[default: the grid's, else iou]"),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", "-m", help="metrics to show, e.g. AP,AP50,AP90 (repeatable) \\[default: AP AP50 AP65 AP75 AP80 AP90]"),
    paper: Optional[bool] = typer.Option(None, "--paper/--no-paper", help="show the paper's published numbers \\[default: the grid's paper: setting]"),
    interval: Interval = typer.Option(Interval.t, "--interval", "-i", help=INTERVAL_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file instead of printing"),
) -> None:
    """Tables: mean and 95% CI over seeds, change vs the baseline, paired differences with their CI (* excludes 0)."""
    from scabench.reports import loading, statistics, tables
    from scabench.results import atomic_write_text

    directory = _results_dir(directory)
    chosen = [m.strip() for item in (metrics or []) for m in item.split(",") if m.strip()] or None
    try:
        text = tables.report(directory, fmt=fmt.value, baseline=baseline, metrics=chosen, paper=paper, interval=interval.value)
    except ValueError as exc:
        _fail(str(exc))
    runs = loading.load_runs(directory)
    chosen_baseline, among_losses = statistics.choose_baseline(baseline, loading.grid_options(directory), runs)
    if not among_losses:
        err_console.print(
            f"[yellow]baseline {chosen_baseline!r} not among the losses ({', '.join(dict.fromkeys(runs['loss']))}): no relative changes[/]"
        )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@grid_app.command("plot")
def plot_command(
    directory: Path = typer.Argument(..., help="results folder of `scabench run`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="figure folder \\[default: DIR/figures]"),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="loss the paired differences are against \\[default: the grid's, else iou]"),
    interval: Interval = typer.Option(Interval.t, "--interval", "-i", help=INTERVAL_HELP),
) -> None:
    """Figures: mAP per epoch, AP per IoU threshold, paired differences to the baseline, simulation figures (PNG + PDF)."""
    from scabench.reports.figures import plot

    directory = _results_dir(directory)
    paths = plot(directory, out, log=lambda m: err_console.print(f"[yellow]{m}[/]"), baseline=baseline, interval=interval.value)
    if not paths:
        err_console.print("no finished cells with metrics to plot")
        return
    for path in paths:
        console.print(str(path), highlight=False, soft_wrap=True)
