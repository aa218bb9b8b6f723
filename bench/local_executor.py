"""The local executor: cells in order on this machine, one cell per GPU (or GPU group) at a time.

The progress shows the grid's line (cells done / total, elapsed, an ETA from the durations of
the cells finished in this run: :func:`grid_eta`) and one line per running cell (its epochs).

Each cell runs in its own process (:func:`bench.cell.cell_command`) that dies with the runner
(PR_SET_PDEATHSIG), so a kill -9 of ``scabench run`` leaves no orphan training behind. On
Ctrl-C the running cells get SIGINT, record themselves as interrupted and the runner stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from scabench.bench.cell import cell_command, status_from_exit
from scabench.devices import parse_device, wants_cuda
from scabench.results import BrokenResult, GridFolder, now

Slot = tuple[int, ...] | None
OnFinished = Callable[[Any, str, float], None]  # (cell, status, seconds)


def visible_gpus() -> list[int]:
    """Indices of the GPUs this process sees (none without NVIDIA devices; torch only if there are)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return []
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001  (a broken CUDA install means: no GPUs here)
        return []


def slots(cells: list, gpus: list[int] | None, gpus_per_cell: int, cpu_cells: int = 1) -> list[Slot]:
    """Places to run cells: GPU groups (one cell each, masked with CUDA_VISIBLE_DEVICES) or the CPU
    (``cpu_cells`` places, each with its share of the cores).

    Cells that pin a GPU (``cuda:N``) run in order, unmasked; so does a single GPU.
    """
    devices = [cell.runtime.get("device") for cell in cells]
    on_cpu = [None] * cpu_cells
    if not any(wants_cuda(d) for d in devices):
        return on_cpu
    if any(d is not None and ":" in parse_device(d) for d in devices):
        return [None]
    ids = list(gpus) if gpus is not None else visible_gpus()
    if not ids:
        return on_cpu
    if gpus is None and len(ids) == 1:
        return [None]
    groups = [tuple(ids[i : i + gpus_per_cell]) for i in range(0, len(ids) - gpus_per_cell + 1, gpus_per_cell)]
    return groups or [tuple(ids)]


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the runner dies (PR_SET_PDEATHSIG, Linux)."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before the prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


@dataclass
class _Running:
    cell: Any
    proc: subprocess.Popen
    slot: Slot
    task: Any
    log: Any
    started: float


def run_local(cells: list, folder: GridFolder, on_finished: OnFinished, *, gpus: list[int] | None,
              gpus_per_cell: int, console: Any, show: bool, poll: float, cpu_cells: int = 1) -> bool:
    """Run ``cells`` (a process each, as many at once as there are slots); ``on_finished`` hears
    of each. Returns False when interrupted (Ctrl-C, SIGTERM, or a cell that was interrupted)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    places = slots(cells, gpus, gpus_per_cell, cpu_cells)
    threads = max(1, (os.cpu_count() or 1) // len(places)) if len(places) > 1 and places[0] is None else None
    free, pending, running = deque(places), deque(cells), []
    durations: list[float] = []  # of the cells finished in this run
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"))
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        overall = bar.add_task(f"grid ({len(places)} slot{'s' if len(places) > 1 else ''})", total=len(cells), eta="ETA -")
        try:
            while pending or running:
                while pending and free:
                    running.append(_start(pending.popleft(), free.popleft(), folder, bar, threads))
                time.sleep(poll)
                moment = time.time()
                eta = grid_eta(durations, len(pending), [moment - job.started for job in running], len(places))
                bar.update(overall, eta=format_eta(eta))
                for job in list(running):
                    _show_progress(job, folder, bar)
                    code = job.proc.poll()
                    if code is None:
                        continue
                    running.remove(job)
                    free.append(job.slot)
                    job.log.close()
                    bar.remove_task(job.task)
                    status = status_from_exit(code, folder.cell(job.cell.id))
                    durations.append(time.time() - job.started)
                    on_finished(job.cell, status, durations[-1])
                    if status == "interrupted":
                        raise KeyboardInterrupt
                    bar.advance(overall)
        except KeyboardInterrupt:
            _stop(running)
            return False
    return True


def grid_eta(durations: list[float], waiting: int, running_elapsed: list[float], places: int) -> float | None:
    """Seconds until the grid is done: every unfinished cell is expected to take the mean duration
    of the cells finished so far in this run (a running cell that much minus what it has run),
    the work shared by the ``places`` that run cells at once. None before any cell finished."""
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    left = waiting * mean + sum(max(mean - elapsed, 0.0) for elapsed in running_elapsed)
    return left / max(places, 1)


def format_eta(seconds: float | None) -> str:
    """``ETA 0:04:05``, or ``ETA -`` while unknown."""
    if seconds is None:
        return "ETA -"
    whole = int(round(seconds))
    return f"ETA {whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _stop(running: list[_Running], grace: float = 30.0) -> None:
    """SIGINT every running cell (they record 'interrupted'), then SIGKILL what outlives ``grace``."""
    for job in running:
        with contextlib.suppress(ProcessLookupError):
            job.proc.send_signal(signal.SIGINT)
    deadline = time.time() + grace
    for job in running:
        try:
            job.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()
        job.log.close()


def _start(cell: Any, slot: Slot, folder: GridFolder, bar: Any, threads: int | None = None) -> _Running:
    run = folder.cell(cell.id)
    env = os.environ.copy()
    if threads is not None:  # one of several CPU places: its share of the cores
        env["OMP_NUM_THREADS"] = str(threads)
    device = None
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in slot)
        if wants_cuda(cell.runtime.get("device")):
            device = "cuda"
    log = open(run.log, "ab")
    where = f"GPU {','.join(map(str, slot))}" if slot else "this machine"
    log.write(f"\n=== scabench: {cell.label} ({cell.id}) on {where} at {now()} ===\n".encode())
    log.flush()
    proc = subprocess.Popen(
        cell_command(run.path, device, len(slot) if slot and cell.kind == "train" else 1),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=_die_with(os.getpid()) if sys.platform.startswith("linux") else None,
    )
    task = bar.add_task(f"  {escape(cell.label)}", total=cell.epochs if cell.kind == "train" else 100, eta="")
    return _Running(cell, proc, slot, task, log, time.time())


def _show_progress(job: _Running, folder: GridFolder, bar: Any) -> None:
    run = folder.cell(job.cell.id)
    if job.cell.kind == "train":
        with contextlib.suppress(BrokenResult):  # a broken file is the cell's to report
            bar.update(job.task, completed=len(run.read_epochs()))
    else:
        fraction = run.read_progress()
        if fraction is not None:
            bar.update(job.task, completed=100 * fraction)
