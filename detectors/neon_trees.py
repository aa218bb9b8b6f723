"""``neon-trees``: tree crowns hand-drawn on NEON aerial RGB images (10 cm pixels), cut into tiles.

The images and boxes are the ones the ``deepforest==2.1.0`` wheel (MIT) ships in
``deepforest/data/`` as PNG + Pascal VOC xml. The files are found through
``importlib.metadata`` and read with :mod:`detectors.voc`; deepforest is never imported (its
import pulls in heavy dependencies). Install it with ``pip install --no-deps deepforest==2.1.0``.

- train: ``2019_YELL_2_528000_4978000_image_crop2`` (2299 x 2472 px, 574 crowns);
- val: ``2019_YELL_2_541000_4977000_image_crop`` (1249 x 1035 px, 279 crowns), from the same
  NEON site and year (Yellowstone, YELL, 2019; its UTM tile lies 13 km away), so the split tests
  new trees, not a new site.
  The wheel's two 400 x 400 plots (OSBS_029, SOAP_061: other sites, SOAP labelled Alive/Dead)
  are not used. One class, ``Tree``.

Tiling (the same for both images): square tiles of ``tile_size`` px (default 400, the size of the
wheel's own 400 x 400 plots) every ``round(tile_size * (1 - tile_overlap))``
px (default overlap 0.25), row by row; the last row and column are aligned to the image's edge,
so every pixel lies in a tile and no tile is padded. A box cut by a tile's edge is clipped to the
tile and kept when at least ``MIN_VISIBLE`` (half) of its area lies inside the tile, else it is
dropped from that tile. A crown no wider or taller than the overlap lies whole in some tile; a
larger one at a seam could be dropped from every tile (``info.boxes_in_no_tile`` counts them:
none with the defaults, whose 100 px overlap is near the largest crown, 108 px).

A dataset is a pure function of (deepforest version, tile_size, tile_overlap, the rules above:
``VERSION``) and is cached as a COCO-json folder (``train.json``, ``val.json``, ``train/*.png``,
``val/*.png``) under ``$SCABENCH_CACHE``, as synthetic-shapes is. The json's ``info`` records
the tile and box counts and the boxes the cut rule dropped.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
from PIL import Image

from scabench.detectors.readers import BOX_TOLERANCE, BadDataError, Problems, check_xyxy, image_size
from scabench.detectors.synthetic import cache_root, cached_folder
from scabench.detectors.voc import read_voc_xml

VERSION = 1  # of the tiling and cut rules: part of the cache key
WHEEL_VERSION = "2.1.0"
INSTALL = f"pip install --no-deps deepforest=={WHEEL_VERSION}"
REINSTALL = f"pip install --no-deps --force-reinstall deepforest=={WHEEL_VERSION}"
IMAGES = {"train": "2019_YELL_2_528000_4978000_image_crop2", "val": "2019_YELL_2_541000_4977000_image_crop"}
CLASS_NAME = "Tree"
TILE_SIZE, TILE_OVERLAP = 400, 0.25
MIN_TILE_SIZE, MAX_TILE_SIZE = 64, 1024  # the val image's short side is 1035 px
MAX_TILE_OVERLAP = 0.75
MIN_VISIBLE = 0.5  # a cut box is kept when at least this fraction of its area is in the tile


def wheel_data() -> tuple[Path, str]:
    """The deepforest wheel's ``data`` folder and its version; a :class:`BadDataError` saying what to run."""
    try:
        dist = distribution("deepforest")
    except PackageNotFoundError:
        raise BadDataError(f"data 'neon-trees' reads the tree-crown images of the deepforest wheel, which is not installed: run `{INSTALL}`") from None
    folder = Path(dist.locate_file("deepforest/data"))
    missing = [name for stem in IMAGES.values() for name in (f"{stem}.png", f"{stem}.xml") if not (folder / name).is_file()]
    if missing:
        raise BadDataError(f"data 'neon-trees': {folder} (deepforest {dist.version}) lacks {', '.join(missing)}: run `{REINSTALL}`")
    if dist.version != WHEEL_VERSION:
        warnings.warn(f"data 'neon-trees' is defined on deepforest {WHEEL_VERSION}; {dist.version} is installed (its files may differ)", stacklevel=2)
    return folder, dist.version


def check_tiling(tile_size: int, tile_overlap: float) -> None:
    """ValueError naming the setting when a tiling is out of range."""
    if not (isinstance(tile_size, int) and MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE):
        raise ValueError(f"neon-trees: tile_size must be an integer from {MIN_TILE_SIZE} to {MAX_TILE_SIZE} px, got {tile_size!r}")
    if not 0 <= tile_overlap <= MAX_TILE_OVERLAP:
        raise ValueError(f"neon-trees: tile_overlap must be from 0 to {MAX_TILE_OVERLAP}, got {tile_overlap!r}")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one side: every ``stride`` px, the last one flush with the far edge."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def tile_origins(width: int, height: int, tile_size: int, tile_overlap: float) -> list[tuple[int, int]]:
    """(x0, y0) of every tile, row by row."""
    stride = max(1, round(tile_size * (1 - tile_overlap)))
    return [(x, y) for y in tile_starts(height, tile_size, stride) for x in tile_starts(width, tile_size, stride)]


