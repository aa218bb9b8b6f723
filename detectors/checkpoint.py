"""A run's checkpoints ``last.pt`` and ``best.pt``: the format tag, reading one back, the detector it holds.

Written by :mod:`detectors.trainer` after every epoch (model, EMA, optimizer, scaler, the box
loss's state, per-epoch history, the best fitness and its epoch, the config and what was
resolved from it), like nanoGPT's checkpoint with its resolved config; read by resume and by
``scabench val``. ``best.pt`` is a copy of ``last.pt`` taken at the validated epoch of the
highest fitness (:func:`detectors.evaluate.fitness`), as ultralytics keeps it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scabench.detectors.config import TrainConfig
from scabench.detectors.models import build_model
from scabench.results.files import BEST_CHECKPOINT  # noqa: F401  (re-exported: beside last.pt in the run folder)

CHECKPOINT_FORMAT = "scabench-yolov3-v1"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``last.pt`` or ``best.pt`` written by :func:`detectors.train`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    start_over = f"delete it to start the run over (rm {path})"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: not a readable scabench checkpoint; {start_over} ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a scabench detector checkpoint (format {CHECKPOINT_FORMAT}); {start_over}")
    return ckpt


def model_from_checkpoint(ckpt: dict, weights: str = "ema") -> nn.Module:
    """Rebuild the detector of a checkpoint with its EMA (default) or raw weights, in eval mode."""
    cfg, res = ckpt["config"], ckpt["resolved"]
    model = build_model(cfg["detector"], res["num_classes"], cfg["width"], cfg["depth"], res["anchors"])
    model.load_state_dict(ckpt[weights])
    return model.eval()


def same_run(saved: dict, config: TrainConfig) -> bool:
    """Whether a saved config (checkpoint or summary) decides the same result as ``config``."""
    try:
        return TrainConfig.model_validate(saved).run_key() == config.run_key()
    except Exception:  # noqa: BLE001 - an unreadable config is simply not the same run
        return False
