"""The fused CPU kernel of the convergence study for the built-in iou, giou, diou, ciou, sca.

Their gradients are written out by hand in ``kernel.c`` (beside this file; checked against
autograd in the tests), compiled once per precision with the system C compiler and cached
under ``~/.cache/scabench/kernels`` (``SCABENCH_CACHE_DIR`` moves it). The kernel keeps each
case's box in registers for all T steps, so it reads the state once instead of T times; lanes
are anchor points sorted by radius, and the IoU kernel stops a lane group as soon as none of
its boxes moves (all disjoint: the rest would repeat exactly). Results match the generic
engine (:mod:`scabench.bench.studies.engine`) to rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from scabench import losses as loss_zoo
from scabench.bench.studies.inputs import ProgressFn
from scabench.bench.studies.protocol import CENTER, ConvergenceCases
from scabench.losses import iou as iou_losses
from scabench.losses import sca as sca_losses
from scabench.results import atomic_path

KERNEL_SOURCE = Path(__file__).with_name("kernel.c")

KERNEL_IDS: dict[Callable[..., torch.Tensor], str] = {
    iou_losses.iou_loss: "iou",
    iou_losses.giou_loss: "giou",
    iou_losses.diou_loss: "diou",
    iou_losses.ciou_loss: "ciou",
    sca_losses.sca_loss: "sca",
}
"""The registered loss functions the kernel implements -> the name of its export ``sim_<id>``."""

# per precision: library-name suffix, compiler defines, ctypes type of a real
_PRECISIONS = {
    torch.float32: ("f32", ["-DSIM_FLOAT32"], ctypes.c_float),
    torch.float64: ("f64", [], ctypes.c_double),
}
_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-fPIC", "-shared"]
_NATIVE = ["-march=native"]


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be built or used here (no C compiler, other device, ...)."""


@dataclass
class Kernel:
    """A loaded library of one precision: its exports ``sim_<id>`` and ``sim_lanes``."""

    lib: ctypes.CDLL
    path: Path
    compile_seconds: float  # 0.0 when the cached library was loaded


_LOADED: dict[torch.dtype, Kernel] = {}  # loaded in this process, per precision
_LOAD_LOCK = threading.Lock()


def kernel_id(loss: loss_zoo.BoxLoss) -> str | None:
    """The kernel's name for ``loss`` if it is one of the built-in five as registered, else None."""
    return KERNEL_IDS.get(loss.spec.fn) if type(loss) is loss_zoo.BoxLoss else None


def kernel_supports(loss: loss_zoo.BoxLoss, device: torch.device) -> str | None:
    """None if the fused kernel can run ``loss`` on ``device``, else the reason it cannot."""
    if device.type != "cpu":
        return f"the fused kernel runs on the CPU only (device {device})"
    if kernel_id(loss) is None:
        return f"no fused kernel for {loss.name!r} (only {', '.join(KERNEL_IDS.values())})"
    return None


