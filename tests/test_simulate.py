"""The synthetic-box studies (bench/studies/), at reduced scale.

The convergence study is checked against a plain-autograd reference loop written out below
(flat layout, one case per row, nothing shared with the study's code but the losses), in
float64, for the fused kernel and the generic engine alike. Expected values that are not
computed by a reference are derived by hand in the test's docstring.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scabench import losses
from scabench.bench import studies as S
from scabench.bench.studies import defaults as D
from scabench.bench.studies import engine
from scabench.bench.studies import kernel as K
from scabench.losses.iou import box_iou_pairwise

FIVE = ("iou", "giou", "diou", "ciou", "sca")
needs_kernel = pytest.mark.skipif(K.find_compiler() is None, reason="no C compiler for the fused kernel")


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_point_errors(name: str, points: int, iterations: int, seed: int = 0) -> np.ndarray:
    """[P, T + 1] per-point errors of the DIoU protocol by plain autograd in float64.

    Cases in the MATLAB order (point, target, scale, ratio), one row each; every step
    B <- B - eta (2 - IoU) dL/dB on (x, y, w, h), with dL/dB from torch.autograd.
    """
    cases = S.convergence_cases(points, seed)
    n_anchor = S.CASES_PER_POINT // 7
    x = cases.points[:, 0].repeat_interleave(S.CASES_PER_POINT)
    y = cases.points[:, 1].repeat_interleave(S.CASES_PER_POINT)
    w = cases.anchors[..., 0].reshape(-1).repeat(points)
    h = cases.anchors[..., 1].reshape(-1).repeat(points)
    goal = cases.targets.repeat_interleave(n_anchor, dim=0).repeat(points, 1)  # [N, 4] cx cy w h
    target = torch.stack(
        (goal[:, 0] - goal[:, 2] / 2, goal[:, 1] - goal[:, 3] / 2, goal[:, 0] + goal[:, 2] / 2, goal[:, 1] + goal[:, 3] / 2),
        dim=-1,
    )
    loss = losses.get_loss(name)
    box = torch.stack((x, y, w, h), dim=-1)  # [N, 4] x y w h

    def point_error(b):
        return (b - goal).abs().sum(-1).view(points, -1).sum(-1)

    out = [point_error(box)]
    for eta in S.schedule_rates(D.SCHEDULE, iterations):
        b = box.clone().requires_grad_(True)
        pred = torch.stack((b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2), -1)
        (grad,) = torch.autograd.grad(loss(pred, target).sum(), b)
        iou = box_iou_pairwise(pred.detach(), target)
        box = box - (eta * (2 - iou))[:, None] * grad
        out.append(point_error(box))
    return torch.stack(out, dim=1).numpy()


# --------------------------------------------------------------------------------------
# convergence: cases, start, protocol


def test_case_count_is_points_times_343():
    cases = S.convergence_cases(points=3, seed=1)
    assert len(cases) == cases.n_cases == 3 * 343
    assert cases.start_state().shape == (4, 3, 7, 49)
    result = S.simulate_convergence(["iou", "giou"], points=3, iterations=2)
    assert result.cases == 1029
    assert list(result.curves.columns) == ["loss", "iteration", "error"]
    assert list(result.by_point.columns) == ["loss", "x", "y", "error"]
    assert result.curves.groupby("loss").size().tolist() == [3, 3]  # t = 0, 1, 2
    assert result.by_point.groupby("loss").size().tolist() == [3, 3]


def test_points_uniform_in_the_radius_3_disc():
    xy = S.sample_points(4000, seed=0)
    r = (xy - 10).norm(dim=-1)
    assert float(r.max()) <= 3
    # uniform in area: P(r < 1.5) = (1.5 / 3)^2 = 1/4
    assert abs(float((r < 1.5).double().mean()) - 0.25) < 0.03


@needs_kernel
def test_start_error_equals_the_hand_computed_sum():
    """E(0) = 343 * sum_p (|px - 10| + |py - 10|) + P * sum_{t,k,r} (|w_a - w_t| + |h_a - h_t|)

    with target t of area 1 and ratio r_t: (w_t, h_t) = (sqrt(r_t), 1/sqrt(r_t)); anchor of
    area k and ratio r: (sqrt(k r), sqrt(k / r)); k in {0.5, 0.67, 0.75, 1, 1.33, 1.5, 2},
    ratios in {1/4, 1/3, 1/2, 1, 2, 3, 4}. Written with math, per the MATLAB loops.
    """
    points, seed = 5, 3
    xy = S.sample_points(points, seed).tolist()
    ratios = [1 / 4, 1 / 3, 1 / 2, 1, 2, 3, 4]
    scales = [0.5, 0.67, 0.75, 1, 1.33, 1.5, 2]
    shape = sum(
        abs(math.sqrt(k * r) - math.sqrt(rt)) + abs(math.sqrt(k / r) - 1 / math.sqrt(rt))
        for rt in ratios
        for k in scales
        for r in ratios
    )
    expected = 343 * sum(abs(px - 10) + abs(py - 10) for px, py in xy) + points * shape
    assert S.start_error(S.convergence_cases(points, seed)) == pytest.approx(expected, rel=1e-12)
    for engine, dtype, rel in (("kernel", "float64", 1e-12), ("autograd", "float64", 1e-12), ("kernel", "float32", 1e-6)):
        result = S.simulate_convergence(["diou"], points=points, iterations=1, seed=seed, engine=engine, dtype=dtype)
        assert result.curves["error"].iloc[0] == pytest.approx(expected, rel=rel), (engine, dtype)


def test_iou_stalls_while_diou_and_ciou_converge():
    """As in the DIoU paper: IoU gives no gradient to disjoint boxes, so its error stays near
    E(0) (paper: 5.9e6 of 6.5e6), while DIoU and CIoU drive it close to 0."""
    result = S.simulate_convergence(["iou", "diou", "ciou"], points=24, seed=0)
    curves = result.curves.pivot(index="iteration", columns="loss", values="error")
    start = curves.iloc[0]
    assert curves["iou"].iloc[-1] / start["iou"] > 0.8
    assert curves["iou"].iloc[-1] < start["iou"]  # the overlapping cases do converge
    for name in ("diou", "ciou"):
        assert curves[name].iloc[-1] / start[name] < 0.02, name  # full scale: 0.008 and 0.001
    # The IoU loss's stuck cases are the disjoint ones: their gradient is exactly zero.
    cases = S.convergence_cases(2, 0)
    state = cases.start_state().requires_grad_(True)
    target = cases.target_boxes()
    pred = S.state_to_xyxy(state)
    (grad,) = torch.autograd.grad(losses.get_loss("iou")(pred, target).sum(), state)
    disjoint = box_iou_pairwise(pred.detach(), target) == 0
    assert bool(disjoint.any()) and bool((grad[:, disjoint] == 0).all())


@needs_kernel
@pytest.mark.parametrize("name", FIVE)
def test_fast_path_equals_the_reference_loop(name):
    """The fused kernel (float64 and float32) and the generic engine against the reference."""
    points, steps = 3, 25
    reference = reference_point_errors(name, points, steps)
    cases = S.convergence_cases(points, 0)
    rates = S.schedule_rates(D.SCHEDULE, steps)
    loss = losses.get_loss(name)
    kernel64 = K.run_kernel(loss, cases, rates, dtype=torch.float64, threads=2)
    generic = engine.run_autograd(loss, cases, rates, dtype=torch.float64, device=torch.device("cpu"))
    kernel32 = K.run_kernel(loss, cases, rates, dtype=torch.float32, threads=1)
    e0 = reference[:, 0].sum()
    # One step: the gradients themselves agree to rounding.
    np.testing.assert_allclose(kernel64[:, 1], reference[:, 1], rtol=1e-12)
    np.testing.assert_allclose(generic, reference, rtol=1e-12, atol=1e-9)
    # Many steps: rounding may tip a box across a kink of min/max, so compare the sums.
    assert np.abs(kernel64.sum(0) - reference.sum(0)).max() < 1e-8 * e0
    assert np.abs(kernel32.sum(0) - reference.sum(0)).max() < 2e-4 * e0


@needs_kernel
def test_kernel_and_generic_engine_agree_through_the_public_api():
    a = S.simulate_convergence(FIVE, points=2, iterations=12, engine="kernel", dtype="float64")
    b = S.simulate_convergence(FIVE, points=2, iterations=12, engine="autograd", dtype="float64")
    assert set(a.engines.values()) == {"kernel"} and set(b.engines.values()) == {"autograd"}
    np.testing.assert_allclose(a.curves["error"], b.curves["error"], rtol=1e-9)
    np.testing.assert_allclose(a.by_point["error"], b.by_point["error"], rtol=1e-8)


@needs_kernel
def test_iou_kernel_skips_frozen_groups_exactly():
    """The IoU kernel stops a lane group once no box in it moves (all disjoint: zero gradient);
    the skipped steps would repeat exactly, so the errors equal the generic engine's."""
    a = S.simulate_convergence(["iou"], points=40, iterations=30, engine="kernel", dtype="float64")
    b = S.simulate_convergence(["iou"], points=40, iterations=30, engine="autograd", dtype="float64")
    np.testing.assert_allclose(a.by_point["error"], b.by_point["error"], rtol=1e-10)
    np.testing.assert_allclose(a.curves["error"], b.curves["error"], rtol=1e-10)


