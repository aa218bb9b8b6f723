"""The compiled engine of the convergence study: any loss's own autograd gradient, compiled.

One regression step -- the loss's forward, its exact autograd backward, the update
``B <- B - eta (2 - IoU) dL/dB`` and the step's error sum -- is traced into one aten graph
(``make_fx``), cleaned of the stack/unbind round trips that packing boxes into ``[..., 4]``
creates (:func:`simplify`), and compiled by inductor into one fused loop (C++ with OpenMP
on the CPU, Triton on CUDA). No gradient is written by hand: a user's ``file.py:fn`` runs
as fast as a built-in.

The cases are independent, so on the CPU they run in chunks small enough to stay in the L2
cache, all T steps of one chunk before the next (:class:`Plan`); a chunk holds cases of one
target, which the kernel then reads as 4 scalars. Losses that couple the boxes of a batch
(Wise-IoU v2/v3's running mean) run as one chunk of all cases, as on CUDA. Compiled steps
are cached by inductor on disk (``TORCHINDUCTOR_CACHE_DIR``) and in this process.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from scabench import losses as loss_zoo
from scabench.bench.studies.engine import autograd_step, point_errors
from scabench.bench.studies.inputs import ProgressFn
from scabench.bench.studies.protocol import ConvergenceCases
from scabench.losses.iou import box_iou_pairwise

CPU_CHUNK = 262144
"""Most cases per chunk on the CPU (the study's 245,000 per target make one chunk each): the
state in and out is 8 MB in float32, resident in this machine's 32 MB L3. Chunks sized for
L2 lose more to the per-call and thread-barrier overhead than they gain (EIoU, 2 threads,
idle machine: 3.20 s at 16k cases, 2.03 s at 64k, 1.55 s at 245k; measured)."""

aten = torch.ops.aten


class CompileUnavailable(RuntimeError):
    """The step cannot be traced or compiled here (no C++ compiler, an untraceable loss, ...)."""


def box_xyxy(x: Tensor, y: Tensor, w: Tensor, h: Tensor) -> Tensor:
    """``[n, 4]`` xyxy whose last dimension has stride n: selecting a coordinate gives back
    ``x - w / 2`` etc. without a copy (``* 0.5`` equals ``/ 2`` bit for bit)."""
    half_w, half_h = w * 0.5, h * 0.5
    return torch.stack((x - half_w, y - half_h, x + half_w, y + half_h)).movedim(0, -1)


def make_step(loss: loss_zoo.BoxLoss, state_spec: Any = None, *, scale_by_iou: bool = True) -> Callable[..., tuple[Tensor, ...]]:
    """The function to trace: ``step(state [4, n], target [4, m], centre [4, m], eta [],
    valid [n], *loss_state) -> (state [4, n], total [], *loss_state)``.

    The DIoU protocol's update ``state - eta (2 - IoU) dL/dstate`` with ``total`` the sum of
    |dx| + |dy| + |dw| + |dh| after the step; without ``scale_by_iou``, plain gradient
    descent ``state - eta dL/dstate`` with ``total`` the sum of IoU before it (the corner vs
    centre study). Sums are float64 over the ``valid`` lanes (padding is masked out). ``m`` is 1 (one target for the chunk)
    or n; ``loss_state`` carries a stateful loss's running tensors (the leaves of its
    ``state_dict``, whose pytree structure is ``state_spec``) in and out.
    """

    def step(state: Tensor, target: Tensor, centre: Tensor, eta: Tensor, valid: Tensor, *loss_state: Tensor):
        n = state.shape[1]
        goal = target.movedim(0, -1).expand(n, 4)
        leaf = state.detach().requires_grad_(True)
        pred = box_xyxy(*leaf.unbind(0))
        if state_spec is not None:
            loss.load_state_dict(tree_unflatten(list(loss_state), state_spec))
        (grad,) = torch.autograd.grad(loss(pred, goal).sum(), leaf)
        with torch.no_grad():
            iou = box_iou_pairwise(pred.detach(), goal, eps=loss.eps)
            factor = eta * (2 - iou) if scale_by_iou else eta
            rows = [s - factor * g for s, g in zip(state.unbind(0), grad.unbind(0))]
            measured = sum((r - c).abs() for r, c in zip(rows, centre.unbind(0))) if scale_by_iou else iou
            total = torch.where(valid, measured.to(torch.float64), 0.0).sum()
        new_state = tree_flatten(loss.state_dict())[0] if state_spec is not None else []
        return (torch.stack(rows), total, *new_state)

    return step


def _select_of_stack(node: Any, dim: int, index: int) -> torch.fx.Node | None:
    """The node equal to ``node.select(dim, index)`` when ``node`` is a stack (through
    aliases and permutes), else None."""
    if not isinstance(node, torch.fx.Node) or "val" not in node.meta:
        return None
    rank = node.meta["val"].dim()
    dim %= rank
    if node.target == aten.stack.default:
        stack_dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return node.args[0][index] if stack_dim % (rank) == dim else None
    if node.target in (aten.alias.default, aten.detach.default):
        return _select_of_stack(node.args[0], dim, index)
    if node.target == aten.permute.default:
        return _select_of_stack(node.args[0], node.args[1][dim] % rank, index)
    return None


def simplify(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Two exact rewrites inductor does not make on the CPU, then dead-code removal:

    - ``select(stack(pieces), k)`` and ``unbind(stack(pieces))[k]`` -> ``pieces[k]`` (a
      stack is a copy kernel on the CPU; boxes packed and unpacked per step would cost
      several passes over memory);
    - division by a power of two -> multiplication by its inverse (the same bits).
    """
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        replacement = None
        if node.target == aten.select.int:
            replacement = _select_of_stack(node.args[0], node.args[1], node.args[2])
        elif node.target == operator.getitem and getattr(node.args[0], "target", None) == aten.unbind.int:
            unbind = node.args[0]
            replacement = _select_of_stack(unbind.args[0], unbind.args[1] if len(unbind.args) > 1 else 0, node.args[1])
        elif node.target in (aten.div.Tensor, aten.div.Scalar) and len(node.args) == 2 and not node.kwargs:
            divisor = node.args[1]
            if isinstance(divisor, (int, float)) and divisor and math.frexp(float(divisor))[0] in (0.5, -0.5):
                with graph.inserting_before(node):
                    replacement = graph.call_function(aten.mul.Tensor, (node.args[0], 1.0 / float(divisor)))
                replacement.meta = dict(node.meta)
        if replacement is not None:
            node.replace_all_uses_with(replacement)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


