"""One cell in its own process: take the cell's lock, keep its record, call its cell function.

A cell process is ``python -P -m scabench.bench.runner CELL_DIR [--device D]`` (built by
:func:`cell_command`; ``-P``: the current folder shadows no module), or a submitit job. The cell
function is ``train_cell`` (``detectors.train``) or ``simulate_cell`` (``bench.studies.run_study``),
with the signature ``fn(config, runtime, out_dir) -> dict | None``; it must leave
``summary.json`` (written last, atomically), or return a dict that the cell process writes as
the summary. ``SCABENCH_CELL_FN=module:function`` (or ``path/to/file.py:function``) replaces the
cell function of every cell: tests use it to run grids without training.

A user loss runs from where the grid found it (``loss_refs`` in ``config.json``: a relative
``file.py:fn`` of the grid's folder, made absolute), and only while its source still has the
SHA-256 the cell id was made with (:func:`config_to_run`); otherwise the cell fails saying so.

A broken ``record.json``, ``summary.json`` or ``metrics.jsonl`` is set aside as ``<name>.broken``
and the cell runs again (the trainer resumes from ``last.pt``); the record's attempt says so.

Exit codes of a cell process: 0 done, 1 failed, 75 busy (another process holds the cell),
130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from scabench.bench.config_schema import BUILTIN_DATA
from scabench.bench.provenance import device_info, environment, loss_sources
from scabench.results import SUMMARY, BrokenResult, LockBusy, RunFolder, now

CELL_FN_ENV = "SCABENCH_CELL_FN"
EXIT_DONE, EXIT_FAILED, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 75, 130
EXIT_CODES = {"done": EXIT_DONE, "failed": EXIT_FAILED, "busy": EXIT_BUSY, "interrupted": EXIT_INTERRUPTED}

CellFn = Callable[[dict, dict, Path], "dict | None"]


# --------------------------------------------------------------------------------------
# Cell functions


def train_cell(config: dict[str, Any], runtime: dict[str, Any], out_dir: Path) -> dict | None:
    """Train one detector cell with ``detectors.train`` (resumes from ``out_dir/last.pt``)."""
    from scabench.detectors import TrainConfig, train  # lazy: heavy
    from scabench.results import atomic_write_json

    kwargs = {k: v for k, v in config.items() if k != "kind"}
    data = kwargs.get("data", "synthetic-shapes")
    if data not in BUILTIN_DATA:  # a path (synthetic-shapes and neon-trees are names)
        kwargs["data"] = os.path.abspath(os.path.expanduser(os.path.expandvars(data)))
    kwargs.update({k: v for k, v in runtime.items() if v is not None})
    train_config = TrainConfig(**kwargs)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(RunFolder(out_dir).trainer_config, train_config.model_dump(mode="json"))
    return train(train_config, out_dir, progress=False)


def simulate_cell(config: dict[str, Any], runtime: dict[str, Any], out_dir: Path) -> dict | None:
    """Run one synthetic study with ``bench.studies.run_study`` into ``out_dir`` (CSVs only:
    figures come from ``scabench plot``); progress goes to ``progress.json``."""
    from scabench.bench.studies import run_study  # lazy: heavy

    start = time.time()
    loss_specs = [_loss_spec(entry) for entry in config.get("losses") or []] or None
    paths = run_study(
        config["study"],
        loss_specs,
        out_dir,
        seed=config.get("seed", 0),
        device=runtime.get("device") or "cpu",
        figures=False,
        progress=_progress_writer(RunFolder(out_dir)),
        **config.get("options", {}),
    )
    files = []
    for path in paths or []:
        path = Path(path)
        with contextlib.suppress(ValueError):
            path = path.resolve().relative_to(out_dir.resolve())
        files.append(str(path))
    return {"study": config["study"], "files": files, "seconds": round(time.time() - start, 3)}


def _progress_writer(folder: RunFolder, every: float = 0.5) -> Callable[[str, float], None]:
    """``progress(label, fraction)`` that writes ``progress.json`` at most every ``every`` seconds."""
    last = [0.0]

    def report(label: str, fraction: float) -> None:
        moment = time.monotonic()
        if moment - last[0] >= every or fraction >= 1.0:
            last[0] = moment
            with contextlib.suppress(OSError):
                folder.write_progress(label, fraction)

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
        from scabench.losses.user import load_function  # the one `module:function` importer

        return load_function(override)
    try:
        return DEFAULT_CELL_FNS[kind]
    except KeyError:
        raise ValueError(f"unknown cell kind {kind!r}; known: {', '.join(DEFAULT_CELL_FNS)}") from None


# --------------------------------------------------------------------------------------
# Running one cell


def cell_command(cell_dir: Path, device: str | None, gpus_per_cell: int = 1) -> list[str]:
    """The command that runs one cell (through torchrun for a multi-GPU training cell).

    ``-P``: the current folder is not put on ``sys.path``, so no user file shadows a module;
    user losses named ``module:function`` are still found there (:func:`losses.user.load_function`).
    """
    tail = ["-m", "scabench.bench.runner", str(cell_dir)] + (["--device", device] if device else [])
    if gpus_per_cell > 1:
        return [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus_per_cell}", *tail]
    return [sys.executable, "-P", *tail]


def run_cell(cell_dir: str | Path, device: str | None = None, *, lock_timeout: float = 60.0) -> str:
    """Run (or resume) the cell in ``cell_dir``; return done | failed | busy | interrupted.

    The cell's lock is awaited up to ``lock_timeout`` seconds: after a kill -9 the dead cell's
    data-loader workers (forked, so they share the lock) take a few seconds to notice and exit.
    """
    folder = RunFolder(cell_dir)
    try:
        meta = folder.read_config()
    except BrokenResult as exc:
        finish_record(folder, recorded(folder), "failed", reason=f"{exc}; `scabench run` writes it anew from the grid")
        return "failed"
    if meta is None:
        raise FileNotFoundError(f"{folder.config} is missing: not a cell folder")
    runtime = {**(meta.get("runtime") or {}), **({"device": device} if device else {})}
    if int(os.environ.get("RANK", "0")) != 0:  # DDP worker: rank 0 keeps the books
        cell_function(meta["kind"])(config_to_run(meta), runtime, folder.path)
        return "done"
    try:
        lock = folder.lock(lock_timeout, cell=meta.get("id"))
    except LockBusy:
        return "busy"
    try:
        repaired = [_set_aside(folder, broken) for broken in folder.broken_files()]
        record = folder.read_record()
        if folder.read_summary() is not None:  # a kill fell between summary and record
            if record.get("status") != "done":
                finish_record(folder, record, "done", repaired=repaired or None)
            return "done"
        record = _begin_attempt(record, meta, runtime, repaired)
        folder.write_record(record)
        status = _call_cell_function(folder, meta, runtime, record)
        record["device"] = device_info(runtime.get("device"))
        folder.write_record(record)
        return status
    finally:
        lock.release()


def _set_aside(folder: RunFolder, broken: BrokenResult) -> str:
    aside = folder.set_aside(broken.path)
    note = f"{broken.path.name} was broken ({broken.reason}): set aside as {aside.name}, the cell runs again"
    print(f"[scabench] {note}", flush=True)
    return note


def _begin_attempt(record: dict, meta: dict, runtime: dict, repaired: list[str]) -> dict:
    """The record of a new attempt: who runs it where, from which code (provenance)."""
    env = environment()
    attempt = {"started": now(), "host": env["host"], "pid": os.getpid(), "status": "running"}
    if repaired:
        attempt["repaired"] = repaired
    attempts = list(record.get("attempts", []))
    if attempts and attempts[-1].get("status") == "running":
        attempts[-1]["status"] = "interrupted"  # the previous process died without a word
    record = {k: v for k, v in record.items() if k not in ("reason", "trace")}
    record.update(
        id=meta.get("id"), label=meta.get("label"), status="running", started=record.get("started") or attempt["started"],
        ended=None, device=device_info(runtime.get("device")), attempts=[*attempts, attempt], **env,
    )
    sources = loss_sources(meta["config"], meta.get("loss_refs"))
    if sources:
        record["loss_sources"] = sources
    return record


def config_to_run(meta: dict) -> dict[str, Any]:
    """The cell's config with each user loss named where this process finds it (``loss_refs``:
    a relative ``file.py:fn`` of the grid, made absolute); refused (ValueError) when a user
    loss's source is no longer the one the cell id was hashed with."""
    config, refs = dict(meta["config"]), meta.get("loss_refs") or {}
    if not refs:
        return config
    from scabench.losses.user import rewrite_terms, source_sha256

    for term, ref in refs.items():
        now = source_sha256(ref["path"])
        if now != ref["sha256"]:
            raise ValueError(
                f"the source of {term} changed since this cell was planned (SHA-256 {ref['sha256'][:12]} -> {now[:12]}): "
                "this cell's id names the old code; run `scabench run` again to plan the cell of the new code"
            )
    where = {term: ref["path"] for term, ref in refs.items()}
    if config.get("loss"):
        config["loss"] = rewrite_terms(config["loss"], where)
    if config.get("losses"):
        config["losses"] = [{**entry, "name": rewrite_terms(entry["name"], where)} for entry in config["losses"]]
    return config


