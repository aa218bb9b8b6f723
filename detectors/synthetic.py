"""``synthetic-shapes``: the generated default dataset (REFERENCES 8).

128 x 128 RGB images: a low-frequency colour-noise background with clutter lines, and 1-4
non-overlapping objects of three classes (rectangle, ellipse, triangle; ellipses and triangles
have empty box corners, so a box must be placed by its sides, not by filling), 10-72 px per
side, aspect ratio 1/3 to 3, placed at sub-pixel positions. The ground truth of an object is
the tight box of its rasterised mask (pixel-centre sampling, no anti-aliasing), so there is no
label noise: AP at IoU 0.9 measures the detector, not the annotator.

Every image is a pure function of (seed, split, index); a dataset is generated once and cached
as a COCO-json folder (``train.json``, ``val.json``, ``train/*.png``, ``val/*.png``) under
``$SCABENCH_CACHE`` (default ``~/.cache/scabench``). The folder is built under a temporary name
and renamed into place, so concurrent runs never see a half-written dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

VERSION = 1
IMAGE_SIZE = 128
CLASSES = ("rectangle", "ellipse", "triangle")
SPLIT_CODES = {"train": 1, "val": 2}


def cache_root() -> Path:
    """``$SCABENCH_CACHE`` or ``~/.cache/scabench``."""
    env = os.environ.get("SCABENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scabench"


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    grid = rng.integers(0, 256, size=(rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    low = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(low, dtype=np.int16)
    arr = arr + rng.integers(-12, 13, size=arr.shape, dtype=np.int16)  # fine grain
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 7)):  # clutter lines
        pts = rng.uniform(-10, size + 10, size=4)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line([(pts[0], pts[1]), (pts[2], pts[3])], fill=colour, width=int(rng.integers(1, 3)))
    return img


def _mask(kind: int, x0: float, y0: float, w: float, h: float, apex: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (ys, xs) covered by a shape, sampled at pixel centres."""
    left, top = max(int(x0) - 1, 0), max(int(y0) - 1, 0)
    right, bottom = min(int(x0 + w) + 2, size), min(int(y0 + h) + 2, size)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32) + 0.5
    inside = _inside(kind, xs, ys, x0, y0, w, h, apex)
    yy, xx = np.nonzero(inside)
    return yy + top, xx + left


def _inside(kind: int, xs: np.ndarray, ys: np.ndarray, x0: float, y0: float, w: float, h: float, apex: float) -> np.ndarray:
    if kind == 0:  # rectangle
        return (xs >= x0) & (xs <= x0 + w) & (ys >= y0) & (ys <= y0 + h)
    if kind == 1:  # ellipse
        cx, cy = x0 + w / 2, y0 + h / 2
        return ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 <= 1.0
    # triangle: base along the bottom side, apex on the top side at fraction `apex`
    ax, ay = x0 + apex * w, y0
    bx, by = x0, y0 + h
    cx, cy = x0 + w, y0 + h

    def edge(px, py, qx, qy):
        return (qx - px) * (ys - py) - (qy - py) * (xs - px)

    e1, e2, e3 = edge(ax, ay, bx, by), edge(bx, by, cx, cy), edge(cx, cy, ax, ay)
    return ((e1 <= 0) & (e2 <= 0) & (e3 <= 0)) | ((e1 >= 0) & (e2 >= 0) & (e3 >= 0))


def render(seed: int, split: str, index: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[dict]]:
    """One image (HWC uint8) and its objects: ``{"category": 0..2, "bbox": [x, y, w, h], "area"}``."""
    rng = np.random.default_rng([VERSION, seed, SPLIT_CODES[split], index])
    img = _background(rng, size)
    arr = np.array(img)
    objects: list[dict] = []
    taken: list[tuple[float, float, float, float]] = []
    target = int(rng.integers(1, 5))
    for _ in range(40):  # placement attempts
        if len(objects) == target:
            break
        w, h = rng.uniform(10, 72, size=2)
        if not (1 / 3 <= w / h <= 3):
            continue
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        box = (x0 - 2, y0 - 2, x0 + w + 2, y0 + h + 2)
        if any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
            continue
        kind = int(rng.integers(0, 3))
        ys, xs = _mask(kind, x0, y0, w, h, float(rng.uniform(0, 1)), size)
        if len(xs) < 16:
            continue
        local = arr[ys, xs].astype(np.float32).mean(0)
        for _ in range(10):  # a colour that stands out from the background under it
            colour = rng.integers(0, 256, size=3)
            if np.abs(colour - local).sum() > 150:
                break
        shade = rng.integers(-10, 11, size=(len(xs), 1))
        arr[ys, xs] = np.clip(colour[None, :] + shade, 0, 255).astype(np.uint8)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append({"category": kind, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(len(xs))})
        taken.append(box)
    return arr, objects


def _write_split(root: Path, split: str, count: int, seed: int) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        arr, objects = render(seed, split, i)
        name = f"{split}/{i:06d}.png"
        Image.fromarray(arr).save(root / name, compress_level=1)
        images.append({"id": i + 1, "file_name": name, "width": arr.shape[1], "height": arr.shape[0]})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"scabench synthetic-shapes v{VERSION}, seed {seed}, split {split}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)],
    }
    (root / f"{split}.json").write_text(json.dumps(coco))


def dataset_dir(train_size: int, val_size: int, seed: int) -> Path:
    return cache_root() / f"synthetic-shapes-v{VERSION}-{train_size}-{val_size}-seed{seed}"


# Default split sizes: enough for AP to separate the losses, small enough that the quick grid
# (5 losses x 10 epochs at 128 px) fits in 10 minutes on a 2-core CPU.
TRAIN_SIZE, VAL_SIZE = 1280, 300


def ensure_synthetic_shapes(train_size: int = TRAIN_SIZE, val_size: int = VAL_SIZE, seed: int = 0) -> Path:
    """Generate (once) and return the COCO-json folder of a synthetic-shapes dataset."""
    if train_size < 1 or val_size < 1:
        raise ValueError(f"synthetic-shapes needs train_size and val_size >= 1, got {train_size}, {val_size}")

    def write(tmp: Path) -> None:
        _write_split(tmp, "val", val_size, seed)
        _write_split(tmp, "train", train_size, seed)

    return cached_folder(dataset_dir(train_size, val_size, seed), write)


def cached_folder(final: Path, write: Callable[[Path], None]) -> Path:
    """``final``, written once by ``write(folder)`` (a COCO-json folder: train.json and val.json).

    ``write`` fills a temporary folder beside ``final`` that is then renamed into place, so
    concurrent runs never see a half-written dataset (the first rename wins).
    """
    if (final / "val.json").exists() and (final / "train.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "train.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
