"""``scabench simulate convergence | gradients | corner-center | bench``: the synthetic-box studies.

Registered on the main app in ``bench/cli.py`` with ``app.add_typer(simulate_app, name="simulate")``.
Each study command writes tidy CSVs, then PNG + PDF figures, into ``--out`` (see
:mod:`scabench.bench.studies`); ``bench`` times the convergence study. Options and printing
only: the defaults are the studies' own (:mod:`scabench.bench.studies.defaults`, no torch).
Exit codes: 0 ok, 1 the computation failed, 2 usage error (bad loss name, option, device).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from scabench.bench.cli_options import device_option
from scabench.bench.console import console, err_console, fail
from scabench.bench.studies import defaults as D
from scabench.devices import DEVICE_CHOICES

simulate_app = typer.Typer(
    help="Synthetic-box studies: convergence (1,715,000 cases), gradient magnitude, corner vs centre.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Engine = StrEnum("Engine", {name: name for name in D.ENGINES})
Dtype = StrEnum("Dtype", {name: name for name in D.DTYPES})

DEFAULT_OUT = Path("results/simulate")
LOSSES_HELP = "comma-separated loss names: registered, composed ('iou+cd') or 'module:function'"

# The options several commands share; each command gives the default (the studies' own).
Losses = Annotated[str, typer.Option("--losses", help=LOSSES_HELP)]
Seed = Annotated[int, typer.Option("--seed", help="random seed (the same seed gives the same numbers)")]
Out = Annotated[Path, typer.Option("--out", help="folder for the CSVs and figures")]
Device = Annotated[str, typer.Option("--device", help=f"device: {DEVICE_CHOICES}", callback=device_option)]
Figures = Annotated[bool, typer.Option("--figures/--no-figures", help="draw the figures after the CSVs")]
Points = Annotated[int, typer.Option("--points", help="anchor centres in the disc; cases = points x 343")]
Steps = Annotated[int, typer.Option("--iterations", help="regression steps T")]
Precision = Annotated[Dtype, typer.Option("--dtype", help="state precision (error sums are float64)")]
ENGINE_HELP = "auto (the C kernel for the built-in five on the CPU, else compiled), kernel, compiled (any loss, inductor), or autograd (eager)"
EngineChoice = Annotated[Engine, typer.Option("--engine", help=ENGINE_HELP)]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: torch's)")]


def _run(label: str, work: Callable[[Any], Any]) -> Any:
    """Run ``work(progress_callback)`` under a rich progress bar, one task per loss.

    A ValueError (a bad option) exits 2; a kernel that cannot be built (engine kernel) exits 1.
    """
    from scabench.bench.studies import CompileUnavailable, KernelUnavailable

    columns = (TextColumn("[bold]{task.description:<14}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def update(name: str, fraction: float) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=1.0)
            progress.update(tasks[name], completed=min(max(fraction, 0.0), 1.0))

        try:
            return work(update)
        except ValueError as error:
            progress.stop()
            fail(str(error))
        except (KernelUnavailable, CompileUnavailable) as error:
            progress.stop()
            fail(f"{label}: {error}", code=1)


def _losses(losses: str) -> list[Any]:
    """The checked loss specs (:func:`scabench.bench.studies.resolve_losses`); a bad one exits 2."""
    from scabench.bench.studies import resolve_losses

    try:
        return resolve_losses(losses)
    except ValueError as error:
        fail(str(error))


def _print_frame(frame: Any, title: str, columns: dict[Any, tuple[str, str]]) -> None:
    """Print ``frame``'s ``columns`` (column -> (header, format; "" for text)) as a rich table."""
    table = Table(title=title)
    for header, fmt in columns.values():
        table.add_column(header, justify="right" if fmt else "left")
    formats = [fmt for _, fmt in columns.values()]
    for row in frame[list(columns)].itertuples(index=False, name=None):
        table.add_row(*[format(value, fmt) if fmt else str(value) for value, fmt in zip(row, formats)])
    console.print(table)


def _timing_columns(iterations: int, *, with_floor: bool) -> dict[str, tuple[str, str]]:
    columns = {
        "loss": ("loss", ""), "engine": ("engine", ""), "E0": ("E(0)", ".4g"), "E_final": (f"E({iterations})", ".4g"),
        "seconds": ("seconds", ".2f"),
    }
    if with_floor:
        columns |= {
            "cpu_seconds": ("cpu s", ".2f"), "ms_per_step": ("ms/step", ".2f"), "ratio_to_floor": ("x floor", ".2f"),
        }
    return columns


