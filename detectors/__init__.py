"""scabench's built-in detectors: the YOLOv3 family, its data, training and COCO evaluation.

    >>> from scabench.detectors import TrainConfig, train
    >>> summary = train(TrainConfig(data="synthetic-shapes", width=0.25, img_size=128,
    ...                             epochs=10, loss="sca"), "runs/sca")
    >>> summary["metrics"]["AP50"]

A faithful, small rewrite of the trainer the SCALoss paper used (ultralytics/yolov3 v9.6.0)
with the box loss taken from :mod:`scabench.losses` by name (``losses.get_loss``). See
:mod:`scabench.detectors.trainer` for the files a run writes and how it resumes.

The names below load on first use (PEP 562), so ``import scabench.detectors.config`` or
another small submodule does not pull in the trainer.
"""

import importlib as _importlib
import os as _os

# OpenMP threads that spin while waiting collapse torch's CPU speed (5x here) when other
# processes share the cores; passive waiting costs nothing measurable when they do not. It only
# takes effect if torch is not imported yet; a value set by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_PUBLIC = {
    "ANCHORS": "models",
    "BadDataError": "readers",
    "HYP_SCRATCH": "config",
    "METRICS": "evaluate",
    "MODELS": "models",
    "NonFiniteLossError": "trainer",
    "TrainConfig": "config",
    "build_model": "models",
    "count_parameters": "models",
    "evaluate_coco": "evaluate",
    "load_checkpoint": "checkpoint",
    "load_dataset": "data",
    "model_from_checkpoint": "checkpoint",
    "non_max_suppression": "evaluate",
    "train": "trainer",
    "train_step": "optim",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
