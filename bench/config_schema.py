"""The schema of a grid file (``experiments/*.yaml``): pydantic models, extra keys forbidden.

A grid names what to train and what to simulate; :mod:`scabench.bench.grid` expands it into
cells::

    name: quick                                   # results go to results/<name> by default
    data: synthetic-shapes                        # or a path, or {source, train_size, val_size, seed}
                                                  # or neon-trees, {source: neon-trees, tile_size, tile_overlap}
    detectors:
      - {name: yolov3-tiny, width: 0.25}          # or just "yolov3-tiny"; width/depth multipliers
    train: {epochs: 10, img_size: 128, batch_size: 32}   # any trainer setting, hyp: {lr0: ...}
    losses: [iou, giou, {name: sca, alpha: 0.5}, iou+cd]
    seeds: [0, 1, 2]
    axes: {obj_target: [iou, loss], hyp.lr0: [0.01, 0.02]}  # crossed with everything else
    simulate: {studies: [convergence, gradients, corner-center]}  # synthetic studies, same grid
    baseline: iou                                 # the report's reference loss
    paper: false                                  # show the paper's published numbers beside ours
    resources: {gpus_per_cell: 1, partition: gpu, time_min: 600}  # executors only, not hashed

This module is the shape of the file only; what needs the loss registry or the trainer is
checked in :mod:`scabench.bench.config_checks`, and :mod:`scabench.bench.config` loads a file.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from scabench.bench.studies import defaults as study_defaults
from scabench.bench.studies.defaults import STUDIES
from scabench.devices import parse_device

SYNTHETIC_DATA = ("synthetic-shapes",)  # generated: train_size, val_size, seed
TILED_DATA = ("neon-trees",)  # embedded real images, tiled: tile_size, tile_overlap
BUILTIN_DATA = SYNTHETIC_DATA + TILED_DATA  # names, not paths

# Trainer settings a grid may set under ``train:`` or cross under ``axes:``. ``device`` and
# ``workers`` say where a cell runs, not what it computes: they never enter a cell's hash.
RUNTIME_FIELDS = ("device", "workers")
# Fields a cell's identity is built from elsewhere in the grid (not valid as ``axes``).
IDENTITY_FIELDS = ("data", "detector", "loss", "loss_params", "seed")
# Axes that come from the data / detector sections rather than ``train:`` (axis -> DataSpec field).
DATA_AXES = {
    "train_size": "train_size", "val_size": "val_size", "data_seed": "seed", "bad_data": "bad_data",
    "tile_size": "tile_size", "tile_overlap": "tile_overlap",
}  # fmt: skip
SYNTHETIC_SETTINGS, TILE_SETTINGS = ("train_size", "val_size", "seed"), ("tile_size", "tile_overlap")
DETECTOR_AXES = ("width", "depth")

# ``auto | cpu | cuda | cuda:N``, the one meaning of a device string (scabench.devices).
Device = Annotated[str, AfterValidator(parse_device)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(_Strict):
    """``data:`` -- a built-in data set name or a path, and the sizes of its splits (synthetic-shapes)
    or its tiling (neon-trees; bounds as ``detectors.neon_trees``)."""

    source: str = "synthetic-shapes"
    train_size: int | None = Field(None, gt=0)
    val_size: int | None = Field(None, gt=0)
    seed: int | None = None
    bad_data: Any = None
    tile_size: int | None = Field(None, ge=64, le=1024)
    tile_overlap: float | None = Field(None, ge=0, le=0.75)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a data set name (synthetic-shapes, neon-trees) or a path")
        return value

    @field_validator(*SYNTHETIC_SETTINGS, *TILE_SETTINGS)
    @classmethod
    def _setting_of_the_source(cls, value: Any, info: ValidationInfo) -> Any:
        source = info.data.get("source")
        if value is None or source is None:
            return value
        if info.field_name in TILE_SETTINGS and source not in TILED_DATA:
            raise ValueError(f"{info.field_name} is a neon-trees setting; data {source!r} is not tiled")
        if info.field_name in SYNTHETIC_SETTINGS and source in TILED_DATA:
            raise ValueError(f"{info.field_name} is a synthetic-shapes setting; {source} has tile_size and tile_overlap")
        return value

    @property
    def is_path(self) -> bool:
        return self.source not in BUILTIN_DATA

    def resolved_source(self) -> str:
        """The source with ``~`` and ``$VARS`` expanded (what the trainer gets)."""
        if not self.is_path:
            return self.source
        return os.path.expanduser(os.path.expandvars(self.source))


class DetectorSpec(_Strict):
    """One entry of ``detectors:`` -- a model name and its width/depth multipliers."""

    name: str
    width: float | None = Field(None, gt=0)
    depth: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TrainSpec(BaseModel):
    """``train:`` -- trainer settings shared by every cell (unset ones keep the trainer's default).

    The common settings are typed here; any other ``detectors.TrainConfig`` field (``anchors``,
    ``amp``, ...) is accepted too and checked against the trainer (``config_checks.check_train``).
    """

    model_config = ConfigDict(extra="allow", validate_default=True)

    epochs: int | None = Field(None, gt=0)
    img_size: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    obj_target: Literal["loss", "iou"] | None = None
    device: Device | None = None
    workers: int | None = Field(None, ge=0)
    hyp: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hyp")
    @classmethod
    def _scalars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                raise ValueError(f"hyp.{key}: give one value (use axes: {{hyp.{key}: [...]}} to sweep it)")
        return value


class LossEntry(_Strict):
    """One loss: ``iou``, ``iou+cd``, ``{name: sca, alpha: 0.5}`` (parameters beside the name)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "params": {}}
        if isinstance(value, dict):
            if "name" not in value:
                return value  # pydantic reports the missing name
            rest = {k: v for k, v in value.items() if k not in ("name", "params")}
            params = value.get("params") or {}
            if not isinstance(params, dict):
                return value
            return {"name": value["name"], "params": {**params, **rest}}
        return value

    def label(self, defaults: dict[str, Any] | None = None) -> str:
        """``sca`` or ``sca(alpha=0.5)``: parameters shown only where they differ from defaults."""
        shown = {k: v for k, v in self.params.items() if defaults is None or defaults.get(k, object()) != v}
        if not shown:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(shown.items())) + ")"


