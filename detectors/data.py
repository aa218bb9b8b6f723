"""Datasets and loaders: which files a dataset is, its images decoded once, the torch datasets.

``load_dataset(data, ...)`` accepts

- ``"synthetic-shapes"`` (generated once and cached, see :mod:`detectors.synthetic`);
- ``"neon-trees"`` (real tree crowns from the deepforest wheel, tiled once and cached, see
  :mod:`detectors.neon_trees`);
- a COCO-json folder holding ``train.json`` and ``val.json`` (or
  ``annotations/instances_train*.json`` and ``annotations/instances_val*.json``), image
  ``file_name`` resolved against the json's folder, ``images/``, the folder above, or the
  split folder named after the json (``instances_val2017.json`` -> ``val2017/``);
- a Pascal VOC folder (``Annotations/``, ``JPEGImages/``, optionally ``ImageSets/Main``; see
  :mod:`detectors.voc`);
- a single COCO-json annotation file (used for training and validation alike: a warning says so);
- a dataset YAML in the usual YOLO form (``path``, ``train``, ``val``, ``names`` or ``nc``)
  whose ``train``/``val`` are image folders, text files listing images, or COCO-json files.

The annotation formats and their bad-data checks are :mod:`detectors.readers` (COCO),
:mod:`detectors.yolo_labels` and :mod:`detectors.voc`. Every image is
decoded once before training (:class:`ImageStore`, in threads), so no bad sample surfaces
half-way through an epoch; small datasets keep the decoded, resized images in memory.
``train_loader`` / ``val_loader`` build the loaders the trainer, ``scabench val`` and the
benchmarks use.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

from scabench.detectors import augment
from scabench.detectors.neon_trees import TILE_OVERLAP, TILE_SIZE, ensure_neon_trees
from scabench.detectors.readers import BadDataError, ImageRecord, Problems, read_coco
from scabench.detectors.yolo_labels import list_images, read_dataset_yaml, read_yolo
from scabench.detectors.synthetic import TRAIN_SIZE, VAL_SIZE, ensure_synthetic_shapes
from scabench.detectors.voc import is_voc_folder, read_voc

RAM_CACHE_BYTES = int(os.environ.get("SCABENCH_RAM_CACHE_MB", "2048")) * 2**20


@dataclass
class Split:
    records: list[ImageRecord]
    source: str  # the annotation file or folder, for messages


@dataclass
class DatasetInfo:
    names: list[str]
    category_ids: list[int]  # class index -> COCO category id (for results files)
    train: Split
    val: Split
    problems: Problems
    root: str

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def coco_ground_truth(self, split: str = "val") -> dict:
        """The split's ground truth as a COCO dict (what the evaluation compares against)."""
        records = getattr(self, split).records
        anns = [a for r in records for a in r.annotations]
        return {
            "images": [{"id": r.image_id, "width": r.width, "height": r.height, "file_name": str(r.path)} for r in records],
            "annotations": anns,
            "categories": [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.names)],
        }


def _coco_pair(folder: Path) -> tuple[Path, Path] | None:
    if (folder / "train.json").is_file() and (folder / "val.json").is_file():
        return folder / "train.json", folder / "val.json"
    ann = folder / "annotations"
    trains, vals = sorted(ann.glob("instances_train*.json")), sorted(ann.glob("instances_val*.json"))
    if trains and vals:
        return trains[-1], vals[-1]
    return None


