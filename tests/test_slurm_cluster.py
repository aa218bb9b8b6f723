"""The SLURM executor against a real SLURM (``.ci/slurm-up`` starts a single-node one).

The cluster tests skip, saying why, where ``sinfo`` is absent or no node is up. Their cells are
tiny real training runs (yolov3-tiny x0.25, 48 images at 64 px, 3 epochs, no loader workers)
with one torch thread for every executor, so that they are bit-identical on the CPU. Nothing
waits on time: SCABENCH_CELL_FN runs the real trainer through :func:`gated_train`, which holds
the cells named in SLURM_TEST_HOLD after their first epoch (``last.pt`` and its metrics row
written) and says so in a file; the test then signals that cell's job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
SCABENCH = Path(sys.executable).with_name("scabench")
DEADLOCK_GUARD = 600.0  # seconds: only a hung test waits this long, however loaded the machine

GRID = """\
name: {name}
data: {{source: synthetic-shapes, train_size: 48, val_size: 16}}
detectors: [{{name: yolov3-tiny, width: 0.25}}]
train: {{epochs: 3, img_size: 64, batch_size: 16, workers: 0}}
losses: [{losses}]
seeds: [0]
"""


def gated_train(config: dict, runtime: dict, out_dir: Path):
    """The real training cell; a cell whose loss is in $SLURM_TEST_HOLD stops after epoch 1 and
    writes ``<gate>/<loss>.held`` (its SLURM job id) until ``<gate>/release`` exists."""
    from scabench.bench.cell import train_cell
    from scabench.results import RunFolder

    gate = Path(os.environ["SLURM_TEST_GATE"])
    held = config.get("loss") in os.environ.get("SLURM_TEST_HOLD", "").split(",")
    append = RunFolder.append_epoch

    def append_then_wait(self, row):
        append(self, row)
        if held and row.get("epoch") == 1:
            array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
            job = f"{array}_{task}" if array else os.environ["SLURM_JOB_ID"]  # one cell: no array
            (gate / f"{config['loss']}.held").write_text(job)
            deadline = time.monotonic() + DEADLOCK_GUARD
            while not (gate / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.2)

    RunFolder.append_epoch = append_then_wait
    return train_cell(config, runtime, out_dir)


def _why_no_cluster() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM here: sinfo is absent (.ci/slurm-up installs and starts a single-node one as root)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"SLURM does not answer: sinfo: {proc.stderr.strip() or proc.returncode}"
    if not re.search(r" (idle|mixed|allocated|completing)$", proc.stdout, flags=re.M):  # not "idle*": not responding
        return f"SLURM has no node up: sinfo says {proc.stdout.strip() or 'no nodes'!r}"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)


def _env(gate: Path, hold: str | None = "") -> dict:
    """The environment of a run: one torch thread; with ``hold`` (None: none) cells run through the gate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SCABENCH_", "FAKE_"))}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    if hold is not None:
        gate.mkdir(parents=True, exist_ok=True)
        env.update(SCABENCH_CELL_FN=f"{HERE}:gated_train", SLURM_TEST_GATE=str(gate), SLURM_TEST_HOLD=hold)
    return env


