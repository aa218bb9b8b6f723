"""Run the cells of a grid: locally (in order; one cell per GPU) or on SLURM via submitit.

Each cell runs in its own process (``python -m bench.runner CELL_DIR``, or a submitit job)
that holds the cell's lock, writes its run record and calls the cell function:
``train_cell`` (``detectors.train``) or ``simulate_cell`` (``bench.simulate.run_study``).
A cell function has the signature ``fn(config, runtime, out_dir) -> dict | None`` and must
leave ``out_dir/summary.json`` (written last, atomically); if it returns a dict instead, the
runner writes that as the summary. ``SCABENCH_CELL_FN=module:function`` (or
``path/to/file.py:function``) replaces the cell function in every cell: tests use it to run
grids without training.

Resume: a cell with ``summary.json`` is done and skipped; any other cell runs again and the
trainer continues from ``last.pt``; a cell whose record says ``failed`` runs again only with
``retry_failed``. The process of a cell dies with the runner (PR_SET_PDEATHSIG), so a kill -9
of ``scabench run`` leaves no orphan training behind.

Exit codes of ``python -m bench.runner``: 0 done, 1 failed, 75 busy (another process holds the
cell), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from scabench.bench.store import (
    CELL_LOCK,
    CONFIG,
    LOG,
    METRICS,
    SUMMARY,
    FileLock,
    LockBusy,
    ResultStore,
    atomic_write_json,
    atomic_write_text,
    cell_state,
    device_info,
    environment,
    epoch_rows,
    now,
    read_json,
    read_record,
    write_record,
)

CELL_FN_ENV = "SCABENCH_CELL_FN"
EXIT_DONE, EXIT_FAILED, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 75, 130
EXIT_CODES = {"done": EXIT_DONE, "failed": EXIT_FAILED, "busy": EXIT_BUSY, "interrupted": EXIT_INTERRUPTED}

CellFn = Callable[[dict, dict, Path], "dict | None"]


# --------------------------------------------------------------------------------------
# Cell functions


def train_cell(config: dict[str, Any], runtime: dict[str, Any], out_dir: Path) -> dict | None:
    """Train one detector cell with ``detectors.train`` (resumes from ``out_dir/last.pt``)."""
    from scabench.detectors import TrainConfig, train  # lazy: heavy

    kwargs = {k: v for k, v in config.items() if k != "kind"}
    data = kwargs.get("data", "synthetic-shapes")
    if data != "synthetic-shapes":
        kwargs["data"] = os.path.abspath(os.path.expanduser(os.path.expandvars(data)))
    kwargs.update({k: v for k, v in runtime.items() if v is not None})
    train_config = TrainConfig(**kwargs)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out_dir / "trainer_config.json", train_config.model_dump(mode="json"))
    return train(train_config, out_dir, progress=False)


def simulate_cell(config: dict[str, Any], runtime: dict[str, Any], out_dir: Path) -> dict | None:
    """Run one synthetic study with ``bench.simulate.run_study`` into ``out_dir`` (CSVs only:
    figures come from ``scabench plot``); progress goes to ``out_dir/progress.json``."""
    from scabench.bench.simulate import run_study  # lazy: heavy

    start = time.time()
    loss_specs = [_loss_spec(entry) for entry in config.get("losses") or []] or None
    paths = run_study(
        config["study"],
        loss_specs,
        out_dir,
        seed=config.get("seed", 0),
        device=runtime.get("device") or "cpu",
        figures=False,
        progress=_progress_writer(out_dir / PROGRESS),
        **config.get("options", {}),
    )
    files = []
    for path in paths or []:
        path = Path(path)
        with contextlib.suppress(ValueError):
            path = path.resolve().relative_to(out_dir.resolve())
        files.append(str(path))
    return {"study": config["study"], "files": files, "seconds": round(time.time() - start, 3)}


PROGRESS = "progress.json"


def loss_sources(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """File and SHA-256 of every user loss (``module:function``) a cell names, by the name
    the user wrote, so a result can be traced to the code that made it."""
    from scabench import losses
    from scabench.losses.user import is_reference

    names = [config["loss"]] if config.get("loss") else [e["name"] for e in config.get("losses") or []]
    sources = {}
    for name in names:
        for _, term in losses.parse_expression(name):
            if is_reference(term):
                sources[term] = dict(losses.spec(term).source)
    return sources


def _progress_writer(path: Path, every: float = 0.5) -> Callable[[str, float], None]:
    """``progress(label, fraction)`` that writes ``path`` at most every ``every`` seconds."""
    last = [0.0]

    def report(label: str, fraction: float) -> None:
        now_ = time.monotonic()
        if now_ - last[0] >= every or fraction >= 1.0:
            last[0] = now_
            with contextlib.suppress(OSError):
                atomic_write_json(path, {"label": label, "fraction": float(fraction)})

    return report


def _loss_spec(entry: dict[str, Any]) -> Any:
    """A loss for ``run_study``: its name, or ``(name, params)`` where parameters differ from defaults."""
    from scabench import losses

    name, params = entry["name"], entry.get("params") or {}
    try:
        defaults = dict(losses.get_loss(name).params)
    except (KeyError, ValueError):
        defaults = {}
    changed = {k: v for k, v in params.items() if defaults.get(k, object()) != v}
    return (name, changed) if changed else name


DEFAULT_CELL_FNS: dict[str, CellFn] = {"train": train_cell, "simulate": simulate_cell}


def cell_function(kind: str) -> CellFn:
    """The function that computes a cell of ``kind`` (``$SCABENCH_CELL_FN`` overrides it)."""
    override = os.environ.get(CELL_FN_ENV)
    if override:
        return load_function(override)
    try:
        return DEFAULT_CELL_FNS[kind]
    except KeyError:
        raise ValueError(f"unknown cell kind {kind!r}; known: {', '.join(DEFAULT_CELL_FNS)}") from None


def load_function(spec: str) -> Callable:
    """``package.module:function`` or ``path/to/file.py:function``."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"{spec!r}: write module:function or path/file.py:function")
    if target.endswith(".py"):
        path = Path(target).resolve()
        module_name = f"_scabench_cellfn_{abs(hash(str(path)))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


