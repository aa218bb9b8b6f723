"""Expand a grid into cells: (simulation studies) + seed x detector x axes x loss.

Each cell carries its resolved config (what it computes: the keys of ``detectors.TrainConfig``
for a training cell), a human label and an id: the first 12 hex digits of the SHA-256 of the
canonical JSON of that config. The id names the cell's folder, so results from several machines
merge by copying folders, and the same cell in two grids is the same folder.

What is hashed: every setting the grid gives explicitly (trainer defaults are not filled in, so
a new trainer field with a default keeps old folders valid), and the loss's full parameters
(``sca`` and ``{name: sca, alpha: 1.0}`` are one cell). Where a cell runs (``device``,
``workers``, ``resources:``) is not hashed.

Order: simulation cells first, then seed-major, so a first pass over seed 0 gives a complete
table before the next seed starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from scabench.bench.config import DATA_AXES, DETECTOR_AXES, Grid

ID_LENGTH = 12


def canonical_json(obj: Any) -> str:
    """Key-sorted compact JSON: the text a cell id is hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: dict[str, Any]) -> str:
    """Short stable id of a resolved cell config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a training run or one synthetic study."""

    kind: str  # "train" | "simulate"
    config: dict[str, Any]  # hashed: what the cell computes
    runtime: dict[str, Any]  # not hashed: device, workers
    labels: dict[str, Any]  # detector, loss, axes values, seed / study (for tables and plans)
    provenance: dict[str, tuple] = field(default_factory=dict, compare=False)  # field -> yaml key path

    @property
    def id(self) -> str:
        return config_hash(self.config)

    @property
    def label(self) -> str:
        if self.kind == "simulate":
            return f"simulate {self.labels['study']}"
        parts = [self.labels["detector"], self.labels["loss"]]
        parts += [f"{k}={v}" for k, v in self.labels.get("axes", {}).items()]
        parts.append(f"seed {self.labels['seed']}")
        return " | ".join(parts)

    @property
    def epochs(self) -> int | None:
        return self.config.get("epochs")

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``detectors.TrainConfig`` for this (training) cell."""
        kwargs = {k: v for k, v in self.config.items() if k != "kind"}
        kwargs.update({k: v for k, v in self.runtime.items() if v is not None})
        return kwargs

    def record(self, grid_name: str | None = None) -> dict[str, Any]:
        """What ``config.json`` in the cell folder holds."""
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "labels": self.labels,
            "grid": grid_name,
            "config": self.config,
            "runtime": self.runtime,
        }


def detector_label(name: str, width: float | None = None, depth: float | None = None) -> str:
    """``yolov3-tiny`` or ``yolov3-tiny (w=0.25)``."""
    extra = []
    if width is not None and width != 1:
        extra.append(f"w={width:g}")
    if depth is not None and depth != 1:
        extra.append(f"d={depth:g}")
    return f"{name} ({', '.join(extra)})" if extra else name


def expand(grid: Grid) -> list[Cell]:
    """All cells of a grid, in run order."""
    cfg = grid.config
    cells: list[Cell] = []

    if cfg.simulate is not None:
        sim = cfg.simulate
        for study, spec in sim.studies.items():
            entries = spec.losses or sim.losses
            if entries:
                loss_list = [{"name": e.name, "params": dict(sorted(e.params.items()))} for e in entries]
                loss_labels = [e.label(grid.loss_defaults.get(e.name)) for e in entries]
            else:
                loss_list = [{"name": name, "params": {}} for name in default_study_losses(study)]
                loss_labels = [entry["name"] for entry in loss_list]
            config = {
                "kind": "simulate",
                "study": study,
                "losses": loss_list,
                "seed": sim.seed,
                "options": _study_options(study, {**sim.options, **spec.options}),
            }
            labels = {"study": study, "losses": loss_labels}
            cells.append(Cell("simulate", config, {"device": sim.device}, labels, {}))

    if cfg.detectors and cfg.losses:
        base: dict[str, Any] = {"kind": "train", "data": cfg.data.source}
        provenance: dict[str, tuple] = {"data": ("data",)}
        for axis, source in DATA_AXES.items():
            value = getattr(cfg.data, source)
            if value is not None:
                base[axis] = value
                provenance[axis] = ("data", source) if isinstance(_raw(grid, "data"), dict) else ("data",)
        for key, value in cfg.train.model_dump(exclude={"device", "workers", "hyp"}).items():
            if value is not None:
                base[key] = value
                provenance[key] = ("train", key)
        if cfg.train.hyp:
            base["hyp"] = dict(cfg.train.hyp)
            provenance["hyp"] = ("train", "hyp")
        runtime = {"device": cfg.train.device, "workers": cfg.train.workers}

        axis_items = list(cfg.axes.items())
        combos = list(itertools.product(*[values for _, values in axis_items])) if axis_items else [()]
        for seed in cfg.seeds:
            for d_index, det in enumerate(cfg.detectors):
                for combo in combos:
                    for l_index, loss in enumerate(cfg.losses):
                        config = dict(base)
                        prov = dict(provenance)
                        config["detector"] = det.name
                        prov["detector"] = ("detectors", d_index)
                        for key in DETECTOR_AXES:
                            value = getattr(det, key)
                            if value is not None:
                                config[key] = value
                                prov[key] = ("detectors", d_index, key)
                        axes_labels = {}
                        for (key, _), value in zip(axis_items, combo):
                            axes_labels[key] = value
                            if key.startswith("hyp."):
                                config["hyp"] = {**config.get("hyp", {}), key[4:]: value}
                                prov["hyp"] = ("axes", key)
                            else:
                                config[key] = value
                                prov[key] = ("axes", key)
                        config["loss"] = loss.name
                        config["loss_params"] = dict(sorted(loss.params.items()))
                        config["seed"] = seed
                        prov.update(loss=("losses", l_index), loss_params=("losses", l_index), seed=("seeds",))
                        labels = {
                            "detector": detector_label(det.name, det.width, det.depth),
                            "loss": loss.label(grid.loss_defaults.get(loss.name)),
                            "axes": axes_labels,
                            "seed": seed,
                        }
                        cells.append(Cell("train", config, dict(runtime), labels, prov))
    _check_unique(cells, grid)
    return cells


def default_study_losses(study: str) -> tuple[str, ...]:
    """The loss list a study draws when the grid names none (the paper's curves)."""
    from scabench.bench import simulate

    return {
        "convergence": simulate.CONVERGENCE_LOSSES,
        "gradients": simulate.GRADIENT_LOSSES,
        "corner-center": simulate.CORNER_CENTER_LOSSES,
    }[study]


def _study_options(study: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keep the options this study knows (a shared ``options:`` may hold other studies' too)."""
    from scabench.bench.config import study_options

    known = study_options()
    if known is None:
        return dict(sorted(options.items()))
    return {k: v for k, v in sorted(options.items()) if k in known.get(study, ())}


def _raw(grid: Grid, key: str) -> Any:
    import yaml

    try:
        return (yaml.safe_load(grid.text) or {}).get(key)
    except Exception:  # noqa: BLE001
        return None


def _check_unique(cells: list[Cell], grid: Grid) -> None:
    from scabench.bench.config import Problem

    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.id in seen:  # only if two grid entries resolve to the same config
            message = f"cells {seen[cell.id].label!r} and {cell.label!r} resolve to the same config"
            raise grid.error([Problem(cell.provenance.get("detector", ()), message)])
        seen[cell.id] = cell