def cut_boxes(boxes: np.ndarray, x0: int, y0: int, tile_size: int, min_visible: float = MIN_VISIBLE) -> tuple[np.ndarray, int, np.ndarray]:
    """The boxes (xyxy image px) the tile at (x0, y0) keeps, clipped, in tile px; how many the cut rule dropped; the kept mask.

    A box that overlaps the tile is kept when at least ``min_visible`` of its area lies inside;
    the others that overlap it are dropped (counted); boxes outside the tile are not counted.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    tile = np.array([x0, y0, x0 + tile_size, y0 + tile_size], np.float64)
    clipped = np.concatenate([np.maximum(boxes[:, :2], tile[:2]), np.minimum(boxes[:, 2:], tile[2:])], 1)
    inside = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    overlaps = inside > 0
    keep = overlaps & (inside >= min_visible * area)
    return clipped[keep] - tile[[0, 1, 0, 1]], int((overlaps & ~keep).sum()), keep


def source_boxes(folder: Path, stem: str) -> tuple[Path, int, int, np.ndarray]:
    """(image path, width, height, boxes xyxy px) of one shipped image, every box checked; broken files say what to run."""
    problems = Problems("error", hint=f" (the deepforest wheel's data looks broken: run `{REINSTALL}`)")
    xml, png = folder / f"{stem}.xml", folder / f"{stem}.png"
    ann = read_voc_xml(xml, problems)
    w, h = image_size(png, problems, str(xml))
    if ann.size is not None and ann.size != (w, h):
        problems("image size mismatch", f"{xml}: the xml says {ann.size[0]}x{ann.size[1]} but {png} is {w}x{h}")
    boxes = [check_xyxy(o.box, w, h, problems, f"{xml}: object[{o.index}] ('{o.name}')", BOX_TOLERANCE) for o in ann.objects]
    if not boxes:
        problems("no objects", f"{xml}: no <object> entries")
    return png, w, h, np.array(boxes, np.float64).reshape(-1, 4)


def _write_split(root: Path, split: str, folder: Path, tile_size: int, tile_overlap: float) -> None:
    png, w, h, boxes = source_boxes(folder, IMAGES[split])
    if tile_size > min(w, h):
        raise ValueError(f"neon-trees: tile_size {tile_size} is larger than the {split} image ({w}x{h})")
    (root / split).mkdir(parents=True, exist_ok=True)
    with Image.open(png) as im:
        picture = im.convert("RGB")
    images, annotations, dropped, seen = [], [], 0, np.zeros(len(boxes), bool)
    for i, (x0, y0) in enumerate(tile_origins(w, h, tile_size, tile_overlap)):
        name = f"{split}/{i:04d}_x{x0}_y{y0}.png"
        picture.crop((x0, y0, x0 + tile_size, y0 + tile_size)).save(root / name, compress_level=1)
        images.append({"id": i + 1, "file_name": name, "width": tile_size, "height": tile_size})
        kept, cut, keep = cut_boxes(boxes, x0, y0, tile_size)
        dropped, seen = dropped + cut, seen | keep
        for x1, y1, x2, y2 in kept.tolist():
            bbox = [x1, y1, x2 - x1, y2 - y1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    info = {
        "description": f"scabench neon-trees v{VERSION}: {IMAGES[split]} of deepforest's data, tiles of {tile_size} px, overlap {tile_overlap}",
        "source_image": f"{IMAGES[split]}.png", "source_size": [w, h], "source_boxes": len(boxes),
        "tiles": len(images), "boxes": len(annotations), "dropped_by_cut_rule": dropped, "boxes_in_no_tile": int((~seen).sum()),
    }  # fmt: skip
    coco = {"info": info, "images": images, "annotations": annotations, "categories": [{"id": 1, "name": CLASS_NAME}]}
    (root / f"{split}.json").write_text(json.dumps(coco))


def dataset_dir(tile_size: int, tile_overlap: float, wheel_version: str) -> Path:
    return cache_root() / f"neon-trees-v{VERSION}-deepforest{wheel_version}-tile{tile_size}-overlap{tile_overlap:g}"


def ensure_neon_trees(tile_size: int = TILE_SIZE, tile_overlap: float = TILE_OVERLAP) -> Path:
    """Tile (once) and return the COCO-json folder of the neon-trees dataset (see the module docstring)."""
    check_tiling(tile_size, tile_overlap)
    folder, version = wheel_data()

    def write(tmp: Path) -> None:
        for split in ("val", "train"):
            _write_split(tmp, split, folder, tile_size, tile_overlap)

    return cached_folder(dataset_dir(tile_size, tile_overlap, version), write)
