"""The ``scabench`` command line (Typer). Exit codes: 0 ok, 1 some work failed, 2 usage error.

A thin layer: each command parses its options and calls one public function. Options left
unset are not passed on, so the function's own defaults apply (``--help`` shows them, read
from the function only then: see :mod:`scabench.bench.cli_options`). Heavy modules (torch,
the trainer) are imported inside the commands, so ``scabench --help`` stays light.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from scabench.bench.cli_grid import grid_app
from scabench.bench.cli_options import defaults_of, device_option, given, source_defaults
from scabench.bench.cli_simulate import simulate_app
from scabench.bench.cli_train import register_train_commands
from scabench.bench.console import console, fail

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """scabench: benchmark and ablation harness for bounding-box regression losses."""


@app.command("losses")
def list_losses() -> None:
    """List the registered losses: formula, paper, reference implementation, parameters."""
    from scabench import losses

    table = Table(title="scabench loss zoo (xyxy boxes, one value per box)", show_lines=False)
    for column in ("name", "formula", "paper", "matches", "parameters"):
        table.add_column(column, overflow="fold")
    for name in losses.available():
        spec = losses.spec(name)
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
        if spec.stateful:
            params += " (stateful)"
        table.add_row(name, spec.formula, spec.paper, spec.reference, params)
    console.print(table)
    console.print("Compose with '+': e.g. [bold]iou+cd[/] (corner alignment), [bold]so+0.5*cd[/].")


@app.command("check-loss", cls=defaults_of("scabench.bench.contract:check_loss"))
def check_loss_command(
    name: str = typer.Argument(..., help="a registered name, 'module:function' or 'file.py:function'"),
    against: Optional[str] = typer.Option(None, "--against", help="compare values and gradients with this loss"),
    speed_pairs: Optional[int] = typer.Option(None, "--speed-pairs", min=0, help="pairs for the speed check (0 skips it)"),
) -> None:
    """Run the loss contract on any loss: one row per property. Exit 1 if a required one fails."""
    from scabench.bench.contract import check_loss

    try:
        checks = check_loss(name, **given(against=against, speed_pairs=speed_pairs))
    except (KeyError, ValueError) as error:
        fail(str(error).strip("'\""))
    colours = {"pass": "green", "fail": "red", "info": "cyan"}
    table = Table(title=f"loss contract: {name}" + (f" against {against}" if against else ""))
    for column in ("property", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        mark = f"[{colours[check.status]}]{check.status}[/]" + (" (required)" if check.required else "")
        table.add_row(check.property, mark, check.detail)
    console.print(table)
    failed = [c.property for c in checks if c.failed_required]
    if failed:
        console.print(f"[red]required properties failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


@app.command("bench-losses", cls=defaults_of("scabench.bench.loss_speed:measure"))
def bench_losses_command(
    pairs: Optional[int] = typer.Option(None, min=1, help="box pairs per call"),
    repeats: Optional[int] = typer.Option(None, min=1, help="timed rounds (median kept)"),
    device: Optional[str] = typer.Option(None, callback=device_option, help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Time forward+backward of every loss against torchvision's GIoU/DIoU/CIoU (same run)."""
    import torch

    from scabench.bench.loss_speed import measure

    options = given(pairs=pairs, repeats=repeats, device=device)
    try:
        rows = measure(**options)
    except ValueError as error:
        fail(str(error))
    run = {**source_defaults("scabench.bench.loss_speed:measure"), **options}
    title = f"forward+backward, {run['pairs']:,} pairs, {run['device']}, {torch.get_num_threads()} threads"
    table = Table(title=f"{title} (median of {run['repeats']})")
    for column in ("loss", "ms", "x torchvision CIoU"):
        table.add_column(column, justify="right" if column != "loss" else "left")
    for row in rows:
        table.add_row(row["loss"], f"{row['ms']:.1f}", f"{row['vs_torchvision_ciou']:.2f}")
    console.print(table)


@app.command("bench-detector", cls=defaults_of("scabench.detectors.speed:measure_speed"))
def bench_detector_command(
    iters: Optional[int] = typer.Option(None, min=1, help="timed training iterations per case"),
    workers: Optional[int] = typer.Option(None, min=0, help="data-loader worker processes"),
    train_size: Optional[int] = typer.Option(None, min=1, help="synthetic-shapes images to load"),
    quick: Optional[bool] = typer.Option(None, "--quick", help="only the smallest case"),
) -> None:
    """CPU images/s of the built-in detectors: data loader, training step and both together.

    Prints one line per case as it is measured (see ``scabench.detectors.speed``).
    """
    from scabench.detectors.speed import measure_speed

    measure_speed(**given(iters=iters, workers=workers, train_size=train_size, quick=quick))


@app.command("gpu-check", cls=defaults_of("scabench.detectors.gpu_check:run_gpu_check"))
def gpu_check_command(
    iters: Optional[int] = typer.Option(None, min=1, help="training iterations timed on the GPU"),
    batch: Optional[int] = typer.Option(None, min=1, help="images per batch"),
    img: Optional[int] = typer.Option(None, min=32, help="image size (a multiple of 32)"),
    train_size: Optional[int] = typer.Option(None, min=1, help="synthetic-shapes images to generate"),
    workers: Optional[int] = typer.Option(None, min=0, help="data-loader worker processes (default: from the CPU count)"),
    skip_train: Optional[bool] = typer.Option(None, "--skip-train", help="skip the short detectors.train run on CUDA"),
) -> None:
    """On a CUDA machine: yolov3-tiny 640 px AMP throughput, a falling loss, one short train run.

    Exits with the check's code: 0 ok, 1 a check failed, 2 no CUDA device.
    """
    from scabench.detectors.gpu_check import run_gpu_check

    options = given(iters=iters, batch=batch, img=img, train_size=train_size, workers=workers, skip_train=skip_train)
    raise typer.Exit(run_gpu_check(**options))


app.add_typer(grid_app)  # run, report, plot
app.add_typer(simulate_app, name="simulate")  # simulate convergence | gradients | corner-center
register_train_commands(app)  # train, val, evaluate


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover  (torchrun starts `python -m scabench.bench.cli train`)
    main()
