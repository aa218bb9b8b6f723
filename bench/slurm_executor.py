"""The SLURM executor: the cells as one submitit job array (submitit's local backend for tests).

- A job runs one cell (:class:`CellJob`) in a child process, as the local executor does. On
  USR2 (what SLURM sends before the time limit, and submitit's preemption signal) the job stops
  the cell (SIGINT: it records itself interrupted), is requeued and resumes from ``last.pt``.
- Resources default to what fits (:func:`executor_parameters`); a request no node of the
  partition can run is refused before anything is submitted, and a job SLURM will never start is
  cancelled right after (:class:`CannotRun`, exit 2, saying what the partition offers).
- Job states come from ``squeue`` (no accounting needed; submitit's sacct watcher, which warns
  on every poll without accounting, is not used); pending reasons show in the progress line. A
  cancelled job leaves its cell interrupted: the same command again resumes it.
- Ctrl-C stops waiting; the jobs go on and a rerun of the same command collects them.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from typing import Any

from scabench.bench import slurm_cluster
from scabench.bench.cell import cell_command, finish_record, recorded, status_from_exit
from scabench.bench.local_executor import OnFinished
from scabench.bench.runner import CannotRun
from scabench.devices import parse_device
from scabench.results import GridFolder, RunFolder, now

DEFAULT_TIME_MIN = 24 * 60
LOCK_GRACE_S = 120.0  # after its job ended, how long a cell's process may take to let go of its lock


class CellJob:
    """A submitit job: runs one cell in a child process (through torchrun for a multi-GPU cell)."""

    def __init__(self, gpus_per_cell: int = 1):
        self.gpus_per_cell = gpus_per_cell
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"gpus_per_cell": self.gpus_per_cell}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(self, cell_dir: str, device: str | None = None) -> str:
        folder = RunFolder(cell_dir)
        gpus = self.gpus_per_cell if (folder.read_config() or {}).get("kind") == "train" else 1
        with open(folder.log, "ab") as log:
            log.write(f"\n=== scabench: SLURM job on {_host()} at {now()} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(cell_command(folder.path, device, gpus), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)
            # poll, not wait(): the USR2 handler (checkpoint) waits on the same process
            while (code := self._proc.poll()) is None:
                time.sleep(0.5)
        return status_from_exit(code, folder)

    def checkpoint(self, cell_dir: str, device: str | None = None) -> Any:
        """submitit calls this on USR2: stop the cell (it keeps its last epoch), then be requeued."""
        import submitit

        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return submitit.helpers.DelayedSubmission(self, cell_dir, device)


def _ignore_usr2() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The cell ignores USR2 (SLURM signals every process of the job): its job stops it instead."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _host() -> str:
    import socket

    return socket.gethostname()


def default_cpus(cells: list, processes: int) -> int:
    """CPUs a cell's loader uses: workers + 1 per training process; 1 for a study."""
    from scabench.detectors.config import TrainConfig

    need = 1
    for cell in cells:
        if cell.kind == "train":
            workers = cell.runtime.get("workers")
            workers = TrainConfig.model_fields["workers"].default if workers is None else workers
            need = max(need, (workers + 1) * processes)
    return need


def _wants_gpus(cells: list, part: slurm_cluster.Partition | None) -> bool:
    """Whether the jobs ask for GPUs: a training cell on ``cuda``, or on ``auto`` where the
    partition has GPUs (or is unknown)."""
    devices = [parse_device(c.runtime.get("device") or "auto") for c in cells if c.kind == "train"]
    has_gpus = part is None or any(n.gpus for n in part.nodes)
    return any(d.startswith("cuda") for d in devices) or ("auto" in devices and has_gpus)