def load_dataset(
    data: str,
    *,
    bad_data: str = "error",
    train_size: int = TRAIN_SIZE,
    val_size: int = VAL_SIZE,
    data_seed: int = 0,
    splits: tuple[str, ...] = ("train", "val"),
    tile_size: int = TILE_SIZE,
    tile_overlap: float = TILE_OVERLAP,
) -> DatasetInfo:
    """Read a dataset's records (not its pixels); see the module docstring for what ``data`` may be.

    ``train_size``, ``val_size``, ``data_seed``: synthetic-shapes; ``tile_size``, ``tile_overlap``: neon-trees.
    """
    problems = Problems(bad_data)
    if data == "synthetic-shapes":
        path = ensure_synthetic_shapes(train_size, val_size, data_seed)
    elif data == "neon-trees":
        path = ensure_neon_trees(tile_size, tile_overlap)
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise BadDataError(
                f"dataset {data!r} not found (give 'synthetic-shapes', 'neon-trees', a COCO folder or json, a VOC folder or a dataset yaml)"
            )

    if path.is_dir():
        pair = _coco_pair(path)
        if pair is None:
            if is_voc_folder(path):
                return _voc_dataset(path, problems, splits)
            for name in ("data.yaml", "dataset.yaml"):
                if (path / name).is_file():
                    return load_dataset(str(path / name), bad_data=bad_data, splits=splits)
            raise BadDataError(
                f"{path}: no train.json/val.json, annotations/instances_{{train,val}}*.json, Annotations/ (VOC) or data.yaml found"
            )
        return _coco_dataset(pair[0], pair[1], problems, None, str(path), splits)
    if path.suffix == ".json":
        warnings.warn(f"{path}: one annotation file given: it is used for training and validation alike", stacklevel=2)
        return _coco_dataset(path, path, problems, None, str(path), splits)
    if path.suffix in (".yaml", ".yml"):
        return _yaml_dataset(path, problems, splits)
    raise BadDataError(f"{path}: expected a folder, a .json (COCO) or a .yaml (dataset) file")


def _coco_dataset(train_json: Path, val_json: Path, problems: Problems, root: Path | None, where: str, splits) -> DatasetInfo:
    val_records, cats = read_coco(val_json, problems, root)
    if train_json == val_json:
        train_records = val_records
    elif "train" in splits:
        train_records, _ = read_coco(train_json, problems, root, categories=cats)
    else:
        train_records = []
    names = [str(c.get("name", c["id"])) for c in cats]
    return _usable(DatasetInfo(names, [c["id"] for c in cats], Split(train_records, str(train_json)), Split(val_records, str(val_json)), problems, where), splits)


def _voc_dataset(folder: Path, problems: Problems, splits) -> DatasetInfo:
    names, read = read_voc(folder, problems, splits)
    train, val = (Split(*read[name]) if name in read else Split([], "") for name in ("train", "val"))
    return _usable(DatasetInfo(names, list(range(1, len(names) + 1)), train, val, problems, str(folder)), splits)


def _yaml_dataset(path: Path, problems: Problems, splits) -> DatasetInfo:
    spec = read_dataset_yaml(path)
    if isinstance(spec.val, str) and spec.val.endswith(".json"):
        if not isinstance(spec.train, str):
            raise BadDataError(f"{path}: with a COCO json as val, train is one json file too, got {spec.train!r}")
        return _coco_dataset(spec.resolve(spec.train), spec.resolve(spec.val), problems, spec.root, str(path), splits)
    nc = len(spec.names)
    val_records = read_yolo(list_images(spec.val, spec.root, path), nc, problems, first_id=1)
    train_records = read_yolo(list_images(spec.train, spec.root, path), nc, problems, first_id=1) if "train" in splits else []
    return _usable(DatasetInfo(spec.names, list(range(nc)), Split(train_records, str(spec.train)), Split(val_records, str(spec.val)), problems, str(path)), splits)


def _usable(info: DatasetInfo, splits) -> DatasetInfo:
    """``info``, unless a split that was read kept no image (all bad and skipped): a ``BadDataError``."""
    for name in splits:
        split = getattr(info, name)
        if not split.records:
            raise BadDataError(f"{split.source}: no usable images in the {name} split ({info.problems.summary()})")
    return info


# --------------------------------------------------------------------------------------
# Pixels: decode once, keep resized copies in RAM when they fit


