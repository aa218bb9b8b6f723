"""The file names of a run folder and a grid folder, and the readers that name a broken file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

CONFIG, RECORD, SUMMARY, METRICS = "config.json", "record.json", "summary.json", "metrics.jsonl"
CHECKPOINT, LOG, TRAIN_LOG, FAILURE = "last.pt", "log.txt", "train.log", "failure.json"
BEST_CHECKPOINT, TENSORBOARD = "best.pt", "tensorboard"  # the fittest epoch's checkpoint; event files
PROGRESS, RUN_LOCK, TRAINER_CONFIG = "progress.json", ".lock", "trainer_config.json"
GRID_COPY, PLAN, GRID_LOCK, CELLS = "grid.yaml", "plan.csv", ".run.lock", "cells"
FIGURES, SLURM_LOGS = "figures", "slurm"
REPORTS = {"markdown": "report.md", "latex": "report.tex", "csv": "results.csv", "cells": "cells.csv"}  # what `scabench run` leaves

Status = Literal["done", "failed", "running", "interrupted", "partial", "pending", "broken"]
"""Where a cell stands: the values of :attr:`CellState.status`."""


class BrokenResult(ValueError):
    """A result file that exists but cannot be read; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is absent; :class:`BrokenResult` otherwise."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokenResult(path, f"unreadable ({exc})") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise BrokenResult(path, f"not valid JSON ({exc})" if text.strip() else "empty file") from None
    if not isinstance(obj, dict):
        raise BrokenResult(path, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (none if absent). A torn last line (a kill in the middle
    of an append) is skipped; any other bad line raises :class:`BrokenResult` with its number."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokenResult(path, f"unreadable ({exc})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            if number == len(lines):
                break
            raise BrokenResult(path, f"line {number} is not valid JSON") from None
        if row is None:
            continue
        if not isinstance(row, dict):
            raise BrokenResult(path, f"line {number} is not a JSON object")
        rows.append(row)
    return rows


def epoch_rows(path: str | Path) -> list[dict[str, Any]]:
    """Per-epoch rows in epoch order; an epoch written twice (a resume) keeps its last version."""
    by_epoch = {row["epoch"]: row for row in read_jsonl(path) if isinstance(row.get("epoch"), (int, float))}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
