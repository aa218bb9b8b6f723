"""Option defaults written once: in the signature of the function a command calls.

A command's options default to ``None`` ("not given") and the command passes on only those
given (:func:`given`), so the called function's own defaults apply. Its ``--help`` still shows
them: :func:`defaults_of` gives the command class that reads them from the function (or
pydantic model) when the help is printed, so ``scabench --help`` imports none of it (no torch).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.markup import escape
from typer.core import TyperCommand

from scabench.devices import parse_device


def given(**options: Any) -> dict[str, Any]:
    """The options that were given on the command line (``None`` means: not given)."""
    return {name: value for name, value in options.items() if value is not None}


def source_defaults(source: str) -> dict[str, Any]:
    """Defaults of ``module:name``: a function's keyword parameters or a pydantic model's fields."""
    module, _, name = source.partition(":")
    target = getattr(importlib.import_module(module), name)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return {key: info.default for key, info in target.model_fields.items() if info.default is not PydanticUndefined}
    return {
        key: param.default
        for key, param in inspect.signature(target).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


def defaults_of(source: str) -> type[TyperCommand]:
    """A command class whose ``--help`` adds ``[default: X]`` to every option left unset
    (``None``) that names a parameter of ``source`` (``module:function`` or ``module:Model``),
    which is imported only when that help is printed."""

    class ShowsDefaultsOf(TyperCommand):
        def format_help(self, ctx: typer.Context, formatter: Any) -> None:
            defaults = source_defaults(source)
            for param in self.params:
                default = defaults.get(param.name or "")
                if param.default is None and default not in (None, {}, [], ()) and "[default:" not in (param.help or ""):
                    param.help = f"{param.help or ''} {escape(f'[default: {default}]')}".strip()
            super().format_help(ctx, formatter)

    return ShowsDefaultsOf


def device_option(value: str | None) -> str | None:
    """Typer callback of a ``--device`` option: ``auto | cpu | cuda[:N]``, else a usage error."""
    try:
        return None if value is None else parse_device(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
