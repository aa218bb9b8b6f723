"""What a SLURM cluster offers and where its jobs stand (``sinfo``, ``squeue``, ``scancel``).

:func:`check_request` refuses, before anything is submitted, a request that no node of the
partition can run (with what the partition offers instead); :func:`job_states` reads the jobs'
states from ``squeue``, which works without accounting (``sacct`` needs it).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from scabench.bench.runner import CannotRun

# States in which a job may still run (as submitit's list); any other state, or a job squeue no
# longer knows, has ended.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "COMPLETING", "CONFIGURING",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "UNKNOWN"}
# Pending reasons that never clear by waiting: the job can never start as asked.
HOPELESS = re.compile(r"^(PartitionConfig|PartitionTimeLimit|PartitionNodeLimit|BadConstraints|InvalidAccount|InvalidQOS"
                      r"|(QOS|Assoc)Max\w*PerJob\w*)$")


@dataclass(frozen=True)
class Node:
    """One node of one partition, as ``sinfo -N`` lists it."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int
    state: str


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    max_time_min: int | None  # None: no limit
    nodes: tuple[Node, ...]

    def offers(self) -> str:
        """``partition ci offers 1 node: 2 CPUs, 19 GB, no GPU, time limit 12:00:00``."""
        cpus, mem, gpus = (max((getattr(n, k) for n in self.nodes), default=0) for k in ("cpus", "mem_mb", "gpus"))
        limit = "none" if self.max_time_min is None else _hms(self.max_time_min)
        count = f"{len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}"
        biggest = "" if len(self.nodes) == 1 else " at most"
        return (f"partition {self.name} offers {count}:{biggest} {cpus} CPUs, {mem / 1024:.0f} GB, "
                f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}, time limit {limit}")


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def parse_time(text: str) -> int | None:
    """Minutes of a SLURM time (``30:00``, ``12:00:00``, ``1-00:00:00``, ``infinite``); None: no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = parts + [0] * (3 - len(parts))
    elif len(parts) == 3:  # hours:minutes:seconds
        hours, minutes, seconds = parts
    else:  # minutes[:seconds]
        hours, minutes, seconds = 0, parts[0], (parts[1:] or [0])[0]
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _hms(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def _gpus(gres: str) -> int:
    """GPUs in a ``%G`` field: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def partitions() -> dict[str, Partition]:
    """The partitions this user sees, with their nodes (one ``sinfo`` call); {} without sinfo."""
    try:
        proc = _run(["sinfo", "-h", "-N", "-o", "%P|%l|%N|%c|%m|%G|%T"])
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, list] = {}
    for line in proc.stdout.splitlines():
        try:
            part, limit, name, cpus, mem, gres, state = line.split("|")
            node = Node(name, int(cpus.rstrip("+")), int(mem.rstrip("+")), _gpus(gres), state)
        except ValueError:
            continue
        default = part.endswith("*")
        entry = found.setdefault(part.rstrip("*"), [default, parse_time(limit), []])
        entry[2].append(node)
    return {name: Partition(name, default, limit, tuple(nodes)) for name, (default, limit, nodes) in found.items()}


def default_partition(parts: dict[str, Partition]) -> Partition | None:
    return next((p for p in parts.values() if p.default), None)


def check_request(partition: str | None, *, cpus: int, mem_gb: int | None, gpus: int, time_min: int,
                  parts: dict[str, Partition] | None = None) -> None:
    """Raise :class:`CannotRun` when no node of the partition can run one cell as asked, saying
    what is too large and what the partition offers."""
    parts = partitions() if parts is None else parts
    if not parts:
        return  # nothing known about the cluster: sbatch will judge
    known = ", ".join(f"{p.name}{' (default)' if p.default else ''}" for p in parts.values())
    part = parts.get(partition) if partition else default_partition(parts)
    if part is None:
        which = f"partition {partition!r} does not exist" if partition else "there is no default partition"
        raise CannotRun(f"SLURM cannot run these cells: {which}; partitions: {known} (set resources: {{partition: ...}})")
    problems = []
    fits = [n for n in part.nodes if n.cpus >= cpus and (not mem_gb or n.mem_mb >= mem_gb * 1024) and n.gpus >= gpus]
    if not fits:
        if not any(n.cpus >= cpus for n in part.nodes):
            problems.append(f"cpus_per_cell {cpus} (no node has that many CPUs)")
        if mem_gb and not any(n.mem_mb >= mem_gb * 1024 for n in part.nodes):
            problems.append(f"mem_gb {mem_gb} (no node has that much memory)")
        if gpus and not any(n.gpus >= gpus for n in part.nodes):
            problems.append(f"{gpus} GPU{'s' if gpus > 1 else ''} per cell (no node has that many)")
        if not problems:
            problems.append(f"cpus_per_cell {cpus}, mem_gb {mem_gb}, {gpus} GPUs together (no one node has all of them)")
    if part.max_time_min is not None and time_min > part.max_time_min:
        problems.append(f"time_min {time_min} (above the partition's time limit, {part.max_time_min} min)")
    if problems:
        raise CannotRun(f"SLURM cannot run these cells as asked: {'; '.join(problems)}. {part.offers()}; "
                        "change resources: in the grid file")


def job_states(array_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """``{job_id: (state, reason)}`` of every task of the given job arrays (``123_4``), from squeue;
    a job squeue no longer knows is absent; None when squeue could not answer (try again later)."""
    if not array_ids:
        return {}
    try:
        proc = _run(["squeue", "-h", "-a", "-r", "-t", "all", "-j", ",".join(array_ids), "-o", "%i|%T|%r"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return {} if "Invalid job id" in proc.stderr else None  # every job of the arrays is gone
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def cancel(array_ids: list[str]) -> None:
    """``scancel`` the given job arrays (every task)."""
    if array_ids:
        subprocess.run(["scancel", *array_ids], capture_output=True, timeout=60)