def _written(paths: list[Path]) -> None:
    console.print("wrote: " + ", ".join(str(p) for p in paths))


@simulate_app.command("convergence")
def convergence_command(
    losses: Losses = ",".join(D.CONVERGENCE_LOSSES),
    points: Points = D.POINTS,
    iterations: Steps = D.ITERATIONS,
    schedule: str = typer.Option(D.SCHEDULE, "--schedule", help="step sizes 'lr:until,...,lr' (t counts from 1)"),
    seed: Seed = D.SEED,
    out: Out = DEFAULT_OUT,
    device: Device = D.DEVICE,
    dtype: Precision = Dtype(D.DTYPE),
    engine: EngineChoice = Engine(D.ENGINE),
    threads: Threads = None,
    timing: bool = typer.Option(False, "--time", help="print per-loss time per step against a memory-copy floor"),
    figures: Figures = True,
) -> None:
    """The DIoU paper's 1,715,000-case regression simulation: E(t) per loss and final-error maps."""
    from scabench.bench import studies

    refs = _losses(losses)
    console.print(
        f"convergence: {points:,} points x {studies.CASES_PER_POINT} = {points * studies.CASES_PER_POINT:,} cases, "
        f"{iterations} steps, losses {', '.join(r.label for r in refs)}"
    )
    load = studies.load_average()
    result = _run(
        "convergence",
        lambda progress: studies.simulate_convergence(
            refs, points=points, iterations=iterations, schedule=schedule, seed=seed, device=device,
            dtype=dtype.value, engine=engine.value, threads=threads, progress=progress,
        ),
    )
    paths = studies.write_study(
        {"convergence.csv": result.curves, "final_error_by_point.csv": result.by_point}, out, figures=figures
    )
    floor = studies.memory_floor_ms(result.cases, dtype.value) if timing else float("nan")
    title = f"E(t), sum of |dx|+|dy|+|dw|+|dh| over {result.cases:,} cases"
    _print_frame(studies.timing_table(result, floor), title, _timing_columns(iterations, with_floor=timing))
    if timing:
        console.print(
            f"memory-copy floor (read + write the {dtype.value} state once): {floor:.2f} ms per step; "
            f"kernel compile {result.compile_seconds:.2f} s; regression {sum(result.seconds.values()):.2f} s in "
            f"total; load average {load:.2f} on {os.cpu_count()} CPUs at start"
        )
    _written(paths)


@simulate_app.command("bench")
def bench_command(
    losses: Losses = ",".join(D.CONVERGENCE_LOSSES),
    points: Points = D.POINTS,
    iterations: Steps = D.ITERATIONS,
    dtype: Precision = Dtype(D.DTYPE),
    engine: EngineChoice = Engine(D.ENGINE),
    device: Device = D.DEVICE,
    threads: Threads = None,
    cached_only: bool = typer.Option(False, "--cached-only", help="skip the fresh (compile) phase"),
    eager_steps: int = typer.Option(3, "--eager-steps", min=0, help="eager-autograd steps timed as the baseline (0: none)"),
) -> None:
    """Time the convergence study per loss: fresh (compiling into empty caches) and cached, as
    ratios to a memory-copy floor and to eager autograd and the C kernel measured in the same run."""
    from scabench.bench import studies

    refs = _losses(losses)
    table, totals = _run(
        "bench",
        lambda _progress: studies.benchmark(
            refs, points=points, iterations=iterations, dtype=dtype.value, engine=engine.value, device=device,
            threads=threads, fresh=not cached_only, eager_steps=eager_steps,
        ),
    )
    title = (
        f"convergence study: {points * studies.CASES_PER_POINT:,} cases x {iterations} steps, {device}, "
        f"{totals['threads']} threads, {totals['cpus']} CPUs, load average {totals['load_average']:.2f} at start"
    )
    columns = {
        "phase": ("phase", ""), "loss": ("loss", ""), "engine": ("engine", ""), "seconds": ("seconds", ".2f"),
        "compile_seconds": ("compile s", ".2f"), "ms_per_step": ("ms/step", ".2f"), "ratio_to_floor": ("x floor", ".2f"),
        "x_eager": ("x faster than eager", ".0f"), "x_kernel": ("x kernel's time", ".2f"),
        "E_final": (f"E({iterations})", ".6g"),
    }
    _print_frame(table, title, columns)
    floor = table.groupby("phase", sort=False)["floor_ms"].first()
    console.print(
        "seconds: the whole study for the loss, compile included; ms/step excludes compiling. floor: one copy "
        f"of the (x, y, w, h) state ({', '.join(f'{p} {v:.2f} ms' for p, v in floor.items())}); eager: "
        f"{eager_steps} eager-autograd steps; kernel: the fused C kernel, where it applies."
    )
    for phase in ("fresh", "cached"):
        if phase in totals:
            console.print(
                f"{phase}: {totals[phase]:.2f} s in total (C kernel compile {totals[f'{phase}_compile']:.2f} s, "
                f"compiled engine trace + compile {totals[f'{phase}_step_compile']:.2f} s)"
            )


