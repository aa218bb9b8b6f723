"""Pascal VOC folders: read like COCO and YOLO datasets, with the same bad-data policy.

Every fixture is written to tmp_path by the test itself (``write_voc``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from scabench.detectors import BadDataError, evaluate_coco, load_dataset
from scabench.detectors.voc import voc_box

W, H = 64, 48
# id -> objects (name, xmin, ymin, xmax, ymax[, difficult]) in VOC's 1-based inclusive pixels
OBJECTS = {
    "a": [("dog", 5, 6, 24, 20), ("cat", 30, 10, 50, 40, 1)],
    "b": [("cat", 1, 1, W, H)],
    "c": [("dog", 10, 10, 30, 30), ("dog", 40, 5, 60, 25)],
}


def _object_xml(obj: tuple) -> str:
    name, xmin, ymin, xmax, ymax, *difficult = obj
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult[0] if difficult else 0}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def write_voc(root: Path, objects: dict = OBJECTS, splits: dict | None = None, xml_text: dict | None = None) -> Path:
    """A VOC folder: JPEGImages/<id>.png, Annotations/<id>.xml (``xml_text`` replaces one), ImageSets/Main/<split>.txt."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for image_id, objs in objects.items():
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.png")
        body = "".join(_object_xml(o) for o in objs)
        text = (
            f"<annotation><folder>VOC</folder><filename>{image_id}.png</filename>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size><segmented>0</segmented>{body}</annotation>"
        )
        (root / "Annotations" / f"{image_id}.xml").write_text((xml_text or {}).get(image_id, text))
    splits = {"train": ["a", "b"], "val": ["c"]} if splits is None else splits
    if splits:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for name, ids in splits.items():
            (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _load(root: Path, bad_data: str = "error", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(str(root), bad_data=bad_data, **kw)


def test_a_voc_folder_reads_splits_classes_boxes_and_ground_truth(tmp_path):
    info = _load(write_voc(tmp_path / "voc"))
    assert info.names == ["cat", "dog"] and info.category_ids == [1, 2]
    assert info.train.source.endswith("ImageSets/Main/train.txt") and info.val.source.endswith("val.txt")
    a, b = info.train.records
    (c,) = info.val.records
    assert [r.path.name for r in (a, b, c)] == ["a.png", "b.png", "c.png"] and [r.image_id for r in (a, b, c)] == [1, 2, 1]
    assert (a.width, a.height) == (W, H)
    # the difficult cat of image a: not a training box, but ground truth with iscrowd=1 (ignored by pycocotools)
    np.testing.assert_array_equal(a.boxes, [[4, 5, 24, 20]])
    np.testing.assert_array_equal(a.classes, [1])
    assert [(g["category_id"], g["bbox"], g["iscrowd"]) for g in a.annotations] == [(2, [4, 5, 20, 15], 0), (1, [29, 9, 21, 31], 1)]
    assert a.annotations[0]["area"] == 300 and len({g["id"] for r in (a, b) for g in r.annotations}) == 3
    np.testing.assert_array_equal(c.boxes, [[9, 9, 30, 30], [39, 4, 60, 25]])
    gt = info.coco_ground_truth("val")
    assert [cat["name"] for cat in gt["categories"]] == ["cat", "dog"] and len(gt["annotations"]) == 2
    only_val = _load(tmp_path / "voc", splits=("val",))  # scabench val: the classes still come from both splits
    assert only_val.names == ["cat", "dog"] and only_val.train.records == [] and len(only_val.val.records) == 1


def test_voc_coordinates_are_1_based_inclusive_pixels():
    """detectron2's conversion: xmin - 1, ymin - 1; xmax, ymax kept. (1, W) spans the image, a one-pixel box has width 1."""
    assert voc_box(1, 1, 64, 48) == [0, 0, 64, 48]
    assert voc_box(5, 7, 5, 7) == [4, 6, 5, 7]


def test_the_whole_image_box_is_inside_and_a_difficult_object_is_ignored_by_the_evaluation(tmp_path):
    info = _load(write_voc(tmp_path / "voc"))
    a, b = info.train.records
    np.testing.assert_array_equal(b.boxes, [[0, 0, W, H]])
    gt = info.coco_ground_truth("train")
    dog = a.annotations[0]
    hits = [
        {"image_id": 1, "category_id": 2, "bbox": dog["bbox"], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, W, H], "score": 0.8},
    ]
    assert evaluate_coco(gt, hits)["AP50"] == pytest.approx(1.0)  # the difficult cat, not found, is no miss


def test_without_image_sets_every_image_serves_both_splits_with_a_warning(tmp_path):
    root = write_voc(tmp_path / "voc", splits={})
    with pytest.warns(UserWarning, match="no ImageSets/Main"):
        info = load_dataset(str(root))
    assert [r.path.name for r in info.train.records] == ["a.png", "b.png", "c.png"] and info.val.records == info.train.records


def test_trainval_and_test_lists_are_the_second_choice(tmp_path):
    info = _load(write_voc(tmp_path / "voc", splits={"trainval": ["a", "c"], "test": ["b"]}))
    assert [r.path.name for r in info.train.records] == ["a.png", "c.png"] and [r.path.name for r in info.val.records] == ["b.png"]


def test_an_incomplete_pair_of_lists_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(BadDataError, match=r"ImageSets/Main: expected the split lists train.txt \+ val.txt or trainval.txt \+ test.txt"):
        _load(write_voc(tmp_path / "voc", splits={"train": ["a"]}))


def _annotation(size: str, body: str = "") -> str:
    return f"<annotation><filename>a.png</filename><size>{size}</size>{body}</annotation>"


def _with_object(obj_xml: str) -> dict:
    """Image a's xml with its second object replaced by ``obj_xml``."""
    return {"a": _annotation(f"<width>{W}</width><height>{H}</height>", _object_xml(OBJECTS["a"][0]) + obj_xml)}


def _raw_object(name: str | None = "cat", difficult: str = "0", bndbox: bool = True, **coordinates: str | None) -> str:
    """An ``<object>`` of raw texts; a None name or coordinate leaves that element out."""
    values = {"xmin": "1", "ymin": "1", "xmax": "9", "ymax": "9", **coordinates}
    box = "".join(f"<{k}>{v}</{k}>" for k, v in values.items() if v is not None)
    named = f"<name>{name}</name>" if name is not None else ""
    return f"<object>{named}<difficult>{difficult}</difficult>" + (f"<bndbox>{box}</bndbox>" if bndbox else "") + "</object>"


CAT = r"object\[1\] \('cat'\): "
BAD_OBJECTS = [
    ("missing bndbox", _raw_object(bndbox=False), CAT + "missing key 'bndbox'"),
    ("missing bndbox", _raw_object(ymax=None), CAT + "bndbox: missing key 'ymax'"),
    ("malformed box", _raw_object(ymin="one"), CAT + "bndbox.ymin must be a finite number, got 'one'"),
    ("malformed box", _raw_object(xmin="nan"), CAT + "bndbox.xmin must be a finite number, got 'nan'"),
    ("missing name", _raw_object(name=None), r"object\[1\]: missing or empty key 'name'"),
    ("malformed difficult", _raw_object(difficult="yes"), CAT + "difficult must be 0 or 1, got 'yes'"),
    ("zero-area box", _object_xml(("cat", 20, 5, 18, 9)), CAT + "zero-area box"),
    ("box outside image", _object_xml(("cat", 50, 5, 90, 9)), CAT + "box .* lies outside the 64x48 image"),
]


@pytest.mark.parametrize("kind, obj_xml, match", BAD_OBJECTS)
def test_a_bad_object_names_the_file_the_object_and_the_key_or_is_skipped_and_counted(tmp_path, kind, obj_xml, match):
    root = write_voc(tmp_path / "voc", xml_text=_with_object(obj_xml))
    with pytest.raises(BadDataError, match=r"Annotations/a.xml: " + match + r".*bad_data='skip'"):
        _load(root)
    info = _load(root, "skip")
    assert dict(info.problems.counts) == {kind: 1}
    a = info.train.records[0]
    assert len(a.annotations) == 1 and a.annotations[0]["category_id"] == info.names.index("dog") + 1


@pytest.mark.parametrize(
    "kind, change, match",
    [
        ("corrupt annotation", {"a": "<annotation><object>"}, r"a.xml: cannot parse VOC xml"),
        ("corrupt annotation", {"a": "<coco/>"}, r"a.xml: not a VOC annotation \(root element <coco>"),
        ("malformed size", {"a": _annotation("<width>sixty</width><height>48</height>")}, r"a.xml: size: width and height must be positive"),
        ("image size mismatch", {"a": _annotation(f"<width>65</width><height>{H}</height>")}, r"a.xml: the xml says 65x48 but .*a.png is 64x48"),
    ],
)
def test_an_unusable_xml_drops_its_image(tmp_path, kind, change, match):
    root = write_voc(tmp_path / "voc", xml_text=change)
    with pytest.raises(BadDataError, match=match):
        _load(root)
    info = _load(root, "skip")
    assert dict(info.problems.counts) == {kind: 1} and [r.path.name for r in info.train.records] == ["b.png"]


def test_missing_files_name_the_list_and_the_image(tmp_path):
    root = write_voc(tmp_path / "voc", splits={"train": ["a", "b", "zz"], "val": ["c"]})
    with pytest.raises(BadDataError, match=r"train.txt: image id 'zz': annotation file not found: .*Annotations/zz.xml"):
        _load(root)
    (root / "JPEGImages" / "b.png").unlink()
    info = _load(root, "skip")
    assert dict(info.problems.counts) == {"missing annotation": 1, "missing image": 1}
    assert [r.path.name for r in info.train.records] == ["a.png"]
    assert "b.xml: image file not found" in " ".join(info.problems.examples)


def test_skip_counts_every_problem_across_the_dataset(tmp_path):
    bad = _with_object(BAD_OBJECTS[2][1])
    bad["c"] = "not xml"
    root = write_voc(tmp_path / "voc", splits={"train": ["a", "b"], "val": ["b", "c"]}, xml_text=bad)
    info = _load(root, "skip")
    assert dict(info.problems.counts) == {"malformed box": 1, "corrupt annotation": 1}
    assert info.problems.summary() == "skipped 1 corrupt annotation, 1 malformed box"
    assert [r.path.name for r in info.val.records] == ["b.png"]


def test_a_voc_dataset_without_objects_is_an_error(tmp_path):
    with pytest.raises(BadDataError, match="no usable <object> in any annotation file"):
        _load(write_voc(tmp_path / "voc", objects={"a": [], "b": [], "c": []}))


def test_scabench_train_runs_on_a_voc_folder(tmp_path, monkeypatch):
    from scabench.bench.cli import app

    root = write_voc(tmp_path / "voc")
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--data", str(root), "--img-size", "64", "--epochs", "1", "--width", "0.25",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["data"] == str(root) and set(summary["metrics"]) >= {"AP", "AP50"}
