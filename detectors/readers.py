"""Annotation readers: COCO json and YOLO txt into :class:`ImageRecord` lists, with bad-data checks.

Bad data (missing or corrupt image, box outside the image, zero-area or non-finite box, unknown
category, malformed line) raises :class:`BadDataError` naming the file and the annotation, or
with ``bad_data="skip"`` drops that annotation (or image) and counts it (:class:`Problems`).
YOLO labels are ``labels/<name>.txt`` beside ``images/<name>.<ext>``: one line per object,
``class x_centre y_centre width height``, normalised to [0, 1]. :mod:`detectors.data` decides
which files a dataset is made of and feeds the records to torch.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BOX_TOLERANCE = 1.0  # px a COCO box may stick out of its image (rounding) before it is an error

class BadDataError(ValueError):
    """A dataset problem, naming the file and the annotation (or label line) at fault."""


class Problems:
    """Collects bad-data findings: raises at once (``error``) or counts them (``skip``)."""

    def __init__(self, policy: str):
        if policy not in ("error", "skip"):
            raise ValueError(f"bad_data must be 'error' or 'skip', got {policy!r}")
        self.policy = policy
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        if self.policy == "error":
            raise BadDataError(message + " (use bad_data='skip' / --bad-data skip to drop such data and count it)")
        self.counts[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no bad data"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"skipped {parts}"


@dataclass
class ImageRecord:
    """One image: where it is, its COCO id and size, its training boxes and its ground truth."""

    path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # [n, 4] float32 xyxy pixels (crowd boxes excluded)
    classes: np.ndarray  # [n] int64, 0 .. nc-1
    annotations: list[dict] = field(default_factory=list)  # COCO ground truth (incl. crowd)



def _convert(boxes: list[list[float]], in_fmt: str, out_fmt: str) -> list[list[float]]:
    """``box_convert`` of plain lists (float64, so the numbers are Python's own arithmetic)."""
    return box_convert(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), in_fmt, out_fmt).tolist()


def _ground_truth(image_id: int, ann_id: int, category_id: int, xywh: list[float], area: float, crowd: int) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": xywh, "area": area, "iscrowd": crowd}


def _record(path: Path, image_id: int, w: int, h: int, boxes: list, classes: list, gt: list[dict]) -> ImageRecord:
    return ImageRecord(path, image_id, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), gt)

def _image_size(path: Path, problems: Problems, where: str) -> tuple[int, int] | None:
    if not path.is_file():
        problems("missing image", f"{where}: image file not found: {path}")
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        problems("corrupt image", f"{where}: cannot read image {path}: {exc}")
        return None


def _check_xyxy(box: list[float], w: int, h: int, problems: Problems, where: str, tolerance: float) -> list[float] | None:
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        problems("non-finite box", f"{where}: non-finite box {box}")
        return None
    if x2 <= x1 or y2 <= y1:
        problems("zero-area box", f"{where}: zero-area box (x1, y1, x2, y2) = {[round(v, 3) for v in box]}")
        return None
    if x1 < -tolerance or y1 < -tolerance or x2 > w + tolerance or y2 > h + tolerance:
        problems(
            "box outside image",
            f"{where}: box (x1, y1, x2, y2) = {[round(v, 3) for v in box]} lies outside the {w}x{h} image",
        )
        return None
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))]


def _resolve_image_dir(json_path: Path, file_names: list[str], root: Path | None) -> Path:
    base = json_path.parent
    split = json_path.stem.replace("instances_", "")
    candidates = [base, base / "images", base.parent, base.parent / "images", base.parent / split, base.parent / "images" / split, base / split]
    if root is not None:
        candidates = [root, root / "images", root / split, root / "images" / split] + candidates
    for name in file_names[:1]:
        for c in candidates:
            if (c / name).is_file():
                return c
    return base



def _is_xywh(bbox: Any) -> bool:
    return isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)


