"""Run the cells of a grid into a results folder: locally or on SLURM, resuming what is unfinished.

- :func:`run_grid` takes the grid folder's lock, writes the cell folders and ``plan.csv``
  (:func:`prepare`), decides from each cell's files what to run (:meth:`RunFolder.state`), hands
  the cells to the executor (:mod:`bench.local_executor`: one cell per GPU; or
  :mod:`bench.slurm_executor`: a submitit job array) and accounts for every one.
- A cell runs in its own process, ``python -P -m scabench.bench.runner CELL_DIR [--device D]``
  (:mod:`bench.cell`; :func:`main` below is that entry point).

Resume: a cell with ``summary.json`` is done and skipped; any other cell runs again and the
trainer continues from ``last.pt``; a cell whose record says ``failed`` runs again only with
``retry_failed``; a cell with a broken file is named, with the file, and runs again.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.markup import escape

from scabench.bench.cell import EXIT_CODES, recorded, run_cell
from scabench.results import BrokenResult, GridFolder, LockBusy


@dataclass
class RunOutcome:
    """What a ``run_grid`` call did; ``failed`` and ``skipped_failed`` hold (cell, reason)."""

    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    busy: list = field(default_factory=list)
    skipped_failed: list = field(default_factory=list)
    already_done: list = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not (self.failed or self.busy or self.skipped_failed or self.interrupted)


class GridBusy(RuntimeError):
    """Another ``scabench run`` holds this results folder."""


class CannotRun(GridBusy):
    """The executor cannot run these cells as asked (a SLURM request no node can satisfy); the CLI
    exits 2 with the message. A GridBusy so that ``scabench run`` already exits 2 on it."""


def prepare(cells: list, out: str | Path, grid: Any = None, *, console: Any = None) -> GridFolder:
    """Create the results folder, its cell folders (``config.json``) and ``plan.csv``.

    A cell's ``config.json`` is kept when it says the same (its grid name aside) and written anew
    when it differs or is broken (said on ``console``), as is why a user-loss cell is new
    (:func:`why_new`).
    """
    folder = GridFolder(out)
    folder.cells_dir.mkdir(parents=True, exist_ok=True)
    if console is not None:
        for cell, reason in why_new(cells, folder):
            console.print(f"[cyan]new[/]    {escape(cell.label)} [dim]({cell.id})[/]: {escape(reason)}", soft_wrap=True, highlight=False)
    grid_name = getattr(grid, "name", None)
    if grid is not None:
        from scabench.results import atomic_write_text

        atomic_write_text(folder.grid_copy, grid.text)
    for cell in cells:
        run = folder.cell(cell.id)
        run.path.mkdir(parents=True, exist_ok=True)
        config = cell.record(grid_name)
        try:
            old = run.read_config()
        except BrokenResult as exc:
            old = None
            if console is not None:
                console.print(f"[yellow]repaired[/] {escape(cell.label)}: {escape(str(exc))}; written anew from the grid", soft_wrap=True, highlight=False)
        if old is not None and old.get("grid"):
            config["grid"] = old["grid"]  # the folder remembers the grid that made it
        if old != config:
            run.write_config(config)
    write_plan(folder, cells)
    return folder


def why_new(cells: list, folder: GridFolder) -> list[tuple[Any, str]]:
    """Cells with user losses that have no folder yet although a folder of the same config
    exists: each with which loss source changed (``"source of my_losses.py:fn changed"``)."""
    new = [cell for cell in cells if cell.loss_refs and not folder.cell(cell.id).config.is_file()]
    if not new:
        return []
    from scabench.bench.grid import canonical_json  # lazy: a cell process needs no pydantic

    earlier: dict[str, list[tuple[str, dict, dict]]] = {}  # config -> (id, hashed shas, recorded shas)
    for run in folder.cells():
        with contextlib.suppress(BrokenResult):
            meta = run.read_config() or {}
            hashed = {term: ref.get("sha256") for term, ref in (meta.get("loss_refs") or {}).items()}
            ran = {term: info.get("sha256") for term, info in (recorded(run).get("loss_sources") or {}).items()}
            earlier.setdefault(canonical_json(meta.get("config")), []).append((run.path.name, hashed, ran))
    reasons = []
    for cell in new:
        for old_id, hashed, ran in earlier.get(canonical_json(cell.config), []):
            changes = [_source_change(term, hashed.get(term), ran.get(term), ref["sha256"]) for term, ref in cell.loss_refs.items()]
            changes = [change for change in changes if change]
            if changes:
                reasons.append((cell, f"{'; '.join(changes)}; the earlier cell is {old_id}"))
                break
    return reasons


def _source_change(term: str, hashed: str | None, ran: str | None, now: str) -> str | None:
    """Why a term makes a new cell: its source changed, or the earlier cell's id did not hash it."""
    before = hashed or ran
    if before and before != now:
        return f"source of {term} changed (SHA-256 {before[:12]} -> {now[:12]})"
    if hashed is None:
        return f"cell ids now include the SHA-256 of {term}'s source (the earlier cell's id did not)"
    return None


