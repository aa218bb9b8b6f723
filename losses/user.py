"""Losses from outside the package: ``module:function``, ``path/to/file.py:function`` and the
``scabench.losses`` entry-point group.

A user loss is a plain function ``fn(pred, target, *, <params with defaults>) -> Tensor[...]``
on xyxy boxes, like the built-in ones; ``eps`` is passed only if it accepts it. It needs no
decorator. Each parameter takes values of its default's type (a float default: any finite
number). Its source file's SHA-256 is recorded so a result can be traced to the code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from scabench.losses.registry import LossFn, LossSpec, parameters, parse_expression

ENTRY_POINT_GROUP = "scabench.losses"


def is_reference(name: str) -> bool:
    """True for ``module:function`` or ``file.py:function`` (a colon; registered names have none)."""
    return ":" in name


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def references(expression: str) -> list[str]:
    """The user-loss terms of a loss name: ``"iou+0.5*my.py:fn"`` -> ``["my.py:fn"]``."""
    return [term for _, term in parse_expression(expression) if is_reference(term)]


def resolve_expression(expression: str, base: str | Path | None) -> str:
    """``expression`` with each relative ``file.py:function`` term made absolute against ``base``
    (a grid's folder); registered names and ``module:function`` terms are kept as written."""
    if base is None:
        return expression
    absolute = {}
    for term in references(expression):
        where, _, attribute = term.rpartition(":")
        if _is_file(where) and not Path(where).expanduser().is_absolute():
            absolute[term] = f"{Path(base).resolve() / where}:{attribute}"
    return rewrite_terms(expression, absolute)


def rewrite_terms(expression: str, mapping: dict[str, str]) -> str:
    """``expression`` with the terms in ``mapping`` replaced (weights kept), e.g. a user loss
    as written in a grid -> where the cell process finds it."""
    parsed = parse_expression(expression)
    if not any(term in mapping for _, term in parsed):
        return expression
    terms = [mapping.get(term, term) for _, term in parsed]
    return "+".join(term if weight == 1 else f"{weight:g}*{term}" for (weight, _), term in zip(parsed, terms))


def source_sha256(term: str) -> str:
    """SHA-256 of the file that defines a user-loss term, read now (``file.py:function``: that
    file; ``module:function``: the module's own file, imported to find it)."""
    where = term.rpartition(":")[0]
    if _is_file(where):
        path = Path(where).expanduser()
    else:
        info = source_info(load_function(term))
        if not info:
            raise ValueError(f"loss reference {term!r}: its module has no source file to hash")
        path = Path(info["file"])
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ValueError(f"loss reference {term!r}: cannot read {path}: {error.strerror or error}") from None


def _import_file(path: Path):
    module_name = f"scabench_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _import_module(name: str):
    """Import ``name`` as ``python -c`` would: the current folder first, then ``sys.path``.

    The ``scabench`` command and its cell processes do not put the current folder on
    ``sys.path`` (so no user file shadows a module); a user's ``my_losses:fn`` is found there.
    """
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def load_function(reference: str) -> LossFn:
    """Import the function a ``module:function`` or ``path.py:function`` reference names."""
    where, _, attribute = reference.rpartition(":")
    if not where or not attribute:
        raise ValueError(f"loss reference {reference!r} must look like 'module:function' or 'file.py:function'")
    try:
        if _is_file(where):
            path = Path(where).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no file {path.resolve()}")
            module = _import_file(path)
        else:
            module = _import_module(where)
    except (ImportError, FileNotFoundError) as error:
        raise ValueError(f"loss reference {reference!r}: cannot import {where!r}: {error}") from error
    fn = getattr(module, attribute, None)
    if not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"loss reference {reference!r}: {where!r} has no function {attribute!r}; it has: {public}")
    return fn


def source_info(fn: Any) -> dict[str, str]:
    """The file that defines ``fn`` and its SHA-256 (empty where it has none)."""
    try:
        path = Path(inspect.getsourcefile(fn) or "")
    except TypeError:
        return {}
    if not path.is_file():
        return {}
    return {"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def spec_for_function(name: str, fn: LossFn, reference: str = "") -> LossSpec:
    """Describe an undecorated function as a :class:`LossSpec`; its docstring gives the formula."""
    signature = inspect.signature(fn)
    positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        raise ValueError(f"loss {name!r}: {fn.__qualname__}{signature} must take (pred, target, ...)")
    defaults = parameters(name, fn)
    accepts_eps = "eps" in signature.parameters or any(
        p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
    )
    doc = inspect.getdoc(fn) or ""
    info = source_info(fn)
    return LossSpec(
        name=name,
        fn=fn,
        formula=doc.splitlines()[0] if doc else fn.__qualname__,
        paper="user-defined",
        reference=reference or info.get("file", fn.__module__),
        stateful="state" in signature.parameters,
        detaches=getattr(fn, "detaches", False),
        defaults=defaults,
        accepts_eps=accepts_eps,
        source=info,
    )


def entry_point_specs() -> dict[str, LossSpec]:
    """Losses that installed packages publish in the ``scabench.losses`` entry-point group."""
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = spec_for_function(entry.name, entry.load(), reference=entry.value)
    return found
