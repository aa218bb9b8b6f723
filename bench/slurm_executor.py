"""The SLURM executor: the cells as one submitit job array (submitit's local backend for tests).

A job runs one cell (:class:`CellJob`); requeued on preemption or timeout, it resumes from
``last.pt``. Ctrl-C stops waiting; the jobs go on and a rerun of the same command collects them.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from scabench.bench.cell import cell_command, finish_record, recorded, run_cell, status_from_exit
from scabench.bench.local_executor import OnFinished
from scabench.devices import wants_cuda
from scabench.results import GridFolder, RunFolder


class CellJob:
    """A submitit job: runs one cell, through torchrun when a training cell has several GPUs."""

    def __init__(self, gpus_per_cell: int = 1):
        self.gpus_per_cell = gpus_per_cell

    def __call__(self, cell_dir: str, device: str | None = None) -> str:
        folder = RunFolder(cell_dir)
        if self.gpus_per_cell > 1 and (folder.read_config() or {}).get("kind") == "train":
            proc = subprocess.run(cell_command(folder.path, device, self.gpus_per_cell))
            return status_from_exit(proc.returncode, folder)
        return run_cell(cell_dir, device)

    def checkpoint(self, cell_dir: str, device: str | None = None) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, cell_dir, device)


def executor_parameters(cells: list, *, cluster: str, resources: Any, grid_name: str) -> dict[str, Any]:
    """submitit parameters from the grid's ``resources:`` (SLURM-only keys only for SLURM)."""
    params: dict[str, Any] = {
        "name": f"scabench-{grid_name}",
        "timeout_min": getattr(resources, "time_min", 24 * 60),
        "cpus_per_task": getattr(resources, "cpus_per_cell", 4),
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if getattr(resources, "mem_gb", None):
        params["mem_gb"] = resources.mem_gb
    if cluster != "slurm":
        return params
    if any(wants_cuda(c.runtime.get("device")) for c in cells if c.kind == "train"):
        params["gpus_per_node"] = getattr(resources, "gpus_per_cell", 1) or 1
    if getattr(resources, "partition", None):
        params["slurm_partition"] = resources.partition
    params["slurm_array_parallelism"] = getattr(resources, "array_parallelism", 64)
    if getattr(resources, "slurm_additional", None):
        params["slurm_additional_parameters"] = dict(resources.slurm_additional)
    return params


def run_slurm(cells: list, folder: GridFolder, on_finished: OnFinished, *, cluster: str, resources: Any,
              grid_name: str, console: Any, show: bool) -> bool:
    """Submit ``cells`` as a job array and wait for them; False when the wait was interrupted."""
    import submitit
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    executor = submitit.AutoExecutor(folder=folder.slurm_dir / "%j", cluster=None if cluster == "auto" else cluster)
    executor.update_parameters(**executor_parameters(cells, cluster=cluster, resources=resources, grid_name=grid_name))
    job_fn = CellJob(getattr(resources, "gpus_per_cell", 1) or 1)
    with executor.batch():
        jobs = [(cell, executor.submit(job_fn, str(folder.cell(cell.id).path), None)) for cell in cells]
    ids = sorted({str(job.job_id).split("_")[0] for _, job in jobs})
    console.print(f"submitted {len(jobs)} cells as job array {', '.join(ids)} ({cluster}); logs in {folder.slurm_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show) as bar:
        overall = bar.add_task(f"grid ({cluster})", total=len(jobs))
        try:
            while jobs:
                for cell, job in [(c, j) for c, j in jobs if j.done()]:
                    jobs.remove((cell, job))
                    try:
                        status = job.result()
                    except Exception as exc:  # noqa: BLE001  (the job died: timeout, node failure)
                        status = _status_from_job_error(folder.cell(cell.id), exc)
                    on_finished(cell, status, 0.0)
                    bar.advance(overall)
                if jobs:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("[yellow]stopped waiting; the jobs go on. Rerun the same command to collect them.[/]")
            return False
    return True


def _status_from_job_error(run: RunFolder, exc: BaseException) -> str:
    status = run.state().status
    if status in ("done", "failed"):
        return status
    text = str(exc).strip()
    finish_record(run, recorded(run), "failed", reason=f"the job failed: {text.splitlines()[0] if text else type(exc).__name__}", trace=str(exc))
    return "failed"
