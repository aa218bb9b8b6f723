"""``neon-trees``: the deepforest wheel's tree crowns, tiled and cached; its grid and trainer settings.

The tiling and cut rule are checked on small generated images behind a stand-in for the wheel
(``fake_wheel``); the real data (when ``deepforest==2.1.0`` is installed, as ``make`` does) is
checked for its tile and box counts and trains."""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scabench.detectors import BadDataError, TrainConfig, load_dataset, neon_trees, train
from scabench.detectors.neon_trees import IMAGES, cut_boxes, ensure_neon_trees, tile_origins, tile_starts

try:
    HAVE_WHEEL = distribution("deepforest").version == neon_trees.WHEEL_VERSION
except PackageNotFoundError:
    HAVE_WHEEL = False
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason=f"needs `{neon_trees.INSTALL}`")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCABENCH_CACHE", str(tmp_path / "cache"))


class FakeDistribution:
    def __init__(self, root: Path, version: str = neon_trees.WHEEL_VERSION):
        self.root, self.version = root, version

    def locate_file(self, path: str) -> Path:
        return self.root / path


SIZES = {"train": (200, 180), "val": (150, 130)}
# boxes in VOC's 1-based inclusive pixels
BOXES = {"train": [(10, 10, 40, 30), (51, 11, 90, 30), (150, 100, 199, 180)], "val": [(1, 1, 30, 30), (100, 60, 140, 100)]}


def _voc_xml(name: str, size: tuple[int, int], boxes: list) -> str:
    objects = "".join(
        f"<object><name>Tree</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d in boxes
    )
    return f"<annotation><filename>{name}.png</filename><size><width>{size[0]}</width><height>{size[1]}</height></size>{objects}</annotation>"


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch) -> Path:
    """deepforest/data with two small images under the shipped names; ``distribution`` finds it."""
    folder = tmp_path / "site" / "deepforest" / "data"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, stem in IMAGES.items():
        w, h = SIZES[split]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
        (folder / f"{stem}.xml").write_text(_voc_xml(stem, (w, h), BOXES[split]))
    monkeypatch.setattr(neon_trees, "distribution", lambda name: FakeDistribution(tmp_path / "site"))
    return folder


# --------------------------------------------------------------------------------------
# The tiling and the cut rule


def test_tiles_step_by_the_stride_and_the_last_one_is_flush_with_the_edge():
    assert tile_starts(200, 64, 48) == [0, 48, 96, 136]
    assert tile_starts(160, 64, 48) == [0, 48, 96]  # the regular step already ends at the edge
    assert tile_starts(64, 64, 48) == [0]
    assert tile_origins(200, 130, 64, 0.25)[:5] == [(0, 0), (48, 0), (96, 0), (136, 0), (0, 48)]
    assert len(tile_origins(2299, 2472, 400, 0.25)) == 64 and len(tile_origins(1249, 1035, 400, 0.25)) == 16


def test_a_cut_box_is_kept_clipped_with_half_its_area_inside_else_dropped_and_counted():
    boxes = np.array([
        [10, 10, 30, 30],  # inside: kept as is
        [44, 10, 84, 30],  # exactly half inside: kept, clipped
        [50, 10, 90, 30],  # 35 % inside: dropped
        [100, 100, 120, 120],  # outside: neither kept nor counted
    ], np.float64)  # fmt: skip
    kept, dropped, mask = cut_boxes(boxes, 0, 0, 64)
    np.testing.assert_array_equal(kept, [[10, 10, 30, 30], [44, 10, 64, 30]])
    assert dropped == 1 and mask.tolist() == [True, True, False, False]
    kept, dropped, _ = cut_boxes(boxes, 48, 0, 64)  # the next tile, in its own coordinates: 90 % and 100 % inside
    np.testing.assert_array_equal(kept, [[0, 10, 36, 30], [2, 10, 42, 30]])
    assert dropped == 0
    kept, dropped, _ = cut_boxes(np.array([[40, 40, 80, 80]]), 0, 0, 64)  # 24 x 24 of 40 x 40 = 36 %
    assert len(kept) == 0 and dropped == 1


