"""Grid files: the YAML schema of ``experiments/*.yaml``, validated with pydantic, errors by line.

A grid names what to train and what to simulate; :mod:`bench.grid` expands it into cells::

    name: quick                                   # results go to results/<name> by default
    data: synthetic-shapes                        # or a path, or {source, train_size, val_size, seed}
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

:func:`load_grid` returns a :class:`Grid` or raises :class:`GridError` whose lines read
``file:line: key: what is wrong`` (the CLI prints them and exits 2). Loss names and their
parameters are checked through :func:`losses.get_loss`; when the ``detectors`` package is
importable, every expanded cell is also checked against ``detectors.TrainConfig``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STUDIES = ("convergence", "gradients", "corner-center")
SYNTHETIC_DATA = ("synthetic-shapes",)

# Trainer settings a grid may set under ``train:`` or cross under ``axes:``. ``device`` and
# ``workers`` say where a cell runs, not what it computes: they never enter a cell's hash.
RUNTIME_FIELDS = ("device", "workers")
# Fields a cell's identity is built from elsewhere in the grid (not valid as ``axes``).
IDENTITY_FIELDS = ("data", "detector", "loss", "loss_params", "seed")
# Axes that come from the data / detector sections rather than ``train:``.
DATA_AXES = {"train_size": "train_size", "val_size": "val_size", "data_seed": "seed", "bad_data": "bad_data"}
DETECTOR_AXES = ("width", "depth")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(_Strict):
    """``data:`` -- a built-in data set name or a path, and the sizes of its splits."""

    source: str = "synthetic-shapes"
    train_size: int | None = Field(None, gt=0)
    val_size: int | None = Field(None, gt=0)
    seed: int | None = None
    bad_data: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a data set name (synthetic-shapes) or a path")
        return value

    @property
    def is_path(self) -> bool:
        return self.source not in SYNTHETIC_DATA

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
    ``amp``, ...) is accepted too and checked against the trainer (see ``_check_train``).
    """

    model_config = ConfigDict(extra="allow", validate_default=True)

    epochs: int | None = Field(None, gt=0)
    img_size: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    obj_target: Literal["loss", "iou"] | None = None
    device: str | None = None
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

    studies: dict[Literal["convergence", "gradients", "corner-center"], StudySpec] = Field(
        default_factory=lambda: {s: StudySpec() for s in STUDIES}
    )
    losses: list[LossEntry] | None = Field(None, min_length=1)
    seed: int = 0
    device: str = "cpu"
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
    cpus_per_cell: int = Field(4, ge=1)
    mem_gb: int | None = Field(None, gt=0)
    time_min: int = Field(24 * 60, gt=0)
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


# --------------------------------------------------------------------------------------
# Errors with file:line


@dataclass
class Problem:
    loc: tuple[Any, ...]
    message: str


class GridError(Exception):
    """A grid file is invalid. ``str(error)`` is one ``file:line: key: what is wrong`` per line."""

    def __init__(self, path: str | Path, problems: list[Problem], lines: dict[tuple, int] | None = None):
        self.path = str(path)
        self.problems = problems
        self.lines = lines or {}
        super().__init__(self.format())

    def messages(self) -> list[str]:
        out = []
        for problem in self.problems:
            line = _line_of(problem.loc, self.lines)
            key = format_loc(problem.loc)
            where = f"{self.path}:{line}" if line else self.path
            out.append(f"{where}: {key}: {problem.message}" if key else f"{where}: {problem.message}")
        return out

    def format(self) -> str:
        return "\n".join(self.messages())


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('detectors', 0, 'width')`` -> ``detectors[0].width``."""
    text = ""
    for part in loc:
        if part == "<yaml>":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _line_of(loc: tuple[Any, ...], lines: dict[tuple, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _node_lines(node: yaml.Node, path: tuple = (), lines: dict | None = None, problems: list | None = None):
    """Map every key path of a composed YAML document to its 1-based line; find duplicate keys."""
    lines = {} if lines is None else lines
    problems = [] if problems is None else problems
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(Problem(path + (key,), f"duplicate key (also set on line {lines[path + (key,)]})"))
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, path + (key,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, path + (i,), lines, problems)
    return lines, problems


def _pydantic_problems(error: ValidationError, model: type[BaseModel], data: Any) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and (part in _UNION_TAGS or part == "[key]")))
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1], data)
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "too_short" and isinstance(item.get("input"), (list, dict)):
            message = "empty list: give at least one entry"
        elif kind == "literal_error":
            message = f"{item['input']!r} is not allowed; " + item["msg"].replace("Input should be", "use")
        elif kind == "string_pattern_mismatch":
            message = f"{item['input']!r}: use letters, digits, '.', '_' or '-'"
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            if "input" in item and kind not in ("value_error", "assertion_error") and not isinstance(item["input"], (dict, list)):
                message += f" (got {item['input']!r})"
        problems.append(Problem(loc, message))
    return problems


# Model names pydantic may put into an error's location (never keys of the file).
_UNION_TAGS = {"LossEntry", "DetectorSpec", "DataSpec", "StudySpec"}


def _allowed_keys(model: type[BaseModel], loc: tuple, data: Any) -> list[str]:
    """Field names of the sub-model at ``loc`` (for the 'unknown key' message)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        names = list(current.model_fields)
        if current is LossEntry:
            return ["name", "<the loss's parameters>"]
        return names
    return []


