"""The ``scabench`` command line (Typer). Exit codes: 0 ok, 1 some work failed, 2 usage error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="scabench: benchmark and ablation harness for bounding-box regression losses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """scabench: benchmark and ablation harness for bounding-box regression losses."""


@app.command("losses")
def list_losses() -> None:
    """List the registered losses: formula, paper, reference implementation, parameters."""
    import losses

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


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
