"""Grid-file errors that read ``file:line: key: what is wrong``.

:func:`yaml_lines` maps every key path of the YAML document to its line (and finds duplicate
keys, which ``yaml.safe_load`` silently merges); :func:`pydantic_problems` turns a pydantic
``ValidationError`` into :class:`Problem` s worded for a grid file; :class:`GridError` prints them
with the file and line of each key (the CLI prints its lines and exits 2).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scabench.bench.config_schema import LossEntry

YAML_LOC = "<yaml>"  # the location of a problem of the YAML text itself (not of a key)

# Model names pydantic may put into an error's location (never keys of the file).
_UNION_TAGS = {"LossEntry", "DetectorSpec", "DataSpec", "StudySpec"}


@dataclass
class Problem:
    """One thing wrong with a grid: the key path it concerns and what is wrong."""

    loc: tuple[Any, ...]
    message: str


class GridError(Exception):
    """A grid file is invalid. ``str(error)`` is one ``file:line: key: what is wrong`` per line."""

    def __init__(self, path: str | Path, problems: list[Problem], lines: dict[tuple, int] | None = None):
        self.path = str(path)
        self.lines = lines or {}
        self.problems = sort_problems(problems, self.lines)
        super().__init__(self.format())

    def messages(self) -> list[str]:
        out = []
        for problem in self.problems:
            line = line_of(problem.loc, self.lines)
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
        if part == YAML_LOC:
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def line_of(loc: tuple[Any, ...], lines: dict[tuple, int]) -> int | None:
    """The line of ``loc``, or of its nearest parent that has one."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def sort_problems(problems: list[Problem], lines: dict[tuple, int]) -> list[Problem]:
    """Problems without repeats, in line order."""
    unique = list({(p.loc, p.message): p for p in problems}.values())
    return sorted(unique, key=lambda p: line_of(p.loc, lines) or 0)


def yaml_lines(node: yaml.Node) -> tuple[dict[tuple, int], list[Problem]]:
    """Map every key path of a composed YAML document to its 1-based line; find duplicate keys."""
    lines: dict[tuple, int] = {}
    problems: list[Problem] = []

    def visit(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    problems.append(Problem(path + (key,), f"duplicate key (also set on line {lines[path + (key,)]})"))
                seen.add(key)
                lines[path + (key,)] = key_node.start_mark.line + 1
                visit(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, path + (i,))

    visit(node, ())
    return lines, problems


def yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[Problem, dict[tuple, int]]:
    """The problem of unreadable YAML text, and the line it is on."""
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc}"
    if exc.context:
        message += f" ({exc.context})"
    return Problem((YAML_LOC,), message), ({(YAML_LOC,): mark.line + 1} if mark else {})


def pydantic_problems(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """A pydantic error of ``model`` worded for a grid file (``unknown key; allowed: ...``)."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and (part in _UNION_TAGS or part == "[key]")))
        problems.append(Problem(loc, _message(item, model, loc)))
    return problems


def _message(item: Any, model: type[BaseModel], loc: tuple) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short" and isinstance(item.get("input"), (list, dict)):
        return "empty list: give at least one entry"
    if kind == "literal_error":
        return f"{item['input']!r} is not allowed; " + item["msg"].replace("Input should be", "use")
    if kind == "string_pattern_mismatch":
        return f"{item['input']!r}: use letters, digits, '.', '_' or '-'"
    message = item["msg"].removeprefix("Value error, ")
    if "input" in item and kind not in ("value_error", "assertion_error") and not isinstance(item["input"], (dict, list)):
        message += f" (got {item['input']!r})"
    return message


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at ``loc`` (for the 'unknown key' message)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not _is_model(current):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if current is LossEntry:
        return ["name", "<the loss's parameters>"]
    return list(current.model_fields) if _is_model(current) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside ``list[X] | None``, ``dict[str, X]``, ... (or None)."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None