@needs_kernel
def test_sca_alpha_reaches_the_kernel():
    a = S.simulate_convergence([("sca", {"alpha": 0.5})], points=2, iterations=5, engine="kernel", dtype="float64")
    b = S.simulate_convergence([("sca", {"alpha": 0.5})], points=2, iterations=5, engine="autograd", dtype="float64")
    assert a.curves["loss"].iloc[0] == "sca(alpha=0.5)"
    np.testing.assert_allclose(a.curves["error"], b.curves["error"], rtol=1e-10)


def test_other_losses_take_the_compiled_engine():
    result = S.simulate_convergence(["iou+cd", "eiou"], points=2, iterations=3)
    assert result.engines == {"iou+cd": "compiled", "eiou": "compiled"}
    with pytest.raises(ValueError, match="no fused kernel"):
        S.simulate_convergence(["iou+cd"], points=2, iterations=3, engine="kernel")


def test_deterministic_for_a_seed():
    a = S.simulate_convergence(["giou"], points=4, iterations=20, seed=5)
    b = S.simulate_convergence(["giou"], points=4, iterations=20, seed=5, threads=2)
    c = S.simulate_convergence(["giou"], points=4, iterations=20, seed=6)
    assert a.curves.equals(b.curves) and a.by_point.equals(b.by_point)
    assert not a.curves.equals(c.curves)