# --------------------------------------------------------------------------------------
# One cell, in its own process


def run_cell(cell_dir: str | Path, device: str | None = None, *, lock_timeout: float = 60.0) -> str:
    """Run (or resume) the cell in ``cell_dir``; return done | failed | busy | interrupted.

    The cell's lock is awaited up to ``lock_timeout`` seconds: after a kill -9 the dead cell's
    data-loader workers (forked, so they share the lock) take a few seconds to notice and exit.
    """
    cell_dir = Path(cell_dir)
    meta = read_json(cell_dir / CONFIG)
    if meta is None:
        raise FileNotFoundError(f"{cell_dir / CONFIG} is missing: not a cell folder")
    config = dict(meta["config"])
    runtime = dict(meta.get("runtime") or {})
    if device:
        runtime["device"] = device

    if int(os.environ.get("RANK", "0")) != 0:  # DDP worker: rank 0 keeps the books
        cell_function(meta["kind"])(config, runtime, cell_dir)
        return "done"

    try:
        lock = FileLock(cell_dir / CELL_LOCK, {"cell": meta.get("id")}).acquire(timeout=lock_timeout)
    except LockBusy:
        return "busy"
    try:
        record = read_record(cell_dir)
        if read_json(cell_dir / SUMMARY) is not None:
            if record.get("status") != "done":
                _finish(record, "done")
                write_record(cell_dir, record)
            return "done"
        env = environment()
        attempt = {"started": now(), "host": env["host"], "pid": os.getpid(), "status": "running"}
        attempts = list(record.get("attempts", []))
        if attempts and attempts[-1].get("status") == "running":
            attempts[-1]["status"] = "interrupted"  # the previous process died without a word
        attempts.append(attempt)
        record.update(
            id=meta.get("id"),
            label=meta.get("label"),
            status="running",
            started=record.get("started") or attempt["started"],
            ended=None,
            device=device_info(runtime.get("device")),
            attempts=attempts,
            **{k: v for k, v in env.items()},
        )
        sources = loss_sources(config)
        if sources:
            record["loss_sources"] = sources
        record.pop("reason", None)
        record.pop("trace", None)
        write_record(cell_dir, record)

        start = time.time()
        try:
            result = cell_function(meta["kind"])(config, runtime, cell_dir)
            if read_json(cell_dir / SUMMARY) is None:
                if not isinstance(result, dict):
                    raise RuntimeError(f"the cell function returned without writing {SUMMARY}")
                atomic_write_json(cell_dir / SUMMARY, result)
        except KeyboardInterrupt:
            record["device"] = device_info(runtime.get("device"))
            _finish(record, "interrupted", start, reason="interrupted (SIGINT/SIGTERM); rerun to resume")
            write_record(cell_dir, record)
            return "interrupted"
        except BaseException as exc:  # noqa: BLE001  (record every failure, then go on)
            record["device"] = device_info(runtime.get("device"))
            reason = f"{type(exc).__name__}: {exc}".strip()
            _finish(record, "failed", start, reason=reason, trace=traceback.format_exc())
            write_record(cell_dir, record)
            return "failed"
        record["device"] = device_info(runtime.get("device"))
        _finish(record, "done", start)
        write_record(cell_dir, record)
        return "done"
    finally:
        lock.release()


