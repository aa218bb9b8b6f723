"""Timing the convergence study: per-loss time per step against a memory-copy floor and baselines.

The floor is one copy of the (x, y, w, h) state (read + write), what an implementation that
passes over the state once per step cannot beat (the fused C kernel beats it by keeping boxes
in registers for all steps). Baselines, measured in the same run: eager autograd (a few steps
at full scale, ``eager_ms``) and, for the losses it implements, the fused C kernel
(``kernel_ms``). :func:`benchmark` times a fresh phase (compiled into empty caches: cold) and
a cached one (loaded from those caches, as a new process would: warm); ``scabench simulate
bench`` prints it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from scabench.bench.studies import compiled
from scabench.bench.studies import kernel as fused
from scabench.bench.studies.convergence import ConvergenceResult, simulate_convergence
from scabench.bench.studies.defaults import CONVERGENCE_LOSSES, DEVICE, DTYPE, ENGINE, ITERATIONS, POINTS
from scabench.bench.studies.inputs import LossSpecs, as_device, as_dtype, resolve_losses
from scabench.bench.studies.protocol import CASES_PER_POINT

TIMING_COLUMNS = (
    "phase", "loss", "engine", "seconds", "compile_seconds", "cpu_seconds", "ms_per_step", "floor_ms",
    "ratio_to_floor", "eager_ms", "x_eager", "kernel_ms", "x_kernel", "E0", "E_final",
)
BASELINE_STEPS = 3  # eager autograd steps timed at full scale (one takes about a second)


def memory_floor_ms(n_cases: int, dtype: str | torch.dtype = torch.float32, repeats: int = 15,
                    device: str | torch.device = "cpu") -> float:
    """Time (ms) to read and write the (x, y, w, h) state of ``n_cases`` once: a copy.

    On the CPU the faster of a single-threaded copy (numpy) and torch's threaded ``copy_``
    (median of ``repeats`` each): on a busy machine torch's thread pool can make a copy several
    times slower than one thread does, and the floor should be the best this machine can do now.
    """
    dev = as_device(device)
    src = torch.rand(4, n_cases, dtype=as_dtype(dtype), device=dev)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def median_ms(copy: Callable[[], Any]) -> float:
        copy()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            sync()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    if dev.type != "cpu":
        return median_ms(lambda: dst.copy_(src))
    src_np, dst_np = src.numpy(), dst.numpy()
    return min(median_ms(lambda: dst.copy_(src)), median_ms(lambda: np.copyto(dst_np, src_np)))


def load_average() -> float:
    """1-minute load average (nan where the OS has none): how shared the machine was."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def timing_table(result: ConvergenceResult, floor_ms: float = float("nan"), phase: str = "",
                 baselines: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per loss of ``result`` (columns ``TIMING_COLUMNS``): its time per step (compile
    excluded) against ``floor_ms`` (:func:`memory_floor_ms`; nan: not measured) and the
    ``baselines`` (loss -> {"eager_ms", "kernel_ms"}; nan where absent), and E(0), E(T)."""
    rows = []
    for label, seconds in result.seconds.items():
        errors = result.curves.loc[result.curves["loss"] == label, "error"]
        compile_s = result.step_compile_seconds.get(label, 0.0)
        per_step = 1000 * (seconds - compile_s) / result.iterations
        base = (baselines or {}).get(label, {})
        eager_ms, kernel_ms = base.get("eager_ms", float("nan")), base.get("kernel_ms", float("nan"))
        rows.append(
            {
                "phase": phase,
                "loss": label,
                "engine": result.engines[label],
                "seconds": seconds,
                "compile_seconds": compile_s,
                "cpu_seconds": result.cpu_seconds[label],
                "ms_per_step": per_step,
                "floor_ms": floor_ms,
                "ratio_to_floor": per_step / floor_ms,
                "eager_ms": eager_ms,
                "x_eager": eager_ms / per_step,
                "kernel_ms": kernel_ms,
                "x_kernel": per_step / kernel_ms,
                "E0": float(errors.iloc[0]),
                "E_final": float(errors.iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=list(TIMING_COLUMNS))


def measure_baselines(losses: LossSpecs, *, points: int, iterations: int, dtype: str, device: str,
                      threads: int | None, engine: str, eager_steps: int = BASELINE_STEPS) -> dict[str, dict[str, float]]:
    """loss -> ms per step of eager autograd (``eager_steps`` steps at this scale; 0: skip)
    and, when the engine timed is ``compiled`` or ``autograd``, of the C kernel where it
    applies (all steps; under ``auto`` the kernel is what runs those losses)."""
    refs = resolve_losses(losses)
    out: dict[str, dict[str, float]] = {r.label: {} for r in refs}
    if eager_steps > 0:
        eager = simulate_convergence(refs, points=points, iterations=min(eager_steps, iterations), dtype=dtype,
                                     device=device, engine="autograd", threads=threads)
        for label, seconds in eager.seconds.items():
            out[label]["eager_ms"] = 1000 * seconds / eager.iterations
    in_kernel = [r for r in refs if fused.kernel_supports(r.build(), as_device(device)) is None]
    if in_kernel and engine in ("compiled", "autograd") and fused.find_compiler() is not None:
        kernel = simulate_convergence(in_kernel, points=points, iterations=iterations, dtype=dtype, device=device,
                                      engine="kernel", threads=threads)
        for label, seconds in kernel.seconds.items():
            out[label]["kernel_ms"] = 1000 * seconds / kernel.iterations
    return out


def benchmark(
    losses: LossSpecs = CONVERGENCE_LOSSES,
    *,
    points: int = POINTS,
    iterations: int = ITERATIONS,
    dtype: str = DTYPE,
    engine: str = ENGINE,
    device: str = DEVICE,
    threads: int | None = None,
    fresh: bool = True,
    eager_steps: int = BASELINE_STEPS,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Time the convergence study: a row per loss and phase (``fresh``: the C kernel and the
    compiled steps built into empty caches, compile included; ``cached``: loaded from those
    caches, as a new process would), with ms per step (compile excluded) and its ratios to
    :func:`memory_floor_ms` (measured just before each phase, so that both see the same
    machine load) and to the baselines of :func:`measure_baselines`. Returns (table, totals):
    totals hold the load average at start, the threads and CPUs, and per phase its wall
    seconds, kernel compile seconds (``<phase>_compile``) and the compiled engine's seconds
    of tracing and compiling or loading (``<phase>_step_compile``)."""
    n_cases = points * CASES_PER_POINT
    results = {}
    totals = {"load_average": load_average(), "threads": threads or torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="scabench-bench-") as tmp:
        inductor_dir = os.path.join(tmp, "inductor") if fresh else None
        with fused.kernel_cache(tmp if fresh else None), compiled.inductor_cache(inductor_dir):
            for phase in ("fresh", "cached") if fresh else ("cached",):
                fused.unload_kernels()  # load (or build) from the cache folder as a new process would
                compiled.forget_compiled(memory=True)
                floor = memory_floor_ms(n_cases, dtype, device=device)
                start = time.perf_counter()
                result = simulate_convergence(
                    losses, points=points, iterations=iterations, dtype=dtype, engine=engine, device=device, threads=threads
                )
                totals[phase] = time.perf_counter() - start
                totals[f"{phase}_compile"] = result.compile_seconds
                totals[f"{phase}_step_compile"] = sum(result.step_compile_seconds.values())
                results[phase] = (result, floor)
    baselines = measure_baselines(losses, points=points, iterations=iterations, dtype=dtype, device=device,
                                  threads=threads, engine=engine, eager_steps=eager_steps)
    frames = [timing_table(result, floor, phase, baselines) for phase, (result, floor) in results.items()]
    return pd.concat(frames, ignore_index=True), totals
