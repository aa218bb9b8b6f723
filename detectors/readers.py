"""Annotation readers: COCO json into :class:`ImageRecord` lists, and the bad-data checks every reader shares.

Bad data (missing or corrupt image, box outside the image, zero-area or non-finite box, unknown
category, malformed line, a COCO entry without a key it needs or with a value of the wrong type,
two entries with one id) raises :class:`BadDataError` naming the file and the entry (its section
and index: ``images[3]``), or with ``bad_data="skip"`` drops that entry (an image with its
annotations; both entries that share an id) and counts it (:class:`Problems`). YOLO datasets are read
by :mod:`detectors.yolo_labels` with the same checks. :func:`coco_entries` is also
what ``scabench evaluate`` checks a ground truth with. :mod:`detectors.data` decides which files
a dataset is made of and feeds the records to torch.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BOX_TOLERANCE = 1.0  # px a COCO box may stick out of its image (rounding) before it is an error
SKIP_HINT = " (use bad_data='skip' / --bad-data skip to drop such data and count it)"


class BadDataError(ValueError):
    """A dataset problem, naming the file and the annotation (or label line) at fault."""


class Problems:
    """Collects bad-data findings: raises at once (``error``) or counts them (``skip``)."""

    def __init__(self, policy: str, hint: str = SKIP_HINT):
        if policy not in ("error", "skip"):
            raise ValueError(f"bad_data must be 'error' or 'skip', got {policy!r}")
        self.policy = policy
        self.hint = hint  # appended to an error (where there is no skip, e.g. scabench evaluate: "")
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        if self.policy == "error":
            raise BadDataError(message + self.hint)
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


def convert_boxes(boxes: list[list[float]], in_fmt: str, out_fmt: str) -> list[list[float]]:
    """``box_convert`` of plain lists (float64, so the numbers are Python's own arithmetic)."""
    return box_convert(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), in_fmt, out_fmt).tolist()


def ground_truth_entry(image_id: int, ann_id: int, category_id: int, xywh: list[float], area: float, crowd: int) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": xywh, "area": area, "iscrowd": crowd}


def make_record(path: Path, image_id: int, w: int, h: int, boxes: list, classes: list, gt: list[dict]) -> ImageRecord:
    return ImageRecord(path, image_id, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), gt)

def image_size(path: Path, problems: Problems, where: str) -> tuple[int, int] | None:
    if not path.is_file():
        problems("missing image", f"{where}: image file not found: {path}")
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        problems("corrupt image", f"{where}: cannot read image {path}: {exc}")
        return None


def check_xyxy(box: list[float], w: int, h: int, problems: Problems, where: str, tolerance: float) -> list[float] | None:
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


# --------------------------------------------------------------------------------------
# COCO json: the entries checked key by key, ids unique, then the records


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite: what a score or a size may be."""
    return _is_number(value) and math.isfinite(value)


def _is_xywh(bbox: Any) -> bool:
    """Four numbers; their values (finite, positive size) are the box checks' business."""
    return isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)


def is_finite_xywh(bbox: Any) -> bool:
    """``[x, y, width, height]`` of finite numbers with width and height >= 0 (detections, ground truth)."""
    return _is_xywh(bbox) and all(math.isfinite(v) for v in bbox) and bbox[2] >= 0 and bbox[3] >= 0


@dataclass(frozen=True)
class Key:
    """A key of a json entry: what its value must be (in words, for the message) and whether it must be there."""

    name: str
    check: Callable[[Any], bool]
    must_be: str
    required: bool = True


def _size(name: str) -> Key:
    return Key(name, lambda v: _is_int(v) and v > 0, "a positive integer", required=False)


def _crowd_and_area(required: bool) -> tuple[Key, Key]:
    return Key("iscrowd", lambda v: v in (0, 1), "0 or 1", required), Key("area", lambda v: is_finite_number(v) and v >= 0, "a finite number >= 0", required)