class ImageStore:
    """Decoded images resized so the long side is ``img_size``; decoded once up front (threads).

    A file that cannot be decoded is a bad-data problem (raise or drop the record). Images are
    kept in memory when they fit in ``ram_cache_bytes`` (default ``SCABENCH_RAM_CACHE_MB``,
    2048), else re-read.
    """

    def __init__(
        self, records: list[ImageRecord], img_size: int, problems: Problems, threads: int = 4, ram_cache_bytes: int | None = None
    ):
        self.img_size = img_size
        estimate = sum(_resized_bytes(r, img_size) for r in records)
        self.keep = estimate <= (RAM_CACHE_BYTES if ram_cache_bytes is None else ram_cache_bytes)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = list(pool.map(self._load_checked, records))
        good = []
        self.cache: list[np.ndarray | None] = []
        for record, result in zip(records, results):
            if isinstance(result, Exception):
                problems("corrupt image", f"image {record.path} (id {record.image_id}): cannot decode: {result}")
                continue
            good.append(record)
            self.cache.append(result if self.keep else None)
        self.records = good

    def _load_checked(self, record: ImageRecord):
        try:
            return self._load(record.path)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            return exc

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im, _ = augment.resize_long_side(im, self.img_size)
            return np.asarray(im)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> tuple[np.ndarray, float]:
        """(HWC uint8 image with long side img_size, ratio to the original)."""
        record = self.records[i]
        arr = self.cache[i] if self.keep else self._load(record.path)
        return arr, arr.shape[1] / record.width


def _resized_bytes(record: ImageRecord, size: int) -> int:
    r = size / max(record.width, record.height)
    return int(record.width * r + 1) * int(record.height * r + 1) * 3


# --------------------------------------------------------------------------------------
# Torch datasets


class TrainSet(torch.utils.data.Dataset):
    """Augmented training samples. Index with ``(i, seed)``: the sample is a pure function of both.

    Returns (CHW uint8 tensor, labels [n, 5] float32: class, x, y, w, h normalised).
    """

    def __init__(self, store: ImageStore, img_size: int, hyp: dict, augment_: bool = True):
        self.store = store
        self.img_size = img_size
        self.hyp = hyp
        self.augment = augment_

    def __len__(self) -> int:
        return len(self.store)

    def _scaled(self, i: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        arr, r = self.store.image(i)
        record = self.store.records[i]
        return Image.fromarray(arr), record.boxes * r, record.classes

    def _mosaic(self, i: int, rng: np.random.Generator):
        picks = [i, *rng.integers(0, len(self), 3).tolist()]
        parts = [self._scaled(k) for k in picks]
        canvas, boxes = augment.mosaic([p[0] for p in parts], [p[1] for p in parts], self.img_size, rng)
        classes = np.concatenate([p[2] for p in parts])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return canvas, boxes[keep], classes[keep]

    def _one(self, i: int, rng: np.random.Generator):
        img, boxes, classes = self._scaled(i)
        img, (left, top) = augment.letterbox(img, self.img_size)
        return img, boxes + np.array([left, top, left, top], np.float32), classes

    def _sample(self, i: int, rng: np.random.Generator, mosaic: bool = True):
        hyp = self.hyp
        if not self.augment:
            img, boxes, classes = self._one(i, rng)
            return np.asarray(img), boxes, classes
        if rng.random() < hyp["mosaic"] and mosaic:  # drawn either way: closing mosaic keeps the stream
            img, boxes, classes = self._mosaic(i, rng)
        else:
            img, boxes, classes = self._one(i, rng)
        img, boxes, classes = augment.random_affine(img, boxes, classes, self.img_size, rng, hyp)
        return np.asarray(img), boxes, classes

    def __getitem__(self, key):
        """``key``: an index, ``(index, seed)`` or ``(index, seed, mosaic)`` (mosaic and mixup off when closed)."""
        i, seed, mosaic = (*key, True)[:3] if isinstance(key, tuple) else (key, 0, True)
        rng = np.random.default_rng([seed, i])
        arr, boxes, classes = self._sample(i, rng, mosaic)
        if self.augment:
            if self.hyp["mixup"] and rng.random() < self.hyp["mixup"] and mosaic:
                other = self._sample(int(rng.integers(0, len(self))), rng)
                arr, boxes, classes = augment.mixup((arr, boxes, classes), other, rng)
            chw = augment.augment_hsv(arr, rng, self.hyp["hsv_h"], self.hyp["hsv_s"], self.hyp["hsv_v"])
            if rng.random() < self.hyp["flipud"]:
                chw = chw[:, ::-1]
                boxes = boxes.copy()
                boxes[:, [1, 3]] = self.img_size - boxes[:, [3, 1]]
            if rng.random() < self.hyp["fliplr"]:
                chw = chw[:, :, ::-1]
                boxes = boxes.copy()
                boxes[:, [0, 2]] = self.img_size - boxes[:, [2, 0]]
        else:
            chw = arr.transpose(2, 0, 1)
        labels = np.zeros((len(boxes), 5), np.float32)
        if len(boxes):
            labels[:, 0] = classes
            labels[:, 1:] = box_convert(torch.from_numpy(boxes), "xyxy", "cxcywh").numpy() / float(self.img_size)
        return torch.from_numpy(np.ascontiguousarray(chw)), torch.from_numpy(labels)


def collate_train(batch):
    """Stack images (uint8); labels become [n, 6]: image index in the batch, class, x, y, w, h."""
    images = torch.stack([b[0] for b in batch])
    labels = [torch.cat((torch.full((len(b[1]), 1), float(k)), b[1]), 1) for k, b in enumerate(batch)]
    return images, torch.cat(labels) if labels else torch.zeros((0, 6))


class ValSet(torch.utils.data.Dataset):
    """Letterboxed validation images with what is needed to map boxes back to the original."""

    def __init__(self, store: ImageStore, img_size: int):
        self.store = store
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        arr, r = self.store.image(i)
        img, (left, top) = augment.letterbox(Image.fromarray(arr), self.img_size)
        record = self.store.records[i]
        meta = torch.tensor([record.image_id, r, left, top, record.width, record.height], dtype=torch.float64)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))), meta