def test_the_fake_wheel_is_tiled_into_coco_with_the_rule_and_its_counts(fake_wheel):
    root = ensure_neon_trees(64, 0.25)
    assert root.name == "neon-trees-v1-deepforest2.1.0-tile64-overlap0.25"
    train_json = json.loads((root / "train.json").read_text())
    origins = tile_origins(*SIZES["train"], 64, 0.25)
    assert [im["file_name"] for im in train_json["images"]][:2] == ["train/0000_x0_y0.png", "train/0001_x48_y0.png"]
    assert len(train_json["images"]) == len(origins) == 16
    source = np.array(BOXES["train"], np.float64) - [1, 1, 0, 0]
    expected = [cut_boxes(source, x, y, 64) for x, y in origins]
    assert train_json["info"]["boxes"] == len(train_json["annotations"]) == sum(len(k) for k, _, _ in expected)
    assert train_json["info"]["dropped_by_cut_rule"] == sum(d for _, d, _ in expected) > 0
    assert train_json["info"]["boxes_in_no_tile"] == 0 and train_json["info"]["source_boxes"] == 3
    first = [a["bbox"] for a in train_json["annotations"] if a["image_id"] == 1]
    assert first == [[9.0, 9.0, 31.0, 21.0]]  # VOC (10, 10, 40, 30) -> pixel edges (9, 9, 40, 30)
    # a tile is the crop of the source image
    source_image = np.asarray(Image.open(fake_wheel / f"{IMAGES['train']}.png"))
    x, y = origins[5]
    np.testing.assert_array_equal(np.asarray(Image.open(root / train_json["images"][5]["file_name"])), source_image[y : y + 64, x : x + 64])
    info = load_dataset("neon-trees", tile_size=64, tile_overlap=0.25)
    assert info.names == ["Tree"] and len(info.train.records) == 16 and len(info.val.records) == len(tile_origins(*SIZES["val"], 64, 0.25))


def test_tiling_is_deterministic_and_cached_per_setting(fake_wheel, tmp_path, monkeypatch):
    first = ensure_neon_trees(64, 0.25)
    monkeypatch.setenv("SCABENCH_CACHE", str(tmp_path / "other-cache"))
    second = ensure_neon_trees(64, 0.25)
    assert first != second
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)

    def no_rewrite(*args, **kwargs):
        raise AssertionError("a cached dataset was written again")

    monkeypatch.setattr(neon_trees, "_write_split", no_rewrite)
    assert ensure_neon_trees(64, 0.25) == second  # cache hit
    with pytest.raises(AssertionError, match="written again"):
        ensure_neon_trees(64, 0.5)  # another setting is another dataset
    monkeypatch.setattr(neon_trees, "distribution", lambda name: FakeDistribution(fake_wheel.parents[1], "2.2.0"))
    with pytest.warns(UserWarning, match="defined on deepforest 2.1.0; 2.2.0 is installed"), pytest.raises(AssertionError):
        ensure_neon_trees(64, 0.25)  # another wheel version is another dataset too


def test_without_the_wheel_the_error_says_what_to_run(monkeypatch):
    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(neon_trees, "distribution", missing)
    with pytest.raises(BadDataError, match=r"deepforest wheel, which is not installed: run `pip install --no-deps deepforest==2\.1\.0`"):
        load_dataset("neon-trees")


def test_missing_or_broken_wheel_files_say_to_reinstall(fake_wheel):
    (fake_wheel / f"{IMAGES['val']}.png").unlink()
    with pytest.raises(BadDataError, match=rf"lacks {IMAGES['val']}.png: run `pip install --no-deps --force-reinstall deepforest==2.1.0`"):
        ensure_neon_trees(64, 0.25)
    Image.new("RGB", SIZES["val"]).save(fake_wheel / f"{IMAGES['val']}.png")
    (fake_wheel / f"{IMAGES['val']}.xml").write_text("<annotation><object>")
    with pytest.raises(BadDataError, match=rf"{IMAGES['val']}.xml: cannot parse VOC xml.*--force-reinstall deepforest==2.1.0"):
        ensure_neon_trees(64, 0.25)
    (fake_wheel / f"{IMAGES['val']}.xml").write_text(_voc_xml(IMAGES["val"], SIZES["val"], [(1, 1, 30, 300)]))
    with pytest.raises(BadDataError, match=r"object\[0\] \('Tree'\): box .* lies outside the 150x130 image.*--force-reinstall"):
        ensure_neon_trees(64, 0.25)


def test_a_tiling_out_of_range_names_the_setting(fake_wheel):
    with pytest.raises(ValueError, match="tile_size must be an integer from 64 to 1024"):
        ensure_neon_trees(32, 0.25)
    with pytest.raises(ValueError, match="tile_overlap must be from 0 to 0.75"):
        ensure_neon_trees(64, 0.8)
    with pytest.raises(ValueError, match=r"tile_size 140 is larger than the val image \(150x130\)"):
        ensure_neon_trees(140, 0.25)


# --------------------------------------------------------------------------------------
# Settings: trainer and grid


def test_trainer_and_grid_settings_match_the_module():
    cfg = TrainConfig()
    assert (cfg.tile_size, cfg.tile_overlap) == (neon_trees.TILE_SIZE, neon_trees.TILE_OVERLAP)
    with pytest.raises(ValueError, match="tile_size"):
        TrainConfig(tile_size=neon_trees.MIN_TILE_SIZE - 1)
    with pytest.raises(ValueError, match="tile_overlap"):
        TrainConfig(tile_overlap=neon_trees.MAX_TILE_OVERLAP + 0.01)
    from scabench.bench.config_schema import DataSpec

    assert DataSpec(source="neon-trees", tile_size=neon_trees.MAX_TILE_SIZE).is_path is False
    with pytest.raises(ValueError, match="tile_size"):
        DataSpec(source="neon-trees", tile_size=neon_trees.MAX_TILE_SIZE + 1)