def _inner_model(annotation: Any) -> Any:
    import typing

    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args:
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


# --------------------------------------------------------------------------------------
# Loading


@dataclass
class Grid:
    """A validated grid file: the model, its source path and text, and its key -> line map."""

    config: GridConfig
    path: Path
    text: str
    lines: dict[tuple, int] = field(default_factory=dict)
    loss_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def error(self, problems: list[Problem]) -> GridError:
        return GridError(self.path, problems, self.lines)


def load_grid(path: str | Path, *, check_trainer: bool = True) -> Grid:
    """Read, validate and return a grid file; raise :class:`GridError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GridError(path, [Problem((), f"cannot read the grid file: {exc.strerror or exc}")]) from None
    return parse_grid(text, path, check_trainer=check_trainer)


def parse_grid(text: str, path: str | Path = "<grid>", *, check_trainer: bool = True) -> Grid:
    """Validate grid text (``path`` is used for messages and the default name).

    Every problem is reported at once, sorted by line: the schema's (pydantic), then the
    checks of loss names and parameters, ``train:`` keys and ``axes:``, which run on the raw
    data so they report even when the schema fails elsewhere. ``check_trainer`` also builds
    ``detectors.TrainConfig`` for every training cell (when that package is importable).
    """
    path = Path(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context:
            message += f" ({exc.context})"
        raise GridError(path, [Problem((_YAML,), message)], {(_YAML,): line} if line else {}) from None
    if node is None or data is None:
        raise GridError(path, [Problem((), "the grid file is empty")])
    if not isinstance(data, dict):
        raise GridError(path, [Problem((), "a grid file is a mapping of keys (name:, detectors:, losses:, ...)")], {(): 1})
    lines, problems = _node_lines(node)
    data.setdefault("name", path.stem)
    config = None
    try:
        config = GridConfig.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, GridConfig, data)
    resolved, loss_problems = _check_losses(data)
    problems += loss_problems + _check_train(data) + _check_axes(data) + _check_structure(data) + _check_simulate(data)
    if problems or config is None:
        raise GridError(path, _sorted(problems, lines), lines)
    grid = Grid(config, path, text, lines)
    _apply_losses(grid, resolved)
    if check_trainer:
        problems = _check_against_trainer(grid)
        if problems:
            raise grid.error(_sorted(problems, lines))
    return grid


_YAML = "<yaml>"


def _sorted(problems: list[Problem], lines: dict[tuple, int]) -> list[Problem]:
    unique, seen = [], set()
    for problem in problems:
        key = (problem.loc, problem.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return sorted(unique, key=lambda p: _line_of(p.loc, lines) or 0)


def study_options() -> dict[str, tuple[str, ...]] | None:
    """``bench.simulate.STUDY_OPTIONS`` (study -> option names), or None if not importable."""
    try:
        from scabench.bench.simulate import STUDY_OPTIONS  # noqa: PLC0415  (lazy: imports torch)
    except Exception:  # noqa: BLE001
        return None
    return dict(STUDY_OPTIONS)


def _check_simulate(data: dict) -> list[Problem]:
    """Study options must be options of that study (shared ``options:``: of some study)."""
    simulate = data.get("simulate")
    if not isinstance(simulate, dict):
        return []
    known = study_options()
    if known is None:
        return []
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


def _check_structure(data: dict) -> list[Problem]:
    has = {key: data.get(key) not in (None, [], {}) for key in ("detectors", "losses", "simulate")}
    if has["detectors"] and "losses" not in data:
        return [Problem(("detectors",), "detectors need losses: to train with (losses: [iou, sca])")]
    if has["losses"] and "detectors" not in data and not has["simulate"]:
        return [Problem(("losses",), "losses need detectors: to train, or a simulate: section")]
    return []


def _check_train(data: dict) -> list[Problem]:
    """Keys of ``train:`` beyond the typed ones must be trainer settings."""
    train = data.get("train")
    if not isinstance(train, dict):
        return []
    extra = [k for k in train if k not in TrainSpec.model_fields]
    if not extra:
        return []
    fields = trainer_fields() or []
    where = {"data": "data:", "train_size": "data:", "val_size": "data:", "data_seed": "data: (seed)",
             "bad_data": "data:", "detector": "detectors:", "width": "detectors:", "depth": "detectors:",
             "loss": "losses:", "loss_params": "losses:", "seed": "seeds:"}
    allowed = list(TrainSpec.model_fields) + [f for f in fields if f not in where and f not in TrainSpec.model_fields]
    problems = []
    for key in extra:
        if key in where:
            problems.append(Problem(("train", key), f"set it under {where[key]}, not train:"))
        elif key not in fields:
            problems.append(Problem(("train", key), "unknown key; allowed: " + ", ".join(allowed)))
    return problems


def _loss_sections(data: dict) -> list[tuple[tuple, list]]:
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


def _check_losses(data: dict) -> tuple[dict, list[Problem]]:
    """Check every loss entry through ``losses.get_loss``; return the resolved parameters."""
    from scabench import losses

    problems: list[Problem] = []
    resolved: dict[tuple, tuple[dict, dict]] = {}
    for prefix, entries in _loss_sections(data):
        labels: dict[str, int] = {}
        for i, raw in enumerate(entries):
            loc = prefix + (i,)
            try:
                entry = LossEntry.model_validate(raw)
            except ValidationError:
                continue  # the schema check reports it
            try:
                base = losses.get_loss(entry.name)
            except Exception as exc:  # noqa: BLE001  (KeyError/ValueError, or a user loss failing to import)
                problems.append(Problem(loc + ("name",) if isinstance(raw, dict) else loc, _exc_text(exc)))
                continue
            defaults = dict(getattr(base, "params", {}) or {})
            try:
                bound = losses.get_loss(entry.name, **entry.params)
            except Exception as exc:  # noqa: BLE001
                bad = [k for k in entry.params if k not in defaults]
                problems.append(Problem(loc + ((bad[0],) if bad else ()), _exc_text(exc)))
                continue
            params = dict(getattr(bound, "params", {}) or {})
            resolved[loc] = (params, defaults)
            label = LossEntry(name=entry.name, params=params).label(defaults)
            if label in labels:
                problems.append(Problem(loc, f"loss {label!r} is listed twice (also entry {labels[label]})"))
            labels[label] = i
    baseline = data.get("baseline")
    if isinstance(baseline, str) and isinstance(data.get("losses"), list):
        names = []
        for i, raw in enumerate(data["losses"]):
            if ("losses", i) in resolved:
                params, defaults = resolved[("losses", i)]
                names.append(LossEntry(name=LossEntry.model_validate(raw).name, params=params).label(defaults))
        if names and len(names) == len(data["losses"]) and baseline not in names:
            problems.append(Problem(("baseline",), f"{baseline!r} is not one of the grid's losses: {', '.join(names)}"))
    return resolved, problems


def _apply_losses(grid: Grid, resolved: dict[tuple, tuple[dict, dict]]) -> None:
    """Give every loss entry its full parameters ('sca' == {name: sca, alpha: 1.0})."""
    sections = [(("losses",), grid.config.losses or [])]
    if grid.config.simulate and grid.config.simulate.losses:
        sections.append((("simulate", "losses"), grid.config.simulate.losses))
    if grid.config.simulate:
        for study, spec in grid.config.simulate.studies.items():
            if spec.losses:
                sections.append((("simulate", "studies", study, "losses"), spec.losses))
    for prefix, entries in sections:
        for i, entry in enumerate(entries):
            params, defaults = resolved[prefix + (i,)]
            entry.params = params
            grid.loss_defaults[entry.name] = defaults


def _exc_text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def trainer_config_class() -> Any:
    """``detectors.TrainConfig``, or None when the package is not importable (yet)."""
    try:
        from scabench.detectors import TrainConfig  # noqa: PLC0415  (lazy: heavy)
    except Exception:  # noqa: BLE001
        try:
            from scabench.detectors.config import TrainConfig  # noqa: PLC0415
        except Exception:  # noqa: BLE001
            return None
    return TrainConfig


def trainer_fields() -> list[str] | None:
    """Field names of ``detectors.TrainConfig``, or None when the package is not importable."""
    cls = trainer_config_class()
    return None if cls is None else list(cls.model_fields)


def axis_names(fields: list[str] | None = None) -> list[str]:
    """Keys allowed under ``axes:`` (``hyp.NAME`` is always allowed too)."""
    known = list(TrainSpec.model_fields) + list(DATA_AXES) + list(DETECTOR_AXES)
    if fields:
        known += fields
    out = []
    for name in known:
        if name in IDENTITY_FIELDS or name in RUNTIME_FIELDS or name == "hyp" or name in out:
            continue
        out.append(name)
    return out


def _check_axes(data: dict) -> list[Problem]:
    axes = data.get("axes")
    if not isinstance(axes, dict):
        return []
    problems = []
    if axes and not (data.get("detectors") and data.get("losses")):
        problems.append(Problem(("axes",), "axes cross training cells: give detectors and losses too"))
    allowed = axis_names(trainer_fields())
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
            for i, value in enumerate(values):
                if isinstance(value, (dict, list)):
                    problems.append(Problem(loc + (i,), "an axis value is one number or word"))
        elif key not in allowed:
            problems.append(Problem(loc, f"unknown axis; use one of {', '.join(allowed)} or hyp.NAME (e.g. hyp.lr0)"))
            continue
        else:
            for i, value in enumerate(values):
                try:
                    _validate_axis_value(key, value)
                except ValidationError as exc:
                    problems.append(Problem(loc + (i,), _pydantic_problems(exc, TrainSpec, {})[0].message))
        dup = [v for i, v in enumerate(values) if v in values[:i]]
        if dup:
            problems.append(Problem(loc, f"values repeat: {dup}"))
    return problems


def _validate_axis_value(key: str, value: Any) -> None:
    if key in TrainSpec.model_fields:
        TrainSpec.model_validate({key: value})
    elif key in DATA_AXES:
        DataSpec.model_validate({DATA_AXES[key]: value})
    elif key in DETECTOR_AXES:
        DetectorSpec.model_validate({"name": "x", key: value})


def _check_against_trainer(grid: Grid) -> list[Problem]:
    """Build ``detectors.TrainConfig`` for every training cell; map its errors back to lines."""
    TrainConfig = trainer_config_class()
    if TrainConfig is None:
        return []  # not built yet / broken: the runner reports it per cell
    from scabench.bench.grid import expand  # noqa: PLC0415  (grid imports config)

    problems: list[Problem] = []
    for cell in expand(grid):
        if cell.kind != "train":
            continue
        try:
            TrainConfig.model_validate(cell.trainer_kwargs())
        except ValidationError as exc:
            for item in exc.errors():
                field_name = item["loc"][0] if item["loc"] else None
                loc = tuple(cell.provenance.get(field_name, (field_name,) if field_name else ()))
                message = item["msg"].removeprefix("Value error, ")
                if item.get("type") == "extra_forbidden":
                    message = "the trainer has no such setting"
                elif item.get("type") == "literal_error":
                    message = f"{item['input']!r} is not allowed; " + message.replace("Input should be", "use")
                elif "input" in item and not isinstance(item["input"], (dict, list)) and "got" not in message:
                    message += f" (got {item['input']!r})"
                problems.append(Problem(loc, message))
    return problems
