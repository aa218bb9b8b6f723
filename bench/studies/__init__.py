"""Synthetic-box studies: how a loss steers a box before anyone trains a detector.

Three studies, each a function that computes without IO and returns tidy data:

- ``convergence`` (:func:`simulate_convergence`, :mod:`.convergence`): the DIoU paper's
  1,715,000-case regression simulation (:mod:`.protocol`), E(t) per loss, on the compiled
  engine (:mod:`.compiled`: any loss's autograd step, compiled by inductor), the fused C
  kernel for the built-in five (:mod:`.kernel`, source ``kernel.c``) or eager autograd
  (:mod:`.engine`, the reference);
- ``gradients`` (:func:`simulate_gradients`, :mod:`.gradients`): mean ||dL/d(pred)|| per IoU
  bin, the SCALoss paper's Fig. 1 left;
- ``corner-center`` (:func:`simulate_corner_center`, :mod:`.corner_center`): IoU + corner vs
  IoU + centre alignment, the SCALoss paper's Fig. 1 right.

:func:`run_study` (:mod:`.output`) writes a study's CSVs (atomically) and its figures;
:mod:`.timing` times the convergence study against a memory-copy floor; :mod:`.defaults`
holds every default (no torch import); :mod:`.inputs` checks what a study is given.

The names below load on first use (PEP 562), so that reading :mod:`.defaults` (the CLI's
``--help``, grid configs) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "defaults": ("STUDIES", "STUDY_OPTIONS", "DEFAULT_LOSSES", "CONVERGENCE_LOSSES", "GRADIENT_LOSSES",
                 "CORNER_CENTER_LOSSES", "ENGINES", "DTYPES"),
    "inputs": ("LossRef", "LossSpecs", "ProgressFn", "resolve_losses"),
    "protocol": ("ASPECT_RATIOS", "CASES_PER_POINT", "ConvergenceCases", "convergence_cases", "sample_points",
                 "start_error", "parse_schedule", "schedule_rates", "state_to_xyxy"),
    "convergence": ("ConvergenceResult", "simulate_convergence"),
    "kernel": ("KernelUnavailable",),
    "compiled": ("CompileUnavailable",),
    "gradients": ("gradient_pairs", "gradient_table", "simulate_gradients"),
    "corner_center": ("corner_center_starts", "corner_center_starts_count", "simulate_corner_center"),
    "output": ("run_study", "write_study"),
    "timing": ("TIMING_COLUMNS", "benchmark", "memory_floor_ms", "timing_table", "load_average"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