class StudySpec(BaseModel):
    """One study under ``simulate.studies``: its losses (default: the study's own) and options."""

    model_config = ConfigDict(extra="allow")

    losses: list[LossEntry] | None = Field(None, min_length=1)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SimulateSpec(_Strict):
    """``simulate:`` -- synthetic studies run as cells of the same grid (``bench.simulate``).

    ``studies`` is a list of names or a mapping name -> {losses: [...], <study options>};
    ``losses`` and ``options`` apply to every study that does not set its own. Without losses a
    study draws the paper's curves (its default loss list).
    """

    studies: dict[Literal[STUDIES], StudySpec] = Field(
        default_factory=lambda: {s: StudySpec() for s in STUDIES}
    )
    losses: list[LossEntry] | None = Field(None, min_length=1)
    seed: int = study_defaults.SEED
    device: Device = study_defaults.DEVICE
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("studies", mode="before")
    @classmethod
    def _list_or_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("empty list: name at least one study (" + ", ".join(STUDIES) + ")")
            return {name: {} for name in value}
        if isinstance(value, dict):
            if not value:
                raise ValueError("empty mapping: name at least one study (" + ", ".join(STUDIES) + ")")
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value


class Resources(_Strict):
    """``resources:`` -- how cells are placed (never part of a cell's identity)."""

    gpus_per_cell: int = Field(1, ge=1)
    cpus_per_cell: int | None = Field(
        None, ge=1, description="SLURM: CPUs per cell; default what its loader uses (workers + 1 per GPU for training "
        "cells, 1 for studies), at most a node's CPUs",
    )
    cpu_cells_at_once: int = Field(
        1, ge=1, description="local executor, CPU cells: how many run at once, each with cores // N threads "
        "(small models train faster as 2 one-thread processes than as one with 2 threads)",
    )
    mem_gb: int | None = Field(None, gt=0)
    time_min: int | None = Field(None, gt=0, description="SLURM: minutes per job; default 24 h, or the partition's limit where lower")
    partition: str | None = None
    array_parallelism: int = Field(64, ge=1)
    slurm_additional: dict[str, Any] = Field(default_factory=dict)


class GridConfig(_Strict):
    """A whole grid file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    description: str | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    detectors: list[DetectorSpec] | None = Field(None, min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    losses: list[LossEntry] | None = Field(None, min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    simulate: SimulateSpec | None = None
    baseline: str | None = None
    paper: bool = False
    resources: Resources = Field(default_factory=Resources)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        dup = sorted({s for s in value if value.count(s) > 1})
        if dup:
            raise ValueError(f"seeds repeat: {dup}")
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> "GridConfig":
        if self.detectors is None and self.losses is None and self.simulate is None:
            raise ValueError("nothing to run: give detectors + losses, or a simulate: section")
        return self

    def loss_sections(self) -> list[tuple[tuple, list[LossEntry]]]:
        """Every loss list of the grid with its key path: ``losses``, ``simulate.losses``, ..."""
        sections = [(("losses",), self.losses)] if self.losses else []
        if self.simulate is not None:
            if self.simulate.losses:
                sections.append((("simulate", "losses"), self.simulate.losses))
            for study, spec in self.simulate.studies.items():
                if spec.losses:
                    sections.append((("simulate", "studies", study, "losses"), spec.losses))
        return sections