def executor_parameters(cells: list, *, cluster: str, resources: Any, grid_name: str,
                        parts: dict[str, slurm_cluster.Partition] | None = None) -> dict[str, Any]:
    """submitit parameters from the grid's ``resources:`` (SLURM-only keys only for SLURM).

    Unset ``cpus_per_cell`` / ``time_min`` default to what fits: the loader's CPUs and 24 h, capped
    at the largest node's CPUs and the time limit of the partition (``parts``, from sinfo);
    ``auto`` training cells ask for GPUs only where the partition has some.
    """
    gpus = getattr(resources, "gpus_per_cell", 1) or 1
    cpus = getattr(resources, "cpus_per_cell", None)
    minutes = getattr(resources, "time_min", None)
    part = None
    if parts:
        name = getattr(resources, "partition", None)
        part = parts.get(name) if name else slurm_cluster.default_partition(parts)
    wants_gpu = _wants_gpus(cells, part)
    if cpus is None:
        cpus = default_cpus(cells, gpus if wants_gpu else 1)
        if part is not None and part.nodes:
            cpus = min(cpus, max(n.cpus for n in part.nodes))
    if minutes is None:
        minutes = DEFAULT_TIME_MIN
        if part is not None and part.max_time_min:
            minutes = min(minutes, part.max_time_min)
    params: dict[str, Any] = {"name": f"scabench-{grid_name}", "timeout_min": minutes, "cpus_per_task": cpus,
                              "tasks_per_node": 1, "nodes": 1}
    if getattr(resources, "mem_gb", None):
        params["mem_gb"] = resources.mem_gb
    if cluster != "slurm":
        return params
    if wants_gpu:
        params["gpus_per_node"] = gpus
    if getattr(resources, "partition", None):
        params["slurm_partition"] = resources.partition
    params["slurm_array_parallelism"] = getattr(resources, "array_parallelism", 64)
    # the cell's torch threads: its CPUs (unless the caller set them)
    params["slurm_setup"] = ["export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}"]
    if getattr(resources, "slurm_additional", None):
        params["slurm_additional_parameters"] = dict(resources.slurm_additional)
    return params


