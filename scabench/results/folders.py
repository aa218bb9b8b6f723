"""Run folders and grid folders: their paths, readers and writers, and the state of a cell."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scabench.results.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from scabench.results.files import (
    CELLS, CHECKPOINT, CONFIG, FAILURE, FIGURES, GRID_COPY, GRID_LOCK, LOG, METRICS, PLAN, PROGRESS, RECORD,
    REPORTS, RUN_LOCK, SLURM_LOGS, SUMMARY, TRAIN_LOG, TRAINER_CONFIG, BrokenResult, Status, epoch_rows, read_json,
)
from scabench.results.locks import FileLock, is_locked


@dataclass(frozen=True)
class CellState:
    """Where a run folder stands; for ``broken``, ``file`` is the unreadable file and ``reason`` why."""

    id: str
    path: Path
    status: Status
    epochs_done: int = 0
    reason: str | None = None
    file: Path | None = None


def _file(name: str) -> property:
    return property(lambda self: self.path / name, doc=f"The path of ``{name}``.")


class RunFolder:
    """A run folder (layout in :mod:`scabench.results`): its paths, readers and writers."""

    config, record, summary, metrics = _file(CONFIG), _file(RECORD), _file(SUMMARY), _file(METRICS)
    checkpoint, log, train_log, failure = _file(CHECKPOINT), _file(LOG), _file(TRAIN_LOG), _file(FAILURE)
    progress, lock_file, trainer_config = _file(PROGRESS), _file(RUN_LOCK), _file(TRAINER_CONFIG)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def read_config(self) -> dict[str, Any] | None:
        return read_json(self.config)

    def read_record(self) -> dict[str, Any]:
        return read_json(self.record) or {}

    def read_summary(self) -> dict[str, Any] | None:
        return read_json(self.summary)

    def read_epochs(self) -> list[dict[str, Any]]:
        return epoch_rows(self.metrics)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.record, record)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json``: the proof that the run finished (write it last)."""
        atomic_write_json(self.summary, summary)

    def append_epoch(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to ``metrics.jsonl`` (one ``write``: a kill tears only that line)."""
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(row, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite_epochs(self, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with exactly ``rows`` (on resume: the checkpoint's epochs)."""
        atomic_write_text(self.metrics, "".join(json.dumps(row, default=str) + "\n" for row in rows))

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write ``last.pt`` atomically (torch is imported here only)."""
        atomic_torch_save(checkpoint, self.checkpoint)

    def write_failure(self, failure: dict[str, Any]) -> None:
        """``failure.json``: why a run stopped (a non-finite loss: epoch, iteration, values)."""
        atomic_write_json(self.failure, failure)

    def log_line(self, line: str) -> None:
        """Append a time-stamped line to ``train.log`` (what was resolved, skipped, finished)."""
        with open(self.train_log, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def write_progress(self, label: str, fraction: float) -> None:
        """``progress.json``: how far a running study is (``fraction`` from 0 to 1)."""
        atomic_write_json(self.progress, {"label": label, "fraction": float(fraction)})

    def read_progress(self) -> float | None:
        """The fraction a running study last wrote (None if none, or while it is being replaced)."""
        try:
            return float((read_json(self.progress) or {})["fraction"])
        except (BrokenResult, KeyError, TypeError, ValueError):
            return None

    def lock(self, timeout: float = 0.0, **info: Any) -> FileLock:
        """Take the run's lock (the runner's cell process and ``scabench train --out`` alike)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return FileLock(self.lock_file, info).acquire(timeout)

    def broken_files(self) -> list[BrokenResult]:
        """The JSON files of this folder that exist but cannot be read."""
        found = []
        for read in (self.read_config, self.read_record, self.read_summary, self.read_epochs):
            try:
                read()
            except BrokenResult as exc:
                found.append(exc)
        return found

    def set_aside(self, path: Path) -> Path:
        """Rename a broken file to ``<name>.broken`` (kept for a look; the run writes it anew)."""
        target = path.with_name(path.name + ".broken")
        os.replace(path, target)
        return target

    def state(self) -> CellState:
        """The one decision of where a cell stands, from its files alone.

        broken: one of its JSON files cannot be read (even beside a summary: a rerun repairs it);
        done: a readable summary; failed / interrupted: as the
        record says (a 'running' record whose lock nobody holds is a dead run: interrupted);
        partial: epochs without a record; pending: nothing yet.
        """
        cell_id = self.path.name
        try:
            self.read_config()
            epochs = len(self.read_epochs())
            record = self.read_record()
            if self.read_summary() is not None:
                return CellState(cell_id, self.path, "done", epochs)
        except BrokenResult as exc:
            return CellState(cell_id, self.path, "broken", 0, exc.reason, exc.path)
        status = record.get("status")
        if status == "running":
            status = "running" if is_locked(self.lock_file) else "interrupted"
        if status in ("failed", "running", "interrupted"):
            return CellState(cell_id, self.path, status, epochs, record.get("reason") if status == "failed" else None)
        return CellState(cell_id, self.path, "partial" if epochs else "pending", epochs)


def cell_state(path: str | Path) -> CellState:
    """Where the cell in ``path`` stands (:meth:`RunFolder.state`)."""
    return RunFolder(path).state()


class GridFolder:
    """A grid's results folder (layout in :mod:`scabench.results`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def cells_dir(self) -> Path:
        return self.root / CELLS

    @property
    def grid_copy(self) -> Path:
        return self.root / GRID_COPY

    @property
    def figures_dir(self) -> Path:
        return self.root / FIGURES

    @property
    def slurm_dir(self) -> Path:
        return self.root / SLURM_LOGS

    def report_file(self, fmt: str) -> Path:
        """``report.md``, ``report.tex`` or ``results.csv`` for ``markdown``, ``latex`` or ``csv``."""
        return self.root / REPORTS[fmt]

    def cell(self, cell_id: str) -> RunFolder:
        return RunFolder(self.cells_dir / cell_id)

    def cells(self) -> list[RunFolder]:
        """Every run folder holding a ``config.json``: under ``cells/``, or (merged by hand) the root."""
        base = self.cells_dir if self.cells_dir.is_dir() else self.root
        if not base.is_dir():
            return []
        return [RunFolder(p) for p in sorted(base.iterdir()) if p.is_dir() and (p / CONFIG).exists()]

    def is_results_folder(self) -> bool:
        return self.cells_dir.is_dir() or bool(self.cells())

    def lock(self, **info: Any) -> FileLock:
        """Take the grid's lock (one `scabench run` per folder); :class:`LockBusy` if held."""
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / GRID_LOCK, info).acquire()

    def write_plan(self, rows: list[dict[str, Any]]) -> None:
        """``plan.csv``: one row per cell in run order (``order, id, kind, label, status``)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ["order", "id", "kind", "label", "status"])
        writer.writeheader()
        writer.writerows({"order": i, **row} for i, row in enumerate(rows))
        atomic_write_text(self.root / PLAN, buffer.getvalue())

    def plan_order(self) -> dict[str, int]:
        """Cell id -> its place in ``plan.csv`` (empty without a readable plan)."""
        try:
            with open(self.root / PLAN, newline="") as handle:
                return {row["id"]: int(row["order"]) for row in csv.DictReader(handle)}
        except (OSError, KeyError, ValueError, TypeError):
            return {}
