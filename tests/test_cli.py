"""The command line is a thin layer: options left unset are not passed on (the called
function's defaults apply, and ``--help`` shows those), devices are checked in one way."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from scabench.bench.cli import app


def invoke(args):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    "command, source",
    [
        ("check-loss", "scabench.bench.contract:check_loss"),
        ("bench-losses", "scabench.bench.loss_speed:measure"),
        ("bench-detector", "scabench.detectors.speed:measure_speed"),
        ("gpu-check", "scabench.detectors.gpu_check:run_gpu_check"),
    ],
)
def test_help_shows_the_defaults_of_the_function_the_command_calls(command, source):
    from scabench.bench.cli_options import source_defaults

    result = invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    shown = {k: v for k, v in source_defaults(source).items() if v not in (None, False) and k != "names"}
    assert shown
    for value in shown.values():
        assert f"[default: {value}]" in result.output, (value, result.output)


def test_train_help_shows_the_trainers_defaults():
    from scabench.detectors.config import TrainConfig

    result = invoke(["train", "--help"])
    for field in ("img_size", "epochs", "loss", "device"):
        assert f"[default: {TrainConfig.model_fields[field].default}]" in result.output, field


def test_bench_detector_and_gpu_check_pass_on_only_what_is_given(monkeypatch):
    from scabench.detectors import gpu_check, speed

    calls = []
    monkeypatch.setattr(speed, "measure_speed", lambda **kw: calls.append(("speed", kw)) or [])
    monkeypatch.setattr(gpu_check, "run_gpu_check", lambda **kw: calls.append(("gpu", kw)) or 1)
    assert invoke(["bench-detector", "--iters", "3", "--quick"]).exit_code == 0
    assert invoke(["bench-detector"]).exit_code == 0
    result = invoke(["gpu-check", "--batch", "8", "--skip-train"])
    assert result.exit_code == 1  # the check's own exit code
    assert calls == [("speed", {"iters": 3, "quick": True}), ("speed", {}), ("gpu", {"batch": 8, "skip_train": True})]


def test_a_bad_device_is_a_usage_error():
    for args in (["bench-losses", "--device", "gpu", "--pairs", "10"], ["train", "--out", "x", "--device", "cuda:x"]):
        result = invoke(args)
        assert result.exit_code == 2 and "device must be auto, cpu, cuda or cuda:N" in result.output, result.output


def test_train_refuses_an_out_folder_another_run_is_writing(tmp_path):
    """``train --out`` takes the run folder's lock, the one a grid cell's process holds: while
    it is held, a second run exits 2 naming the folder before touching any file."""
    from scabench.results import RunFolder

    out = tmp_path / "run"
    with RunFolder(out).lock(cmd="the other run"):
        result = invoke(["train", "--data", "synthetic-shapes", "--train-size", "8", "--val-size", "4",
                         "--epochs", "1", "--img-size", "64", "--width", "0.25", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "another run is writing to" in result.output and str(out) in result.output
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
