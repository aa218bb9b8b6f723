"""A validated grid and its cells: (simulation studies) + seed x detector x axes x loss.

Each cell carries its resolved config (what it computes: the keys of ``detectors.TrainConfig``
for a training cell), a human label and an id: the first 12 hex digits of the SHA-256 of the
canonical JSON of that config. The id names the cell's folder, so results from several machines
merge by copying folders, and the same cell in two grids is the same folder.

What is hashed: every setting the grid gives explicitly (trainer defaults are not filled in, so
a new trainer field with a default keeps old folders valid), the loss's full parameters
(``sca`` and ``{name: sca, alpha: 1.0}`` are one cell), and for a user loss
(``my_losses.py:fn``, ``my_mod:fn``) the SHA-256 of its source file, so editing it makes a new
cell (cells of built-in losses hash exactly their config). Where a cell runs (``device``,
``workers``, ``resources:``) is not hashed, nor where the user's file lies: a relative
``file.py:fn`` is named as written and resolved against the grid file's folder.

Order: simulation cells first, then seed-major, so a first pass over seed 0 gives a complete
table before the next seed starts. :func:`scabench.bench.config.load_grid` builds a
:class:`Grid` and expands it once; :func:`expand` returns those cells.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scabench.bench.config_errors import GridError, Problem
from scabench.bench.config_schema import DATA_AXES, DETECTOR_AXES, DetectorSpec, GridConfig
from scabench.bench.studies.defaults import DEFAULT_LOSSES, STUDY_OPTIONS

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
    loss_refs: dict[str, dict[str, str]] = field(default_factory=dict)  # user term -> {path, sha256}

    @functools.cached_property
    def id(self) -> str:
        return config_hash(hashed_config(self.config, self.loss_refs))

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
        """What ``config.json`` in the cell folder holds (``loss_refs`` only for user losses:
        where the cell process finds each one, and the hash the id was made with)."""
        record = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "labels": self.labels,
            "grid": grid_name,
            "config": self.config,
            "runtime": self.runtime,
        }
        if self.loss_refs:
            record["loss_refs"] = self.loss_refs
        return record


def hashed_config(config: dict[str, Any], loss_refs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What a cell id hashes: its config, plus ``loss_sha256`` where it names user losses."""
    if not loss_refs:
        return config
    return {**config, "loss_sha256": {term: ref["sha256"] for term, ref in sorted(loss_refs.items())}}


def user_loss_refs(names: list[str], base: Path) -> dict[str, dict[str, str]]:
    """``{term as written: {"path": term resolved against base, "sha256": of its file now}}``
    for every user-loss term of ``names`` (registered names give nothing)."""
    from scabench.losses.user import references, resolve_expression, source_sha256

    refs = {}
    for term in dict.fromkeys(term for name in names for term in references(name)):
        path = resolve_expression(term, base)
        refs[term] = {"path": path, "sha256": source_sha256(path)}
    return refs


@dataclass
class Grid:
    """A validated grid file: the model, its source path and text, its key -> line map, the
    parameters every loss entry resolved to, and (once expanded) its cells."""

    config: GridConfig
    path: Path
    text: str
    lines: dict[tuple, int] = field(default_factory=dict)
    loss_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: list[Cell] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def base(self) -> Path:
        """The folder relative ``file.py:function`` losses of this grid are found in."""
        return self.path.parent

    def error(self, problems: list[Problem]) -> GridError:
        return GridError(self.path, problems, self.lines)


def detector_label(name: str, width: float | None = None, depth: float | None = None) -> str:
    """``yolov3-tiny`` or ``yolov3-tiny (w=0.25)``."""
    extra = []
    if width is not None and width != 1:
        extra.append(f"w={width:g}")
    if depth is not None and depth != 1:
        extra.append(f"d={depth:g}")
    return f"{name} ({', '.join(extra)})" if extra else name


def expand(grid: Grid) -> list[Cell]:
    """All cells of a grid, in run order; computed once per grid and kept on it (``grid.cells``).

    Raises :class:`GridError` if two entries resolve to the same config.
    """
    if grid.cells is None:
        cells = simulation_cells(grid) + training_cells(grid)
        _check_unique(cells, grid)
        grid.cells = cells
    return grid.cells


