"""What every study is given, checked once: loss specs, counts, precision, device, progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from scabench import losses as loss_zoo
from scabench.bench.studies.defaults import DTYPES
from scabench.devices import resolve_device

ProgressFn = Callable[[str, float], None]
"""``progress(label, fraction_done)``: called as work finishes (fraction in [0, 1])."""

_TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}


@dataclass(frozen=True)
class LossRef:
    """A loss as a study names it: ``label`` (the CSV's ``loss`` column), registry name, params."""

    label: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def build(self) -> loss_zoo.BoxLoss:
        return loss_zoo.get_loss(self.name, **dict(self.params))


LossSpecs = str | Sequence[str | tuple[str, dict[str, Any]] | dict[str, Any] | LossRef]


def _label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
    return f"{name}({shown})"


def _name_and_params(entry: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(entry, dict):
        return entry.get("name"), dict(entry.get("params") or {})
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return entry[0], dict(entry[1] or {})
    return entry, {}


def resolve_losses(losses: LossSpecs) -> list[LossRef]:
    """Loss specs -> :class:`LossRef`, each checked with :func:`scabench.losses.get_loss`.

    Accepts ``"a,b,c"``, or a list whose entries are a name (registered, composed such as
    ``iou+cd``, or ``module:function``), a ``(name, params)`` pair or ``{"name", "params"}``.
    Raises ValueError naming the bad entry and listing the registered names.
    """
    entries: list[Any] = [n.strip() for n in losses.split(",")] if isinstance(losses, str) else list(losses)
    refs = []
    for entry in entries:
        if isinstance(entry, LossRef):
            refs.append(entry)
            continue
        name, params = _name_and_params(entry)
        if not isinstance(name, str):
            raise ValueError(f"cannot read loss entry {entry!r}: give a name or (name, params)")
        name = name.strip()
        if not name:
            continue
        try:
            loss_zoo.get_loss(name, **params)
        except (KeyError, ValueError, TypeError) as error:
            message = error.args[0] if error.args else str(error)
            raise ValueError(str(message)) from None
        refs.append(LossRef(_label(name, params), name, tuple(sorted(params.items()))))
    if not refs:
        raise ValueError("no loss given; available: " + ", ".join(loss_zoo.available()))
    labels = [r.label for r in refs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"losses repeat in {labels}")
    return refs


def positive(name: str, value: int) -> int:
    """``value`` as an int if it is a positive integer, else ValueError naming ``name``."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"float64"`` (or the torch dtype itself) -> torch dtype; else ValueError."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _TORCH_DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    try:
        return _TORCH_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


def as_device(device: str | torch.device) -> torch.device:
    """A device string (``auto | cpu | cuda[:N]``, :mod:`scabench.devices`) or torch device."""
    return resolve_device(str(device))
