"""What a ``device`` string means, everywhere in scabench: ``auto | cpu | cuda | cuda:N``.

``parse_device`` checks the spelling only (no torch import: configs validate it at load time);
``resolve_device`` turns a valid string into a ``torch.device`` on this machine, with ``auto``
meaning the first GPU when CUDA is available and the CPU otherwise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(spec: str) -> str:
    """Return ``spec`` stripped if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else ValueError."""
    text = str(spec).strip().lower()
    if not _DEVICE.fullmatch(text):
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {spec!r}")
    return text


def wants_cuda(spec: str | None) -> bool:
    """Whether a (valid or unset) device string may place work on a GPU: ``auto`` and ``cuda*``."""
    return spec is None or parse_device(spec) != "cpu"


def resolve_device(spec: str | None = "auto") -> "torch.device":
    """The ``torch.device`` for ``spec`` here; ValueError when it asks for CUDA that is absent."""
    import torch

    text = parse_device(spec or "auto")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return device