ID, IMAGE_ID, CATEGORY_ID = (Key(name, _is_int, "an integer") for name in ("id", "image_id", "category_id"))
FINITE_XYWH = "[x, y, width, height] of finite numbers, width and height >= 0"
FILE_NAME = Key("file_name", lambda v: isinstance(v, str) and bool(v.strip()), "a file name")
# What a training split needs; what pycocotools reads of a ground truth (scabench evaluate).
TRAINING_KEYS = {
    "categories": (ID,), "images": (ID, FILE_NAME, _size("width"), _size("height")),
    "annotations": (ID, IMAGE_ID, CATEGORY_ID, Key("bbox", _is_xywh, "[x, y, width, height]"), *_crowd_and_area(False)),
}  # fmt: skip
EVALUATION_KEYS = {
    "categories": (ID,), "images": (ID,),
    "annotations": (ID, IMAGE_ID, CATEGORY_ID, Key("bbox", is_finite_xywh, FINITE_XYWH), *_crowd_and_area(True)),
}  # fmt: skip
_NOUN = {"images": "image", "annotations": "annotation", "categories": "category"}


def entry_problem(entry: Any, keys: tuple[Key, ...]) -> tuple[str, str] | None:
    """(kind, text) of what is wrong with a json entry, or None: not an object, a key missing, a value of the wrong type."""
    if not isinstance(entry, dict):
        names = ", ".join(k.name for k in keys if k.required)
        return "malformed entry", f"expected an object with keys {names}, got {entry!r}"
    for key in keys:
        if key.name not in entry:
            if key.required:
                return f"missing {key.name}", f"missing key {key.name!r}"
        elif not key.check(entry[key.name]):
            kind = "malformed box" if key.name == "bbox" else f"malformed {key.name}"
            return kind, f"{key.name} must be {key.must_be}, got {entry[key.name]!r}"
    return None


@dataclass
class CocoEntries:
    """The usable entries of a COCO json: images and categories by id, annotations with their place."""

    images: dict[int, tuple[int, dict]]  # id -> (index in images, entry), in file order
    categories: list[dict]  # sorted by id
    annotations: list[tuple[str, dict]]  # ("file: annotations[i], annotation id n (image ...)", entry), known image and category


def _name(section: str, i: int, entry: Any, images: dict | None = None, with_id: bool = True) -> str:
    """``images[3], image id 7 ('a.jpg')``: how a message names an entry (an annotation with its image)."""
    text = f"{section}[{i}]"
    if not isinstance(entry, dict):
        return text
    if with_id and _is_int(entry.get("id")):
        text += f", {_NOUN[section]} id {entry['id']}"
    if section != "annotations":
        label = entry.get("file_name" if section == "images" else "name")
        return text + (f" ('{label}')" if isinstance(label, str) else "")
    image_id = entry.get("image_id")
    if images is not None and _is_int(image_id) and image_id in images:
        file_name = images[image_id][1].get("file_name")
        text += f" (image id {image_id}" + (f", '{file_name}')" if isinstance(file_name, str) else ")")
    return text


def _unique(source: str, section: str, entries: list, keys: tuple[Key, ...], problems: Problems, images: dict | None = None):
    """The well-formed entries of a section by id, and the ids that two entries share (both dropped)."""
    by_id: dict[int, list[tuple[int, dict]]] = {}
    for i, entry in enumerate(entries):
        problem = entry_problem(entry, keys)
        if problem is not None:
            problems(problem[0], f"{source}: {_name(section, i, entry, images)}: {problem[1]}")
            continue
        by_id.setdefault(entry["id"], []).append((i, entry))
    unique, shared = {}, set()
    for id_, group in by_id.items():
        if len(group) == 1:
            unique[id_] = group[0]
            continue
        shared.add(id_)
        named = " and ".join(_name(section, i, entry, images, with_id=False) for i, entry in group)
        for _ in group:
            problems(f"duplicate {_NOUN[section]} id", f"{source}: {named} have the same {_NOUN[section]} id {id_}")
    return unique, shared


