"""The convergence study: the DIoU paper's 1,715,000-case simulation, E(t) per loss.

Protocol and schedule: :mod:`scabench.bench.studies.protocol`. E(t) = sum over cases of
|dx| + |dy| + |dw| + |dh| after step t (t = 0 is the start); the state is float32 by default
(``dtype="float64"`` on request), sums are float64. Every step uses the *exact* gradient of
the chosen loss. Where the MATLAB code (``Zzh-tju/DIoU``, ``simulation experiment/``) differs
from exact gradients: ``In.m``/``dUbox.m`` keep the intersection unclamped, so for disjoint
boxes GIoU's union and its gradient are wrong (with that union our GIoU stalls at ~0.22 E(0),
as the paper's GIoU curve does; with the exact one it converges); ``to_xywh.m`` takes
dL/dw = dL/dr - dL/dl (twice the chain rule's); ``dDIOU.m`` flips the sign of the
enclosing-box term and mixes the width and height derivatives; ``dCIOU.m`` drops the
1/(w^2 + h^2) of the aspect term's gradient (as the CIoU paper recommends).

Engines: ``compiled`` (:mod:`~scabench.bench.studies.compiled`: any loss, its own autograd
graph compiled by inductor, any device), ``kernel`` (:mod:`~scabench.bench.studies.kernel`:
hand-derived gradients in C for the built-in five on the CPU, about 2-3x faster still) and
``autograd`` (:mod:`~scabench.bench.studies.engine`: eager, the reference). ``auto`` takes
the kernel where it applies, else the compiled engine, else (no compiler, an untraceable
loss) eager autograd with one warning.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from scabench import losses as loss_zoo
from scabench.bench.studies import compiled
from scabench.bench.studies import kernel as fused
from scabench.bench.studies.defaults import (
    CONVERGENCE_LOSSES, DEVICE, DTYPE, ENGINE, ENGINES, ITERATIONS, POINTS, SCHEDULE, SEED,
)
from scabench.bench.studies.engine import run_autograd
from scabench.bench.studies.inputs import LossSpecs, ProgressFn, as_device, as_dtype, positive, resolve_losses
from scabench.bench.studies.protocol import Schedule, convergence_cases, schedule_rates


@dataclass
class ConvergenceResult:
    """What :func:`simulate_convergence` computed.

    ``curves``: loss, iteration, error (E(t), t = 0 .. T); ``by_point``: loss, x, y, error
    (final error summed over the point's 343 cases); ``engines``: loss -> engine used;
    ``seconds``: loss -> wall seconds of its regression (kernel compile not included; the
    compiled engine's tracing and compiling included);
    ``cpu_seconds``: the same in CPU seconds of this process (all threads; on a shared
    machine, cpu_seconds / threads is what the wall time would be with the cores to itself);
    ``compile_seconds``: time spent compiling the kernel in this call (0 when cached);
    ``step_compile_seconds``: loss -> seconds the compiled engine spent tracing and compiling
    (or loading from inductor's cache), included in ``seconds``.
    """

    curves: pd.DataFrame
    by_point: pd.DataFrame
    cases: int
    points: int
    iterations: int
    engines: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    compile_seconds: float = 0.0
    step_compile_seconds: dict[str, float] = field(default_factory=dict)


def _plan(losses: LossSpecs, engine: str, device: torch.device) -> dict[str, tuple[loss_zoo.BoxLoss, str]]:
    """label -> (loss, engine it runs on); ValueError if ``engine="kernel"`` cannot run one."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    plans = {}
    for ref in resolve_losses(losses):
        loss = ref.build()
        reason = fused.kernel_supports(loss, device) if engine in ("auto", "kernel") else "not asked for"
        if engine == "kernel" and reason:
            raise ValueError(f"engine 'kernel' cannot run {ref.label!r}: {reason}")
        plans[ref.label] = (loss, "kernel" if not reason else "compiled" if engine in ("auto", "compiled") else engine)
    return plans


def _load_kernel_for(plans: dict[str, tuple[loss_zoo.BoxLoss, str]], dtype: torch.dtype, engine: str) -> float:
    """Load the kernel if a plan needs it; returns the compile seconds (0 when cached).

    Under ``auto`` a kernel that cannot be built turns those plans to the compiled engine, with a warning.
    """
    if not any(kind == "kernel" for _, kind in plans.values()):
        return 0.0
    try:
        kernel = fused.load_kernel(dtype)
    except fused.KernelUnavailable as error:
        if engine == "kernel":
            raise
        warnings.warn(f"fused kernel unavailable, using the compiled engine: {error}", RuntimeWarning, stacklevel=3)
        plans.update({label: (loss, "compiled" if kind == "kernel" else kind) for label, (loss, kind) in plans.items()})
        return 0.0
    seconds, kernel.compile_seconds = kernel.compile_seconds, 0.0  # counted once per process
    return seconds


def _regress(loss, kind, cases, rates, *, dtype, device, threads, progress, label, engine) -> tuple[np.ndarray, np.ndarray, str, float]:
    """(E(t), final error per point, the engine that ran, its compile seconds) for one loss."""
    if kind == "kernel":
        per_point = fused.run_kernel(loss, cases, rates, dtype=dtype, threads=threads, progress=progress, label=label)
        return per_point.sum(0), per_point[:, -1], kind, 0.0
    if kind == "compiled":
        try:
            run = compiled.run_compiled(loss, cases, rates, dtype=dtype, device=device, progress=progress, label=label)
            return run.curve, run.final, kind, run.compile_seconds
        except compiled.CompileUnavailable as error:
            if engine == "compiled":
                raise
            warn_eager_once(str(error))
    per_point = run_autograd(loss, cases, rates, dtype=dtype, device=device, progress=progress, label=label)
    return per_point.sum(0), per_point[:, -1], "autograd", 0.0


_WARNED: set[str] = set()


def warn_eager_once(reason: str) -> None:
    """Say once per process and reason that a loss runs on eager autograd (slow, still exact)."""
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"the compiled engine cannot run here, using eager autograd: {reason}", RuntimeWarning, stacklevel=4)


def simulate_convergence(
    losses: LossSpecs = CONVERGENCE_LOSSES,
    *,
    points: int = POINTS,
    iterations: int = ITERATIONS,
    schedule: Schedule = SCHEDULE,
    seed: int = SEED,
    device: str | torch.device = DEVICE,
    dtype: str | torch.dtype = DTYPE,
    engine: str = ENGINE,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> ConvergenceResult:
    """Run the DIoU convergence protocol for each loss (see the module docstring).

    ``engine``: ``"auto"`` (the fused kernel where it applies, else the compiled engine, else
    eager autograd with a warning), ``"kernel"`` or ``"compiled"`` (fail if it cannot be used)
    or ``"autograd"`` (eager autograd for every loss). The state is kept in ``dtype`` (float32
    by default); error sums are always accumulated in float64. ``threads``: CPU threads
    (default: torch's).
    """
    points = positive("points", points)
    iterations = positive("iterations", iterations)
    rates = schedule_rates(schedule, iterations)
    dev, dt = as_device(device), as_dtype(dtype)
    threads = positive("threads", threads) if threads is not None else max(1, torch.get_num_threads())
    plans = _plan(losses, engine, dev)
    cases = convergence_cases(points, seed)
    compile_seconds = _load_kernel_for(plans, dt, engine)

    curves, maps, seconds, cpu_seconds, engines, step_compile = [], [], {}, {}, {}, {}
    xy = cases.points.numpy()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for label, (loss, kind) in plans.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            curve, final, engines[label], step_compile[label] = _regress(
                loss, kind, cases, rates, dtype=dt, device=dev, threads=threads, progress=progress, label=label, engine=engine
            )
            seconds[label] = time.perf_counter() - start
            cpu_seconds[label] = time.process_time() - cpu_start
            curves.append(pd.DataFrame({"loss": label, "iteration": np.arange(iterations + 1), "error": curve}))
            maps.append(pd.DataFrame({"loss": label, "x": xy[:, 0], "y": xy[:, 1], "error": final}))
    finally:
        torch.set_num_threads(saved_threads)
    return ConvergenceResult(
        curves=pd.concat(curves, ignore_index=True),
        by_point=pd.concat(maps, ignore_index=True),
        cases=cases.n_cases,
        points=points,
        iterations=iterations,
        engines=engines,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        compile_seconds=compile_seconds,
        step_compile_seconds=step_compile,
    )
