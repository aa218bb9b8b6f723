"""Where a cell ran and from what code: what ``record.json`` stores besides the status.

Host, platform, Python, the git commit of this checkout, package versions, the device and GPUs,
and the file and SHA-256 of every user loss a cell names (so a result traces to its code).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("scabench", "torch", "torchvision", "numpy", "pycocotools", "pandas", "pydantic", "submitit", "deepforest")


@functools.cache
def _environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_commit(),
        "packages": versions,
    }


def environment() -> dict[str, Any]:
    """Host, platform, Python, git commit and package versions (computed once per process)."""
    return dict(_environment())


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding this package, or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device: str | None) -> dict[str, Any]:
    """The requested device, visible GPUs and their names (asked of torch only if it is loaded)."""
    info: dict[str, Any] = {"requested": device, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["torch_threads"] = torch.get_num_threads()
        except Exception:  # noqa: BLE001  (informational: a broken driver must not fail the cell)
            pass
    return info


def loss_names(config: dict[str, Any]) -> list[str]:
    """The loss names a cell config holds: a training cell's ``loss``, a study's ``losses``."""
    return [config["loss"]] if config.get("loss") else [e["name"] for e in config.get("losses") or []]


def loss_sources(config: dict[str, Any], refs: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """File and SHA-256 of every user loss (``module:function``) a cell names, by the name the
    user wrote; ``refs`` (a cell's ``loss_refs``) says where a term as written is found. Cells
    naming only registered losses (no colon) do not import the loss zoo."""
    names = loss_names(config)
    if not any(":" in name for name in names):
        return {}
    from scabench import losses
    from scabench.losses.user import references

    refs = refs or {}
    sources = {}
    for name in names:
        for term in references(name):
            sources[term] = dict(losses.spec(refs.get(term, {}).get("path", term)).source)
    return sources