def write_plan(folder: GridFolder, cells: list) -> None:
    folder.write_plan([{"id": c.id, "kind": c.kind, "label": c.label, "status": folder.cell(c.id).state().status} for c in cells])


def run_grid(
    cells: list,
    out: str | Path,
    *,
    grid: Any = None,
    executor: str = "local",
    retry_failed: bool = False,
    gpus: list[int] | None = None,
    cluster: str = "slurm",
    resources: Any = None,
    console: Any = None,
    progress: bool = True,
    poll: float = 0.2,
) -> RunOutcome:
    """Run every unfinished cell of ``cells`` into ``out``; see the module docstring."""
    from rich.console import Console

    if executor not in ("local", "slurm"):
        raise ValueError(f"unknown executor {executor!r}; use local or slurm")
    console = console or Console(stderr=True)
    folder = GridFolder(out)
    try:
        lock = folder.lock(grid=getattr(grid, "name", None), executor=executor)
    except LockBusy as exc:
        who = exc.holder
        raise GridBusy(
            f"{folder.root} is in use by another scabench run (pid {who.get('pid', '?')} on "
            f"{who.get('host', '?')}, since {who.get('since', '?')}); wait for it or pick another --out"
        ) from None
    try:
        prepare(cells, out, grid, console=console)
        outcome = RunOutcome()
        todo = _to_run(cells, folder, outcome, retry_failed, console)
        finished = _accountant(folder, outcome, console)
        gpus_per_cell = getattr(resources, "gpus_per_cell", 1) or 1
        completed = True
        if todo and executor == "local":
            from scabench.bench.local_executor import run_local

            completed = run_local(todo, folder, finished, gpus=gpus, gpus_per_cell=gpus_per_cell, console=console, show=progress,
                                  poll=poll, cpu_cells=getattr(resources, "cpu_cells_at_once", 1) or 1)
        elif todo:
            from scabench.bench.slurm_executor import run_slurm

            completed = run_slurm(todo, folder, finished, cluster=cluster, resources=resources,
                                  grid_name=getattr(grid, "name", "grid"), console=console, show=progress)
        outcome.interrupted = not completed
        write_plan(folder, cells)
        return outcome
    finally:
        lock.release()


def _to_run(cells: list, folder: GridFolder, outcome: RunOutcome, retry_failed: bool, console: Any) -> list:
    """The cells to run now; the others go into ``outcome`` (done, failed before, running elsewhere)."""
    todo = []
    for cell in cells:
        state = folder.cell(cell.id).state()
        if state.status == "done":
            outcome.already_done.append(cell)
        elif state.status == "failed" and not retry_failed:
            outcome.skipped_failed.append((cell, state.reason or "failed"))
        elif state.status == "running":
            outcome.busy.append(cell)
        else:
            if state.status == "broken":
                console.print(f"[yellow]broken[/] {escape(cell.label)} ({cell.id}): {escape(f'{state.file}: {state.reason}')}; "
                              "it is set aside and the cell runs again", soft_wrap=True, highlight=False)
            todo.append(cell)
    return todo


def _accountant(folder: GridFolder, outcome: RunOutcome, console: Any):
    """The ``on_finished(cell, status, seconds)`` an executor calls: into ``outcome``, on ``console``."""

    def finished(cell: Any, status: str, seconds: float) -> None:
        record = recorded(folder.cell(cell.id))
        seconds = seconds or record.get("seconds") or 0.0
        if status == "done":
            outcome.done.append(cell)
            console.print(f"[green]done[/]   {escape(cell.label)} [dim]({cell.id}, {seconds:.0f} s)[/]", soft_wrap=True)
        elif status == "failed":
            reason = (record.get("reason") or "failed").splitlines()[0]
            outcome.failed.append((cell, reason))
            console.print(f"[red]failed[/] {escape(cell.label)} [dim]({cell.id})[/]: {escape(reason)}", soft_wrap=True, highlight=False)
        elif status == "busy":
            outcome.busy.append(cell)
            console.print(f"[yellow]busy[/]   {escape(cell.label)} [dim]({cell.id})[/]: another process holds it", soft_wrap=True)
        elif status == "interrupted":
            console.print(f"[yellow]interrupted[/] {escape(cell.label)} [dim]({cell.id})[/]", soft_wrap=True)

    return finished


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``python -P -m scabench.bench.runner CELL_DIR [--device D]``: run one cell in this process."""
    parser = argparse.ArgumentParser(prog="python -m scabench.bench.runner", description=main.__doc__)
    parser.add_argument("cell_dir")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    status = run_cell(args.cell_dir, args.device)
    print(f"[scabench] cell {Path(args.cell_dir).name}: {status}", flush=True)
    return EXIT_CODES[status]


if __name__ == "__main__":
    sys.exit(main())