def find_compiler() -> str | None:
    """``$CC``, else the first of gcc, cc, clang on the PATH; None without one."""
    for candidate in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def kernel_cache_dir() -> Path:
    """Where compiled kernels live: $SCABENCH_CACHE_DIR/kernels or ~/.cache/scabench/kernels."""
    root = os.environ.get("SCABENCH_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "scabench" / "kernels"


def _machine_fingerprint() -> str:
    """What -march=native depends on: the CPU model and flags (so a cache is not shared wrongly)."""
    text = platform.machine() + platform.platform()
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [ln for ln in handle if ln.startswith(("model name", "flags", "Features"))]
        text += "".join(dict.fromkeys(lines))
    except OSError:
        text += platform.processor()
    return text


def load_kernel(dtype: torch.dtype = torch.float32, cache_dir: Path | None = None, *, rebuild: bool = False) -> Kernel:
    """Compile (or load from the cache) the fused kernel of one precision; raises KernelUnavailable.

    The library's name is a hash of the source, the flags, the compiler's version and the
    machine, so a changed kernel or another CPU never loads a stale build. Writes are atomic.
    """
    if dtype not in _PRECISIONS:
        raise ValueError(f"the fused kernel exists in float32 and float64, not {dtype}")
    suffix, defines, _ = _PRECISIONS[dtype]
    with _LOAD_LOCK:
        if dtype in _LOADED and cache_dir is None and not rebuild:
            return _LOADED[dtype]
        cc = find_compiler()
        if cc is None:
            raise KernelUnavailable("no C compiler found (set CC, or install gcc)")
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise KernelUnavailable(f"cannot run the C compiler {cc!r}: {error}") from None
        flags = _FLAGS + defines
        key = hashlib.sha256(
            "\0".join([KERNEL_SOURCE.read_text(), " ".join(flags + _NATIVE), version, _machine_fingerprint()]).encode()
        ).hexdigest()[:20]
        folder = Path(cache_dir) if cache_dir is not None else kernel_cache_dir()
        path = folder / f"simulate_{suffix}_{key}.so"
        seconds = 0.0
        if rebuild or not path.exists():
            start = time.perf_counter()
            _compile(cc, flags, path)
            seconds = time.perf_counter() - start
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise KernelUnavailable(f"cannot load {path}: {error}") from None
        kernel = Kernel(lib, path, seconds)
        if cache_dir is None:
            _LOADED[dtype] = kernel
        return kernel


def _compile(cc: str, flags: list[str], path: Path) -> None:
    """Compile ``kernel.c`` into the shared library ``path`` (with -march=native where known)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scabench-kernel-") as tmp:
        so_tmp = Path(tmp) / "simulate.so"
        errors = ""
        for native in (_NATIVE, []):  # -march=native is not known to every compiler
            result = subprocess.run(
                [cc, *flags, *native, "-o", str(so_tmp), str(KERNEL_SOURCE), "-lm"], capture_output=True, text=True
            )
            if result.returncode == 0:
                break
            errors = result.stderr
        else:
            raise KernelUnavailable(f"compiling the simulation kernel with {cc} failed:\n{errors[-2000:]}")
        with atomic_path(path) as staged:
            shutil.copyfile(so_tmp, staged)


@contextmanager
def kernel_cache(folder: Path | str | None) -> Iterator[None]:
    """Within the block, kernels load from (or compile into) ``folder`` (None: the usual cache);
    the kernels loaded in this process, and ``SCABENCH_CACHE_DIR``, are restored after it."""
    saved_env, saved_loaded = os.environ.get("SCABENCH_CACHE_DIR"), dict(_LOADED)
    try:
        if folder is not None:
            os.environ["SCABENCH_CACHE_DIR"] = str(folder)
        yield
    finally:
        if saved_env is None:
            os.environ.pop("SCABENCH_CACHE_DIR", None)
        else:
            os.environ["SCABENCH_CACHE_DIR"] = saved_env
        unload_kernels()
        _LOADED.update(saved_loaded)


def unload_kernels() -> None:
    """Forget the kernels loaded in this process: the next load reads the cache as a new process would."""
    with _LOAD_LOCK:
        _LOADED.clear()


def _kernel_inputs(loss: loss_zoo.BoxLoss, cases: ConvergenceCases, dtype: torch.dtype) -> dict[str, np.ndarray]:
    """The kernel's arrays: lane points (sorted by radius, with ``order``), targets, anchors."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    # Lanes in order of distance from the centre: a lane group then tends to be all disjoint
    # (or all overlapping), so the IoU kernel can stop groups that no longer move. Each
    # point's result is independent of its lane mates; rows go back to the input order.
    order = np.argsort(np.hypot(*(cases.points.numpy() - np.asarray(CENTER)).T), kind="stable")
    points = cases.points.to(dtype).numpy()[order]
    boxes = cases.target_boxes(dtype)[0, :, 0]  # [7, 4] xyxy, float64 -> dtype as the generic path
    centre = cases.targets.to(dtype)  # [7, 4] (cx, cy, w, h)
    # atan(w / max(h, eps)) of the target, in the working precision, as losses.iou.aspect_term
    gatan = torch.atan((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]).clamp(min=loss.eps))
    return {
        "order": order,
        "px": np.ascontiguousarray(points[:, 0]),
        "py": np.ascontiguousarray(points[:, 1]),
        "tgt": np.ascontiguousarray(torch.cat((boxes, centre, gatan[:, None]), dim=1).numpy().astype(np_dtype)),
        "anc": np.ascontiguousarray(cases.anchors.to(dtype).numpy()),
    }


def run_kernel(
    loss: loss_zoo.BoxLoss,
    cases: ConvergenceCases,
    rates: Sequence[float],
    *,
    dtype: torch.dtype,
    threads: int,
    progress: ProgressFn | None = None,
    label: str = "",
    kernel: Kernel | None = None,
) -> np.ndarray:
    """[P, T + 1] per-point errors from the fused kernel (CPU, the built-in five)."""
    if kernel_id(loss) is None:
        raise KernelUnavailable(f"no fused kernel for {loss.name!r}")
    kernel = kernel or load_kernel(dtype)
    real = _PRECISIONS[dtype][2]
    fn = getattr(kernel.lib, f"sim_{kernel_id(loss)}")
    ptr = ctypes.c_void_p
    i64 = ctypes.c_int64  # the order of SIM_ARGS in kernel.c
    fn.argtypes = [i64, ptr, ptr, i64, ptr, i64, ptr, i64, ptr, real, real, ptr]
    fn.restype = None
    kernel.lib.sim_lanes.restype = ctypes.c_int
    lanes = kernel.lib.sim_lanes()

    arrays = _kernel_inputs(loss, cases, dtype)
    px, py, tgt, anc = arrays["px"], arrays["py"], arrays["tgt"], arrays["anc"]
    etas = np.asarray(rates, dtype=px.dtype)
    T, P = len(rates), cases.n_points
    out = np.zeros((P, T + 1), dtype=np.float64)
    alpha = float(loss.params.get("alpha", 1.0))

    # Blocks of whole lane groups; enough of them to balance the threads and move the bar.
    n_blocks = max(1, min(math.ceil(P / lanes), threads * 8))
    per_block = math.ceil(math.ceil(P / lanes) / n_blocks) * lanes
    starts = list(range(0, P, per_block))
    done = [0]
    lock = threading.Lock()

    def work(start: int) -> None:
        stop = min(start + per_block, P)
        fn(stop - start, px[start:].ctypes.data, py[start:].ctypes.data, tgt.shape[0], tgt.ctypes.data,
           anc.shape[1], anc.ctypes.data, T, etas.ctypes.data, loss.eps, alpha, out[start:].ctypes.data)
        if progress is not None:
            with lock:
                done[0] += stop - start
                progress(label, done[0] / P)

    if threads <= 1 or len(starts) == 1:
        for start in starts:
            work(start)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:  # ctypes calls release the GIL
            list(pool.map(work, starts))
    unsorted = np.empty_like(out)
    unsorted[arrays["order"]] = out
    return unsorted