_COMPILED: dict[tuple, Callable[..., Any]] = {}
_COMPILE_LOCK = threading.Lock()


def _loss_key(loss: loss_zoo.BoxLoss) -> tuple:
    fn = loss.spec.fn
    return (type(loss).__name__, getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn)), id(fn),
            repr(sorted(loss.params.items())), loss.eps, repr(getattr(loss, "terms", None)))


def compile_step(loss: loss_zoo.BoxLoss, examples: Sequence[Tensor], state_spec: Any = None, *,
                 scale_by_iou: bool = True) -> Callable[..., Any]:
    """Trace :func:`make_step` on ``examples``, :func:`simplify` it and compile it with inductor.

    Cached in this process per loss, shapes, precision and device (and by inductor on disk).
    Raises :class:`CompileUnavailable` with the reason when tracing or compiling fails.
    """
    key = (_loss_key(loss), str(state_spec), scale_by_iou, tuple((tuple(t.shape), t.dtype, str(t.device)) for t in examples))
    with _COMPILE_LOCK:
        if key in _COMPILED:
            return _COMPILED[key]
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
        from torch._inductor.compile_fx import compile_fx
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        saved = loss.state_dict()
        try:
            gm = simplify(make_fx(make_step(loss, state_spec, scale_by_iou=scale_by_iou))(*examples))
        except Exception as error:  # noqa: BLE001  (whatever the loss's code raises under tracing)
            raise CompileUnavailable(f"cannot trace {loss.name!r}: {type(error).__name__}: {error}") from error
        finally:
            loss.load_state_dict(saved)
        fake = FakeTensorMode(shape_env=ShapeEnv())  # a shape env lets inductor's graph cache apply
        try:
            compiled = compile_fx(gm, [fake.from_tensor(t) for t in examples])
        except Exception as error:  # noqa: BLE001  (no compiler, a compiler error, ...)
            text = str(error).strip().splitlines()
            raise CompileUnavailable(f"inductor cannot compile the step: {type(error).__name__}: {text[0] if text else ''}") from error
        _COMPILED[key] = compiled
        return compiled