def simulation_cells(grid: Grid) -> list[Cell]:
    """One cell per study of ``simulate:`` (its losses, else the shared ones, else the paper's)."""
    sim = grid.config.simulate
    if sim is None:
        return []
    cells = []
    for study, spec in sim.studies.items():
        entries = spec.losses or sim.losses
        if entries:
            loss_list = [{"name": e.name, "params": dict(sorted(e.params.items()))} for e in entries]
            loss_labels = [e.label(grid.loss_defaults.get(e.name)) for e in entries]
        else:
            loss_list = [{"name": name, "params": {}} for name in DEFAULT_LOSSES[study]]
            loss_labels = [entry["name"] for entry in loss_list]
        options = {**sim.options, **spec.options}  # a shared option may belong to other studies
        config = {
            "kind": "simulate",
            "study": study,
            "losses": loss_list,
            "seed": sim.seed,
            "options": {k: v for k, v in sorted(options.items()) if k in STUDY_OPTIONS[study]},
        }
        refs = _loss_refs(grid, [entry["name"] for entry in loss_list], ("simulate",))
        cells.append(Cell("simulate", config, {"device": sim.device}, {"study": study, "losses": loss_labels}, {}, refs))
    return cells


def training_cells(grid: Grid) -> list[Cell]:
    """seed x detector x axes x loss, seed-major; each config holds only what the grid sets."""
    cfg = grid.config
    if not (cfg.detectors and cfg.losses):
        return []
    base, provenance = _shared_settings(cfg)
    runtime = {"device": cfg.train.device, "workers": cfg.train.workers}
    axis_items = list(cfg.axes.items())
    combos = list(itertools.product(*[values for _, values in axis_items]))
    refs = {loss.name: _loss_refs(grid, [loss.name], ("losses", i)) for i, loss in enumerate(cfg.losses)}
    cells = []
    for seed in cfg.seeds:
        for d_index, det in enumerate(cfg.detectors):
            for combo in combos:
                for l_index, loss in enumerate(cfg.losses):
                    config, prov = dict(base), dict(provenance)
                    _set_detector(config, prov, det, d_index)
                    axes_labels = dict(zip([key for key, _ in axis_items], combo))
                    for key, value in axes_labels.items():
                        _set_axis(config, prov, key, value)
                    config.update(loss=loss.name, loss_params=dict(sorted(loss.params.items())), seed=seed)
                    prov.update(loss=("losses", l_index), loss_params=("losses", l_index), seed=("seeds",))
                    labels = {
                        "detector": detector_label(det.name, det.width, det.depth),
                        "loss": loss.label(grid.loss_defaults.get(loss.name)),
                        "axes": axes_labels,
                        "seed": seed,
                    }
                    cells.append(Cell("train", config, dict(runtime), labels, prov, refs[loss.name]))
    return cells


def _loss_refs(grid: Grid, names: list[str], loc: tuple) -> dict[str, dict[str, str]]:
    try:
        return user_loss_refs(names, grid.base)
    except ValueError as exc:  # the file vanished or cannot be read since the loss was checked
        raise grid.error([Problem(loc, str(exc))]) from None


def _shared_settings(cfg: GridConfig) -> tuple[dict[str, Any], dict[str, tuple]]:
    """The settings of ``data:`` and ``train:`` every training cell shares, and their keys."""
    base: dict[str, Any] = {"kind": "train", "data": cfg.data.source}
    provenance: dict[str, tuple] = {"data": ("data",)}
    for axis, source in DATA_AXES.items():
        value = getattr(cfg.data, source)
        if value is not None:  # set only when data: is a mapping
            base[axis] = value
            provenance[axis] = ("data", source)
    for key, value in cfg.train.model_dump(exclude={"device", "workers", "hyp"}).items():
        if value is not None:
            base[key] = value
            provenance[key] = ("train", key)
    if cfg.train.hyp:
        base["hyp"] = dict(cfg.train.hyp)
        provenance["hyp"] = ("train", "hyp")
    return base, provenance


def _set_detector(config: dict, prov: dict, det: DetectorSpec, index: int) -> None:
    config["detector"] = det.name
    prov["detector"] = ("detectors", index)
    for key in DETECTOR_AXES:
        value = getattr(det, key)
        if value is not None:
            config[key] = value
            prov[key] = ("detectors", index, key)


def _set_axis(config: dict, prov: dict, key: str, value: Any) -> None:
    if key.startswith("hyp."):
        config["hyp"] = {**config.get("hyp", {}), key[4:]: value}
        prov["hyp"] = ("axes", key)
    else:
        config[key] = value
        prov[key] = ("axes", key)


def _check_unique(cells: list[Cell], grid: Grid) -> None:
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.id in seen:  # only if two grid entries resolve to the same config
            message = f"cells {seen[cell.id].label!r} and {cell.label!r} resolve to the same config"
            raise grid.error([Problem(cell.provenance.get("detector", ()), message)])
        seen[cell.id] = cell