def _grid(tmp: Path, name: str, losses: str = "iou, sca", resources: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(GRID.format(name=name, losses=losses) + (f"resources: {resources}\n" if resources else ""))
    return path


def _start(grid: Path, out: Path, env: dict, executor: str = "slurm") -> tuple[subprocess.Popen, Path]:
    """``scabench run`` in its own process, its output into a file (read while it runs)."""
    log = out.with_suffix(f".{len(list(out.parent.glob(out.name + '*.log')))}.log")
    with open(log, "w") as handle:
        proc = subprocess.Popen([str(SCABENCH), "run", "--grid", str(grid), "--out", str(out), "--executor", executor, "--no-report"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=grid.parent)
    return proc, log


def _finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    return proc.wait(timeout=DEADLOCK_GUARD), log.read_text()


def _wait_for(what: str, ready, proc: subprocess.Popen, log: Path):
    """Until ``ready()`` is true; fail at once, with the output, if ``proc`` ends first."""
    deadline = time.monotonic() + DEADLOCK_GUARD
    while not (found := ready()):
        if proc.poll() is not None:
            pytest.fail(f"scabench ended (exit {proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}:\n{log.read_text()}")
        time.sleep(0.2)
    return found


def _timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


def _rows(cell: Path) -> list[dict]:
    """The metrics rows without their wall-clock seconds."""
    return [_timeless(json.loads(line)) for line in (cell / "metrics.jsonl").read_text().splitlines()]


def _results(out: Path) -> dict[str, tuple[list[dict], dict]]:
    """Per cell: every epoch's row and the summary's metrics (final AP ...), without seconds."""
    return {cell.name: (_rows(cell), _timeless(json.loads((cell / "summary.json").read_text())["metrics"]))
            for cell in sorted((out / "cells").iterdir())}


def _record(out: Path, loss: str) -> dict:
    for cell in (out / "cells").iterdir():
        record = json.loads((cell / "record.json").read_text())
        if f"| {loss} |" in record["label"]:
            return record
    raise AssertionError(f"no {loss} cell in {out}")


def _done(text: str) -> list[str]:
    """The losses of the cells a run reported done."""
    return re.findall(r"^done +\S+ \(w=0.25\) \| (\S+) \|", text, flags=re.M)


def _queued(name: str) -> str:
    return subprocess.run(["squeue", "-h", "-n", f"scabench-{name}", "-o", "%i %T"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The grid run by the local executor: the results every SLURM run must match."""
    tmp = tmp_path_factory.mktemp("local")
    proc, log = _start(_grid(tmp, "slurm-ci"), tmp / "out", _env(tmp / "gate", hold=None), executor="local")
    code, text = _finish(proc, log)
    assert code == 0, text
    return _results(tmp / "out")


def test_job_array_matches_the_local_executor(reference, tmp_path):
    proc, log = _start(_grid(tmp_path, "slurm-ci"), tmp_path / "out", _env(tmp_path / "gate"))
    code, text = _finish(proc, log)
    assert code == 0, text
    assert re.search(r"submitted 2 cells as job array \d+ \(slurm\)", text)
    assert _results(tmp_path / "out") == reference  # every epoch's metrics and the final AP, bit for bit
    assert "sacct" not in text and "status may be inaccurate" not in text  # no accounting here: no warnings


def test_scancel_mid_cell_then_the_same_command_resumes_it(reference, tmp_path):
    """One cell at a time (2 CPUs each): iou is held after epoch 1 and cancelled while sca waits
    (its reason in the progress line); the same command again resumes iou from epoch 1."""
    grid, out, gate = _grid(tmp_path, "slurm-ci", resources=f"{{cpus_per_cell: {_node_cpus()}}}"), tmp_path / "out", tmp_path / "gate"
    proc, log = _start(grid, out, _env(gate, hold="iou"))
    job = _wait_for("the iou cell held after epoch 1", lambda: (gate / "iou.held").exists() and (gate / "iou.held").read_text(), proc, log)
    _wait_for("a pending job's reason in the progress line", lambda: re.search(r"1 pending \(\w+\)", log.read_text()), proc, log)
    subprocess.run(["scancel", job], check=True)
    code, text = _finish(proc, log)
    assert code == 130, text
    assert re.search(rf"job {job} stopped \((CANCELLED|COMPLETING|COMPLETED)\): .* iou .* is interrupted; rerun the same command", text), text
    assert _done(text) == ["sca"]
    assert [r["epoch"] for r in _rows(out / "cells" / _record(out, "iou")["id"])] == [1]

    proc, log = _start(grid, out, _env(gate, hold="iou"))
    code, again = _finish(proc, log)
    assert code == 0, again
    assert _done(again) == ["iou"]  # sca is not run again
    assert _results(out) == reference  # epochs 1, 2, 3 once each, as if never interrupted
    assert [a["status"] for a in _record(out, "iou")["attempts"]] == ["interrupted", "done"]
    assert [a["status"] for a in _record(out, "sca")["attempts"]] == ["done"]


def test_usr2_before_the_time_limit_checkpoints_requeues_and_continues(reference, tmp_path):
    """USR2 to the job's processes, as ``--signal=USR2@90`` sends before the time limit (and as
    submitit's own preemption test does): the cell stops, the job is requeued and resumes."""
    out, gate = tmp_path / "out", tmp_path / "gate"
    proc, log = _start(_grid(tmp_path, "slurm-ci", losses="iou"), out, _env(gate, hold="iou"))
    job = _wait_for("the iou cell held after epoch 1", lambda: (gate / "iou.held").exists() and (gate / "iou.held").read_text(), proc, log)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    code, text = _finish(proc, log)
    assert code == 0, text
    assert _results(out) == {k: v for k, v in reference.items() if k == _record(out, "iou")["id"]}
    assert [a["status"] for a in _record(out, "iou")["attempts"]] == ["interrupted", "done"]
    job_log = "".join(p.read_text() for p in (out / "slurm").glob(f"{job}/*.err"))
    assert "Caught signal SIGUSR2" in job_log and f"JOB {job} ON" in job_log and "DUE TO JOB REQUEUE" in job_log, job_log


def _node_cpus() -> int:
    from scabench.bench import slurm_cluster

    part = slurm_cluster.default_partition(slurm_cluster.partitions())
    return max(n.cpus for n in part.nodes)


@pytest.mark.parametrize("resources, said", [
    ("{cpus_per_cell: CPUS_PLUS_ONE}", r"cpus_per_cell \d+ \(no node has that many CPUs\)"),
    ("{mem_gb: 100000}", r"mem_gb 100000 \(no node has that much memory\)"),
    ("{partition: nowhere}", r"partition 'nowhere' does not exist; partitions: \S+ \(default\)"),
    ("{time_min: 100000}", r"time_min 100000 \(above the partition's time limit, \d+ min\)"),
    ("{slurm_additional: {tmp: 100G}}", r"sbatch refused the jobs: .*Temporary disk specification can not be satisfied"),
    ("{slurm_additional: {ntasks: 4}}", r"SLURM will never start job \d+(_\d+)?: it is pending with reason PartitionConfig.*The jobs were cancelled"),
], ids=["cpus", "memory", "partition", "time", "sbatch-refuses", "pending-forever"])
def test_a_request_no_node_can_run_is_refused_at_once(cluster, tmp_path, monkeypatch, resources, said):
    """Exit 2 at once, naming what is too large and what the partition offers; no job waits."""
    name = f"slurm-refused-{uuid.uuid4().hex[:8]}"
    grid = _grid(tmp_path, name, losses="iou", resources=resources.replace("CPUS_PLUS_ONE", str(_node_cpus() + 1)))
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "slurm", "--no-report"])
    text = result.stdout + result.stderr
    assert result.exit_code == 2, text
    flat = " ".join(text.split())
    assert re.search(said, flat), text
    if "partition 'nowhere'" not in said:
        assert re.search(r"partition \S+ offers 1 node: \d+ CPUs, \d+ GB, no GPUs, time limit", flat), text
    assert not re.search(r"\b(PENDING|RUNNING)\b", _queued(name))  # nothing left waiting


# --------------------------------------------------------------------------------------
# No cluster needed: the parsing and the defaults


def test_slurm_times_and_gres():
    from scabench.bench.slurm_cluster import _gpus, parse_time

    assert [parse_time(t) for t in ("30:00", "12:00:00", "1-00:00:00", "2-12", "infinite", "45")] == [30, 720, 1440, 3600, None, 45]
    assert [_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:4(S:0-1)", "gpu:a:2,gpu:b:2")] == [0, 4, 4, 4]


def _parts(cpus=2, mem_mb=8192, gpus=0, limit=720):
    from scabench.bench.slurm_cluster import Node, Partition

    return {"cpu": Partition("cpu", True, limit, (Node("n1", cpus, mem_mb, gpus, "idle"),))}


def test_defaults_fit_the_partition_and_refusals_say_what_it_offers():
    from scabench.bench.config import parse_grid
    from scabench.bench.grid import expand
    from scabench.bench.runner import CannotRun
    from scabench.bench.slurm_cluster import check_request
    from scabench.bench.slurm_executor import executor_parameters

    grid = parse_grid("name: d\ndetectors: [yolov3-tiny]\nlosses: [iou]\n", "g.yaml", check_trainer=False)
    params = executor_parameters(expand(grid), cluster="slurm", resources=grid.config.resources, grid_name="d", parts=_parts())
    assert (params["cpus_per_task"], params["timeout_min"], "gpus_per_node" in params) == (2, 720, False)  # 2 workers + 1, capped
    params = executor_parameters(expand(grid), cluster="slurm", resources=grid.config.resources, grid_name="d", parts=_parts(cpus=8, gpus=4))
    assert (params["cpus_per_task"], params["gpus_per_node"]) == (3, 1)
    sim = parse_grid("name: s\nsimulate: {studies: [gradients]}\n", "g.yaml", check_trainer=False)
    assert executor_parameters(expand(sim), cluster="slurm", resources=sim.config.resources, grid_name="s", parts=_parts())["cpus_per_task"] == 1
    with pytest.raises(CannotRun, match=r"1 GPU per cell .*partition cpu offers 1 node: 2 CPUs, 8 GB, no GPUs, time limit 12:00:00"):
        check_request(None, cpus=1, mem_gb=None, gpus=1, time_min=60, parts=_parts())
    check_request(None, cpus=2, mem_gb=8, gpus=0, time_min=720, parts=_parts())  # fits exactly


def test_progress_line_names_the_pending_reasons():
    from scabench.bench.slurm_executor import _summary

    states = {"7_0": ("RUNNING", "None"), "7_1": ("PENDING", "Resources"), "7_2": ("PENDING", "Priority")}
    assert _summary(states, dict.fromkeys(states)) == "2 pending (Resources, Priority), 1 running"
