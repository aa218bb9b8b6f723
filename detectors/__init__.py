"""scabench's built-in detectors: the YOLOv3 family, its data, training and COCO evaluation.

    >>> from detectors import TrainConfig, train
    >>> summary = train(TrainConfig(data="synthetic-shapes", width=0.25, img_size=128,
    ...                             epochs=10, loss="sca"), "runs/sca")
    >>> summary["metrics"]["AP50"]

A faithful, small rewrite of the trainer the SCALoss paper used (ultralytics/yolov3 v9.6.0)
with the box loss taken from :mod:`losses` by name (``losses.get_loss``). See
:mod:`detectors.trainer` for the files a run writes and how it resumes.
"""

import os as _os

# OpenMP threads that spin while waiting collapse torch's CPU speed (5x here) when other
# processes share the cores; passive waiting costs nothing measurable when they do not. It only
# takes effect if torch is not imported yet; a value set by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scabench.detectors.config import HYP_SCRATCH, TrainConfig
from scabench.detectors.data import BadDataError, load_dataset
from scabench.detectors.evaluate import METRICS, evaluate_coco, non_max_suppression
from scabench.detectors.models import ANCHORS, MODELS, build_model, count_parameters
from scabench.detectors.trainer import NonFiniteLossError, load_checkpoint, model_from_checkpoint, train

__all__ = [
    "ANCHORS",
    "BadDataError",
    "HYP_SCRATCH",
    "METRICS",
    "MODELS",
    "NonFiniteLossError",
    "TrainConfig",
    "build_model",
    "count_parameters",
    "evaluate_coco",
    "load_checkpoint",
    "load_dataset",
    "model_from_checkpoint",
    "non_max_suppression",
    "train",
]
