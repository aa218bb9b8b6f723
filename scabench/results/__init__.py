"""The results-folder format: the one owner of its file names, readers, writers, cell state and locks.

A grid folder (``results/<grid name>`` by default)::

    grid.yaml        the grid file as last run here        plan.csv   the cells in order, with status
    .run.lock        held by the `scabench run` using it   cells/<id>/ one run folder per cell
    report.md/.tex, results.csv, figures/: the tables and figures; slurm/: submitit's job logs

A run folder (a grid's cell, or the ``--out`` of ``scabench train``)::

    config.json      resolved config, labels, runtime      record.json   status, attempts, host, git, ...
    metrics.jsonl    one JSON line per finished epoch      last.pt       the trainer's checkpoint
    summary.json     final metrics, written last: done     log.txt       the cell process's output
    train.log        the trainer's log                     failure.json  where a non-finite loss stopped it
    progress.json    a study's progress                    .lock         held by the process running it
    trainer_config.json  the trainer's full config, defaults filled in (a grid cell's)
    best.pt          last.pt of the fittest validated epoch  tensorboard/  TensorBoard event files

Writes are atomic (a temporary file beside the target, then ``os.replace``), so a reader or a run
killed at any moment sees the old file or the new one, never half of one. A file that is there
but unreadable raises :class:`BrokenResult` naming it. No torch at import time.
"""

from scabench.results.atomic import (
    atomic_path, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text,
)
from scabench.results.files import (
    CELLS, CHECKPOINT, CONFIG, FAILURE, FIGURES, GRID_COPY, GRID_LOCK, LOG, METRICS, PLAN, PROGRESS, RECORD,
    REPORTS, RUN_LOCK, SLURM_LOGS, SUMMARY, TRAIN_LOG, TRAINER_CONFIG, BrokenResult, Status, epoch_rows, read_json, read_jsonl,
)
from scabench.results.folders import CellState, GridFolder, RunFolder, cell_state
from scabench.results.locks import FileLock, LockBusy, is_locked, lock_holder, now

__all__ = [
    "CELLS", "CHECKPOINT", "CONFIG", "FAILURE", "FIGURES", "GRID_COPY", "GRID_LOCK", "LOG", "METRICS", "PLAN",
    "PROGRESS", "RECORD", "REPORTS", "RUN_LOCK", "SLURM_LOGS", "SUMMARY", "TRAIN_LOG", "TRAINER_CONFIG",
    "BrokenResult", "CellState", "FileLock", "GridFolder", "LockBusy", "RunFolder", "Status",
    "atomic_path", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "cell_state", "epoch_rows", "is_locked", "lock_holder", "now", "read_json", "read_jsonl",
]
