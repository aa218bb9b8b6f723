"""The runner and results store: resume after kill -9, failures, locks, executors.

No training here: ``SCABENCH_CELL_FN`` points the cell processes at :func:`fake_cell` below,
which behaves like the trainer's contract (per-epoch ``metrics.jsonl`` rows, a checkpoint
after each epoch, resume from it, ``summary.json`` written last) in milliseconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scabench.results import atomic_write_json, atomic_write_text, read_json, read_jsonl

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
FAKE = f"{HERE}:fake_cell"

BASE_AP = {"iou": 0.40, "giou": 0.405, "diou": 0.402, "ciou": 0.403, "sca": 0.42}


DEADLOCK_GUARD = 600.0  # seconds: only a hung test ever waits this long, however loaded the machine


def _event(name: str, text: str) -> None:
    path = os.environ.get("FAKE_EVENTS")
    if path:
        with open(path, "a") as handle:  # O_APPEND: one short line per write
            handle.write(f"{name} {text}\n")


def _count(path: str | Path, name: str) -> int:
    try:
        return sum(line.split(" ", 1)[0] == name for line in Path(path).read_text().splitlines())
    except FileNotFoundError:
        return 0


def _barrier(parties: int) -> None:
    """Wait until ``parties`` cells have started (a file barrier across the cell processes)."""
    deadline = time.monotonic() + DEADLOCK_GUARD
    while _count(os.environ["FAKE_EVENTS"], "start") < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier: fewer than {parties} cells ever ran at the same time")
        time.sleep(0.01)


def fake_cell(config: dict, runtime: dict, out_dir: Path) -> None:
    """A trainer stand-in: FAKE_SLEEP s per epoch; FAKE_FAIL=<loss> fails; FAKE_KILL=<loss> dies;
    FAKE_BARRIER=<n>: no epoch runs before n cells have started."""
    out_dir = Path(out_dir)
    cell = out_dir.name
    if (out_dir / "summary.json").exists():
        _event("DUPLICATE", cell)  # the runner must never call a finished cell
        raise AssertionError("cell already finished")
    loss, seed = config.get("loss", "sim"), config.get("seed", 0)
    if loss == os.environ.get("FAKE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    epochs = int(config.get("epochs", 3))
    done = (read_json(out_dir / "last.json") or {}).get("epoch", 0)
    rows = [r for r in read_jsonl(out_dir / "metrics.jsonl") if r.get("epoch", 0) <= done]
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _event("start", f"{cell} {done}")
    if os.environ.get("FAKE_BARRIER"):
        _barrier(int(os.environ["FAKE_BARRIER"]))
    base = BASE_AP.get(loss, 0.41) + 0.01 * seed
    for epoch in range(done + 1, epochs + 1):
        time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
        if loss == os.environ.get("FAKE_FAIL") and epoch == 2:
            raise FloatingPointError(f"non-finite loss at epoch {epoch}")
        _event("epoch", f"{cell} {epoch}")
        with open(out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": epoch, "AP": base * epoch / epochs, "loss_box": 1.0 / epoch}) + "\n")
        atomic_write_json(out_dir / "last.json", {"epoch": epoch})
    metrics = {m: base + 0.01 * i for i, m in enumerate(["AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl"])}
    placed = {"device": runtime.get("device"), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    atomic_write_json(out_dir / "summary.json", {"config": config, "metrics": metrics, "epochs": epochs, "placed": placed})
    _event("end", cell)


GRID = """\
name: fake
detectors: [{{name: yolov3-tiny, width: 0.25}}]
train: {{epochs: {epochs}, img_size: 64}}
losses: [{losses}]
seeds: [{seeds}]
"""


def write_grid(tmp_path: Path, *, losses="iou, giou, sca", seeds="0", epochs=3, extra="") -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(losses=losses, seeds=seeds, epochs=epochs) + extra)
    return path


class Result:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def scabench(args: list[str], env: dict, monkeypatch) -> Result:
    """Run the CLI in this process (torch is imported once per session, not per call)."""
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    for key in ("FAKE_FAIL", "FAKE_KILL", "FAKE_SLEEP", "FAKE_BARRIER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def env(tmp_path):
    return {"SCABENCH_CELL_FN": FAKE, "FAKE_EVENTS": str(tmp_path / "events.log"), "COLUMNS": "200"}


def events(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "events.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def cell_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cells").iterdir() if p.is_dir())


def test_failing_cell_does_not_stop_the_others(tmp_path, env, monkeypatch):
    grid = write_grid(tmp_path, losses="iou, giou, sca")
    out = tmp_path / "out"
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], {**env, "FAKE_FAIL": "giou"}, monkeypatch)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: yolov3-tiny (w=0.25) | giou | seed 0" in result.stderr
    assert "FloatingPointError: non-finite loss at epoch 2" in result.stderr
    assert "Traceback" not in result.stderr
    statuses = {}
    for path in cell_dirs(out):
        record = read_json(path / "record.json")
        statuses[record["label"].split(" | ")[1]] = record["status"]
        if record["status"] == "failed":
            assert record["reason"] == "FloatingPointError: non-finite loss at epoch 2"
            assert "Traceback" in record["trace"] and record["attempts"][-1]["status"] == "failed"
            for key in ("host", "git", "packages", "python", "device", "started", "ended"):
                assert key in record, key
    assert statuses == {"iou": "done", "giou": "failed", "sca": "done"}

    # A rerun skips the failed cell (exit 1 again, naming it); --retry-failed runs it.
    again = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], env, monkeypatch)
    assert again.returncode == 1 and "not retried (use --retry-failed)" in again.stderr
    retry = scabench(["run", "--grid", str(grid), "--out", str(out), "--retry-failed"], env, monkeypatch)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert all(read_json(p / "record.json")["status"] == "done" for p in cell_dirs(out))
    assert not [e for e in events(tmp_path) if e[0] == "DUPLICATE"]
    assert (out / "report.md").read_text().count("| yolov3-tiny (w=0.25) |") == 3
    assert "| sca " in retry.stdout  # the table is printed
    assert (out / "figures" / "ap_by_iou.png").stat().st_size > 0
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 3 * 6


PARENT = """
import json, sys
from scabench.bench.grid import Cell
from scabench.bench.runner import run_grid
cells = [Cell(**c) for c in json.load(open(sys.argv[1]))]
sys.exit(0 if run_grid(cells, sys.argv[2], progress=False, poll=0.05).ok else 1)
"""


def _wait_for_epochs(tmp_path: Path, count: int, proc: subprocess.Popen) -> None:
    """Until ``count`` epochs have been computed in all, or ``proc`` has exited."""
    deadline = time.monotonic() + DEADLOCK_GUARD
    while _count(tmp_path / "events.log", "epoch") < count and proc.poll() is None:
        assert time.monotonic() < deadline, "no progress: the runner hangs"
        time.sleep(0.01)


def test_resume_after_kill_at_random_points(tmp_path, env):
    """kill -9 the runner at random moments; every cell ends exactly once, no row lost or doubled.

    The moments are counted in work, not time: each kill falls after 1 to 3 more epochs have
    been computed (then at a random point of the next epoch), so a slow machine kills at the same
    places as a fast one. The runner is started without the CLI from the expanded cells;
    killing it kills the cell process too (PR_SET_PDEATHSIG).
    """
    from scabench.bench.config import parse_grid
    from scabench.bench.grid import expand

    grid = parse_grid(GRID.format(losses="iou, giou, diou, sca", seeds="0, 1", epochs=4), tmp_path / "g.yaml", check_trainer=False)
    cells = [{"kind": c.kind, "config": c.config, "runtime": c.runtime, "labels": c.labels} for c in expand(grid)]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    out = tmp_path / "out"
    args = [sys.executable, "-c", PARENT, str(tmp_path / "cells.json"), str(out)]
    env = {**os.environ, **env, "FAKE_SLEEP": "0.05"}
    rng = random.Random(5)
    kills = 0
    for _ in range(5):  # at most 15 of the 32 epochs: the runner never finishes before a kill
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_epochs(tmp_path, _count(tmp_path / "events.log", "epoch") + rng.randint(1, 3), proc)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the next epoch (where does not matter)
        if proc.poll() is not None:
            break  # finished on its own
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=DEADLOCK_GUARD)
    assert final.returncode == 0, final.stdout + final.stderr
    assert kills >= 2

    log = events(tmp_path)
    assert not [e for e in log if e[0] == "DUPLICATE"], "a finished cell ran again"
    dirs = cell_dirs(out)
    assert len(dirs) == 8
    for path in dirs:
        assert read_json(path / "summary.json")["epochs"] == 4
        assert read_json(path / "record.json")["status"] == "done"
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4], path.name  # no duplicated or lost rows
    ends = [e[1] for e in log if e[0] == "end"]
    assert len(ends) == len(set(ends))  # no cell finished twice (a kill may fall after its summary)
    # A kill loses at most the epoch that was running.
    computed = sum(1 for e in log if e[0] == "epoch")
    assert 8 * 4 <= computed <= 8 * 4 + kills

    from scabench.reports.loading import load_epochs, load_runs

    assert len(load_runs(out)) == 8
    assert len(load_epochs(out)) == 8 * 4


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, env, monkeypatch):
    from scabench.results import FileLock

    grid = write_grid(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / ".run.lock"):
        result = scabench(["run", "--grid", str(grid), "--out", str(out)], env, monkeypatch)
    assert result.returncode == 2
    assert "in use by another scabench run" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())


def test_cell_process_killed_is_recorded_as_failed(tmp_path, env, monkeypatch):
    grid = write_grid(tmp_path, losses="iou, sca")
    out = tmp_path / "out"
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], {**env, "FAKE_KILL": "iou"}, monkeypatch)
    assert result.returncode == 1
    records = {read_json(p / "record.json")["label"]: read_json(p / "record.json") for p in cell_dirs(out)}
    failed = records["yolov3-tiny (w=0.25) | iou | seed 0"]
    assert failed["status"] == "failed" and "killed by signal SIGKILL" in failed["reason"]
    assert records["yolov3-tiny (w=0.25) | sca | seed 0"]["status"] == "done"


def test_dry_run_writes_nothing(tmp_path, env, monkeypatch):
    grid = write_grid(tmp_path, seeds="0, 1")
    out = tmp_path / "out"
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--dry-run"], env, monkeypatch)
    assert result.returncode == 0
    assert result.stdout.count("yolov3-tiny (w=0.25)") == 6 and "new" in result.stdout
    assert not out.exists()


def test_slurm_executor_with_submitits_local_backend(tmp_path, env, monkeypatch):
    grid = write_grid(tmp_path, losses="iou, sca")
    out = tmp_path / "out"
    result = scabench(
        ["run", "--grid", str(grid), "--out", str(out), "--executor", "slurm", "--cluster", "local", "--no-report"],
        {**env, "FAKE_FAIL": "sca"}, monkeypatch,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: yolov3-tiny (w=0.25) | sca | seed 0" in result.stderr
    statuses = sorted(read_json(p / "record.json")["status"] for p in cell_dirs(out))
    assert statuses == ["done", "failed"]
    assert (out / "slurm").is_dir()


def test_run_cell_repairs_a_record_when_the_summary_exists(tmp_path):
    """A kill between summary.json and record.json: the summary wins, nothing reruns."""
    from scabench.bench.config import parse_grid
    from scabench.bench.grid import expand
    from scabench.bench.cell import run_cell
    from scabench.bench.runner import prepare

    grid = parse_grid(GRID.format(losses="iou", seeds="0", epochs=2), tmp_path / "g.yaml", check_trainer=False)
    cells = expand(grid)
    folder = prepare(cells, tmp_path / "out", grid)
    path = folder.cell(cells[0].id).path
    atomic_write_json(path / "record.json", {"status": "running"})
    atomic_write_json(path / "summary.json", {"metrics": {"AP": 0.5}})
    assert folder.cell(cells[0].id).state().status == "done"
    assert run_cell(path) == "done"
    assert read_json(path / "record.json")["status"] == "done"


def test_cell_state_reads_a_dead_running_record_as_interrupted(tmp_path):
    from scabench.results import FileLock, cell_state

    path = tmp_path / "cell"
    path.mkdir()
    atomic_write_json(path / "record.json", {"status": "running"})
    (path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')  # torn last line
    assert cell_state(path).status == "interrupted" and cell_state(path).epochs_done == 2
    with FileLock(path / ".lock"):
        assert cell_state(path).status == "running"


def test_one_cell_per_gpu_with_several_gpus(tmp_path, env, monkeypatch):
    """--gpus 0,1: two cells at a time, each masked to its GPU (no GPU needed: the fake ignores it).

    A barrier holds the first cell until a second one has started: run one at a time, the cells
    would wait at it (and fail at the deadlock guard) instead of passing on a fast machine only.
    """
    grid = write_grid(tmp_path, losses="iou, giou, diou, sca", epochs=4)
    out = tmp_path / "out"
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--gpus", "0,1", "--no-report"], {**env, "FAKE_BARRIER": "2"}, monkeypatch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "grid (2 slots)" in result.stderr
    placed = [read_json(p / "summary.json")["placed"] for p in cell_dirs(out)]
    assert {p["device"] for p in placed} == {"cuda"}
    assert sorted(p["CUDA_VISIBLE_DEVICES"] for p in placed) == ["0", "0", "1", "1"]
    order = [e[0] for e in events(tmp_path) if e[0] in ("start", "end")]
    assert order[:2] == ["start", "start"]  # the first two cells ran at the same time


def test_cpu_cells_at_once_share_the_cores(tmp_path, env, monkeypatch):
    """resources.cpu_cells_at_once: 2 CPU cells run at the same time (the barrier proves it, as
    above), each told to use its share of the cores through OMP_NUM_THREADS."""
    grid = write_grid(tmp_path, losses="iou, giou, diou, sca", extra="resources: {cpu_cells_at_once: 2}\n")
    out = tmp_path / "out"
    result = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], {**env, "FAKE_BARRIER": "2"}, monkeypatch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "grid (2 slots)" in result.stderr
    placed = [read_json(p / "summary.json")["placed"] for p in cell_dirs(out)]
    assert {p["OMP_NUM_THREADS"] for p in placed} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert {p["CUDA_VISIBLE_DEVICES"] for p in placed} == {os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_slots_and_commands():
    from scabench.bench.cell import cell_command
    from scabench.bench.grid import Cell
    from scabench.bench.local_executor import slots

    auto = [Cell("train", {"loss": "iou"}, {"device": None}, {})]
    cpu = [Cell("train", {"loss": "iou"}, {"device": "cpu"}, {})]
    pinned = [Cell("train", {"loss": "iou"}, {"device": "cuda:1"}, {})]
    assert slots(auto, [0, 1, 2, 3], 1) == [(0,), (1,), (2,), (3,)]
    assert slots(auto, [0, 1, 2, 3, 4], 2) == [(0, 1), (2, 3)]
    assert slots(cpu, [0, 1], 1) == [None]
    assert slots(cpu, [0, 1], 1, cpu_cells=2) == [None, None]
    assert slots(auto, [], 1, cpu_cells=3) == [None, None, None]  # no GPU here: the CPU places
    assert slots(pinned, [0, 1], 1) == [None]  # an explicit cuda:N runs unmasked, in order
    ddp = cell_command(Path("/r/cells/abc"), "cuda", 4)
    assert ddp[1:6] == ["-P", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert ddp[-5:] == ["-m", "scabench.bench.runner", "/r/cells/abc", "--device", "cuda"]
    assert cell_command(Path("/r/c"), None) == [sys.executable, "-P", "-m", "scabench.bench.runner", "/r/c"]


def test_a_broken_file_is_named_on_a_rerun_and_the_cell_runs_again(tmp_path, env, monkeypatch):
    """A torn summary.json and a torn record.json: `scabench run` names each file and what is
    wrong (no bare JSONDecodeError), sets them aside and runs those cells again."""
    grid = write_grid(tmp_path, losses="iou, giou, sca")
    out = tmp_path / "out"
    first = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], env, monkeypatch)
    assert first.returncode == 0, first.stdout + first.stderr
    torn_summary, torn_record, intact = cell_dirs(out)
    (torn_summary / "summary.json").write_text('{"config": {"loss": "iou"')
    (torn_record / "record.json").write_text("")
    again = scabench(["run", "--grid", str(grid), "--out", str(out), "--no-report"], env, monkeypatch)
    assert again.returncode == 0, again.stdout + again.stderr
    said = " ".join(again.stderr.split())  # rich wraps long lines
    assert f"{torn_summary / 'summary.json'}: not valid JSON" in said
    assert f"{torn_record / 'record.json'}: empty file" in said
    assert "JSONDecodeError" not in again.stdout + again.stderr and "Traceback" not in again.stderr
    assert "1 done before" in again.stdout
    for path in (torn_summary, torn_record):
        assert read_json(path / "summary.json")["epochs"] == 3  # readable again
        assert read_json(path / "record.json")["status"] == "done"
    assert (torn_summary / "summary.json.broken").read_text() == '{"config": {"loss": "iou"'
    (repaired,) = read_json(torn_summary / "record.json")["attempts"][-1]["repaired"]
    assert repaired.startswith("summary.json was broken (not valid JSON (Expecting ")
    assert repaired.endswith("): set aside as summary.json.broken, the cell runs again")
    assert not (intact / "summary.json.broken").exists()