def run_slurm(cells: list, folder: GridFolder, on_finished: OnFinished, *, cluster: str, resources: Any,
              grid_name: str, console: Any, show: bool) -> bool:
    """Submit ``cells`` as a job array and wait for them; False when the wait was interrupted or
    a job was cancelled (its cell resumes on a rerun). Raises :class:`CannotRun` (see the module)."""
    import submitit
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    executor = submitit.AutoExecutor(folder=folder.slurm_dir / "%j", cluster=None if cluster == "auto" else cluster)
    real = executor.cluster == "slurm"  # else submitit's local/debug backend
    parts = slurm_cluster.partitions() if real else None
    params = executor_parameters(cells, cluster=executor.cluster, resources=resources, grid_name=grid_name, parts=parts)
    if real:
        slurm_cluster.check_request(params.get("slurm_partition"), cpus=params["cpus_per_task"], mem_gb=params.get("mem_gb"),
                                    gpus=params.get("gpus_per_node", 0), time_min=params["timeout_min"], parts=parts)
    executor.update_parameters(**params)
    jobs = _submit(executor, CellJob(getattr(resources, "gpus_per_cell", 1) or 1), cells, folder, params, real)
    ids = sorted({str(job.job_id).split("_")[0] for _, job in jobs})
    console.print(f"submitted {len(jobs)} cells as job array {', '.join(ids)} ({cluster}); logs in {folder.slurm_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    waiting = {job.job_id: (cell, job) for cell, job in jobs}
    ended_at: dict[str, float] = {}
    cancelled, shown = False, ""
    start, polled, states = time.monotonic(), float("-inf"), None
    with Progress(*columns, console=console, disable=not show) as bar:
        overall = bar.add_task(f"grid ({cluster})", total=len(jobs))
        try:
            while waiting:
                elapsed = time.monotonic() - start
                if real and time.monotonic() - polled >= min(30.0, max(2.0, elapsed / 10)):
                    states = slurm_cluster.job_states(ids)
                    polled = time.monotonic()
                    if states is not None:
                        _refuse_hopeless(states, waiting, ids, params)
                        line = f"grid (slurm {', '.join(ids)}): {_summary(states, waiting)}"
                        bar.update(overall, description=line)
                        if show and not console.is_terminal and line != shown:  # a log file: each change once
                            console.print(line, highlight=False, soft_wrap=True)
                        shown = line
                for job_id, (cell, job) in list(waiting.items()):
                    how = _ended(job, states, real)
                    if how is None:
                        continue
                    run = folder.cell(cell.id)
                    if how != "result" and run.state().status == "running":  # its process is still letting go
                        if time.monotonic() - ended_at.setdefault(job_id, time.monotonic()) < LOCK_GRACE_S:
                            continue
                    del waiting[job_id]
                    status = _status(job, run, how)
                    if status == "interrupted":
                        cancelled = True
                        seen = how if how != "result" else (states or {}).get(job_id, ("ended",))[0]
                        console.print(f"[yellow]job {job_id} stopped ({seen})[/]: {cell.label} is interrupted; rerun the same command to resume it",
                                      soft_wrap=True, highlight=False)
                    on_finished(cell, status, 0.0)
                    bar.advance(overall)
                if waiting:
                    time.sleep(1.0)
            bar.update(overall, description=f"grid ({cluster}{' ' + ', '.join(ids) if real else ''})")
        except KeyboardInterrupt:
            console.print("[yellow]stopped waiting; the jobs go on. Rerun the same command to collect them.[/]")
            return False
    return not cancelled


def _submit(executor: Any, job_fn: CellJob, cells: list, folder: GridFolder, params: dict, real: bool) -> list:
    """``[(cell, job)]``, one job array; CannotRun when sbatch refuses it (with sbatch's words)."""
    import submitit

    try:
        with executor.batch():
            return [(cell, executor.submit(job_fn, str(folder.cell(cell.id).path), None)) for cell in cells]
    except submitit.core.utils.FailedJobError as exc:
        if not real:
            raise
        said = [line.split("error:", 1)[1].strip() for line in str(exc).splitlines() if "error:" in line] or str(exc).splitlines()[-1:]
        offer = _offer(params)
        raise CannotRun(f"sbatch refused the jobs: {'; '.join(said)}{'. ' + offer if offer else ''}") from None


def _ended(job: Any, states: dict[str, tuple[str, str]] | None, real: bool) -> str | None:
    """None while ``job`` may still run; else "result" (it left one) or the SLURM state it ended in
    ("GONE": squeue no longer knows it). ``states`` None: squeue has not answered (yet)."""
    if job.paths.result_pickle.exists():
        return "result"
    if not real:  # submitit's local backend
        return "result" if job.done() else None
    if states is None:
        return None
    state = states.get(job.job_id, ("GONE", ""))[0]
    return None if state.split()[0] in slurm_cluster.ACTIVE else state


def _status(job: Any, run: RunFolder, how: str) -> str:
    """done | failed | interrupted | busy for a job that ended ``how`` (see :func:`_ended`)."""
    if how == "result":
        try:
            return job.result()
        except Exception as exc:  # noqa: BLE001  (the job died: timeout, node failure)
            return _status_from_job_error(run, exc)
    status = run.state().status
    if status in ("done", "failed"):
        return status
    if how in ("CANCELLED", "GONE"):
        return "interrupted"
    finish_record(run, recorded(run), "failed", reason=f"the SLURM job {job.job_id} ended {how} without a result; see {job.paths.stderr}")
    return "failed"


def _refuse_hopeless(states: dict, waiting: dict, ids: list[str], params: dict) -> None:
    """Cancel the jobs and raise CannotRun when one of ours is pending for a reason that never clears."""
    for job_id in waiting:
        state, reason = states.get(job_id, ("", ""))
        if state == "PENDING" and slurm_cluster.HOPELESS.match(reason):
            slurm_cluster.cancel(ids)
            offer = _offer(params)
            raise CannotRun(f"SLURM will never start job {job_id}: it is pending with reason {reason}"
                            f"{'. ' + offer if offer else ''}. The jobs were cancelled; change resources: in the grid file")


def _offer(params: dict) -> str:
    parts = slurm_cluster.partitions()
    name = params.get("slurm_partition")
    part = parts.get(name) if name else slurm_cluster.default_partition(parts)
    return part.offers() if part else ""


def _summary(states: dict, waiting: dict) -> str:
    """``1 running, 2 pending (Resources)`` for the jobs still waited on."""
    counts, reasons = Counter(), Counter()
    for job_id in waiting:
        state, reason = states.get(job_id, ("SUBMITTED", ""))
        counts[state.lower()] += 1
        if state == "PENDING" and reason and reason != "None":
            reasons[reason] += 1
    why = {"pending": f" ({', '.join(reasons)})" if reasons else ""}
    return ", ".join(f"{n} {state}{why.get(state, '')}" for state, n in sorted(counts.items()))


def _status_from_job_error(run: RunFolder, exc: BaseException) -> str:
    status = run.state().status
    if status in ("done", "failed"):
        return status
    text = str(exc).strip()
    finish_record(run, recorded(run), "failed", reason=f"the job failed: {text.splitlines()[0] if text else type(exc).__name__}", trace=str(exc))
    return "failed"
