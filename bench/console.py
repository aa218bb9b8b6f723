"""The consoles and the usage-error exit shared by every ``scabench`` command."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(message: str | list[str], code: int = 2) -> NoReturn:
    """Print ``error: message`` (or each line of a list) on stderr and exit with ``code``.

    Exit codes: 1 some work failed, 2 usage or config error; never a traceback.
    """
    lines = [message] if isinstance(message, str) else message
    if len(lines) == 1:
        err_console.print(f"[bold red]error:[/] {escape(lines[0])}", highlight=False, soft_wrap=True)
    else:
        for line in lines:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)
