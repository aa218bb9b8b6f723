"""Read a results folder into tidy pandas frames, through :mod:`scabench.results` (no torch).

``load_runs``: one row per finished training cell (metrics in percent, like the paper);
``load_epochs``: one row per cell and epoch; ``not_in_table``: the cells left out and why,
broken ones named with their file. Folders merged from several machines are read alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from scabench.results import BrokenResult, CellState, GridFolder, RunFolder

DEFAULT_METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90")
ALL_METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl")
IDENTITY = ("kind", "seed", "detector", "width", "depth", "loss", "loss_params")


def is_ap_metric(name: str) -> bool:
    """AP, AP50 ... AP90, APs/APm/APl (fractions in the files, percent in the tables)."""
    return name in ALL_METRICS or (name.startswith("AP") and name[2:].isalnum())


def present(value: Any) -> bool:
    """False for None and NaN (an absent setting or metric)."""
    return not (value is None or (isinstance(value, float) and math.isnan(value)))


def read_cells(root: str | Path, kind: str) -> Iterator[tuple[RunFolder, CellState, dict[str, Any]]]:
    """(folder, state, config.json) of every readable cell of ``kind``; broken cells are skipped
    here and listed by :func:`not_in_table`."""
    for run in GridFolder(root).cells():
        state = run.state()
        if state.status == "broken":
            continue
        meta = run.read_config() or {}
        if meta.get("kind") == kind:
            yield run, state, meta


def _percent(value: Any) -> float:
    """A COCO metric in percent; COCOeval writes -1 where it is undefined (e.g. APl without large objects)."""
    value = pd.to_numeric(value, errors="coerce")
    return float(value) * 100.0 if present(value) and float(value) >= 0 else math.nan


def load_runs(root: str | Path, *, all_cells: bool = False) -> pd.DataFrame:
    """One row per finished (``all_cells``: every readable) training cell.

    Columns: ``id, detector, detector_name, width, depth, loss, loss_name, seed, order`` plus
    one ``setting:<key>`` column per config key beyond the identity ones, plus the metrics.
    """
    order = GridFolder(root).plan_order()
    rows = []
    for run, state, meta in read_cells(root, "train"):
        if state.status != "done" and not all_cells:
            continue
        config, labels = meta.get("config", {}), meta.get("labels", {})
        row: dict[str, Any] = {
            "id": run.path.name,
            "detector": labels.get("detector", config.get("detector")),
            "detector_name": config.get("detector"),
            "width": config.get("width"),
            "depth": config.get("depth"),
            "loss": labels.get("loss", config.get("loss")),
            "loss_name": config.get("loss"),
            "seed": config.get("seed", 0),
            "order": order.get(run.path.name, 10**9),
        }
        for key, value in config.items():
            if key in IDENTITY:
                continue
            items = {f"{key}.{sub}": item for sub, item in value.items()} if isinstance(value, dict) else {key: value}
            row.update({f"setting:{k}": v for k, v in items.items()})
        metrics = ((run.read_summary() if state.status == "done" else None) or {}).get("metrics") or {}
        # the summary also carries the last epoch's losses, lr, ...: only the AP metrics go in
        row.update({metric: _percent(value) for metric, value in metrics.items() if is_ap_metric(metric)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["order", "id"], kind="stable").reset_index(drop=True)


def load_epochs(root: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every training cell (AP.. in percent), one row per cell and epoch;
    an epoch written twice by a resume keeps its last version."""
    runs = load_runs(root, all_cells=True)
    folders = {run.path.name: run for run in GridFolder(root).cells()}
    frames = []
    for _, run in runs.iterrows():
        rows = folders[run["id"]].read_epochs()
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        for metric in ALL_METRICS:
            if metric in frame:
                values = pd.to_numeric(frame[metric], errors="coerce")
                frame[metric] = values.where(values >= 0) * 100.0  # -1: undefined (COCOeval)
        for key in run.index:
            if not is_ap_metric(key) and key not in frame:
                frame[key] = run[key]
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values(["order", "id", "epoch"], kind="stable").reset_index(drop=True)


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """``setting:*`` columns whose values differ between runs (the table's extra keys)."""
    out = []
    for column in [c for c in runs.columns if c.startswith("setting:")]:
        values = runs[column].map(lambda v: json.dumps(v, sort_keys=True, default=str) if present(v) else "-")
        if values.nunique() > 1:
            out.append(column)
    return out


def grid_options(root: str | Path) -> dict[str, Any]:
    """``baseline``, ``paper`` and ``name`` as the grid file copied into ``root`` says (or {})."""
    import yaml

    try:
        data = yaml.safe_load(GridFolder(root).grid_copy.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: data[k] for k in ("baseline", "paper", "name") if isinstance(data, dict) and k in data}


def not_in_table(root: str | Path) -> list[tuple[str, str, str | None]]:
    """(label, status, reason) of the training cells that are not done, and of every broken
    cell (whatever its kind), whose reason names the unreadable file."""
    root = Path(root)
    out = []
    for run in GridFolder(root).cells():
        state = run.state()
        if state.status == "broken":
            try:
                where = state.file.relative_to(root)
            except ValueError:
                where = state.file
            label = _label_if_readable(run)
            out.append((label, "broken", f"{where}: {state.reason}"))
            continue
        meta = run.read_config() or {}
        if meta.get("kind") == "train" and state.status != "done":
            reason = state.reason.splitlines()[0] if state.reason else None
            out.append((meta.get("label", run.path.name), state.status, reason))
    return out


def _label_if_readable(run: RunFolder) -> str:
    try:
        return (run.read_config() or {}).get("label", run.path.name)
    except BrokenResult:  # config.json itself is the broken file
        return run.path.name