def collate_val(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles with a generator seeded by (seed, epoch) and yields ``(index, sample_seed, mosaic)``.

    Each process of a DDP run takes every ``world``-th index (the order padded to a multiple of
    ``world``). Resuming at an epoch replays exactly the samples an uninterrupted run would see.
    ``mosaic`` is False from epoch ``close_mosaic_at`` on (ultralytics' close_mosaic).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True, close_mosaic_at: int | None = None):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.close_mosaic_at = close_mosaic_at
        self.epoch = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]
        sample_seed = self.seed * 1000003 + self.epoch * 7919 + 1
        mosaic = self.close_mosaic_at is None or self.epoch < self.close_mosaic_at
        for i in order[self.rank :: self.world]:
            yield (i, sample_seed, mosaic)


# --------------------------------------------------------------------------------------
# Loaders


def train_loader(
    store: ImageStore, hyp: dict, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1, workers: int = 0,
    close_mosaic_at: int | None = None, **loader_kw,
) -> torch.utils.data.DataLoader:
    """Augmented, seeded training batches (``collate_train``); call ``loader.sampler.set_epoch(e)``.

    ``close_mosaic_at``: the first epoch without mosaic (and mixup). ``loader_kw`` go to the
    DataLoader (``pin_memory``, ``prefetch_factor``, ``drop_last``).
    """
    sampler = EpochSampler(len(store), seed, rank, world, close_mosaic_at=close_mosaic_at)
    return torch.utils.data.DataLoader(
        TrainSet(store, store.img_size, hyp), batch_size=batch_size, sampler=sampler,
        collate_fn=collate_train, num_workers=workers, persistent_workers=workers > 0, **loader_kw,
    )  # fmt: skip


def val_loader(store: ImageStore, batch_size: int, *, workers: int = 0, **loader_kw) -> torch.utils.data.DataLoader:
    """Letterboxed validation batches in record order (``collate_val``), for ``evaluate.predict``."""
    return torch.utils.data.DataLoader(
        ValSet(store, store.img_size), batch_size=batch_size, shuffle=False, collate_fn=collate_val, num_workers=workers,
        persistent_workers=workers > 0, **loader_kw,
    )  # fmt: skip


def endless(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's batches epoch after epoch (its ``EpochSampler`` set to 0, 1, 2, ...)."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
