"""Writing a study: tidy CSVs first (atomic, via :mod:`scabench.results`), figures beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from scabench.bench.studies.convergence import simulate_convergence
from scabench.bench.studies.corner_center import simulate_corner_center
from scabench.bench.studies.defaults import DEFAULT_LOSSES, DEVICE, SEED, STUDIES, STUDY_OPTIONS
from scabench.bench.studies.gradients import simulate_gradients
from scabench.bench.studies.inputs import LossSpecs, ProgressFn
from scabench.results import atomic_path


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")
    return path


def write_study(frames: Mapping[str, pd.DataFrame], out: Path | str, *, figures: bool = True) -> list[Path]:
    """Write each frame as ``out/NAME`` (a CSV name), then, if asked, the figures of each CSV.

    Returns the CSVs, then the figures (PNG and PDF), in that order.
    """
    out = Path(out)
    paths = [_write_csv(frame, out / name) for name, frame in frames.items()]
    if figures:
        from scabench.reports import simulation_figures

        for csv in list(paths):
            paths += simulation_figures.plot_csv(csv, out)
    return paths


def _frames(
    study: str, losses: LossSpecs | None, *, seed: int = SEED, device: str = DEVICE,
    progress: ProgressFn | None = None, **options: Any,
) -> dict[str, pd.DataFrame]:
    """Run ``study`` and return its frames by CSV name (``options``: that study's own only)."""
    losses = losses or DEFAULT_LOSSES[study]
    if study == "convergence":
        result = simulate_convergence(losses, seed=seed, device=device, progress=progress, **options)
        return {"convergence.csv": result.curves, "final_error_by_point.csv": result.by_point}
    if study == "gradients":
        return {"gradients.csv": simulate_gradients(losses, seed=seed, device=device, progress=progress, **options)}
    return {"corner_center.csv": simulate_corner_center(losses, seed=seed, device=device, progress=progress, **options)}


def run_study(
    study: str,
    losses: LossSpecs | None,
    out: Path | str,
    *,
    seed: int = SEED,
    device: str = DEVICE,
    figures: bool = True,
    progress: ProgressFn | None = None,
    **options: Any,
) -> list[Path]:
    """Run ``study`` ("convergence", "gradients", "corner-center") and write its CSVs and figures.

    ``losses``: see :func:`~scabench.bench.studies.inputs.resolve_losses` (names, ``"a,b,c"``,
    ``(name, params)`` pairs); None or empty takes the study's default. ``options`` are the
    study's own (``STUDY_OPTIONS``): an option no study knows raises ValueError; one that only
    another study knows is ignored (a grid may share one options mapping between its studies).
    Returns the written paths: ``convergence.csv`` and ``final_error_by_point.csv``;
    ``gradients.csv``; ``corner_center.csv``; then the figures unless ``figures=False``.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
    known = {name for names in STUDY_OPTIONS.values() for name in names}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"study {study!r} has no option(s) {unknown}; its options: {', '.join(STUDY_OPTIONS[study])}")
    own = {k: v for k, v in options.items() if k in STUDY_OPTIONS[study]}
    frames = _frames(study, losses, seed=seed, device=device, progress=progress, **own)
    return write_study(frames, out, figures=figures)