def _finish(record: dict, status: str, start: float | None = None, **extra: Any) -> None:
    record["status"] = status
    record["ended"] = now()
    if start is not None:
        record["seconds"] = round(time.time() - start, 3)
    record.update({k: v for k, v in extra.items() if v is not None})
    if record.get("attempts"):
        last = record["attempts"][-1]
        last.update(status=status, ended=record["ended"])
        if extra.get("reason"):
            last["reason"] = extra["reason"]


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.runner CELL_DIR [--device D]``: run one cell in this process."""
    parser = argparse.ArgumentParser(prog="python -m bench.runner", description=main.__doc__)
    parser.add_argument("cell_dir")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    status = run_cell(args.cell_dir, args.device)
    print(f"[scabench] cell {Path(args.cell_dir).name}: {status}", flush=True)
    return EXIT_CODES[status]


class CellJob:
    """A submitit job: runs one cell; requeued on preemption/timeout, it resumes from last.pt."""

    def __init__(self, gpus_per_cell: int = 1):
        self.gpus_per_cell = gpus_per_cell

    def __call__(self, cell_dir: str, device: str | None = None) -> str:
        meta = read_json(Path(cell_dir) / CONFIG) or {}
        if self.gpus_per_cell > 1 and meta.get("kind") == "train":
            proc = subprocess.run(cell_command(Path(cell_dir), device, self.gpus_per_cell))
            return _status_from_exit(proc.returncode, Path(cell_dir))
        return run_cell(cell_dir, device)

    def checkpoint(self, cell_dir: str, device: str | None = None) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, cell_dir, device)


# --------------------------------------------------------------------------------------
# The grid


@dataclass
class RunOutcome:
    """What a ``run_grid`` call did; ``failed`` holds (cell, reason)."""

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


def prepare(cells: list, out: str | Path, grid: Any = None) -> ResultStore:
    """Create the results folder, its cell folders and ``plan.csv``; return the store."""
    store = ResultStore(out)
    store.ensure()
    if grid is not None:
        atomic_write_text(store.root / "grid.yaml", grid.text)
    for cell in cells:
        store.prepare(cell, getattr(grid, "name", None))
    write_plan(store, cells)
    return store


def write_plan(store: ResultStore, cells: list) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "id", "kind", "label", "status"])
    for i, cell in enumerate(cells):
        writer.writerow([i, cell.id, cell.kind, cell.label, store.state(cell.id).status])
    atomic_write_text(store.root / "plan.csv", buffer.getvalue())


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

    console = console or Console(stderr=True)
    store = ResultStore(out)
    store.ensure()
    lock = store.run_lock({"grid": getattr(grid, "name", None), "executor": executor})
    try:
        lock.acquire()
    except LockBusy as exc:
        holder = exc.holder
        raise GridBusy(
            f"{store.root} is in use by another scabench run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it or pick another --out"
        ) from None
    try:
        prepare(cells, out, grid)
        outcome = RunOutcome()
        todo = []
        for cell in cells:
            state = store.state(cell.id)
            if state.status == "done":
                outcome.already_done.append(cell)
            elif state.status == "failed" and not retry_failed:
                outcome.skipped_failed.append((cell, state.reason or "failed"))
            elif state.status == "running":
                outcome.busy.append(cell)
            else:
                todo.append(cell)
        if executor == "local":
            _run_local(todo, store, outcome, gpus=gpus, resources=resources, console=console, show=progress, poll=poll)
        elif executor == "slurm":
            _run_slurm(todo, store, outcome, cluster=cluster, resources=resources, grid=grid, console=console, show=progress)
        else:
            raise ValueError(f"unknown executor {executor!r}; use local or slurm")
        write_plan(store, cells)
        return outcome
    finally:
        lock.release()


# ---- local


def _visible_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return []
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        return []


def _slots(cells: list, gpus: list[int] | None, gpus_per_cell: int) -> list[tuple[int, ...] | None]:
    """Places to run cells: GPU groups (one cell each, masked with CUDA_VISIBLE_DEVICES) or the CPU."""
    wants_gpu = [c for c in cells if (c.runtime.get("device") or "auto") in ("auto", "cuda")]
    if not wants_gpu or any(c.runtime.get("device") not in (None, "auto", "cuda", "cpu") for c in cells):
        return [None]  # an explicit cuda:N: run in order, unmasked
    ids = list(gpus) if gpus is not None else _visible_gpus()
    if not ids:
        return [None]
    if gpus is None and len(ids) == 1:
        return [None]
    groups = [tuple(ids[i : i + gpus_per_cell]) for i in range(0, len(ids) - gpus_per_cell + 1, gpus_per_cell)]
    return groups or [tuple(ids)]


def cell_command(cell_dir: Path, device: str | None, gpus_per_cell: int = 1) -> list[str]:
    """The command that runs one cell (through torchrun for a multi-GPU training cell).

    ``-P``: the current folder is not put on ``sys.path``, so no user file shadows a module;
    user losses named ``module:function`` are still found there (:func:`losses.user.load_function`).
    """
    tail = ["-P", "-m", "scabench.bench.runner", str(cell_dir)] + (["--device", device] if device else [])
    if gpus_per_cell > 1:
        return [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus_per_cell}"] + tail[1:]
    return [sys.executable] + tail


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the runner dies (PR_SET_PDEATHSIG, Linux)."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before the prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def _status_from_exit(returncode: int, cell_dir: Path) -> str:
    if read_json(cell_dir / SUMMARY) is not None:
        return "done"
    if returncode == EXIT_BUSY:
        return "busy"
    recorded = read_record(cell_dir).get("status")
    if returncode in (EXIT_INTERRUPTED, -signal.SIGINT) or (recorded == "interrupted" and returncode >= 0):
        return "interrupted"
    if recorded == "failed":
        return "failed"
    # Died without a word (signal, OOM kill, segfault): record it.
    record = read_record(cell_dir)
    if returncode < 0:
        try:
            how = f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
        if returncode == -signal.SIGKILL:
            how += " (out of memory?)"
    else:
        how = f"exited with code {returncode}"
    _finish(record, "failed", reason=f"the cell's process {how}", trace=_tail(cell_dir / LOG))
    write_record(cell_dir, record)
    return "failed"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class _Running:
    cell: Any
    proc: subprocess.Popen
    slot: Any
    task: Any
    log: Any
    started: float


def _run_local(cells, store, outcome, *, gpus, resources, console, show, poll) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not cells:
        return
    gpus_per_cell = getattr(resources, "gpus_per_cell", 1) or 1
    slots = _slots(cells, gpus, gpus_per_cell)
    free = deque(slots)
    pending = deque(cells)
    running: list[_Running] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        overall = bar.add_task(f"grid ({len(slots)} slot{'s' if len(slots) > 1 else ''})", total=len(cells))
        try:
            while pending or running:
                while pending and free:
                    cell, slot = pending.popleft(), free.popleft()
                    running.append(_start(cell, slot, store, bar, gpus_per_cell))
                time.sleep(poll)
                for job in list(running):
                    _update_epochs(job, store, bar)
                    code = job.proc.poll()
                    if code is None:
                        continue
                    running.remove(job)
                    free.append(job.slot)
                    job.log.close()
                    bar.remove_task(job.task)
                    status = _status_from_exit(code, store.cell_dir(job.cell.id))
                    _account(job.cell, status, store, outcome, console, time.time() - job.started)
                    if status == "interrupted":
                        raise KeyboardInterrupt
                    bar.advance(overall)
        except KeyboardInterrupt:
            outcome.interrupted = True
            for job in running:
                with contextlib.suppress(ProcessLookupError):
                    job.proc.send_signal(signal.SIGINT)
            deadline = time.time() + 30
            for job in running:
                try:
                    job.proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    job.proc.kill()
                    job.proc.wait()
                job.log.close()


def _start(cell, slot, store, bar, gpus_per_cell) -> _Running:
    cell_dir = store.cell_dir(cell.id)
    env = os.environ.copy()
    device = None
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in slot)
        if (cell.runtime.get("device") or "auto") != "cpu":
            device = "cuda"
    log = open(cell_dir / LOG, "ab")
    where = f"GPU {','.join(map(str, slot))}" if slot else "this machine"
    log.write(f"\n=== scabench: {cell.label} ({cell.id}) on {where} at {now()} ===\n".encode())
    log.flush()
    n_gpus = len(slot) if slot and cell.kind == "train" else 1
    proc = subprocess.Popen(
        cell_command(cell_dir, device, n_gpus),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=_die_with(os.getpid()) if sys.platform.startswith("linux") else None,
    )
    total = cell.epochs if cell.kind == "train" else 100
    task = bar.add_task(f"  {cell.label}", total=total)
    return _Running(cell, proc, slot, task, log, time.time())


def _update_epochs(job: _Running, store: ResultStore, bar) -> None:
    path = store.cell_dir(job.cell.id)
    if job.cell.kind == "train":
        bar.update(job.task, completed=len(epoch_rows(path / METRICS)))
    else:
        progress = read_json(path / PROGRESS) or {}
        if "fraction" in progress:
            bar.update(job.task, completed=100 * progress["fraction"])


def _account(cell, status, store, outcome, console, seconds) -> None:
    if not seconds:
        seconds = read_record(store.cell_dir(cell.id)).get("seconds") or 0.0
    if status == "done":
        outcome.done.append(cell)
        console.print(f"[green]done[/]   {cell.label} [dim]({cell.id}, {seconds:.0f} s)[/]", soft_wrap=True)
    elif status == "failed":
        reason = (read_record(store.cell_dir(cell.id)).get("reason") or "failed").splitlines()[0]
        outcome.failed.append((cell, reason))
        console.print(f"[red]failed[/] {cell.label} [dim]({cell.id})[/]: {reason}", soft_wrap=True, highlight=False)
    elif status == "busy":
        outcome.busy.append(cell)
        console.print(f"[yellow]busy[/]   {cell.label} [dim]({cell.id})[/]: another process holds it", soft_wrap=True)
    elif status == "interrupted":
        console.print(f"[yellow]interrupted[/] {cell.label} [dim]({cell.id})[/]", soft_wrap=True)


# ---- slurm (submitit)


def _run_slurm(cells, store, outcome, *, cluster, resources, grid, console, show) -> None:
    import submitit
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not cells:
        return
    gpus_per_cell = getattr(resources, "gpus_per_cell", 1) or 1
    folder = store.root / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=None if cluster == "auto" else cluster)
    params: dict[str, Any] = {
        "name": f"scabench-{getattr(grid, 'name', 'grid')}",
        "timeout_min": getattr(resources, "time_min", 24 * 60),
        "cpus_per_task": getattr(resources, "cpus_per_cell", 4),
        "tasks_per_node": 1,
        "nodes": 1,
    }
    wants_gpu = any((c.runtime.get("device") or "auto") != "cpu" for c in cells if c.kind == "train")
    if wants_gpu and cluster == "slurm":
        params["gpus_per_node"] = gpus_per_cell
    if getattr(resources, "mem_gb", None):
        params["mem_gb"] = resources.mem_gb
    if cluster == "slurm":
        if getattr(resources, "partition", None):
            params["slurm_partition"] = resources.partition
        params["slurm_array_parallelism"] = getattr(resources, "array_parallelism", 64)
        if getattr(resources, "slurm_additional", None):
            params["slurm_additional_parameters"] = dict(resources.slurm_additional)
    executor.update_parameters(**params)
    job_fn = CellJob(gpus_per_cell)
    with executor.batch():
        futures = [(cell, executor.submit(job_fn, str(store.cell_dir(cell.id)), None)) for cell in cells]
    jobs = [(cell, job) for cell, job in futures]
    ids = sorted({str(job.job_id).split("_")[0] for _, job in jobs})
    console.print(f"submitted {len(jobs)} cells as job array {', '.join(ids)} ({cluster}); logs in {store.root / 'slurm'}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    remaining = list(jobs)
    with Progress(*columns, console=console, disable=not show) as bar:
        overall = bar.add_task(f"grid ({cluster})", total=len(jobs))
        try:
            while remaining:
                for cell, job in list(remaining):
                    if not job.done():
                        continue
                    remaining.remove((cell, job))
                    try:
                        status = job.result()
                    except Exception as exc:  # noqa: BLE001  (the job died: timeout, node failure)
                        status = _status_from_job_error(store.cell_dir(cell.id), exc)
                    _account(cell, status, store, outcome, console, 0.0)
                    bar.advance(overall)
                if remaining:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            outcome.interrupted = True
            console.print("[yellow]stopped waiting; the jobs go on. Rerun the same command to collect them.[/]")


def _status_from_job_error(cell_dir: Path, exc: BaseException) -> str:
    state = cell_state(cell_dir)
    if state.status in ("done", "failed"):
        return state.status
    record = read_record(cell_dir)
    _finish(record, "failed", reason=f"the job failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", trace=str(exc))
    write_record(cell_dir, record)
    return "failed"


if __name__ == "__main__":
    sys.exit(main())
