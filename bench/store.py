"""The results store: one folder per cell, written so that a kill -9 never corrupts it.

Layout of a results folder (``results/<grid name>`` by default)::

    grid.yaml              the grid file as last run here (text copy)
    plan.csv               the cells of that grid, in order: id, kind, label, status
    .run.lock              held (fcntl) by the `scabench run` using this folder
    cells/<id>/            one folder per cell; <id> = hash of the resolved config
        config.json        the resolved config, labels and runtime settings
        record.json        run record: status, start/end, host, git commit, versions, device,
                           attempts, failure reason and trace
        metrics.jsonl      one JSON line per finished epoch (the trainer appends)
        last.pt            the trainer's checkpoint (resume point)
        summary.json       final metrics, written last and atomically: the cell is done
        log.txt            the cell's stdout/stderr
        .lock              held (fcntl) by the process running the cell

Every JSON file is written to a temporary file and moved into place (``os.replace``), so a
reader sees the old or the new version, never half of one. ``summary.json`` is the only proof
that a cell finished; ``record.json`` is repaired from it when a kill fell in between.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from scabench.results import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)

CONFIG = "config.json"
RECORD = "record.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
LOG = "log.txt"
CELL_LOCK = ".lock"
RUN_LOCK = ".run.lock"
CELLS = "cells"

STATUSES = ("done", "failed", "running", "interrupted", "partial", "pending")
PACKAGES = ("scabench", "torch", "torchvision", "numpy", "pycocotools", "pandas", "pydantic", "submitit")


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def read_json(path: str | Path, default: Any = None) -> Any:
    """The parsed file, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (a kill mid-append) is skipped."""
    rows = []
    try:
        text = Path(path).read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def epoch_rows(path: str | Path) -> list[dict[str, Any]]:
    """Per-epoch rows, one per epoch (a row repeated by a resume keeps its last version)."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for row in read_jsonl(path):
        by_epoch[row.get("epoch", len(by_epoch))] = row
    return [by_epoch[k] for k in sorted(by_epoch, key=lambda e: (not isinstance(e, (int, float)), e))]


# --------------------------------------------------------------------------------------
# Locks


class LockBusy(RuntimeError):
    """Another process holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = path
        self.holder = holder
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = holder.get("since")
        super().__init__(f"{path} is held by {who}" + (f" since {since}" if since else ""))


class FileLock:
    """An exclusive ``fcntl.flock`` on a file; released when closed or when the process dies."""

    def __init__(self, path: str | Path, info: dict[str, Any] | None = None):
        self.path = Path(path)
        self.info = info or {}
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.1) -> "FileLock":
        deadline = time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusy(self.path, lock_holder(self.path)) from None
                time.sleep(poll)
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(), **self.info}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(path: str | Path) -> dict[str, Any]:
    return read_json(path, {}) or {}


def is_locked(path: str | Path) -> bool:
    """Whether some process holds the flock on ``path`` right now (informational: racy)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# --------------------------------------------------------------------------------------
# Run records


_ENV_CACHE: dict[str, Any] = {}


def environment() -> dict[str, Any]:
    """Host, git commit, Python and package versions (what a run record stores)."""
    if not _ENV_CACHE:
        from importlib import metadata

        versions = {}
        for name in PACKAGES:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        _ENV_CACHE.update(
            host=socket.gethostname(),
            platform=platform.platform(),
            python=platform.python_version(),
            git=git_commit(),
            packages=versions,
        )
    return dict(_ENV_CACHE)


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding this package, or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device: str | None) -> dict[str, Any]:
    """The requested device, visible GPUs and their names (only if torch is already loaded)."""
    import sys

    info: dict[str, Any] = {"requested": device, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["torch_threads"] = torch.get_num_threads()
        except Exception:  # noqa: BLE001
            pass
    return info


# --------------------------------------------------------------------------------------
# The store


@dataclass
class CellState:
    id: str
    path: Path
    status: str
    epochs_done: int = 0
    reason: str | None = None


class ResultStore:
    """A results folder; see the module docstring for its layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells = self.root / CELLS

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells / cell_id

    def ensure(self) -> None:
        self.cells.mkdir(parents=True, exist_ok=True)

    def run_lock(self, info: dict[str, Any] | None = None) -> FileLock:
        self.ensure()
        return FileLock(self.root / RUN_LOCK, info)

    def prepare(self, cell: Any, grid_name: str | None = None) -> Path:
        """Create the cell's folder and its ``config.json`` (kept if already identical)."""
        path = self.cell_dir(cell.id)
        path.mkdir(parents=True, exist_ok=True)
        record = cell.record(grid_name)
        old = read_json(path / CONFIG)
        if old is None or {k: v for k, v in old.items() if k != "grid"} != {k: v for k, v in record.items() if k != "grid"}:
            if old is not None and old.get("grid"):
                record["grid"] = old["grid"]
            atomic_write_json(path / CONFIG, record)
        return path

    def state(self, cell_id: str) -> CellState:
        path = self.cell_dir(cell_id)
        return cell_state(path)

    def cell_dirs(self) -> list[Path]:
        if not self.cells.is_dir():
            return []
        return sorted(p for p in self.cells.iterdir() if p.is_dir() and (p / CONFIG).exists())

    def __iter__(self) -> Iterator[Path]:
        return iter(self.cell_dirs())


def cell_state(path: Path) -> CellState:
    """Where a cell stands, from its files alone (a dead 'running' record reads 'interrupted')."""
    cell_id = path.name
    epochs = len(epoch_rows(path / METRICS))
    if read_json(path / SUMMARY) is not None:
        return CellState(cell_id, path, "done", epochs)
    record = read_json(path / RECORD) or {}
    status = record.get("status")
    if status == "failed":
        return CellState(cell_id, path, "failed", epochs, record.get("reason"))
    if status == "running":
        if is_locked(path / CELL_LOCK):
            return CellState(cell_id, path, "running", epochs)
        return CellState(cell_id, path, "interrupted", epochs)
    if status == "interrupted":
        return CellState(cell_id, path, "interrupted", epochs)
    if epochs:
        return CellState(cell_id, path, "partial", epochs)
    return CellState(cell_id, path, "pending", 0)


def read_record(path: Path) -> dict[str, Any]:
    return read_json(path / RECORD, {}) or {}


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path / RECORD, record)