@simulate_app.command("gradients")
def gradients_command(
    losses: Losses = ",".join(D.GRADIENT_LOSSES),
    pairs_per_bin: int = typer.Option(
        D.PAIRS_PER_BIN, "--pairs-per-bin", help="box pairs in each IoU bin (and disjoint)"
    ),
    bins: int = typer.Option(D.BINS, "--bins", help="IoU bins of width 1/bins, plus the disjoint bin (IoU 0)"),
    seed: Seed = D.SEED,
    out: Out = DEFAULT_OUT,
    device: Device = D.DEVICE,
    figures: Figures = True,
) -> None:
    """Mean gradient norm ||dL/d(pred)|| per IoU bin (the SCALoss paper's Fig. 1 left)."""
    from scabench.bench import studies

    refs = _losses(losses)
    frame = _run(
        "gradients",
        lambda progress: studies.simulate_gradients(
            refs, pairs_per_bin=pairs_per_bin, bins=bins, seed=seed, device=device, progress=progress
        ),
    )
    paths = studies.write_study({"gradients.csv": frame}, out, figures=figures)
    # "IoU bin" cannot be a loss label (those are lower case, without spaces)
    wide = frame.pivot(index="iou", columns="loss", values="grad_norm").reset_index(names="IoU bin")
    columns = {"IoU bin": ("IoU", ".2f"), **{r.label: (r.label, ".3f") for r in refs}}
    _print_frame(wide, "mean ||dL/d(pred)||_2 per IoU bin (0 = disjoint pairs)", columns)
    _written(paths)


@simulate_app.command("corner-center")
def corner_center_command(
    losses: str = typer.Option(
        ",".join(D.CORNER_CENTER_LOSSES), "--losses",
        help=LOSSES_HELP + "; " + ", ".join(f"{loss} = {variant}" for loss, variant in D.VARIANT_NAMES.items()),
    ),
    iterations: int = typer.Option(D.CORNER_CENTER_ITERATIONS, "--iterations", help="gradient-descent steps"),
    lr: float = typer.Option(D.CORNER_CENTER_LR, "--lr", help="step size of plain gradient descent in (x, y, w, h)"),
    start_iou: float = typer.Option(D.START_IOU, "--start-iou", help="IoU of every start with its target"),
    directions: int = typer.Option(D.DIRECTIONS, "--directions", help="random directions per (target, shape)"),
    seed: Seed = D.SEED,
    out: Out = DEFAULT_OUT,
    device: Device = D.DEVICE,
    figures: Figures = True,
) -> None:
    """IoU + corner alignment vs IoU + centre alignment from a low IoU (the SCALoss paper's Fig. 1 right)."""
    from scabench.bench import studies

    refs = _losses(losses)
    frame = _run(
        "corner-center",
        lambda progress: studies.simulate_corner_center(
            refs, iterations=iterations, lr=lr, start_iou=start_iou, directions=directions, seed=seed,
            device=device, progress=progress,
        ),
    )
    paths = studies.write_study({"corner_center.csv": frame}, out, figures=figures)
    marks = sorted({0, iterations // 10, iterations // 4, iterations // 2, iterations})
    wide = frame.pivot(index="variant", columns="iteration", values="iou").loc[frame["variant"].unique()].reset_index()
    columns = {"variant": ("variant", ""), **{t: (f"t={t}", ".3f") for t in marks}}
    _print_frame(wide, f"mean IoU with the target, {studies.corner_center_starts_count(directions):,} starts", columns)
    _written(paths)
