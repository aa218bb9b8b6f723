"""``scabench simulate convergence | gradients | corner-center``: the synthetic-box studies.

Registered on the main app in ``bench/cli.py`` with ``app.add_typer(simulate_app, name="simulate")``.
Each command writes tidy CSVs, then PNG + PDF figures, into ``--out`` (see ``bench.simulate``).
Exit codes: 0 ok, 1 the computation failed, 2 usage error (bad loss name, option, device).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

simulate_app = typer.Typer(
    help="Synthetic-box studies: convergence (1,715,000 cases), gradient magnitude, corner vs centre.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from scabench.bench.console import console, err_console
from scabench.bench.console import fail as _fail

DEFAULT_OUT = Path("results/simulate")

LOSSES_HELP = "comma-separated loss names: registered, composed ('iou+cd') or 'module:function'"
SEED_HELP = "random seed (the same seed gives the same numbers)"
OUT_HELP = "folder for the CSVs and figures"
DEVICE_HELP = "torch device, e.g. cpu or cuda"


def _check(fn: Callable[[], Any]) -> Any:
    """Run a validation; a ValueError / KeyError becomes a usage error (exit 2)."""
    try:
        return fn()
    except (ValueError, KeyError) as error:
        _fail(str(error.args[0] if error.args else error))


def _run(label: str, work: Callable[[Any], Any]) -> Any:
    """Run ``work(progress_callback)`` under a rich progress bar, one task per loss."""
    from scabench.bench.simulate import KernelUnavailable

    columns = (
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
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
            _fail(str(error))
        except KernelUnavailable as error:
            progress.stop()
            _fail(f"{label}: {error}", code=1)


def _save(frames: dict[str, Any], out: Path, figures: bool) -> list[Path]:
    """Write each frame as ``out/NAME`` (atomically), then, if asked, the figures of each CSV."""
    from scabench.bench import simulate as sim

    paths = [sim._write_csv(frame, out / name) for name, frame in frames.items()]
    if figures:
        from scabench.reports import simulation_figures

        for csv in list(paths):
            paths += simulation_figures.plot_csv(csv, out)
    return paths


def _written(paths: list[Path]) -> None:
    console.print("wrote: " + ", ".join(str(p) for p in paths))


@simulate_app.command("convergence")
def convergence_command(
    losses: str = typer.Option("iou,giou,diou,ciou,sca", "--losses", help=LOSSES_HELP),
    points: int = typer.Option(5000, "--points", help="anchor centres in the disc; cases = points x 343"),
    iterations: int = typer.Option(200, "--iterations", help="regression steps T"),
    schedule: str = typer.Option(
        "0.1:160,0.01:180,0.001", "--schedule", help="step sizes 'lr:until,...,lr' (t counts from 1)"
    ),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help=OUT_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help="state precision: float32 or float64 (sums are float64)"),
    engine: str = typer.Option(
        "auto", "--engine", help="auto (fused CPU kernel for iou/giou/diou/ciou/sca), kernel, or autograd"
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: torch's)"),
    timing: bool = typer.Option(False, "--time", help="print per-loss time per step against a memory-copy floor"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figures after the CSVs"),
) -> None:
    """The DIoU paper's 1,715,000-case regression simulation: E(t) per loss and final-error maps."""
    from scabench.bench import simulate as sim

    refs = _check(lambda: sim.resolve_losses(losses))
    _check(lambda: sim._positive("points", points))
    _check(lambda: sim.schedule_rates(schedule, sim._positive("iterations", iterations)))
    _check(lambda: sim._device(device))
    _check(lambda: sim._dtype(dtype))
    if engine not in sim.ENGINES:
        _fail(f"--engine must be one of {', '.join(sim.ENGINES)}, got {engine!r}")
    if threads is not None:
        _check(lambda: sim._positive("threads", threads))
    console.print(
        f"convergence: {points:,} points x {sim.CASES_PER_POINT} = {points * sim.CASES_PER_POINT:,} cases, "
        f"{iterations} steps, losses {', '.join(r.label for r in refs)}"
    )
    load = sim._load_average()
    start = time.perf_counter()
    result = _run(
        "convergence",
        lambda progress: sim.simulate_convergence(
            refs,
            points=points,
            iterations=iterations,
            schedule=schedule,
            seed=seed,
            device=device,
            dtype=dtype,
            engine=engine,
            threads=threads,
            progress=progress,
        ),
    )
    compute = time.perf_counter() - start
    paths = _save({"convergence.csv": result.curves, "final_error_by_point.csv": result.by_point}, out, figures)

    table = Table(title=f"E(t), sum of |dx|+|dy|+|dw|+|dh| over {result.cases:,} cases")
    for column in ("loss", "engine", "E(0)", f"E({iterations})", "seconds"):
        table.add_column(column, justify="left" if column in ("loss", "engine") else "right")
    floor = sim.memory_floor_ms(result.cases, sim._dtype(dtype)) if timing else None
    if timing:
        for column in ("cpu s", "ms/step", "x floor"):
            table.add_column(column, justify="right")
    for label in result.seconds:
        errors = result.curves[result.curves["loss"] == label]["error"]
        row = [label, result.engines[label], f"{errors.iloc[0]:.4g}", f"{errors.iloc[-1]:.4g}", f"{result.seconds[label]:.2f}"]
        if floor is not None:
            per_step = 1000 * result.seconds[label] / iterations
            row += [f"{result.cpu_seconds[label]:.2f}", f"{per_step:.2f}", f"{per_step / floor:.2f}"]
        table.add_row(*row)
    console.print(table)
    if floor is not None:
        console.print(
            f"memory-copy floor (read + write the {dtype} state once): {floor:.2f} ms per step; "
            f"kernel compile {result.compile_seconds:.2f} s; computation {compute:.2f} s in total; "
            f"load average {load:.2f} on {os.cpu_count()} CPUs at start"
        )
    _written(paths)


