"""Pascal VOC datasets: ``Annotations/*.xml`` + ``JPEGImages/`` (+ ``ImageSets/Main/*.txt``) into :class:`ImageRecord` lists.

A VOC folder holds one xml per image (``<filename>``, ``<size>``, ``<object>`` entries with
``<name>``, ``<difficult>`` and ``<bndbox>``); the image is ``JPEGImages/<filename>`` (else
``JPEGImages/<id>.jpg``, as mmdetection). The splits are the id lists ``ImageSets/Main/train.txt``
and ``val.txt`` (else ``trainval.txt`` and ``test.txt``); without ``ImageSets/Main`` every xml
serves training and validation alike (a warning says so). Class names are the sorted names of
both splits' objects (one list, so a model trained on one split evaluates on the other).

Coordinates: the devkit's boxes are 1-based pixel indices, inclusive at both ends (``xmin=1,
xmax=W`` is the whole image). We follow detectron2 (``data/datasets/pascal_voc.py``): subtract 1
from ``xmin`` and ``ymin`` only, so a box is the pixel-edge interval ``[xmin - 1, xmax]`` in
0..W and a one-pixel box keeps a width of 1 (mmdetection 3 subtracts 1 from all four, which
shifts the box and shrinks it by a pixel; torchvision's ``VOCDetection`` converts nothing).

``difficult`` objects as mmdetection's ``XMLDataset`` (``ignore_flag``): kept as ignore. They
are not training targets, and their ground truth has ``iscrowd=1``, so pycocotools ignores the
detections that match them instead of counting them as false positives.

Bad data follows :mod:`detectors.readers` (error naming the xml, the object's index and name and
the key, or ``bad_data: skip``: drop the object, or the image when its xml or picture is
unusable, and count it).
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from scabench.detectors.readers import (
    BOX_TOLERANCE, IMAGE_EXTENSIONS, BadDataError, ImageRecord, Problems, check_xyxy, convert_boxes,
    ground_truth_entry, image_size, make_record,
)  # fmt: skip

SPLIT_LISTS = (("train", "val"), ("trainval", "test"))  # ImageSets/Main/<name>.txt, first pair found
COORDINATES = ("xmin", "ymin", "xmax", "ymax")


def is_voc_folder(path: Path) -> bool:
    return path.is_dir() and (path / "Annotations").is_dir()


@dataclass
class VocObject:
    index: int  # position among the xml's <object> entries
    name: str
    box: list[float]  # xyxy pixel edges (xmin - 1, ymin - 1, xmax, ymax)
    difficult: bool


@dataclass
class VocAnnotation:
    xml: Path
    filename: str | None
    size: tuple[int, int] | None  # (width, height) as the xml says, if it says
    objects: list[VocObject]


def voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    """VOC's 1-based inclusive pixel indices as 0-based pixel edges (detectron2's conversion)."""
    return [xmin - 1.0, ymin - 1.0, xmax, ymax]


def _text(element: ET.Element, key: str) -> str | None:
    child = element.find(key)
    return None if child is None or child.text is None or not child.text.strip() else child.text.strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _object(xml: Path, index: int, element: ET.Element, problems: Problems) -> VocObject | None:
    """One ``<object>``: its name, difficult flag and converted box; None (a problem) when malformed."""
    name = _text(element, "name")
    where = f"{xml}: object[{index}]" + (f" ('{name}')" if name else "")
    if name is None:
        problems("missing name", f"{where}: missing or empty key 'name'")
        return None
    difficult = _text(element, "difficult") or "0"
    if difficult not in ("0", "1"):
        problems("malformed difficult", f"{where}: difficult must be 0 or 1, got {difficult!r}")
        return None
    bndbox = element.find("bndbox")
    if bndbox is None:
        problems("missing bndbox", f"{where}: missing key 'bndbox'")
        return None
    values = []
    for key in COORDINATES:
        text = _text(bndbox, key)
        if text is None:
            problems("missing bndbox", f"{where}: bndbox: missing key {key!r}")
            return None
        value = _number(text)
        if value is None:
            problems("malformed box", f"{where}: bndbox.{key} must be a finite number, got {text!r}")
            return None
        values.append(value)
    return VocObject(index, name, voc_box(*values), difficult == "1")


def _size(xml: Path, root: ET.Element, problems: Problems) -> tuple[int, int] | None | bool:
    """(width, height) from ``<size>``; None when absent; False (a problem) when malformed."""
    size = root.find("size")
    if size is None:
        return None
    texts = [_text(size, key) for key in ("width", "height")]
    if texts == [None, None]:
        return None
    try:
        w, h = (int(t) for t in texts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        w = h = 0
    if w <= 0 or h <= 0:
        problems("malformed size", f"{xml}: size: width and height must be positive integers, got {texts}")
        return False
    return w, h


def read_voc_xml(xml: Path, problems: Problems) -> VocAnnotation | None:
    """Parse one VOC annotation file; None (a problem) when it cannot be read or is not one.

    Malformed objects are problems too (dropped under ``skip``); the others are returned
    unchecked against the image (see :func:`voc_record`)."""
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        problems("missing annotation", f"{xml}: annotation file not found")
        return None
    except (OSError, ET.ParseError) as exc:
        problems("corrupt annotation", f"{xml}: cannot parse VOC xml: {exc}")
        return None
    if root.tag != "annotation":
        problems("corrupt annotation", f"{xml}: not a VOC annotation (root element <{root.tag}>, expected <annotation>)")
        return None
    size = _size(xml, root, problems)
    if size is False:
        return None
    objects = [_object(xml, i, element, problems) for i, element in enumerate(root.findall("object"))]
    return VocAnnotation(xml, _text(root, "filename"), size, [o for o in objects if o is not None])


def _image_path(folder: Path, image_id: str, ann: VocAnnotation) -> Path:
    images = folder / "JPEGImages"
    if ann.filename and (images / ann.filename).is_file():
        return images / ann.filename
    for ext in IMAGE_EXTENSIONS:
        if (images / f"{image_id}{ext}").is_file():
            return images / f"{image_id}{ext}"
    return images / (ann.filename or f"{image_id}.jpg")  # not there: image_size reports it


def voc_record(path: Path, image_id: int, ann: VocAnnotation, class_index: dict[str, int], first_ann_id: int, problems: Problems) -> ImageRecord | None:
    """One image's record: its objects' boxes checked against the picture; difficult ones as ignore (iscrowd)."""
    size = image_size(path, problems, str(ann.xml))
    if size is None:
        return None
    w, h = size
    if ann.size is not None and ann.size != (w, h):
        problems("image size mismatch", f"{ann.xml}: the xml says {ann.size[0]}x{ann.size[1]} but {path} is {w}x{h}")
        return None
    boxes, classes, gt, gt_boxes = [], [], [], []
    for obj in ann.objects:
        xyxy = check_xyxy(obj.box, w, h, problems, f"{ann.xml}: object[{obj.index}] ('{obj.name}')", BOX_TOLERANCE)
        if xyxy is None:
            continue
        k = class_index[obj.name]
        gt.append(ground_truth_entry(image_id, first_ann_id + len(gt), k + 1, [], 0.0, int(obj.difficult)))
        gt_boxes.append(xyxy)
        if not obj.difficult:
            boxes.append(xyxy)
            classes.append(k)
    for g, xywh in zip(gt, convert_boxes(gt_boxes, "xyxy", "xywh")):
        g["bbox"], g["area"] = xywh, xywh[2] * xywh[3]
    return make_record(path, image_id, w, h, boxes, classes, gt)


def _split_ids(folder: Path) -> dict[str, tuple[list[str], str]]:
    """{"train": (ids, source), "val": (ids, source)} from ImageSets/Main, or every xml for both."""
    lists = folder / "ImageSets" / "Main"
    if not lists.is_dir():
        ids = sorted(p.stem for p in (folder / "Annotations").glob("*.xml"))
        if not ids:
            raise BadDataError(f"{folder / 'Annotations'}: no .xml annotation files")
        warnings.warn(f"{folder}: no ImageSets/Main/{{train,val}}.txt: every image is used for training and validation alike", stacklevel=3)
        return {"train": (ids, str(folder / "Annotations")), "val": (ids, str(folder / "Annotations"))}
    for train, val in SPLIT_LISTS:
        files = {"train": lists / f"{train}.txt", "val": lists / f"{val}.txt"}
        if all(f.is_file() for f in files.values()):
            return {split: (_read_ids(f), str(f)) for split, f in files.items()}
    pairs = " or ".join(f"{a}.txt + {b}.txt" for a, b in SPLIT_LISTS)
    raise BadDataError(f"{lists}: expected the split lists {pairs}")


def _read_ids(list_file: Path) -> list[str]:
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDataError(f"{list_file}: cannot read the image id list: {exc}") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise BadDataError(f"{list_file}: lists no image ids")
    return ids


def read_voc(folder: Path, problems: Problems, splits=("train", "val")) -> tuple[list[str], dict[str, tuple[list[ImageRecord], str]]]:
    """Class names and ``{split: (records, id-list file)}`` of a VOC folder (see the module docstring).

    Both splits' xml files are parsed (the class names come from both); records, which open
    each image, are made for ``splits`` only. Image ids count from 1 in list order per split.
    """
    ids = _split_ids(folder)
    parsed: dict[str, list[tuple[str, VocAnnotation]]] = {}
    for split in ("val", "train"):  # val first, as the COCO reader: a broken val fails fast
        if split == "train" and ids["train"][0] == ids["val"][0]:
            parsed["train"] = parsed["val"]
            continue
        parsed[split] = []
        for image_id in ids[split][0]:
            xml = folder / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                problems("missing annotation", f"{ids[split][1]}: image id {image_id!r}: annotation file not found: {xml}")
                continue
            ann = read_voc_xml(xml, problems)
            if ann is not None:
                parsed[split].append((image_id, ann))
    names = sorted({o.name for split in parsed.values() for _, ann in split for o in ann.objects})
    if not names:
        raise BadDataError(f"{folder}: no usable <object> in any annotation file, so no class names ({problems.summary()})")
    class_index = {name: k for k, name in enumerate(names)}
    out = {}
    for split in [s for s in ("val", "train") if s in splits]:
        if split == "train" and "val" in out and ids["train"][0] == ids["val"][0]:
            out["train"] = out["val"]
            continue
        records, next_ann = [], 1
        for k, (image_id, ann) in enumerate(parsed[split]):
            record = voc_record(_image_path(folder, image_id, ann), k + 1, ann, class_index, next_ann, problems)
            if record is not None:
                records.append(record)
                next_ann += len(record.annotations)
        out[split] = (records, ids[split][1])
    return names, out
