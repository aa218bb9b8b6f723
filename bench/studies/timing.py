"""Timing the convergence study: per-loss time per step against a memory-copy floor.

The floor is one copy of the (x, y, w, h) state (read + write), what an implementation that
passes over the state once per step cannot beat; the fused kernel keeps boxes in registers for
all steps. :func:`benchmark` times a fresh phase (the kernel compiled into an empty cache) and
a cached one; ``scabench simulate bench`` prints it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from scabench.bench.studies import kernel as fused
from scabench.bench.studies.convergence import ConvergenceResult, simulate_convergence
from scabench.bench.studies.defaults import CONVERGENCE_LOSSES, DTYPE, ENGINE, ITERATIONS, POINTS
from scabench.bench.studies.inputs import LossSpecs, as_dtype
from scabench.bench.studies.protocol import CASES_PER_POINT

TIMING_COLUMNS = (
    "phase", "loss", "engine", "seconds", "cpu_seconds", "ms_per_step", "floor_ms", "ratio_to_floor", "E0", "E_final",
)


def memory_floor_ms(n_cases: int, dtype: str | torch.dtype = torch.float32, repeats: int = 15) -> float:
    """Time (ms) to read and write the (x, y, w, h) state of ``n_cases`` once: a copy.

    The faster of a single-threaded copy (numpy) and torch's threaded ``copy_`` (median of
    ``repeats`` each): on a busy machine torch's thread pool can make a copy several times
    slower than one thread does, and the floor should be the best this machine can do now.
    """
    src = torch.rand(4, n_cases, dtype=as_dtype(dtype))
    dst = torch.empty_like(src)
    src_np, dst_np = src.numpy(), dst.numpy()

    def median_ms(copy: Callable[[], Any]) -> float:
        copy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    return min(median_ms(lambda: dst.copy_(src)), median_ms(lambda: np.copyto(dst_np, src_np)))


def load_average() -> float:
    """1-minute load average (nan where the OS has none): how shared the machine was."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def timing_table(result: ConvergenceResult, floor_ms: float = float("nan"), phase: str = "") -> pd.DataFrame:
    """One row per loss of ``result`` (columns ``TIMING_COLUMNS``): its time per step against
    ``floor_ms`` (:func:`memory_floor_ms`; nan: not measured), and E(0), E(T)."""
    rows = []
    for label, seconds in result.seconds.items():
        errors = result.curves.loc[result.curves["loss"] == label, "error"]
        per_step = 1000 * seconds / result.iterations
        rows.append(
            {
                "phase": phase,
                "loss": label,
                "engine": result.engines[label],
                "seconds": seconds,
                "cpu_seconds": result.cpu_seconds[label],
                "ms_per_step": per_step,
                "floor_ms": floor_ms,
                "ratio_to_floor": per_step / floor_ms,
                "E0": float(errors.iloc[0]),
                "E_final": float(errors.iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=list(TIMING_COLUMNS))


def benchmark(
    losses: LossSpecs = CONVERGENCE_LOSSES,
    *,
    points: int = POINTS,
    iterations: int = ITERATIONS,
    dtype: str = DTYPE,
    engine: str = ENGINE,
    threads: int | None = None,
    fresh: bool = True,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Time the convergence study: a row per loss and phase (``fresh``: compile included,
    into an empty cache; ``cached``: the library from that cache), with ms per step and its
    ratio to :func:`memory_floor_ms` measured just before each phase (so that both see the
    same machine load). Returns (table, totals): totals hold the load average at start, the
    threads and CPUs, and per phase its wall seconds and kernel compile seconds (``<phase>_compile``)."""
    n_cases = points * CASES_PER_POINT
    frames = []
    totals = {"load_average": load_average(), "threads": threads or torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="scabench-bench-") as tmp, fused.kernel_cache(tmp if fresh else None):
        for phase in ("fresh", "cached") if fresh else ("cached",):
            fused.unload_kernels()  # load (or build) from the cache folder as a new process would
            floor = memory_floor_ms(n_cases, dtype)
            start = time.perf_counter()
            result = simulate_convergence(
                losses, points=points, iterations=iterations, dtype=dtype, engine=engine, threads=threads
            )
            totals[phase] = time.perf_counter() - start
            totals[f"{phase}_compile"] = result.compile_seconds
            frames.append(timing_table(result, floor, phase))
    return pd.concat(frames, ignore_index=True), totals