def test_without_the_kernel_auto_falls_back_to_the_compiled_engine(monkeypatch, tmp_path):
    monkeypatch.setattr(K, "find_compiler", lambda: None)
    with K.kernel_cache(tmp_path):
        K.unload_kernels()
        with pytest.raises(S.KernelUnavailable):
            K.load_kernel(torch.float32, tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = S.simulate_convergence(["iou"], points=1, iterations=2)
    assert result.engines == {"iou": "compiled"}
    assert any("using the compiled engine" in str(w.message) for w in caught)


def test_schedule():
    assert S.parse_schedule(D.SCHEDULE) == [(0.1, 160), (0.01, 180), (0.001, None)]
    rates = S.schedule_rates(D.SCHEDULE, 200)
    assert rates[0] == rates[159] == 0.1 and rates[160] == rates[179] == 0.01 and rates[180] == rates[-1] == 0.001
    assert S.schedule_rates("0.1", 3) == [0.1] * 3
    assert S.schedule_rates("0.5:1,0.2", 3) == [0.5, 0.2, 0.2]
    for bad in ("", "0.1:x", "0.1:10", "0.1,0.2", "0.1:20,0.2:10,0.3", "-1", "nan"):
        with pytest.raises(ValueError):
            S.parse_schedule(bad)


def test_loss_names_are_checked():
    with pytest.raises(ValueError, match="available"):
        S.resolve_losses("iou,nope")
    with pytest.raises(ValueError, match="repeat"):
        S.resolve_losses("iou,iou")
    assert [r.label for r in S.resolve_losses(["iou", ("sca", {"alpha": 2.0}), {"name": "diou"}])] == [
        "iou",
        "sca(alpha=2)",
        "diou",
    ]


# --------------------------------------------------------------------------------------
# gradient magnitude


def test_gradient_table_on_hand_checked_pairs():
    """Three pairs against the target G = [0, 0, 1, 1]:

    - P1 = [0.5, 0.25, 1.5, 1.25]: I = 0.5 * 0.75 = 0.375, U = 2 - 0.375 = 1.625,
      IoU = 0.2308 -> bin [0.2, 0.3), centre 0.25. IoU loss L = 1 - I/U,
      dL/dp = -(U dI - I dU) / U^2 with dI = (-0.75, -0.5, 0, 0), dU = (-0.25, -0.5, 1, 1)
      (x1, y1, x2, y2): dL/dp = (1.125, 0.625, 0.375, 0.375) / 2.640625,
      norm = sqrt(1.9375) / 2.640625 = 0.527124.
    - P2 = [2, 0.5, 3, 1.5]: disjoint (IoU 0, bin centre 0.0). IoU loss: no gradient (0).
      GIoU: C = 3 * 1.5 = 4.5, U = 2, L = 1 + (C - U)/C; dL/dC = U/C^2 = 8/81,
      dL/dU = -1/C = -2/9; dC = (0, 0, 1.5, 3), dU = (-1, -1, 1, 1) -> dL/dp =
      (2/9, 2/9, -2/27, 2/27), norm = sqrt(80/729) = 0.331269.
    - P3 = G: IoU 1/(1 + eps) -> last bin, centre 0.95; at a perfect match every min/max
      ties, torch splits the gradient in half and the IoU loss gradient vanishes (~eps).
    """
    target = torch.tensor([[0.0, 0, 1, 1]] * 3, dtype=torch.float64)
    pred = torch.tensor([[0.5, 0.25, 1.5, 1.25], [2, 0.5, 3, 1.5], [0, 0, 1, 1]], dtype=torch.float64)
    table = S.gradient_table(["iou", "giou"], pred, target).set_index(["loss", "iou"])
    assert list(table.index.get_level_values("iou").unique()) == [0.0, 0.25, 0.95]
    assert (table["n"] == 1).all()
    assert table.loc[("iou", 0.25), "grad_norm"] == pytest.approx(math.sqrt(1.9375) / 2.640625, rel=1e-6)
    assert table.loc[("iou", 0.0), "grad_norm"] == 0.0
    assert table.loc[("giou", 0.0), "grad_norm"] == pytest.approx(math.sqrt(80 / 729), rel=1e-6)
    assert table.loc[("iou", 0.95), "grad_norm"] < 1e-6


def test_gradient_study_fills_every_bin():
    frame = S.simulate_gradients(["iou", "sca"], pairs_per_bin=20, bins=5, seed=1)
    assert list(frame.columns) == ["loss", "iou", "grad_norm", "n"]
    for _, data in frame.groupby("loss"):
        assert data["iou"].round(6).tolist() == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
        assert (data["n"] == 20).all()
    pred, target = S.gradient_pairs(20, bins=5, seed=1)
    assert len(pred) == 6 * 20
    area = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    torch.testing.assert_close(area, torch.ones_like(area))  # scale-normalised targets
    sca = frame[frame["loss"] == "sca"].set_index("iou")["grad_norm"]
    iou = frame[frame["loss"] == "iou"].set_index("iou")["grad_norm"]
    assert iou[0.0] == 0 and (sca > iou).all()  # the paper's Fig. 1 left: SCA above IoU


# --------------------------------------------------------------------------------------
# corner vs centre


def test_corner_center_starts_at_iou_005():
    pred, target = S.corner_center_starts(start_iou=0.05, directions=2, seed=0)
    assert len(pred) == 7 * 7 * 3 * 2
    to_xyxy = lambda b: torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), dim=-1)  # noqa: E731
    torch.testing.assert_close(
        box_iou_pairwise(to_xyxy(pred), to_xyxy(target), eps=0.0), torch.full((len(pred),), 0.05, dtype=torch.float64)
    )


