"""The results-folder format (scabench.results): readers that name a broken file, the one cell
state, the run lock, the plan; all without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scabench.results import (
    BrokenResult,
    FileLock,
    GridFolder,
    LockBusy,
    RunFolder,
    cell_state,
    read_json,
    read_jsonl,
)


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "summary.json"
    assert read_json(path) is None  # absent: not an error
    path.write_text('{"metrics": {"AP": 0.4')
    with pytest.raises(BrokenResult) as caught:
        read_json(path)
    assert caught.value.path == path and "not valid JSON" in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")
    path.write_text("")
    with pytest.raises(BrokenResult, match="empty file"):
        read_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(BrokenResult, match="holds a JSON list, not an object"):
        read_json(path)


def test_jsonl_skips_a_torn_last_line_but_not_a_bad_middle_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\ngarbage\n{"epoch": 3}\n')
    with pytest.raises(BrokenResult, match="line 2 is not valid JSON"):
        read_jsonl(path)


def test_epochs_keep_the_last_version_of_an_epoch_in_epoch_order(tmp_path):
    run = RunFolder(tmp_path)
    run.append_epoch({"epoch": 2, "AP": 0.1})
    run.append_epoch({"epoch": 1, "AP": 0.2})
    run.append_epoch({"epoch": 2, "AP": 0.3})
    assert run.read_epochs() == [{"epoch": 1, "AP": 0.2}, {"epoch": 2, "AP": 0.3}]
    run.rewrite_epochs([{"epoch": 1, "AP": 0.5}])
    assert run.read_epochs() == [{"epoch": 1, "AP": 0.5}]


@pytest.mark.parametrize("name", ["config.json", "record.json", "summary.json", "metrics.jsonl"])
def test_a_broken_file_makes_the_cell_broken_naming_it(tmp_path, name):
    run = RunFolder(tmp_path / "abc123")
    run.path.mkdir()
    run.write_config({"id": "abc123", "kind": "train"})
    run.write_record({"status": "done"})
    run.write_summary({"metrics": {"AP": 0.4}})
    run.append_epoch({"epoch": 1})
    assert run.state().status == "done"
    (run.path / name).write_text("{not json\n{}\n" if name.endswith("jsonl") else "{not json")
    state = cell_state(run.path)
    assert (state.status, state.file) == ("broken", run.path / name)
    assert "not valid JSON" in state.reason
    assert [b.path.name for b in run.broken_files()] == [name]
    aside = run.set_aside(run.path / name)
    assert aside.name == name + ".broken" and not (run.path / name).exists()


def test_states_from_the_files_alone(tmp_path):
    run = RunFolder(tmp_path / "cell")
    run.path.mkdir()
    run.write_config({"kind": "train"})
    assert run.state().status == "pending"
    run.append_epoch({"epoch": 1})
    assert (run.state().status, run.state().epochs_done) == ("partial", 1)
    run.write_record({"status": "failed", "reason": "NonFiniteLossError: nan"})
    assert (run.state().status, run.state().reason) == ("failed", "NonFiniteLossError: nan")
    run.write_record({"status": "running"})
    assert run.state().status == "interrupted"  # nobody holds its lock: a dead run
    with run.lock():
        assert run.state().status == "running"
    run.write_summary({"metrics": {}})
    assert run.state().status == "done"


def test_the_run_lock_admits_one_holder_and_names_it(tmp_path):
    """What `scabench train --out` and a grid's cell process both take: a second taker is refused."""
    run = RunFolder(tmp_path / "run")
    with run.lock(cell="abc"):
        with pytest.raises(LockBusy) as caught:
            run.lock()
        assert caught.value.holder["cell"] == "abc" and "is held by pid" in str(caught.value)
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from scabench.results import RunFolder, LockBusy\n"
             "try: RunFolder(sys.argv[1]).lock()\nexcept LockBusy as e: sys.exit(3)", str(run.path)],
            capture_output=True, text=True,
        )
        assert other.returncode == 3, other.stderr  # another process too
    run.lock().release()  # free again


def test_grid_folder_plan_and_cells(tmp_path):
    folder = GridFolder(tmp_path / "results")
    assert not folder.is_results_folder() and folder.cells() == []
    for cell_id in ("b", "a"):
        folder.cell(cell_id).path.mkdir(parents=True)
        folder.cell(cell_id).write_config({"id": cell_id})
    (folder.cells_dir / "stray").mkdir()  # no config.json: not a cell
    assert [run.path.name for run in folder.cells()] == ["a", "b"]
    folder.write_plan([{"id": "b", "kind": "train", "label": "B", "status": "pending"}, {"id": "a", "kind": "train", "label": "A", "status": "done"}])
    assert folder.plan_order() == {"b": 0, "a": 1}
    with folder.lock():
        with pytest.raises(LockBusy):
            FileLock(folder.root / ".run.lock").acquire()


def test_importing_the_format_does_not_import_torch():
    code = "import sys, scabench.results; print(json.dumps('torch' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) is False
