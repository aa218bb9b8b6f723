"""Load a grid file: YAML -> schema -> checks -> a :class:`~scabench.bench.grid.Grid` and its cells.

:func:`load_grid` returns a validated grid or raises :class:`GridError` whose lines read
``file:line: key: what is wrong`` (the CLI prints them and exits 2). The schema lives in
:mod:`scabench.bench.config_schema`, the error wording in :mod:`scabench.bench.config_errors`,
the checks that need the loss registry or the trainer in :mod:`scabench.bench.config_checks`;
:mod:`scabench.bench.grid` expands the grid into cells (once, here, at load).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from scabench.bench import config_checks as checks
from scabench.bench.config_errors import GridError, Problem, pydantic_problems, yaml_lines, yaml_problem
from scabench.bench.config_schema import GridConfig, LossEntry
from scabench.bench.grid import Grid, expand

__all__ = ["GridError", "Problem", "load_grid", "parse_grid"]


def load_grid(path: str | Path, *, check_trainer: bool = True) -> Grid:
    """Read, validate and return a grid file; raise :class:`GridError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GridError(path, [Problem((), f"cannot read the grid file: {exc.strerror or exc}")]) from None
    return parse_grid(text, path, check_trainer=check_trainer)


def parse_grid(text: str, path: str | Path = "<grid>", *, check_trainer: bool = True) -> Grid:
    """Validate grid text (``path`` is used for messages and the default name) and expand it.

    Every problem is reported at once, sorted by line: the schema's (pydantic), then the
    checks of loss names and parameters, ``train:`` keys, ``axes:`` and numbers, which run on the
    raw data so they report even when the schema fails elsewhere. ``check_trainer`` also builds
    ``detectors.TrainConfig`` for every training cell. The cells are kept on the grid.
    """
    path = Path(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        problem, lines = yaml_problem(exc)
        raise GridError(path, [problem], lines) from None
    if node is None or data is None:
        raise GridError(path, [Problem((), "the grid file is empty")])
    if not isinstance(data, dict):
        raise GridError(path, [Problem((), "a grid file is a mapping of keys (name:, detectors:, losses:, ...)")], {(): 1})
    lines, problems = yaml_lines(node)
    data.setdefault("name", path.stem)
    config = None
    try:
        config = GridConfig.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_problems(exc, GridConfig)
    resolved, loss_problems = checks.check_losses(data, base=Path(path).parent)
    problems += loss_problems + checks.check_train(data) + checks.check_axes(data)
    problems += checks.check_structure(data) + checks.check_simulate(data)
    reported = {p.loc for p in problems}
    loss_lists = {prefix for prefix, _ in checks.loss_sections(data)}
    problems += [p for p in checks.check_finite(data, skip=loss_lists) if p.loc not in reported]
    if problems or config is None:
        raise GridError(path, problems, lines)
    grid = Grid(config, path, text, lines)
    _apply_losses(grid, resolved)
    cells = expand(grid)
    if check_trainer:
        problems = checks.check_cells_against_trainer(cells)
        if problems:
            raise grid.error(problems)
    return grid


def _apply_losses(grid: Grid, resolved: dict[tuple, tuple[LossEntry, dict]]) -> None:
    """Give every loss entry its full parameters ('sca' == {name: sca, alpha: 1.0})."""
    for prefix, entries in grid.config.loss_sections():
        for i, entry in enumerate(entries):
            full, defaults = resolved[prefix + (i,)]
            entry.params = full.params
            grid.loss_defaults[entry.name] = defaults