GRID = "name: t\ndetectors: [{name: yolov3-tiny, width: 0.25}]\nlosses: [iou]\n"


def test_a_grid_on_neon_trees_passes_its_tiling_to_the_cells():
    from scabench.bench.config import parse_grid

    grid = parse_grid(GRID + "data: {source: neon-trees, tile_size: 320, tile_overlap: 0.2}\n", "g.yaml")
    assert [(c.config["data"], c.config["tile_size"], c.config["tile_overlap"]) for c in grid.cells] == [("neon-trees", 320, 0.2)]
    grid = parse_grid(GRID + "data: neon-trees\naxes: {tile_size: [256, 400]}\n", "g.yaml")
    assert [c.config["tile_size"] for c in grid.cells] == [256, 400]
    assert "tile_size" not in parse_grid(GRID + "data: neon-trees\n", "g.yaml").cells[0].config  # defaults are not hashed


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: {source: synthetic-shapes, tile_size: 320}\n", "g.yaml:4: data.tile_size: tile_size is a neon-trees setting; data 'synthetic-shapes' is not tiled"),
        ("data: {source: neon-trees, train_size: 10}\n", "g.yaml:4: data.train_size: train_size is a synthetic-shapes setting; neon-trees has tile_size"),
        ("data: {source: neon-trees, tile_overlap: 0.9}\n", "g.yaml:4: data.tile_overlap: Input should be less than or equal to 0.75"),
        ("data: synthetic-shapes\naxes: {tile_size: [256]}\n", "g.yaml:5: axes.tile_size: tile_size is a neon-trees setting"),
        ("data: neon-trees\naxes: {data_seed: [1, 2]}\n", "g.yaml:5: axes.data_seed: data_seed is a synthetic-shapes setting"),
        ("data: neon-trees\naxes: {tile_size: [16]}\n", "g.yaml:5: axes.tile_size[0]: Input should be greater than or equal to 64"),
        ("data: neon-trees\ntrain: {tile_size: 256}\n", "g.yaml:5: train.tile_size: set it under data:, not train:"),
    ],
)
def test_grid_tiling_errors_name_the_key(text, message):
    from scabench.bench.config import GridError, parse_grid

    with pytest.raises(GridError) as info:
        parse_grid(GRID + text, "g.yaml")
    assert message in str(info.value)


# --------------------------------------------------------------------------------------
# The real data (deepforest 2.1.0 installed)


@needs_wheel
def test_the_real_data_tiles_into_64_train_and_16_val_tiles_of_boxes():
    info = load_dataset("neon-trees")
    assert "deepforest" not in sys.modules  # its files are read, the package is never imported
    assert info.names == ["Tree"] and len(info.train.records) == 64 and len(info.val.records) == 16
    counts = {split: json.loads((Path(info.root) / f"{split}.json").read_text())["info"] for split in ("train", "val")}
    assert [counts[s]["source_boxes"] for s in ("train", "val")] == [574, 279]
    assert [counts[s]["boxes"] for s in ("train", "val")] == [1040, 544]
    assert [counts[s]["dropped_by_cut_rule"] for s in ("train", "val")] == [228, 93]
    assert counts["train"]["boxes_in_no_tile"] == counts["val"]["boxes_in_no_tile"] == 0
    assert all((r.width, r.height) == (400, 400) for r in info.train.records + info.val.records)
    assert sum(len(r.boxes) == 0 for r in info.train.records) == 3  # sagebrush and fallen logs, no crowns: background
    assert min(len(r.boxes) for r in info.val.records) > 0


@needs_wheel
def test_a_short_training_on_the_real_data_runs(tmp_path):
    """The recipe of experiments/real-trees.yaml (AdamW at lr 0.002, no mosaic, vertical flips) cut to 8 epochs
    at 160 px: it runs, the box loss falls, and it finds some crowns (AP50 > 0; the grid's 40 epochs at 320 px
    reach about 0.18). About 12 s."""
    cfg = TrainConfig(
        data="neon-trees", img_size=160, width=0.25, epochs=8, batch_size=8, nominal_batch=8, loss="sca", workers=0,
        device="cpu", optimizer="adamw", hyp={"lr0": 0.002, "mosaic": 0.0, "flipud": 0.5}, val_interval=8,
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and lines[-1]["loss_box"] < lines[0]["loss_box"]
    assert 0 < summary["metrics"]["AP50"] < 1
