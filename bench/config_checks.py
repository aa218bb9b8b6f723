"""Checks of a grid that the schema cannot make alone: they need the loss registry, the trainer's
settings or the studies' options.

Most run on the raw YAML data, so that they report even where the schema fails elsewhere and
every problem of a file is listed at once; :func:`check_cells_against_trainer` runs on the
expanded cells. Each returns a list of :class:`~scabench.bench.config_errors.Problem`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scabench import losses
from scabench.bench.config_errors import Problem, pydantic_problems
from scabench.bench.config_schema import (
    DATA_AXES, DETECTOR_AXES, IDENTITY_FIELDS, RUNTIME_FIELDS, TILE_SETTINGS, TILED_DATA, DataSpec, DetectorSpec, LossEntry,
    TrainSpec,
)  # fmt: skip
from scabench.bench.grid import Cell
from scabench.bench.studies.defaults import STUDY_OPTIONS
from scabench.losses.registry import check_parameter
from scabench.losses.user import resolve_expression

# Where a cell-identity field is set instead of ``train:`` (for the "set it under" message).
_SET_ELSEWHERE = {
    "data": "data:", "train_size": "data:", "val_size": "data:", "data_seed": "data: (seed)", "bad_data": "data:",
    "tile_size": "data:", "tile_overlap": "data:",
    "detector": "detectors:", "width": "detectors:", "depth": "detectors:",
    "loss": "losses:", "loss_params": "losses:", "seed": "seeds:",
}  # fmt: skip


def trainer_config_class() -> Any:
    """``detectors.TrainConfig`` (imported late: it pulls in torch and the trainer)."""
    from scabench.detectors.config import TrainConfig

    return TrainConfig


def axis_names() -> list[str]:
    """Keys allowed under ``axes:`` (``hyp.NAME`` is always allowed too)."""
    known = [*TrainSpec.model_fields, *DATA_AXES, *DETECTOR_AXES, *trainer_config_class().model_fields]
    excluded = {*IDENTITY_FIELDS, *RUNTIME_FIELDS, "hyp"}
    return [name for name in dict.fromkeys(known) if name not in excluded]


# --------------------------------------------------------------------------------------
# Losses: each entry resolved once through the registry


def loss_sections(data: dict) -> list[tuple[tuple, list]]:
    """The raw loss lists of a grid with their key paths (as ``GridConfig.loss_sections``)."""
    sections = []
    if isinstance(data.get("losses"), list):
        sections.append((("losses",), data["losses"]))
    simulate = data.get("simulate")
    if isinstance(simulate, dict) and isinstance(simulate.get("losses"), list):
        sections.append((("simulate", "losses"), simulate["losses"]))
    if isinstance(simulate, dict) and isinstance(simulate.get("studies"), dict):
        for study, spec in simulate["studies"].items():
            if isinstance(spec, dict) and isinstance(spec.get("losses"), list):
                sections.append((("simulate", "studies", study, "losses"), spec["losses"]))
    return sections


def check_losses(data: dict, base: Path | None = None) -> tuple[dict[tuple, tuple[LossEntry, dict]], list[Problem]]:
    """Resolve every loss entry once with ``losses.get_loss`` (name, parameter names and types).

    A relative ``file.py:function`` is found in ``base`` (the grid file's folder; None: the
    current folder). Returns, by key path (``("losses", 1)``), the entry as written with all
    its parameters (``sca`` -> ``alpha=1.0``) and the loss's defaults; and the problems, each at
    the key that is wrong (``losses[1].alpha``), including a ``baseline:`` that is none of them.
    """
    problems: list[Problem] = []
    resolved: dict[tuple, tuple[LossEntry, dict]] = {}
    for prefix, entries in loss_sections(data):
        labels: dict[str, int] = {}
        for i, raw in enumerate(entries):
            loc = prefix + (i,)
            try:
                entry = LossEntry.model_validate(raw)
            except ValidationError:
                continue  # the schema check reports it
            try:
                loss = losses.get_loss(resolve_expression(entry.name, base), **entry.params)
            except (KeyError, ValueError) as exc:
                problems.append(Problem(loc + _wrong_key(entry, isinstance(raw, dict), base), _exc_text(exc)))
                continue
            full, defaults = LossEntry(name=entry.name, params=dict(loss.params)), dict(loss.spec.defaults)
            resolved[loc] = (full, defaults)
            label = full.label(defaults)
            if label in labels:
                problems.append(Problem(loc, f"loss {label!r} is listed twice (also entry {labels[label]})"))
            labels[label] = i
    return resolved, problems + _check_baseline(data, resolved)


def _wrong_key(entry: LossEntry, spelled_as_mapping: bool, base: Path | None) -> tuple:
    """Which key of a refused loss entry is wrong: a parameter, the name, or the entry."""
    try:
        defaults = losses.get_loss(resolve_expression(entry.name, base)).spec.defaults
    except (KeyError, ValueError):
        return ("name",) if spelled_as_mapping else ()
    for key, value in entry.params.items():
        if key not in defaults:
            return (key,)
        try:
            check_parameter(entry.name, key, value, defaults[key])
        except ValueError:
            return (key,)
    return ()


def _check_baseline(data: dict, resolved: dict[tuple, tuple[LossEntry, dict]]) -> list[Problem]:
    baseline, entries = data.get("baseline"), data.get("losses")
    if not isinstance(baseline, str) or not isinstance(entries, list):
        return []
    names = [entry.label(defaults) for loc, (entry, defaults) in resolved.items() if loc[:1] == ("losses",)]
    if names and len(names) == len(entries) and baseline not in names:
        return [Problem(("baseline",), f"{baseline!r} is not one of the grid's losses: {', '.join(names)}")]
    return []


def _exc_text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


# --------------------------------------------------------------------------------------
# Sections


def check_finite(data: dict, skip: set[tuple]) -> list[Problem]:
    """Every number of the grid is finite (a cell's config is hashed and stored as JSON).

    Paths in ``skip`` (the loss lists: the registry checks their parameters) are not walked.
    """
    problems: list[Problem] = []

    def visit(value: Any, loc: tuple) -> None:
        if loc in skip:
            return
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(loc, f"{value!r} is not a finite number (cell configs are stored as JSON)"))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, loc + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, loc + (i,))

    visit(data, ())
    return problems


def check_simulate(data: dict) -> list[Problem]:
    """Study options must be options of that study (shared ``options:``: of some study)."""
    simulate = data.get("simulate")
    if not isinstance(simulate, dict):
        return []
    known = STUDY_OPTIONS
    problems = []
    union = sorted({name for names in known.values() for name in names})
    options = simulate.get("options")
    if isinstance(options, dict):
        for key in options:
            if key not in union:
                problems.append(Problem(("simulate", "options", key), f"no study has this option; options: {', '.join(union)}"))
    studies = simulate.get("studies")
    if isinstance(studies, dict):
        for study, spec in studies.items():
            if study not in known or not isinstance(spec, dict):
                continue
            for key in spec:
                if key != "losses" and key not in known[study]:
                    allowed = ", ".join(("losses", *known[study]))
                    problems.append(Problem(("simulate", "studies", study, key), f"unknown option of {study}; allowed: {allowed}"))
    return problems


def check_structure(data: dict) -> list[Problem]:
    """Detectors need losses, and losses need detectors or a ``simulate:`` section."""
    has = {key: data.get(key) not in (None, [], {}) for key in ("detectors", "losses", "simulate")}
    if has["detectors"] and "losses" not in data:
        return [Problem(("detectors",), "detectors need losses: to train with (losses: [iou, sca])")]
    if has["losses"] and "detectors" not in data and not has["simulate"]:
        return [Problem(("losses",), "losses need detectors: to train, or a simulate: section")]
    return []


def check_train(data: dict) -> list[Problem]:
    """Keys of ``train:`` beyond the typed ones must be trainer settings."""
    train = data.get("train")
    if not isinstance(train, dict):
        return []
    extra = [k for k in train if k not in TrainSpec.model_fields]
    if not extra:
        return []
    fields = list(trainer_config_class().model_fields)
    allowed = list(TrainSpec.model_fields) + [f for f in fields if f not in _SET_ELSEWHERE and f not in TrainSpec.model_fields]
    problems = []
    for key in extra:
        if key in _SET_ELSEWHERE:
            problems.append(Problem(("train", key), f"set it under {_SET_ELSEWHERE[key]}, not train:"))
        elif key not in fields:
            problems.append(Problem(("train", key), "unknown key; allowed: " + ", ".join(allowed)))
    return problems


def check_axes(data: dict) -> list[Problem]:
    """Axis names are settings (or ``hyp.NAME``), their values valid for that setting, unique."""
    axes = data.get("axes")
    if not isinstance(axes, dict):
        return []
    problems = []
    if axes and not (data.get("detectors") and data.get("losses")):
        problems.append(Problem(("axes",), "axes cross training cells: give detectors and losses too"))
    allowed = axis_names()
    for key, values in axes.items():
        loc = ("axes", key)
        if not isinstance(values, list):
            continue  # the schema check reports it
        if not values:
            problems.append(Problem(loc, "empty list: give at least one value"))
            continue
        if not isinstance(key, str):
            problems.append(Problem(loc, "an axis name is a word"))
            continue
        if key.startswith("hyp."):
            if not key[4:]:
                problems.append(Problem(loc, "name the hyperparameter: hyp.NAME"))
            problems += [Problem(loc + (i,), "an axis value is one number or word") for i, v in enumerate(values) if isinstance(v, (dict, list))]
        elif key not in allowed:
            problems.append(Problem(loc, f"unknown axis; use one of {', '.join(allowed)} or hyp.NAME (e.g. hyp.lr0)"))
            continue
        elif key in DATA_AXES and (wrong_data := _data_axis_problem(data, key)):
            problems.append(Problem(loc, wrong_data))
        else:
            for i, value in enumerate(values):
                try:
                    _validate_axis_value(key, value)
                except ValidationError as exc:
                    problems.append(Problem(loc + (i,), pydantic_problems(exc, TrainSpec)[0].message))
        dup = [v for i, v in enumerate(values) if v in values[:i]]
        if dup:
            problems.append(Problem(loc, f"values repeat: {dup}"))
    return problems


def _data_source(data: dict) -> Any:
    spec = data.get("data", "synthetic-shapes")
    return spec.get("source", "synthetic-shapes") if isinstance(spec, dict) else spec


def _data_axis_problem(data: dict, key: str) -> str | None:
    """A data axis the grid's ``data:`` has no use for: tiling off neon-trees, sizes or seed on it."""
    source, field = _data_source(data), DATA_AXES[key]
    if field in TILE_SETTINGS and source not in TILED_DATA:
        return f"{key} is a neon-trees setting; data {source!r} is not tiled"
    if field not in TILE_SETTINGS and field != "bad_data" and source in TILED_DATA:
        return f"{key} is a synthetic-shapes setting; {source} has tile_size and tile_overlap"
    return None


def _validate_axis_value(key: str, value: Any) -> None:
    if key in TrainSpec.model_fields:
        TrainSpec.model_validate({key: value})
    elif key in DATA_AXES:
        source = {"source": TILED_DATA[0]} if DATA_AXES[key] in TILE_SETTINGS else {}
        DataSpec.model_validate({**source, DATA_AXES[key]: value})
    elif key in DETECTOR_AXES:
        DetectorSpec.model_validate({"name": "x", key: value})


# --------------------------------------------------------------------------------------
# Cells


def check_cells_against_trainer(cells: list[Cell]) -> list[Problem]:
    """Build ``detectors.TrainConfig`` for every training cell; map its errors back to keys."""
    TrainConfig = trainer_config_class()
    problems: list[Problem] = []
    for cell in cells:
        if cell.kind != "train":
            continue
        try:
            TrainConfig.model_validate(cell.trainer_kwargs())
        except ValidationError as exc:
            for item in exc.errors():
                field_name = item["loc"][0] if item["loc"] else None
                loc = tuple(cell.provenance.get(field_name, (field_name,) if field_name else ()))
                problems.append(Problem(loc, _trainer_message(item)))
    return problems


def _trainer_message(item: Any) -> str:
    message = item["msg"].removeprefix("Value error, ")
    if item.get("type") == "extra_forbidden":
        return "the trainer has no such setting"
    if item.get("type") == "literal_error":
        return f"{item['input']!r} is not allowed; " + message.replace("Input should be", "use")
    if "input" in item and not isinstance(item["input"], (dict, list)) and "got" not in message:
        return message + f" (got {item['input']!r})"
    return message
