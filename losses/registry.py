"""The loss registry: names -> loss functions, with their paper, reference and parameters.

A loss is a plain function ``fn(pred, target, *, eps=1e-7, **params) -> Tensor[...]`` on
xyxy boxes of shape ``[..., 4]``, one value per box, no reduction. Its parameters are its
keyword-only arguments; their defaults are the published ones. ``get_loss`` wraps it in a
:class:`BoxLoss`, which checks shapes, computes in float32 under autocast and yields the
similarity a detector uses as its objectness target.

Names may be composed: ``"iou+cd"``, ``"so+0.5*cd"`` (weighted sum of registered losses,
each with its defaults); see :func:`parse_expression`.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

DEFAULT_EPS = 1e-7
LossFn = Callable[..., Tensor]

SIMILARITY_KINDS = ("one_minus_loss", "iou")


@dataclass(frozen=True)
class LossSpec:
    """One registered loss and what a reader needs to trust it."""

    name: str
    fn: LossFn
    formula: str
    paper: str
    reference: str
    similarity: str = "one_minus_loss"
    stateful: bool = False
    detaches: bool = False  # a term is computed under no_grad: gradcheck does not apply
    defaults: dict[str, Any] = field(default_factory=dict)
    accepts_eps: bool = True
    source: dict[str, str] = field(default_factory=dict)  # user losses: file and sha256


_REGISTRY: dict[str, LossSpec] = {}


def register(
    name: str,
    *,
    formula: str,
    paper: str,
    reference: str,
    similarity: str = "one_minus_loss",
    stateful: bool = False,
    detaches: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Decorator that registers ``fn`` under ``name``; its keyword-only args are its parameters.

    ``similarity`` says what a detector takes as objectness target: ``one_minus_loss``
    (as the authors' YOLOv3 code does with GIoU/DIoU/CIoU/SCA) or plain ``iou`` (losses whose
    value is no similarity, e.g. L1 or the focusing-weighted ones).
    """
    if similarity not in SIMILARITY_KINDS:
        raise ValueError(f"similarity must be one of {SIMILARITY_KINDS}, got {similarity!r}")

    def decorate(fn: LossFn) -> LossFn:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
        _check_name(name)
        _REGISTRY[name] = LossSpec(
            name, fn, formula, paper, reference, similarity, stateful, detaches, parameters(name, fn)
        )
        return fn

    return decorate


def parameters(name: str, fn: LossFn) -> dict[str, Any]:
    """A loss's parameters: its keyword-only arguments but eps/state, each with its default."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("eps", "state")
    }
    missing = [k for k, v in defaults.items() if v is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"loss {name!r}: parameters {missing} need (published) defaults")
    return defaults


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_\-]*", name):
        raise ValueError(f"loss name {name!r} must be lower-case letters, digits, '-' or '_'")


def available() -> list[str]:
    """Registered loss names (built-in and entry points), sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


_USER_SPECS: dict[tuple[str, str], LossSpec] = {}


def spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of a registered name or a ``module:function`` reference.

    Unknown names list what exists.
    """
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    from scabench.losses import user

    if user.is_reference(name):
        key = (name, user.resolve_expression(name, os.getcwd()))  # a relative file.py:fn is per folder
        if key not in _USER_SPECS:
            _USER_SPECS[key] = user.spec_for_function(name, user.load_function(name))
        return _USER_SPECS[key]
    raise KeyError(
        f"unknown loss {name!r}; available: {', '.join(sorted(_REGISTRY))} "
        "(or 'module:function' / 'file.py:function' for your own)"
    )


_entry_points_loaded = False


def _ensure_loaded() -> None:
    """Import the built-in modules (they register on import) and the entry-point losses once."""
    global _entry_points_loaded
    from scabench import losses  # noqa: F401

    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from scabench.losses import user

    for name, entry_spec in user.entry_point_specs().items():
        if name in _REGISTRY:
            raise ValueError(
                f"entry point {user.ENTRY_POINT_GROUP}:{name} ({entry_spec.reference}) clashes with "
                f"the registered loss {name!r}"
            )
        _check_name(name)
        _REGISTRY[name] = entry_spec


# --------------------------------------------------------------------------------------
# Input checks


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.shape[-1:] != (4,):
        raise ValueError(
            "pred and target must both have shape [..., 4] (xyxy) and match; "
            f"got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )


def check_boxes(boxes: Tensor, *, name: str = "boxes", allow_empty_area: bool = False) -> None:
    """Validate xyxy boxes at a data boundary (not in the hot loss path: this syncs).

    Raises ValueError naming the first bad box index and why: wrong shape, non-finite
    coordinate, x2 < x1 or y2 < y1 (inverted), or zero area unless ``allow_empty_area``.
    """
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected shape [..., 4] (xyxy), got {tuple(boxes.shape)}")
    flat = boxes.detach().reshape(-1, 4)
    problems = [
        (~torch.isfinite(flat).all(dim=1), "non-finite coordinate"),
        (flat[:, 2] < flat[:, 0], "x2 < x1 (inverted box)"),
        (flat[:, 3] < flat[:, 1], "y2 < y1 (inverted box)"),
    ]
    if not allow_empty_area:
        problems.append(((flat[:, 2] <= flat[:, 0]) | (flat[:, 3] <= flat[:, 1]), "zero area"))
    first: tuple[int, str] | None = None
    for bad, why in problems:
        hits = bad.nonzero()
        if len(hits) and (first is None or int(hits[0]) < first[0]):
            first = (int(hits[0]), why)
    if first is not None:
        index, why = first
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), boxes.shape[:-1]))
        where_str = where[0] if len(where) == 1 else where
        raise ValueError(f"{name}[{where_str}] = {flat[index].tolist()}: {why}")


# --------------------------------------------------------------------------------------
# The callable a user gets


class BoxLoss:
    """A loss bound to its parameters: ``loss(pred, target) -> Tensor[...]`` (no reduction).

    Half-precision inputs (and calls under autocast) are computed in float32: box areas
    overflow fp16 above ~256 px; gradients flow back saturated at the half type's range
    (finite, see :class:`_HalfToFloat32`). ``similarity(pred, target)`` gives the detached objectness
    target. Stateful losses (Wise-IoU v2/v3) keep their running mean in ``self.state``
    and update it only while ``self.training`` is true; ``state_dict`` / ``load_state_dict``
    save and restore it (a checkpoint's ``loss_state``).
    """

    def __init__(self, spec: LossSpec, params: dict[str, Any], eps: float = DEFAULT_EPS):
        self.spec = spec
        self.name = spec.name
        self.params = {**spec.defaults, **params}
        self.eps = eps
        self.state: dict[str, Tensor] = {}
        self.training = True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"BoxLoss({self.name}{', ' if args else ''}{args})"

    def train(self, mode: bool = True) -> "BoxLoss":
        self.training = mode
        return self

    def eval(self) -> "BoxLoss":
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """The loss's running state (Wise-IoU v2/v3: ``iou_mean``), for a checkpoint; ``{}`` if stateless."""
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Restore what :meth:`state_dict` returned, its tensors moved to ``device`` when given."""
        self.state.clear()
        self.state.update({k: v.to(device) if device is not None and torch.is_tensor(v) else v for k, v in state.items()})

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        pred, target = _float32_if_half(pred), _float32_if_half(target)
        kwargs = dict(self.params)
        if self.spec.stateful:
            kwargs["state"] = self.state if self.training else {**self.state, "frozen": True}
        if self.spec.accepts_eps:
            kwargs["eps"] = self.eps
        if torch.is_autocast_enabled(pred.device.type):
            with torch.autocast(pred.device.type, enabled=False):
                return self.spec.fn(pred, target, **kwargs)
        return self.spec.fn(pred, target, **kwargs)

    def similarity(self, pred: Tensor, target: Tensor, loss: Tensor | None = None) -> Tensor:
        """Objectness target (detached): ``1 - loss`` or IoU, as the spec says.

        Pass the already computed ``loss`` to avoid a second pass where it is ``1 - loss``.
        """
        with torch.no_grad():
            if self.spec.similarity == "iou":
                from scabench.losses.iou import box_iou_pairwise

                return box_iou_pairwise(_float32_if_half(pred), _float32_if_half(target), eps=self.eps)
            if loss is None:
                loss = self(pred, target)
            return 1.0 - loss.detach()


class _HalfToFloat32(torch.autograd.Function):
    """``x.float()`` whose backward saturates at the half type's largest value instead of
    overflowing to inf: a loss computed in float32 may have float32 gradients beyond float16's
    65504 at degenerate boxes (GIoU of two zero-width boxes ~ h / eps, CIoU's aspect term of a
    point ~ 1 / eps), and the plain cast back would turn them into inf. NaN stays NaN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.half_dtype = x.dtype
        return x.float()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        limit = torch.finfo(ctx.half_dtype).max
        return grad.clamp(-limit, limit).to(ctx.half_dtype)


def _float32_if_half(x: Tensor) -> Tensor:
    return _HalfToFloat32.apply(x) if x.dtype in (torch.float16, torch.bfloat16) else x


class CompositeLoss(BoxLoss):
    """A weighted sum of registered losses, e.g. ``iou+cd`` or ``so+0.5*cd``."""

    def __init__(self, expression: str, terms: list[tuple[float, BoxLoss]]):
        self.name = expression
        self.terms = terms
        self.params = {}
        self.eps = terms[0][1].eps
        self.training = True
        self.spec = LossSpec(
            expression,
            self._sum,
            " + ".join(f"{w:g}*({t.spec.formula})" if w != 1 else t.spec.formula for w, t in terms),
            "; ".join(dict.fromkeys(t.spec.paper for _, t in terms)),
            "composition of registered losses",
            detaches=any(t.spec.detaches for _, t in terms),
            stateful=any(t.spec.stateful for _, t in terms),
        )

    def train(self, mode: bool = True) -> "CompositeLoss":
        self.training = mode
        for _, term in self.terms:
            term.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        """``{"terms": [each term's state, in order]}``."""
        return {"terms": [term.state_dict() for _, term in self.terms]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        terms = state["terms"]
        if len(terms) != len(self.terms):
            raise ValueError(f"{self.name}: state for {len(terms)} terms, the loss has {len(self.terms)}")
        for (_, term), term_state in zip(self.terms, terms):
            term.load_state_dict(term_state, device)

    def _sum(self, pred: Tensor, target: Tensor, **_: Any) -> Tensor:
        total = None
        for weight, term in self.terms:
            value = term(pred, target)
            value = value if weight == 1 else weight * value
            total = value if total is None else total + value
        return total

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        return self._sum(pred, target)


_TERM = re.compile(r"^\s*(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[^+*\s]+)\s*$")


def parse_expression(expression: str) -> list[tuple[float, str]]:
    """Split ``"so + 0.5*cd"`` into ``[(1.0, "so"), (0.5, "cd")]``; names are not checked here."""
    terms = []
    for part in expression.split("+"):
        match = _TERM.match(part)
        if not match:
            raise ValueError(
                f"cannot read loss term {part.strip()!r} in {expression!r}; "
                "write terms as NAME or WEIGHT*NAME joined by '+', e.g. 'so+0.5*cd'"
            )
        terms.append((float(match["weight"] or 1.0), match["name"]))
    return terms


def get_loss(name: str, *, eps: float = DEFAULT_EPS, **params: Any) -> BoxLoss:
    """Return the loss ``name`` bound to ``params`` (published defaults for the rest).

    ``name`` is a registered name (see :func:`available`) or a sum of them such as
    ``"iou+cd"`` (IoU + corner alignment) or ``"so+0.5*cd"``, or your own function as
    ``"module:function"`` / ``"path/to/file.py:function"``. Unknown names or parameters raise
    an error that lists what exists; a value whose type does not match the parameter's default
    raises too (see :func:`check_parameter`).
    """
    if "+" in name or "*" in name:
        if params:
            raise ValueError(
                f"a composed loss {name!r} takes no parameters (got {sorted(params)}); "
                "weight its terms instead, e.g. 'so+0.5*cd'"
            )
        terms = [(w, get_loss(n, eps=eps)) for w, n in parse_expression(name)]
        return CompositeLoss(name.replace(" ", ""), terms)
    loss_spec = spec(name)
    unknown = sorted(set(params) - set(loss_spec.defaults))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in loss_spec.defaults.items()) or "none"
        raise ValueError(f"loss {name!r} has no parameter(s) {unknown}; its parameters: {known}")
    for key, value in params.items():
        check_parameter(name, key, value, loss_spec.defaults[key])
    return BoxLoss(loss_spec, params, eps)


def check_parameter(loss: str, key: str, value: Any, default: Any) -> None:
    """Refuse a parameter value whose type does not match its default's (ValueError).

    A float parameter takes any finite real number (not a bool), an int one an integer, a bool
    one True/False, a str one a string; a parameter whose default is None takes anything.
    """
    if default is None:
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "True or False (bool)"
    elif isinstance(default, numbers.Integral):
        ok, expected = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer (int)"
    elif isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number (float)"
    elif isinstance(default, (list, tuple)):
        ok, expected = isinstance(value, (list, tuple)), "a list"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ValueError(
            f"loss {loss!r}: parameter {key} must be {expected} like its default {default!r}, "
            f"got {value!r} ({type(value).__name__})"
        )