def coco_entries(data: Any, source: str, problems: Problems, keys=TRAINING_KEYS, categories: list[dict] | None = None) -> CocoEntries:
    """Check a COCO json's entries key by key and their ids; what is left is safe to index.

    An entry with a problem is dropped; so are both entries of an id two of them share, and the
    annotations of a dropped image (counted with it) or of a dropped category (counted). Given
    ``categories`` (a training split read with the validation split's), the file's own
    categories are not read.
    """
    for section in _NOUN:
        if not isinstance(data, dict) or not isinstance(data.get(section), list):
            raise BadDataError(f"{source}: not a COCO detection file (no '{section}' list)")
    dropped_categories: set = set()
    if categories is None:
        by_id, dropped_categories = _unique(source, "categories", data["categories"], keys["categories"], problems)
        categories = sorted((entry for _, entry in by_id.values()), key=lambda c: c["id"])
    images, dropped_images = _unique(source, "images", data["images"], keys["images"], problems)
    anns, _ = _unique(source, "annotations", data["annotations"], keys["annotations"], problems, images)
    known = {c["id"] for c in categories}
    annotations = []
    for i, ann in anns.values():
        where = f"{source}: {_name('annotations', i, ann, images)}"
        if ann["image_id"] not in images:
            if ann["image_id"] not in dropped_images:
                problems("unknown image", f"{where}: refers to unknown image id {ann['image_id']}")
        elif ann["category_id"] in dropped_categories:
            problems("annotation of a dropped category", f"{where}: its category_id {ann['category_id']} was dropped")
        elif ann["category_id"] not in known:
            problems("unknown category", f"{where}: unknown category_id {ann['category_id']} (known: {sorted(known)})")
        else:
            annotations.append((where, ann))
    return CocoEntries(images, categories, annotations)


def _read_json(json_path: Path) -> Any:
    try:
        return json.loads(json_path.read_text())
    except FileNotFoundError:
        raise BadDataError(f"{json_path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDataError(f"{json_path}: cannot read COCO json: {exc}") from None


def read_coco(json_path: Path, problems: Problems, image_root: Path | None = None, categories: list[dict] | None = None):
    """Read a COCO annotation file; returns (records, categories sorted by id). No annotations at all warns."""
    data = _read_json(json_path)
    entries = coco_entries(data, str(json_path), problems, categories=categories)
    if not data["annotations"]:
        warnings.warn(f"{json_path}: no annotations at all: every image trains and evaluates as background", stacklevel=2)
    cat_index = {c["id"]: k for k, c in enumerate(entries.categories)}
    by_image: dict[int, list[tuple[str, dict]]] = {image_id: [] for image_id in entries.images}
    for where, ann in entries.annotations:
        by_image[ann["image_id"]].append((where, ann))
    image_dir = _resolve_image_dir(json_path, [im["file_name"] for _, im in entries.images.values()], image_root)
    records = [
        _coco_record(f"{json_path}: {_name('images', i, im)}", image_dir / im["file_name"], im, by_image[image_id], cat_index, problems)
        for image_id, (i, im) in entries.images.items()
    ]
    return [r for r in records if r is not None], entries.categories


def _coco_record(where: str, path: Path, im: dict, anns: list[tuple[str, dict]], cat_index: dict, problems: Problems) -> ImageRecord | None:
    """One image's record, its (well-formed) annotations' boxes checked in file order; None when the image is unusable."""
    size = image_size(path, problems, where)
    if size is None:
        return None
    w, h = size
    if (im.get("width"), im.get("height")) not in ((w, h), (None, None)):
        problems("image size mismatch", f"{where}: the json says {im.get('width')}x{im.get('height')} but the file is {w}x{h}")
        return None
    boxes, classes, gt, gt_boxes = [], [], [], []
    for (where_ann, ann), xyxy in zip(anns, convert_boxes([a["bbox"] for _, a in anns], "xywh", "xyxy")):
        xyxy = check_xyxy(xyxy, w, h, problems, where_ann, BOX_TOLERANCE)
        if xyxy is None:
            continue
        crowd = int(ann.get("iscrowd", 0))
        area = float(ann["area"]) if "area" in ann else float(ann["bbox"][2]) * float(ann["bbox"][3])
        gt.append(ground_truth_entry(im["id"], ann["id"], ann["category_id"], [], area, crowd))
        gt_boxes.append(xyxy)
        if not crowd:
            boxes.append(xyxy)
            classes.append(cat_index[ann["category_id"]])
    for g, xywh in zip(gt, convert_boxes(gt_boxes, "xyxy", "xywh")):
        g["bbox"] = xywh
    return make_record(path, im["id"], w, h, boxes, classes, gt)
