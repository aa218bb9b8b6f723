"""YOLO-txt datasets: the dataset yaml, image lists and label files into :class:`ImageRecord` lists.

Labels are ``labels/<name>.txt`` beside ``images/<name>.<ext>``: one line per object,
``class x_centre y_centre width height``, normalised to [0, 1]; empty or missing label files
are background. Bad data follows :mod:`detectors.readers`' policy (error naming the file and
line, or skip and count).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scabench.detectors.readers import (
    IMAGE_EXTENSIONS, BadDataError, ImageRecord, Problems, check_xyxy, convert_boxes, ground_truth_entry, image_size,
    make_record,
)  # fmt: skip


@dataclass
class DatasetYaml:
    """A checked YOLO dataset yaml: its root folder, class names and ``train`` / ``val`` sources."""

    path: Path
    root: Path
    names: list[str]
    train: str | list[str]
    val: str | list[str]

    def resolve(self, source: str) -> Path:
        p = Path(source).expanduser()
        return p if p.is_absolute() else self.root / p


def read_dataset_yaml(path: Path) -> DatasetYaml:
    """Read a dataset yaml (``path``, ``train``, ``val``, ``names`` and/or ``nc``); every problem names the file."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadDataError(f"{path}: cannot read dataset yaml: {exc}") from None
    if not isinstance(spec, dict):
        raise BadDataError(f"{path}: a dataset yaml is a mapping of path, train, val and names (or nc), got {spec!r}")
    if "val" not in spec or "train" not in spec:
        raise BadDataError(f"{path}: a dataset yaml needs 'train' and 'val' keys")
    for key in ("train", "val"):
        value = spec[key]
        if not (isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))):
            raise BadDataError(f"{path}: {key} must be a path or a list of paths, got {value!r}")
    folder = spec.get("path", str(path.parent))
    if not isinstance(folder, str):
        raise BadDataError(f"{path}: path must be a folder (the root of train and val), got {folder!r}")
    root = Path(folder).expanduser()
    return DatasetYaml(path, root if root.is_absolute() else path.parent / root, _class_names(spec, path), spec["train"], spec["val"])


def _class_names(spec: dict, path: Path) -> list[str]:
    """``names`` (a list, or a mapping of 0..n-1) checked against ``nc``; ``nc`` alone names classes 0..nc-1."""
    names, nc = spec.get("names"), spec.get("nc")
    if nc is not None and not (isinstance(nc, int) and not isinstance(nc, bool) and nc > 0):
        raise BadDataError(f"{path}: nc must be a positive integer, got {nc!r}")
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise BadDataError(f"{path}: names as a mapping needs the keys 0..{len(names) - 1}, got {list(names)}")
        names = [names[k] for k in range(len(names))]
    if names is None:
        if nc is None:
            raise BadDataError(f"{path}: give 'names' (list or mapping) or 'nc'")
        return [str(i) for i in range(nc)]
    if not isinstance(names, list) or not names or any(isinstance(n, (dict, list)) or n is None for n in names):
        raise BadDataError(f"{path}: names must be a list or a mapping of class names, got {names!r}")
    if nc is not None and nc != len(names):
        raise BadDataError(f"{path}: nc is {nc} but names has {len(names)} entries")
    return [str(n) for n in names]


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def list_images(spec: Any, root: Path, yaml_path: Path) -> list[Path]:
    """Image paths of a dataset yaml's ``train``/``val`` entry: folders (searched), list files or both.

    A source that does not exist, cannot be read or holds no images is a ``BadDataError``.
    """
    items = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for item in items:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.suffix == ".txt" and p.is_file():
            found = _listed_images(p, root, yaml_path)
        else:
            raise BadDataError(f"{yaml_path}: image source {item!r} not found (resolved to {p})")
        if not found:
            raise BadDataError(f"{yaml_path}: image source {item!r} holds no images (resolved to {p}; extensions {', '.join(IMAGE_EXTENSIONS)})")
        out += found
    return out


def _listed_images(list_file: Path, root: Path, yaml_path: Path) -> list[Path]:
    """The images a list file names, one a line, relative to the list's folder or else the root."""
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDataError(f"{yaml_path}: cannot read image list {list_file}: {exc}") from None
    out = []
    for line in (line.strip() for line in lines):
        if line:
            q = Path(line)
            out.append(q if q.is_absolute() else (list_file.parent / q if (list_file.parent / q).exists() else root / q))
    return out


def read_yolo(images: list[Path], nc: int, problems: Problems, first_id: int = 1) -> list[ImageRecord]:
    """Records of YOLO-labelled images (ids from ``first_id`` in list order); see the module docstring.

    Images without a label file are background; when no image has a single label line, a
    warning says so (labels in the wrong folder would otherwise train an empty detector).
    """
    records = []
    for k, path in enumerate(images):
        size = image_size(path, problems, f"image {path}")
        record = None if size is None else _yolo_record(path, first_id + k, *size, nc, problems)
        if record is not None:
            records.append(record)
    labels = [_label_path(p) for p in images] if not any(r.annotations for r in records) else []
    if labels and not any(label.is_file() and label.stat().st_size for label in labels):
        label = labels[0]
        state = "empty" if label.is_file() else "missing"
        warnings.warn(
            f"{len(images)} images and no labels at all (e.g. {label} is {state}; labels are labels/<name>.txt "
            "beside images/<name>.<ext>): every image trains and evaluates as background", stacklevel=2,
        )  # fmt: skip
    return records


def _parse_label_line(line: str) -> list[float] | None:
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        return None
    return values if len(values) == 5 else None


def _label_lines(label: Path, path: Path, problems: Problems) -> list[tuple[int, str]] | None:
    """The label file's non-empty lines, numbered from 1 (none without a file); None if it cannot be read."""
    if not label.exists():
        return []
    try:
        text = label.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems("unreadable label", f"{label}: cannot read the label file of image {path}: {exc}")
        return None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _yolo_record(path: Path, image_id: int, w: int, h: int, nc: int, problems: Problems) -> ImageRecord | None:
    """One image's record from its label file, lines checked in order; None when its labels cannot be read."""
    label = _label_path(path)
    lines = _label_lines(label, path, problems)
    if lines is None:
        return None
    parsed = [_parse_label_line(line) for _, line in lines]
    normalised = iter(convert_boxes([v[1:] for v in parsed if v is not None], "cxcywh", "xyxy"))
    boxes, classes, gt, gt_boxes = [], [], [], []
    for (n, line), values in zip(lines, parsed):
        where = f"{label} line {n} (image {path})"
        if values is None:
            problems("malformed label", f"{where}: expected 'class x y w h', got {line.strip()!r}")
            continue
        x1, y1, x2, y2 = next(normalised)
        cls = values[0]
        if not (math.isfinite(cls) and cls.is_integer() and 0 <= cls < nc):
            problems("unknown category", f"{where}: class {line.split()[0]} not in 0..{nc - 1}")
            continue
        xyxy = check_xyxy([x1 * w, y1 * h, x2 * w, y2 * h], w, h, problems, where, tolerance=max(w, h) * 1e-3 + 0.5)
        if xyxy is None:
            continue
        boxes.append(xyxy)
        classes.append(int(cls))
        gt.append(ground_truth_entry(image_id, len(gt) + 1 + image_id * 10000, int(cls), [], 0.0, 0))
        gt_boxes.append(xyxy)
    for g, xywh in zip(gt, convert_boxes(gt_boxes, "xyxy", "xywh")):
        g["bbox"], g["area"] = xywh, xywh[2] * xywh[3]
    return make_record(path, image_id, w, h, boxes, classes, gt)