def _call_cell_function(folder: RunFolder, meta: dict, runtime: dict, record: dict) -> str:
    """Call the cell function; write the summary it returned; finish the record in every case."""
    start = time.time()
    try:
        result = cell_function(meta["kind"])(config_to_run(meta), runtime, folder.path)
        if folder.read_summary() is None:
            if not isinstance(result, dict):
                raise RuntimeError(f"the cell function returned without writing {SUMMARY}")
            folder.write_summary(result)
    except KeyboardInterrupt:
        _finish(record, "interrupted", start, reason="interrupted (SIGINT/SIGTERM); rerun to resume")
        return "interrupted"
    except BaseException as exc:  # noqa: BLE001  (record every failure, then go on)
        _finish(record, "failed", start, reason=f"{type(exc).__name__}: {exc}".strip(), trace=traceback.format_exc())
        return "failed"
    _finish(record, "done", start)
    return "done"


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


def finish_record(folder: RunFolder, record: dict, status: str, **extra: Any) -> None:
    """Close the last attempt of ``record`` with ``status`` (and a reason, trace) and write it."""
    _finish(record, status, **extra)
    folder.write_record(record)


def recorded(folder: RunFolder) -> dict[str, Any]:
    """The cell's record, or {} where it is absent or broken (the caller rewrites it)."""
    try:
        return folder.read_record()
    except BrokenResult:
        return {}


def status_from_exit(returncode: int, folder: RunFolder) -> str:
    """done | busy | interrupted | failed from a cell process's exit code and its files; a process
    that died without a word (signal, OOM kill, segfault) gets a failed record saying how."""
    if folder.state().status == "done":
        return "done"
    if returncode == EXIT_BUSY:
        return "busy"
    record = recorded(folder)
    if returncode in (EXIT_INTERRUPTED, -signal.SIGINT) or (record.get("status") == "interrupted" and returncode >= 0):
        return "interrupted"
    if record.get("status") == "failed":
        return "failed"
    if returncode < 0:
        try:
            how = f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
        if returncode == -signal.SIGKILL:
            how += " (out of memory?)"
    else:
        how = f"exited with code {returncode}"
    finish_record(folder, record, "failed", reason=f"the cell's process {how}", trace=_tail(folder.log))
    return "failed"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