def forget_compiled(memory: bool = False) -> None:
    """Drop the steps compiled in this process; ``memory``: also inductor's in-memory code
    caches, so that the next run loads from disk as a new process would."""
    with _COMPILE_LOCK:
        _COMPILED.clear()
    if memory:
        from torch._inductor.utils import clear_caches

        clear_caches()


@contextmanager
def inductor_cache(folder: str | None) -> Iterator[None]:
    """Within the block inductor caches in ``folder`` (None: its usual cache); what this
    process compiled is forgotten before and after, as for a new process."""
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    forget_compiled(memory=True)
    try:
        if folder is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        yield
    finally:
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
        forget_compiled(memory=True)


@dataclass(frozen=True)
class Plan:
    """How the cases are cut: ``chunk`` lanes per call; ``per_target``: chunks hold cases of
    one target (the target passed as 4 scalars), else one chunk of all cases."""

    chunk: int
    per_target: bool


def plan_for(loss: loss_zoo.BoxLoss, cases: ConvergenceCases, device: torch.device, chunk: int | None = None) -> Plan:
    """Chunks of ``chunk`` (default :data:`CPU_CHUNK`) cases of one target on the CPU; one
    chunk of all cases for stateful losses and on other devices."""
    if loss.spec.stateful or device.type != "cpu":
        return Plan(cases.n_cases, per_target=False)
    per_target = cases.n_cases // cases.targets.shape[0]
    size = min(chunk or CPU_CHUNK, 64 * math.ceil(per_target / 64))  # whole vectors, no scalar tail
    return Plan(size, per_target=True)


def _running_state(loss: loss_zoo.BoxLoss) -> tuple[list[Tensor], Any]:
    """(the tensors of a stateful loss's ``state_dict``, its pytree structure); none before
    its first call. CompileUnavailable if the state holds anything but tensors."""
    leaves, spec = tree_flatten(loss.state_dict())
    if not all(torch.is_tensor(leaf) for leaf in leaves):
        raise CompileUnavailable(f"the state of {loss.name!r} holds values other than tensors")
    return leaves, spec


@dataclass
class CompiledRun:
    """What :func:`run_compiled` returns: E(t) for t = 0 .. T, the final error per anchor
    point [P], and the seconds spent tracing and compiling (or loading from the cache)."""

    curve: np.ndarray
    final: np.ndarray
    compile_seconds: float


def run_compiled(
    loss: loss_zoo.BoxLoss,
    cases: ConvergenceCases,
    rates: Sequence[float],
    *,
    dtype: torch.dtype,
    device: torch.device,
    chunk: int | None = None,
    progress: ProgressFn | None = None,
    label: str = "",
) -> CompiledRun:
    """The convergence protocol for ``loss``, every step compiled (see the module docstring).

    Raises :class:`CompileUnavailable` before any step when the step cannot be compiled.
    """
    plan = plan_for(loss, cases, device, chunk)
    clock = _CompileClock()
    if plan.per_target:
        curve, final = _run_per_target(loss, cases, rates, plan.chunk, dtype, device, progress, label, clock)
    else:
        curve, final = _run_whole(loss, cases, rates, dtype, device, progress, label, clock)
    return CompiledRun(curve, final, clock.seconds)


class _CompileClock:
    """Times :func:`compile_step` calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def compile(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        start = time.perf_counter()
        try:
            return compile_step(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _run_per_target(loss, cases, rates, chunk, dtype, device, progress, label, clock) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of one target's cases, each regressed for all T steps before the next."""
    n_targets = cases.targets.shape[0]
    start, centre_grid = cases.start_state(dtype, device), cases.target_state(dtype, device)
    # [4, P, 7, 49] -> [4, 7, P * 49]: the cases of each target side by side
    state = start.movedim(2, 1).reshape(4, n_targets, -1)
    targets = cases.target_boxes(dtype, device)[0, :, 0].T.contiguous()  # [4, 7] xyxy
    centres = centre_grid.reshape(4, n_targets)  # [4, 7] (cx, cy, w, h)
    per_target = state.shape[2]
    etas = torch.tensor(list(rates), dtype=dtype, device=device)
    curve = np.zeros(len(rates) + 1)
    curve[0] = float(point_errors(start, centre_grid).sum())
    lanes = torch.empty(4, chunk, dtype=dtype, device=device)
    valid = torch.empty(chunk, dtype=torch.bool, device=device)
    step = clock.compile(loss, [lanes.zero_() + 1, targets[:, :1], centres[:, :1], etas[0], valid.fill_(True)])
    sums = torch.zeros(len(rates), dtype=torch.float64, device=device)
    slabs = [(t, start) for t in range(n_targets) for start in range(0, per_target, chunk)]
    for done, (t, start) in enumerate(slabs, 1):
        stop = min(start + chunk, per_target)
        lanes[:, : stop - start] = state[:, t, start:stop]
        lanes[:, stop - start :] = state[:, t, start : start + 1]  # padding: copies of a real lane
        valid.fill_(True)
        valid[stop - start :] = False
        box, target, centre = lanes, targets[:, t : t + 1], centres[:, t : t + 1]
        for i in range(len(rates)):
            box, total = step(box, target, centre, etas[i], valid)
            sums[i] += total
        state[:, t, start:stop] = box[:, : stop - start]
        if progress is not None:
            progress(label, done / len(slabs))
    curve[1:] = sums.cpu().numpy()
    final = state.reshape(4, n_targets, cases.n_points, -1).movedim(1, 2)  # back to [4, P, 7, 49]
    return curve, point_errors(final, centre_grid).cpu().numpy()