def test_corner_center_progress():
    """Both variants rise from 0.05 step by step; corner alignment rises faster (Fig. 1 right).

    With a fixed step, boxes that reach their target bounce around it (the Euclidean corner
    distance keeps a gradient of norm ~1 at the optimum; IoU has kinks there), so once some
    boxes have arrived the mean may dip a little: it never falls 0.01 below its best so far."""
    frame = S.simulate_corner_center(iterations=250, directions=1)
    assert list(frame.columns) == ["variant", "iteration", "iou"]
    curves = frame.pivot(index="iteration", columns="variant", values="iou")
    assert curves.iloc[0].tolist() == pytest.approx([0.05, 0.05], abs=1e-8)  # eps = 1e-7 in the union
    for variant in ("corner", "center"):
        iou = curves[variant].to_numpy()
        assert (np.diff(iou[:50]) > 0).all(), variant
        assert (np.maximum.accumulate(iou) - iou).max() < 0.01, variant
        assert iou[-1] > 0.6, variant
    assert (curves["corner"].iloc[1:100] > curves["center"].iloc[1:100]).all()


# --------------------------------------------------------------------------------------
# writing: CSVs, figures, CLI


def test_run_study_writes_csvs_and_figures(tmp_path):
    paths = S.run_study("convergence", ["iou", "sca"], tmp_path, points=2, iterations=3)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["convergence.csv", "final_error_by_point.csv"]
        + [f"{stem}.{ext}" for stem in ("convergence", "final_error_maps") for ext in ("png", "pdf")]
    )
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left

    more = tmp_path / "more"
    S.run_study("gradients", "iou,giou", more, pairs_per_bin=3, bins=2, figures=False)
    S.run_study("corner-center", None, more, iterations=5, directions=1, figures=False, points=9)  # another study's option: ignored
    with pytest.raises(ValueError, match="no option"):
        S.run_study("gradients", None, tmp_path, nonsense=1)
    with pytest.raises(ValueError, match="unknown study"):
        S.run_study("nope", None, tmp_path)

    from scabench.reports.simulation_figures import plot_simulations

    drawn = plot_simulations(more, tmp_path / "figures")
    assert sorted(str(p.relative_to(tmp_path)) for p in drawn) == [
        f"figures/{stem}.{ext}" for stem in ("corner_center", "gradients") for ext in ("pdf", "png")
    ]


