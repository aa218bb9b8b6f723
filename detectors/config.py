"""``TrainConfig``: everything one training run needs, validated (pydantic, extra keys refused).

Hyperparameters default to ultralytics/yolov3 v9.6.0 ``hyp.scratch`` (REFERENCES 4); ``hyp``
holds overrides only, and an unknown key is refused with the list of known ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scabench.detectors.synthetic import TRAIN_SIZE, VAL_SIZE
from scabench.devices import parse_device

# hyp.scratch.yaml of ultralytics/yolov3 v9.6.0 (values, not code).
HYP_SCRATCH: dict[str, float] = {
    "lr0": 0.01,  # initial learning rate (SGD)
    "lrf": 0.1,  # final learning rate = lr0 * lrf (cosine)
    "momentum": 0.937,  # SGD momentum (nesterov)
    "weight_decay": 0.0005,  # scaled by batch * accumulate / 64
    "warmup_epochs": 3.0,  # see detectors.trainer.warmup_iterations for short runs
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 0.05,  # box loss gain (times 3 / levels)
    "cls": 0.5,  # class loss gain (times classes / 80 * 3 / levels)
    "cls_pw": 1.0,  # class BCE positive weight
    "obj": 1.0,  # objectness gain (times (img / 640)^2 * 3 / levels)
    "obj_pw": 1.0,  # objectness BCE positive weight
    "iou_t": 0.20,  # unused by the v9.6.0 trainer; kept so hyp files load unchanged
    "anchor_t": 4.0,  # target-anchor ratio threshold
    "fl_gamma": 0.0,  # focal loss gamma (0: plain BCE)
    "hsv_h": 0.015,  # hue gain (fraction)
    "hsv_s": 0.7,  # saturation gain
    "hsv_v": 0.4,  # value gain
    "degrees": 0.0,  # rotation (+/- degrees)
    "translate": 0.1,  # translation (+/- fraction)
    "scale": 0.5,  # scale gain (+/-)
    "shear": 0.0,  # shear (+/- degrees)
    "perspective": 0.0,  # perspective (+/- fraction), 0 - 0.001
    "flipud": 0.0,  # probability
    "fliplr": 0.5,  # probability
    "mosaic": 1.0,  # probability
    "mixup": 0.0,  # probability
    "copy_paste": 0.0,  # needs segments: only 0 is supported
}

def load_hyp_file(path: str | Path) -> dict[str, float]:
    """Read a hyperparameter YAML (a full hyp.scratch-style file or just overrides)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read hyperparameter file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameters, got {type(data).__name__}")
    return data


class TrainConfig(BaseModel):
    """One training run. Defaults follow the reference trainer (yolov3-tiny, 640 px, 300 epochs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(
        "synthetic-shapes", description="'synthetic-shapes', 'neon-trees', a COCO-json folder or file, a VOC folder, or a dataset YAML"
    )
    train_size: int = Field(TRAIN_SIZE, ge=1, description="synthetic-shapes: training images")
    val_size: int = Field(VAL_SIZE, ge=1, description="synthetic-shapes: validation images")
    data_seed: int = Field(0, ge=0, description="synthetic-shapes: generator seed")
    # neon-trees' tiling (detectors.neon_trees: TILE_SIZE, TILE_OVERLAP and their bounds; literal
    # here so that this module does not import torch)
    tile_size: int = Field(400, ge=64, le=1024, description="neon-trees: tile side in px")
    tile_overlap: float = Field(0.25, ge=0, le=0.75, description="neon-trees: overlap of neighbouring tiles (fraction of tile_size)")
    detector: Literal["yolov3-tiny", "yolov3", "yolov3-spp"] = "yolov3-tiny"
    width: float = Field(1.0, gt=0, le=4)
    depth: float = Field(1.0, gt=0, le=4)
    anchors: Literal["auto", "default", "kmeans"] = Field(
        "auto", description="auto: k-means anchors when the defaults fit the data badly (best possible recall < 0.98)"
    )
    img_size: int = Field(640, ge=32)
    epochs: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=1, description="total over all processes; gradients accumulate to nominal_batch")
    nominal_batch: int = Field(
        64, ge=1, description="images per optimizer step (accumulation); 64 as the reference, smaller for short runs"
    )
    loss: str = "ciou-yolo"
    loss_params: dict[str, Any] = Field(default_factory=dict)
    obj_target: Literal["loss", "iou"] = Field(
        "loss", description="objectness target: the loss's own similarity (the authors' code) or plain IoU"
    )
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (scabench.devices)")
    amp: bool = Field(True, description="mixed precision on CUDA (the box loss stays float32)")
    workers: int = Field(2, ge=0, le=64)
    hyp: dict[str, float] = Field(default_factory=dict, description="overrides of hyp.scratch")
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd: nesterov SGD (the reference); adamw: AdamW with betas (momentum, 0.999), as ultralytics picks for short runs"
    )
    close_mosaic: int = Field(0, ge=0, description="last epochs trained without mosaic (ultralytics' close_mosaic; 0: mosaic throughout, as the paper)")
    val_interval: int = Field(1, ge=1, description="validate every N epochs and the last (rows in between carry no AP); the final summary is always evaluated")
    patience: int | None = Field(
        None, ge=0, description="early stopping (ultralytics' patience): stop after this many validated epochs without a better "
        "fitness (detectors.evaluate.fitness); None or 0: off, as benchmark grids keep it (equal budgets for every loss)",
    )
    bad_data: Literal["error", "skip"] = "error"

    @field_validator("img_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"img_size must be a multiple of 32 (the largest stride), got {v}")
        return v

    @field_validator("hyp")
    @classmethod
    def _known_hyp(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(HYP_SCRATCH))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {', '.join(HYP_SCRATCH)}")
        if v.get("copy_paste", 0.0):
            raise ValueError("copy_paste needs segment masks; only copy_paste=0 is supported")
        for key, value in v.items():
            if value < 0:
                raise ValueError(f"hyperparameter {key} must be >= 0, got {value}")
        return {k: float(x) for k, x in v.items()}

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return parse_device(v)

    @model_validator(mode="after")
    def _loss_exists(self) -> "TrainConfig":
        from scabench import losses

        try:
            losses.get_loss(self.loss, **self.loss_params)
        except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise ValueError(f"loss {self.loss!r} with params {self.loss_params}: {message}") from None
        return self

    def resolved_hyp(self) -> dict[str, float]:
        """hyp.scratch with this config's overrides."""
        return {**HYP_SCRATCH, **self.hyp}

    def run_key(self) -> dict[str, Any]:
        """The fields that decide a run's result (not where or how fast it runs): resume checks these."""
        return self.model_dump(exclude={"device", "workers"})