def _run_whole(loss, cases, rates, dtype, device, progress, label, clock) -> tuple[np.ndarray, np.ndarray]:
    """All cases in one chunk (stateful losses, CUDA): the first step eager when the loss
    creates its state on its first call, then compiled steps with the state passed through."""
    start, centre_grid, boxes = cases.start_state(dtype, device), cases.target_state(dtype, device), cases.target_boxes(dtype, device)
    shape, state = start.shape, start.reshape(4, -1)
    targets = boxes.movedim(-1, 0).reshape(4, -1).contiguous()
    centres = centre_grid.expand(shape).reshape(4, -1).contiguous()
    etas = torch.tensor(list(rates), dtype=dtype, device=device)
    valid = torch.ones(1, dtype=torch.bool, device=device)
    curve = np.zeros(len(rates) + 1)
    curve[0] = float(point_errors(state.view(shape), centre_grid).sum())
    first = 0
    if loss.spec.stateful and not _running_state(loss)[0]:
        state = autograd_step(loss, start, boxes, float(rates[0])).reshape(4, -1)
        curve[1] = float(point_errors(state.view(shape), centre_grid).sum())
        first = 1
    carried, spec = _running_state(loss) if loss.spec.stateful else ([], None)
    sums = torch.zeros(len(rates), dtype=torch.float64, device=device)  # read once: no host sync per step
    if first < len(rates):
        step = clock.compile(loss, [state, targets, centres, etas[0], valid, *carried], spec)
        for i in range(first, len(rates)):
            state, sums[i], *carried = step(state, targets, centres, etas[i], valid, *carried)
            if progress is not None:
                progress(label, (i + 1) / len(rates))
        if spec is not None:
            loss.load_state_dict(tree_unflatten(carried, spec))
    curve[first + 1 :] = sums[first:].cpu().numpy()
    return curve, point_errors(state.view(shape), centre_grid).cpu().numpy()


def descend_compiled(loss: loss_zoo.BoxLoss, state: Tensor, target: Tensor, iterations: int, lr: float,
                     progress: ProgressFn | None = None, label: str = "") -> Tensor:
    """Mean IoU at t = 0 .. iterations of plain gradient descent ``state <- state - lr dL/dstate``
    ([4, N] cx cy w h against xyxy ``target`` [N, 4]), every step compiled: the corner vs
    centre study's loop. Raises :class:`CompileUnavailable` (stateful losses included)."""
    if loss.spec.stateful:
        raise CompileUnavailable(f"{loss.name!r} keeps a running state; the corner-centre study runs it eager")
    n = state.shape[1]
    goal = target.T.contiguous()
    eta = torch.tensor(lr, dtype=state.dtype, device=state.device)
    valid = torch.ones(n, dtype=torch.bool, device=state.device)
    step = compile_step(loss, [state, goal, goal, eta, valid], scale_by_iou=False)
    ious = torch.empty(iterations + 1, dtype=torch.float64, device=state.device)
    for t in range(iterations):
        state, ious[t] = step(state, goal, goal, eta, valid)
        if progress is not None and (t + 1) % 50 == 0:
            progress(label, (t + 1) / iterations)
    ious[iterations] = box_iou_pairwise(box_xyxy(*state.unbind(0)), target).to(torch.float64).sum()
    return ious / n