def test_cli_usage_errors_and_a_run(tmp_path):
    from scabench.bench.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["simulate", "convergence", "--losses", "iou,nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert "unknown loss 'nope'" in bad.output and "giou" in bad.output
    assert runner.invoke(app, ["simulate", "gradients", "--bins", "0"]).exit_code == 2
    assert runner.invoke(app, ["simulate", "convergence", "--engine", "fast"]).exit_code == 2
    ok = runner.invoke(
        app,
        ["simulate", "gradients", "--losses", "iou,sca", "--pairs-per-bin", "4", "--no-figures", "--out", str(tmp_path)],
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "gradients.csv").read_text().startswith("loss,iou,grad_norm,n\n")


# --------------------------------------------------------------------------------------
# the kernel's gate, its cache, the timing harness, defaults without torch


def test_the_kernel_gate_is_the_registered_function(tmp_path):
    """The kernel runs a loss whose function is one of the five it implements (``KERNEL_IDS``),
    by whatever name it is reached (``module:function`` included); a user function that merely
    calls a built-in, a composition and any other loss take the compiled engine."""
    for name in FIVE:
        assert K.kernel_id(losses.get_loss(name)) == name
    assert K.kernel_id(losses.get_loss("sca", alpha=0.5)) == "sca"
    assert K.kernel_id(losses.get_loss("scabench.losses.iou:diou_loss")) == "diou"
    wrapper = tmp_path / "wrapped_iou.py"
    wrapper.write_text(
        "from scabench.losses.iou import iou_loss\n\n"
        "def iou(pred, target, *, eps=1e-7):\n    return iou_loss(pred, target, eps=eps)\n"
    )
    for other in ("iou+cd", "eiou", f"{wrapper}:iou"):
        assert K.kernel_id(losses.get_loss(other)) is None, other
        assert "no fused kernel" in K.kernel_supports(losses.get_loss(other), torch.device("cpu"))
    assert "CPU only" in K.kernel_supports(losses.get_loss("iou"), torch.device("meta"))
    result = S.simulate_convergence([f"{wrapper}:iou"], points=1, iterations=2)
    assert set(result.engines.values()) == {"compiled"}


@needs_kernel
def test_kernel_source_is_a_c_file_and_its_cache_is_restored(tmp_path):
    """``kernel.c`` beside the module is what gets compiled: into the folder ``kernel_cache``
    names, with the process's loaded kernels and ``SCABENCH_CACHE_DIR`` as before afterwards."""
    assert K.KERNEL_SOURCE.suffix == ".c" and "void sim_ciou(" in K.KERNEL_SOURCE.read_text()
    before = K.load_kernel(torch.float64)
    saved_env = os.environ.get("SCABENCH_CACHE_DIR")
    with K.kernel_cache(tmp_path):
        K.unload_kernels()
        built = K.load_kernel(torch.float64)
        assert built.path.parent == tmp_path / "kernels" and built.compile_seconds > 0
        assert K.load_kernel(torch.float64) is built
    assert K.load_kernel(torch.float64) is before
    assert os.environ.get("SCABENCH_CACHE_DIR") == saved_env


@needs_kernel
def test_benchmark_times_a_fresh_and_a_cached_phase():
    table, totals = S.benchmark(["giou", "eiou"], points=2, iterations=3, dtype="float64", eager_steps=1)
    assert list(table.columns) == list(S.TIMING_COLUMNS)
    assert table[["phase", "loss", "engine"]].values.tolist() == [
        ["fresh", "giou", "kernel"], ["fresh", "eiou", "compiled"],
        ["cached", "giou", "kernel"], ["cached", "eiou", "compiled"],
    ]
    assert totals["fresh_compile"] > 0 and totals["cached_compile"] == 0
    assert totals["fresh_step_compile"] > 0 and totals["cached_step_compile"] > 0  # loading takes time too
    assert (table["ratio_to_floor"] > 0).all() and (table["E_final"] < table["E0"]).all()
    assert (table["eager_ms"] > 0).all() and table["kernel_ms"].isna().all()  # auto: the kernel runs giou
    compiled, _ = S.benchmark(["giou"], points=2, iterations=3, dtype="float64", engine="compiled", eager_steps=0, fresh=False)
    assert compiled["engine"].tolist() == ["compiled"] and compiled["x_kernel"].iloc[0] > 0
    # the same numbers in both phases: the cached library is the fresh one
    fresh, cached = (table[table["phase"] == p].reset_index(drop=True) for p in ("fresh", "cached"))
    assert fresh["E_final"].tolist() == cached["E_final"].tolist()


@needs_kernel
def test_cli_bench_prints_the_timing_table():
    from scabench.bench.cli import app

    result = CliRunner().invoke(
        app, ["simulate", "bench", "--losses", "giou", "--points", "2", "--iterations", "4", "--cached-only"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "x floor" in result.output and "giou" in result.output and "kernel" in result.output
    assert "cached:" in result.output and "fresh:" not in result.output
    assert CliRunner().invoke(app, ["simulate", "bench", "--losses", "nope"]).exit_code == 2


def test_device_has_the_one_meaning():
    """``auto | cpu | cuda[:N]`` as everywhere (scabench.devices): ``auto`` runs, a misspelling
    is a ValueError naming the choices."""
    result = S.simulate_convergence(["iou"], points=1, iterations=2, device="auto", engine="autograd")
    assert result.cases == 343
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        S.simulate_gradients(["iou"], pairs_per_bin=2, bins=2, device="gpu")


def test_the_defaults_load_without_torch():
    """The CLI's defaults are the studies' own (``studies.defaults``), readable without torch,
    so that ``scabench --help`` stays fast; the study functions take the same ones."""
    code = (
        "import sys; import scabench.bench.cli_simulate, scabench.bench.studies.defaults; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    params = inspect.signature(S.simulate_convergence).parameters
    assert (params["points"].default, params["iterations"].default) == (D.POINTS, D.ITERATIONS)
    assert inspect.signature(S.simulate_corner_center).parameters["lr"].default == D.CORNER_CENTER_LR
