"""``--set KEY=VALUE``: command-line overrides of a grid file or a training config.

Like mmdetection's ``--cfg-options`` and Hydra's ``key=value``: ``KEY`` is a dotted path into
the mapping (``train.epochs``, ``train.hyp.lr0``, ``detectors.0.width``: a number indexes an
existing list), missing intermediate mappings are created, and ``VALUE`` is read as YAML
(``yaml.safe_load``: ``1`` is an int, ``cpu`` a string, ``[iou, sca]`` a list, ``null`` None).
Under ``axes`` the rest of the key is one axis name (``axes.hyp.lr0=[0.01, 0.02]``).

The overridden mapping is then validated exactly as a file is (:mod:`bench.config`); a problem
at or under an overridden key is reported as ``--set KEY=VALUE: key: what is wrong``
(:class:`OverrideError`), the file's own problems at their lines, and the CLI exits 2.
Overrides are applied before a grid's cells are built, so each cell's config (and its id)
carries them: an override of what a cell computes makes new cells, one of where it runs
(``train.device``, ``train.workers``) keeps their ids.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scabench.bench.config_errors import GridError, Problem, format_loc

FLAT_UNDER = ("axes",)  # mappings whose keys may hold dots themselves (axes: {hyp.lr0: [...]})


@dataclass(frozen=True)
class Override:
    """One ``--set``: the text as given, its key path and its value."""

    text: str
    path: tuple[str | int, ...]
    value: Any

    def concerns(self, loc: tuple) -> bool:
        """Whether a problem at ``loc`` is about this override (one path contains the other)."""
        n = min(len(loc), len(self.path))
        return n > 0 and tuple(loc[:n]) == self.path[:n]


class OverrideError(GridError):
    """Problems of an overridden grid: ``--set KEY=VALUE: key: message`` for those an override
    concerns, ``file:line: key: message`` (the file's lines) for the others."""

    def __init__(self, path: str | Path, problems: list[Problem], lines: dict[tuple, int], overrides: list[Override]):
        self.overrides = overrides
        super().__init__(path, problems, lines)

    def messages(self) -> list[str]:
        out = []
        for problem in self.problems:
            given = next((o for o in self.overrides if o.concerns(problem.loc)), None)
            if given is None:
                out += GridError(self.path, [problem], self.lines).messages()
            else:
                key = format_loc(problem.loc)
                out.append(f"--set {given.text}: {key + ': ' if key else ''}{problem.message}")
        return out


def parse_overrides(texts: list[str] | None, flat_under: tuple[str, ...] = FLAT_UNDER) -> list[Override]:
    """``["train.epochs=1", ...]`` -> overrides; ValueError naming the first malformed one."""
    out = []
    for text in texts or []:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY (train.epochs=1)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {text!r}: {key}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
        parts = key.split(".")
        head = next((i + 1 for i, part in enumerate(parts[:-1]) if ".".join(parts[: i + 1]) in flat_under), None)
        path = tuple(parts[:head]) + (".".join(parts[head:]),) if head else tuple(parts)
        out.append(Override(text, tuple(int(p) if p.isdigit() else p for p in path), value))
    return out


def apply_overrides(data: dict, overrides: list[Override]) -> dict:
    """A deep copy of ``data`` with every override set; ValueError (``--set ...: why``) where a
    key path runs through a value that is not a mapping, or indexes past a list."""
    data = copy.deepcopy(data)
    for override in overrides:
        node: Any = data
        for depth, part in enumerate(override.path[:-1]):
            node = _child(node, part, override, depth)
        last = override.path[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = override.value
        elif isinstance(node, dict):
            node[str(last)] = override.value
        else:
            raise ValueError(_not_a_mapping(override, len(override.path) - 1, node))
    return data


def _child(node: Any, part: str | int, override: Override, depth: int) -> Any:
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    if not isinstance(node, dict):
        raise ValueError(_not_a_mapping(override, depth, node))
    key = str(part)
    if node.get(key) is None:
        node[key] = {}
    return node[key]


def _not_a_mapping(override: Override, depth: int, node: Any) -> str:
    where = format_loc(override.path[:depth]) or "the file"
    if isinstance(node, list):
        return f"--set {override.text}: {where} is a list of {len(node)}: index it with 0..{len(node) - 1}"
    return f"--set {override.text}: {where} is {node!r}, not a mapping; set {where} as a whole (--set '{where}={{...}}')"


def load_grid_with_overrides(path: str | Path, texts: list[str] | None, *, check_trainer: bool = True):
    """:func:`bench.config.load_grid` of the file with ``--set`` overrides applied first.

    Raises :class:`GridError` (an :class:`OverrideError` where overrides are given), or
    ValueError for a malformed ``--set`` (:func:`parse_overrides`, :func:`apply_overrides`).
    The grid's ``text`` (copied into the results folder as ``grid.yaml``) becomes the
    overridden YAML, headed by the overrides; its ``lines`` stay the file's.
    """
    from scabench.bench.config import load_grid, parse_grid
    from scabench.bench.config_errors import yaml_lines

    if not texts:
        return load_grid(path, check_trainer=check_trainer)
    path = Path(path)
    overrides = parse_overrides(texts)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return load_grid(path, check_trainer=check_trainer)  # the file's own problem, worded as always
    if not isinstance(data, dict):
        return load_grid(path, check_trainer=check_trainer)
    lines = yaml_lines(yaml.compose(text, Loader=yaml.SafeLoader))[0]
    changed = apply_overrides(data, overrides)
    header = f"# {path} with {' '.join(f'--set {o.text}' for o in overrides)} (the file's comments are not kept)\n"
    try:
        grid = parse_grid(header + yaml.safe_dump(changed, sort_keys=False), path, check_trainer=check_trainer)
    except GridError as exc:
        raise OverrideError(path, exc.problems, lines, overrides) from None
    grid.lines = lines
    return grid


def validation_messages(error, model: type, overrides: list[Override]) -> list[str]:
    """A pydantic ``ValidationError`` of ``model`` (e.g. ``TrainConfig``) as grid-style lines:
    ``--set KEY=VALUE: key: message`` for the problems an override concerns, ``key: message``
    for the others (:func:`bench.config_errors.pydantic_problems` words them)."""
    from scabench.bench.config_errors import pydantic_problems

    out = []
    for problem in pydantic_problems(error, model):
        given = next((o for o in overrides if o.concerns(problem.loc)), None)
        key = format_loc(problem.loc)
        line = f"{key}: {problem.message}" if key else problem.message
        out.append(f"--set {given.text}: {line}" if given else line)
    return out
