"""The ``scabench`` command line (Typer). Exit codes: 0 ok, 1 some work failed, 2 usage error."""

from __future__ import annotations

import typer
from rich.table import Table

from scabench.bench.console import console
from scabench.bench.console import fail as _fail_usage

app = typer.Typer(
    help="scabench: benchmark and ablation harness for bounding-box regression losses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


@app.command("check-loss")
def check_loss_command(
    name: str = typer.Argument(..., help="a registered name, 'module:function' or 'file.py:function'"),
    against: str = typer.Option(None, "--against", help="compare values and gradients with this loss"),
    speed_pairs: int = typer.Option(1_000_000, "--speed-pairs", help="pairs for the speed check (0 skips it)"),
) -> None:
    """Run the loss contract on any loss: one row per property. Exit 1 if a required one fails."""
    from scabench.bench.contract import check_loss

    try:
        checks = check_loss(name, against=against, speed_pairs=speed_pairs)
    except (KeyError, ValueError) as error:
        _fail_usage(str(error).strip("'\""))
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


@app.command("bench-losses")
def bench_losses_command(
    pairs: int = typer.Option(1_000_000, help="box pairs per call"),
    repeats: int = typer.Option(7, help="timed rounds (median kept)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Time forward+backward of every loss against torchvision's GIoU/DIoU/CIoU (same run)."""
    from scabench.bench.loss_speed import main as run_benchmark

    run_benchmark(n=pairs, repeats=repeats, device=device)


# The other command groups live beside this file.
from scabench.bench.cli_grid import grid_app  # noqa: E402  run, report, plot
from scabench.bench.cli_simulate import simulate_app  # noqa: E402  simulate convergence|gradients|corner-center
from scabench.bench.cli_train import register_train_commands  # noqa: E402  train, val, evaluate

app.add_typer(grid_app)
app.add_typer(simulate_app, name="simulate")
register_train_commands(app)


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