def _read_json(json_path: Path) -> dict:
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise BadDataError(f"{json_path}: annotation file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BadDataError(f"{json_path}: cannot read COCO json: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BadDataError(f"{json_path}: not a COCO detection file (no '{key}' list)")
    return data


def read_coco(json_path: Path, problems: Problems, image_root: Path | None = None, categories: list[dict] | None = None):
    """Read a COCO annotation file; returns (records, categories sorted by id)."""
    data = _read_json(json_path)
    cats = sorted(data["categories"], key=lambda c: c["id"]) if categories is None else categories
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images = {im["id"]: im for im in data["images"]}
    by_image: dict[Any, list[dict]] = {i: [] for i in images}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            problems(
                "unknown image", f"{json_path}: annotation id {ann.get('id')} refers to unknown image id {ann.get('image_id')}"
            )
            continue
        by_image[ann["image_id"]].append(ann)
    image_dir = _resolve_image_dir(json_path, [im["file_name"] for im in data["images"]], image_root)
    records = [_coco_record(json_path, image_dir, im, by_image[image_id], cat_index, problems) for image_id, im in images.items()]
    return [r for r in records if r is not None], cats


def _coco_record(json_path: Path, image_dir: Path, im: dict, anns: list[dict], cat_index: dict, problems: Problems) -> ImageRecord | None:
    """One image's record, its annotations checked in file order; None when the image is unusable."""
    image_id, path = im["id"], image_dir / im["file_name"]
    where = f"{json_path}: image id {image_id} ('{im['file_name']}')"
    size = _image_size(path, problems, where)
    if size is None:
        return None
    w, h = size
    if (im.get("width"), im.get("height")) not in ((w, h), (None, None)):
        problems("image size mismatch", f"{where}: the json says {im.get('width')}x{im.get('height')} but the file is {w}x{h}")
        return None
    well_formed = [_is_xywh(ann.get("bbox")) for ann in anns]
    converted = iter(_convert([a["bbox"] for a, ok in zip(anns, well_formed) if ok], "xywh", "xyxy"))
    boxes, classes, gt, gt_boxes = [], [], [], []
    for ann, ok in zip(anns, well_formed):
        xyxy = next(converted) if ok else None
        where_ann = f"{json_path}: annotation id {ann.get('id')} (image id {image_id}, '{im['file_name']}')"
        if ann.get("category_id") not in cat_index:
            problems("unknown category", f"{where_ann}: unknown category_id {ann.get('category_id')} (known: {sorted(cat_index)})")
            continue
        if xyxy is None:
            problems("malformed box", f"{where_ann}: bbox must be [x, y, width, height], got {ann.get('bbox')!r}")
            continue
        xyxy = _check_xyxy(xyxy, w, h, problems, where_ann, BOX_TOLERANCE)
        if xyxy is None:
            continue
        crowd = int(ann.get("iscrowd", 0))
        area = float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else float(ann["bbox"][2]) * float(ann["bbox"][3])
        gt.append(_ground_truth(image_id, ann.get("id", len(gt) + 1), ann["category_id"], [], area, crowd))
        gt_boxes.append(xyxy)
        if not crowd:
            boxes.append(xyxy)
            classes.append(cat_index[ann["category_id"]])
    for g, xywh in zip(gt, _convert(gt_boxes, "xyxy", "xywh")):
        g["bbox"] = xywh
    return _record(path, image_id, w, h, boxes, classes, gt)


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def list_images(spec: Any, root: Path, yaml_path: Path) -> list[Path]:
    """Image paths of a dataset yaml's ``train``/``val`` entry: folders (searched), list files or both."""
    items = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for item in items:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    out.append(q if q.is_absolute() else (p.parent / q if (p.parent / q).exists() else root / q))
        else:
            raise BadDataError(f"{yaml_path}: image source {item!r} not found (resolved to {p})")
    return out




def read_yolo(images: list[Path], nc: int, problems: Problems, first_id: int = 1) -> list[ImageRecord]:
    """Records of YOLO-labelled images (ids from ``first_id`` in list order); see the module docstring."""
    records = []
    for k, path in enumerate(images):
        size = _image_size(path, problems, f"image {path}")
        if size is not None:
            records.append(_yolo_record(path, first_id + k, *size, nc, problems))
    return records


def _parse_label_line(line: str) -> list[float] | None:
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        return None
    return values if len(values) == 5 else None


def _yolo_record(path: Path, image_id: int, w: int, h: int, nc: int, problems: Problems) -> ImageRecord:
    """One image's record from its label file, lines checked in order."""
    label = _label_path(path)
    lines = [(n, line) for n, line in enumerate(label.read_text().splitlines() if label.is_file() else [], 1) if line.strip()]
    parsed = [_parse_label_line(line) for _, line in lines]
    normalised = iter(_convert([v[1:] for v in parsed if v is not None], "cxcywh", "xyxy"))
    boxes, classes, gt, gt_boxes = [], [], [], []
    for (n, line), values in zip(lines, parsed):
        where = f"{label} line {n} (image {path})"
        if values is None:
            problems("malformed label", f"{where}: expected 'class x y w h', got {line.strip()!r}")
            continue
        x1, y1, x2, y2 = next(normalised)
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < nc:
            problems("unknown category", f"{where}: class {line.split()[0]} not in 0..{nc - 1}")
            continue
        xyxy = _check_xyxy([x1 * w, y1 * h, x2 * w, y2 * h], w, h, problems, where, tolerance=max(w, h) * 1e-3 + 0.5)
        if xyxy is None:
            continue
        boxes.append(xyxy)
        classes.append(int(cls))
        gt.append(_ground_truth(image_id, len(gt) + 1 + image_id * 10000, int(cls), [], 0.0, 0))
        gt_boxes.append(xyxy)
    for g, xywh in zip(gt, _convert(gt_boxes, "xyxy", "xywh")):
        g["bbox"], g["area"] = xywh, xywh[2] * xywh[3]
    return _record(path, image_id, w, h, boxes, classes, gt)