@simulate_app.command("gradients")
def gradients_command(
    losses: str = typer.Option("sca,so,giou,diou,iou", "--losses", help=LOSSES_HELP),
    pairs_per_bin: int = typer.Option(1000, "--pairs-per-bin", help="box pairs in each IoU bin (and disjoint)"),
    bins: int = typer.Option(10, "--bins", help="IoU bins of width 1/bins, plus the disjoint bin (IoU 0)"),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help=OUT_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figure after the CSV"),
) -> None:
    """Mean gradient norm ||dL/d(pred)|| per IoU bin (the SCALoss paper's Fig. 1 left)."""
    from scabench.bench import simulate as sim

    refs = _check(lambda: sim.resolve_losses(losses))
    _check(lambda: sim._positive("pairs_per_bin", pairs_per_bin))
    _check(lambda: sim._positive("bins", bins))
    _check(lambda: sim._device(device))
    frame = _run(
        "gradients",
        lambda progress: sim.simulate_gradients(
            refs, pairs_per_bin=pairs_per_bin, bins=bins, seed=seed, device=device, progress=progress
        ),
    )
    paths = _save({"gradients.csv": frame}, out, figures)
    wide = frame.pivot(index="iou", columns="loss", values="grad_norm")[[r.label for r in refs]]
    table = Table(title="mean ||dL/d(pred)||_2 per IoU bin (0 = disjoint pairs)")
    table.add_column("IoU", justify="right")
    for label in wide.columns:
        table.add_column(label, justify="right")
    for iou, row in wide.iterrows():
        table.add_row(f"{iou:.2f}", *[f"{v:.3f}" for v in row])
    console.print(table)
    _written(paths)


@simulate_app.command("corner-center")
def corner_center_command(
    losses: str = typer.Option("iou+cd,iou+center", "--losses", help=LOSSES_HELP + " (iou+cd = corner, iou+center = center)"),
    iterations: int = typer.Option(1500, "--iterations", help="gradient-descent steps"),
    lr: float = typer.Option(0.01, "--lr", help="step size of plain gradient descent in (x, y, w, h)"),
    start_iou: float = typer.Option(0.05, "--start-iou", help="IoU of every start with its target"),
    directions: int = typer.Option(8, "--directions", help="random directions per (target, shape): 147 x this starts"),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help=OUT_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figure after the CSV"),
) -> None:
    """IoU + corner alignment vs IoU + centre alignment from IoU 0.05 (the SCALoss paper's Fig. 1 right)."""
    from scabench.bench import simulate as sim

    refs = _check(lambda: sim.resolve_losses(losses))
    _check(lambda: sim._positive("iterations", iterations))
    _check(lambda: sim._positive("directions", directions))
    _check(lambda: sim._device(device))
    if not lr > 0:
        _fail(f"--lr must be positive, got {lr}")
    if not 0 < start_iou < 0.13:
        _fail(f"--start-iou must be in (0, 0.13), got {start_iou}")
    frame = _run(
        "corner-center",
        lambda progress: sim.simulate_corner_center(
            refs,
            iterations=iterations,
            lr=lr,
            start_iou=start_iou,
            directions=directions,
            seed=seed,
            device=device,
            progress=progress,
        ),
    )
    paths = _save({"corner_center.csv": frame}, out, figures)
    starts = len(sim.ASPECT_RATIOS) ** 2 * 3 * directions
    table = Table(title=f"mean IoU with the target, {starts:,} starts")
    marks = sorted({0, iterations // 10, iterations // 4, iterations // 2, iterations})
    table.add_column("variant")
    for t in marks:
        table.add_column(f"t={t}", justify="right")
    for variant, data in frame.groupby("variant", sort=False):
        values = data.set_index("iteration")["iou"]
        table.add_row(str(variant), *[f"{values[t]:.3f}" for t in marks])
    console.print(table)
    _written(paths)
