"""Bad input never corrupts a result nor hides behind a traceback (issue 11, items 1, 3, 4, 7).

Every malformed input of a reader (COCO json, YOLO labels and dataset yaml, detections) gives a
:class:`BadDataError` naming the file and the entry at fault (the CLI exits 2), or with
``bad_data="skip"`` drops the entry and counts it. The last section lists the attacks that held.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from scabench.bench.cli import app
from scabench.detectors import BadDataError, evaluate_coco, load_dataset
from scabench.detectors import evaluate as ev
from tests.test_detectors import FIXTURES, GOOD, _write_coco

IMAGES = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"id": 2, "file_name": "b.png", "width": 64, "height": 48}]


def _images(*changes: dict) -> list[dict]:
    """The two default images with ``changes[k]`` applied to image k (``None`` values delete the key)."""
    out = []
    for image, change in zip(IMAGES, (*changes, {}, {})):
        merged = {**image, **change}
        out.append({k: v for k, v in merged.items() if v is not None})
    return out


def _with_sections(root: Path, **sections) -> Path:
    """``root``'s train.json and val.json with some sections replaced (images stay on disk)."""
    for split in ("train", "val"):
        path = root / f"{split}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **sections}))
    return root


def _loads(root: Path, bad_data: str = "error"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(str(root), bad_data=bad_data)


# --------------------------------------------------------------------------------------
# 1. duplicate ids


def test_duplicate_image_ids_name_both_entries_and_skip_drops_both(tmp_path):
    """Two images with id 1: before, b.png silently took a.png's boxes."""
    images = [*_images({}, {"id": 1}), {"id": 3, "file_name": "c.png", "width": 64, "height": 48}]
    root = _write_coco(tmp_path / "ds", [GOOD, {**GOOD, "id": 12, "image_id": 3}], images=images)
    with pytest.raises(BadDataError) as err:
        _loads(root)
    message = str(err.value)
    assert "val.json" in message or "train.json" in message
    assert "images[0] ('a.png')" in message and "images[1] ('b.png')" in message and "image id 1" in message
    info = _loads(root, "skip")
    assert [(r.path.name, len(r.boxes)) for r in info.val.records] == [("c.png", 1)]
    assert info.problems.counts["duplicate image id"] == 4  # both images, in train.json and val.json


def test_duplicate_annotation_ids_name_both_entries_and_skip_drops_both(tmp_path):
    other = {**GOOD, "image_id": 2, "bbox": [10, 10, 8, 8]}
    third = {**GOOD, "id": 12, "bbox": [30, 20, 10, 10]}
    root = _write_coco(tmp_path / "ds", [GOOD, third, other])
    with pytest.raises(BadDataError, match=r"annotations\[0\].*annotations\[2\].*annotation id 11"):
        _loads(root)
    info = _loads(root, "skip")
    assert [a["id"] for r in info.val.records for a in r.annotations] == [12]
    assert info.problems.counts["duplicate annotation id"] == 4


def test_duplicate_category_ids_name_both_entries_and_skip_drops_both(tmp_path):
    """Before: two categories with id 1 made two classes and mapped every box to the second."""
    cats = [{"id": 1, "name": "thing"}, {"id": 5, "name": "other"}, {"id": 1, "name": "again"}]
    root = _write_coco(tmp_path / "ds", [GOOD, {**GOOD, "id": 12, "category_id": 5}], categories=cats)
    with pytest.raises(BadDataError, match=r"categories\[0\] \('thing'\) and categories\[2\] \('again'\).*category id 1"):
        _loads(root)
    info = _loads(root, "skip")
    assert info.names == ["other"] and info.category_ids == [5]
    assert info.problems.counts["duplicate category id"] == 2  # the categories are read from val.json only
    assert [r.classes.tolist() for r in info.val.records] == [[0], []]  # annotation 11 went with its category


# --------------------------------------------------------------------------------------
# 3. missing keys and wrong types in COCO json


@pytest.mark.parametrize(
    "images, ann, categories, match",
    [
        (_images({"file_name": None}), GOOD, None, r"images\[0\], image id 1: missing key 'file_name'"),
        (None, GOOD, [{"name": "thing"}], r"categories\[0\] \('thing'\): missing key 'id'"),
        (_images({"id": "1"}), {**GOOD, "image_id": "1"}, None, r"images\[0\].*id must be an integer, got '1'"),
        (None, {**GOOD, "bbox": [1, 2, 3]}, None, r"annotations\[0\], annotation id 11 .*bbox must be \[x, y, width, height\]"),
        (None, {k: v for k, v in GOOD.items() if k != "id"}, None, r"annotations\[0\] \(image id 1, 'a.png'\): missing key 'id'"),
        (None, {**GOOD, "iscrowd": "yes"}, None, r"annotations\[0\], annotation id 11.*iscrowd must be 0 or 1"),
        (None, {**GOOD, "bbox": [True, 4, 20, 10]}, None, r"bbox must be"),
        (_images({"width": "64"}), GOOD, None, r"images\[0\], image id 1 \('a.png'\): width must be a positive integer"),
        (["a.png"], GOOD, None, r"images\[0\]: expected an object with keys"),
    ],
)
def test_malformed_coco_entries_name_file_section_index_and_key(tmp_path, images, ann, categories, match):
    root = _with_sections(_write_coco(tmp_path / "ds", [ann], categories=categories), images=images or IMAGES)
    with pytest.raises(BadDataError, match=match) as err:
        _loads(root)
    assert "val.json" in str(err.value)
    try:  # skip drops the entry (and what depends on it), never a traceback
        _loads(root, "skip")
    except BadDataError as exc:
        assert "no usable images" in str(exc)  # images: ["a.png"] leaves none


def test_a_split_left_without_images_is_an_error_naming_it(tmp_path):
    """Every image missing (a wrong image folder) and skipped: before, training began on nothing."""
    root = _write_coco(tmp_path / "ds", [GOOD], missing=("a.png", "b.png"))
    with pytest.raises(BadDataError, match=r"val.json: no usable images in the val split \(skipped 2 missing image\)"):
        load_dataset(str(root), bad_data="skip", splits=("val",))


def test_a_decompression_bomb_is_a_corrupt_image(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x48 is more than twice that: PIL refuses to open it
    root = _write_coco(tmp_path / "ds", [GOOD])
    with pytest.raises(BadDataError, match=r"image id 1 \('a.png'\): cannot read image"):
        _loads(root)


def test_a_coco_json_that_is_not_an_object(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    for split in ("train", "val"):
        (root / f"{split}.json").write_text("[1, 2]")
    with pytest.raises(BadDataError, match=r"val.json: not a COCO detection file"):
        _loads(root)


def test_malformed_coco_json_exits_2_from_the_cli(tmp_path):
    root = _with_sections(_write_coco(tmp_path / "ds", [GOOD]), images=_images({"file_name": None}))
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--data", str(root), "--img-size", "64", "--epochs", "1", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "missing key 'file_name'" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------------------
# 4. scabench evaluate: bad detections


def _evaluate_cli(tmp_path, dets, gt=None) -> tuple[int, str]:
    gt_path = FIXTURES / "coco_gt.json"
    if gt is not None:
        gt_path = tmp_path / "gt.json"
        gt_path.write_text(json.dumps(gt))
    path = tmp_path / "dets.json"
    path.write_text(dets if isinstance(dets, str) else json.dumps(dets))
    result = CliRunner().invoke(app, ["evaluate", str(gt_path), str(path), "--json"])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _fixture_dets() -> list[dict]:
    return json.loads((FIXTURES / "coco_dets.json").read_text())


@pytest.mark.parametrize(
    "change, match",
    [
        ({"bbox": [1, 2, 3]}, r"detection 1: bbox must be \[x, y, width, height\]"),
        ({"bbox": [1, 2, -3, 4]}, r"detection 1: bbox must be"),
        ({"category_id": 999}, r"detection 1: category_id 999 is not a category of the ground truth"),
        ({"score": "high"}, r"detection 1: score must be a finite number, got 'high'"),
        ({"score": math.nan}, r"detection 1: score must be a finite number, got nan"),
        ({"image_id": "7"}, r"detection 1: image_id must be an integer"),
        ({"image_id": 12345}, r"detection 1: image_id 12345 is not an image of the ground truth"),
    ],
)
def test_evaluate_rejects_bad_detections_naming_index_and_field(tmp_path, change, match):
    import re

    dets = _fixture_dets()
    dets[1] = {**dets[1], **change}
    code, output = _evaluate_cli(tmp_path, json.dumps(dets))  # json.dumps writes NaN as NaN, as Python's json reads it
    assert code == 2, output
    assert re.search(match, " ".join(output.split())), output
    assert "dets.json" in output and "Traceback" not in output
    with pytest.raises(BadDataError, match=match):
        evaluate_coco(FIXTURES / "coco_gt.json", dets)


def test_evaluate_bootstrap_checks_its_detections_too(tmp_path):
    dets = _fixture_dets()
    dets[2] = {**dets[2], "category_id": 999}
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_fixture_dets()))
    bad.write_text(json.dumps(dets))
    result = CliRunner().invoke(app, ["evaluate", str(FIXTURES / "coco_gt.json"), str(good), str(bad), "--bootstrap", "2"])
    assert result.exit_code == 2 and "bad.json: detection 2: category_id 999" in " ".join(result.output.split())


def _gt() -> dict:
    return json.loads((FIXTURES / "coco_gt.json").read_text())


def _without(entry: dict, key: str) -> dict:
    return {k: v for k, v in entry.items() if k != key}


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        ("images", "id", None, r"images\[0\]( \('[^']*'\))?: missing key 'id'"),
        ("categories", "id", None, r"categories\[0\] \('cat'\): missing key 'id'"),
        ("annotations", "area", None, r"annotations\[0\], annotation id \d+ .*: missing key 'area'"),
        ("annotations", "iscrowd", None, r"annotations\[0\], annotation id \d+ .*: missing key 'iscrowd'"),
        ("annotations", "bbox", [1, 2, 3], r"annotations\[0\], annotation id \d+.*bbox must be"),
        ("annotations", "image_id", 999, r"annotations\[0\], annotation id \d+: refers to unknown image id 999"),
        ("annotations", "category_id", 999, r"annotations\[0\], annotation id \d+.*unknown category_id 999"),
        ("annotations", "id", "x", r"annotations\[0\] \(image id \d+, '[^']*'\): id must be an integer, got 'x'"),
    ],
)
def test_evaluate_rejects_a_malformed_ground_truth(tmp_path, section, key, value, match):
    import re

    gt = _gt()
    entry = gt[section][0]
    gt[section][0] = _without(entry, key) if value is None else {**entry, key: value}
    code, output = _evaluate_cli(tmp_path, _fixture_dets(), gt=gt)
    assert code == 2 and re.search(match, " ".join(output.split())), output
    assert "gt.json" in output


def test_evaluate_rejects_duplicate_ground_truth_ids(tmp_path):
    gt = _gt()
    gt["annotations"][1]["id"] = gt["annotations"][0]["id"]
    code, output = _evaluate_cli(tmp_path, _fixture_dets(), gt=gt)
    assert code == 2 and "annotations[0]" in output and "annotations[1]" in output


def test_a_ground_truth_annotation_id_0_still_counts_its_match():
    """pycocotools reads a match to annotation id 0 as no match: a perfect detection scored AP 0."""
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1}],
        "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9}]
    assert evaluate_coco(gt, dets)["AP"] == pytest.approx(1.0)
    assert gt["annotations"][0]["id"] == 0  # the caller's dict is left alone


# --------------------------------------------------------------------------------------
# 7. smaller gaps


def test_no_detections_give_minus_one_where_an_area_range_has_no_ground_truth():
    """One 50x50 box (medium): AP and APm are 0, APs and APl have nothing to average (-1), as
    pycocotools' accumulate leaves them."""
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}],
    }
    metrics = evaluate_coco(gt, [])
    assert metrics["APs"] == metrics["APl"] == -1.0
    assert metrics["AP"] == metrics["APm"] == metrics["AP50"] == 0.0
    assert ev.evaluate_predictions(ev.load_ground_truth(gt), []) == metrics


def test_a_coco_json_without_annotations_warns_once_naming_the_file(tmp_path):
    root = _write_coco(tmp_path / "ds", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = load_dataset(str(root / "val.json"))
    about = [str(w.message) for w in caught if "no annotations" in str(w.message)]
    assert len(about) == 1 and str(root / "val.json") in about[0]
    assert len(info.train.records) == 2 and all(len(r.boxes) == 0 for r in info.train.records)


def _yolo(root: Path, labels: dict[str, str | bytes], yaml_text: str = "path: .\ntrain: images\nval: images\nnames: [x, y]\n") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for name, text in labels.items():
        Image.new("RGB", (40, 40)).save(root / "images" / f"{name}.png")
        if text is not None:
            target = root / "labels" / f"{name}.txt"
            target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("train: images\nval: images\nnc: two\n", r"data.yaml: nc must be a positive integer, got 'two'"),
        ("train: images\nval: images\nnc: 3\nnames: [x, y]\n", r"data.yaml: nc is 3 but names has 2 entries"),
        ("train: images\nval: images\nnames: {0: x, 2: y}\n", r"data.yaml: names as a mapping needs the keys 0..1"),
        ("- train\n- val\n", r"data.yaml: a dataset yaml is a mapping"),
        ("train: 5\nval: images\nnames: [x]\n", r"data.yaml: train must be a path or a list of paths, got 5"),
        ("path: [1]\ntrain: images\nval: images\nnames: [x]\n", r"data.yaml: path must be a folder"),
        ("train: images\nval: images\nnames: x\n", r"data.yaml: names must be a list or a mapping"),
        ("train: empty\nval: images\nnames: [x]\n", r"data.yaml: image source 'empty' holds no images"),
    ],
)
def test_malformed_dataset_yaml_names_the_file(tmp_path, yaml_text, match):
    path = _yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.2\n"}, yaml_text)
    (tmp_path / "yolo" / "empty").mkdir()
    with pytest.raises(BadDataError, match=match):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "line, kind, match",
    [
        ("nan 0.5 0.5 0.2 0.2", "unknown category", r"class nan not in 0..1"),
        ("inf 0.5 0.5 0.2 0.2", "unknown category", r"class inf not in 0..1"),
        ("-1 0.5 0.5 0.2 0.2", "unknown category", r"class -1 not in 0..1"),
        ("0 0.5 0.5 0.2", "malformed label", r"expected 'class x y w h'"),
        ("0 0.5 0.5 0.2 0.2 0.1", "malformed label", r"expected 'class x y w h'"),
        ("0 0.5 zero 0.2 0.2", "malformed label", r"expected 'class x y w h'"),
        ("0 0.5 0.5 nan 0.2", "non-finite box", r"non-finite box"),
    ],
)
def test_malformed_yolo_label_lines_name_file_and_line(tmp_path, line, kind, match):
    path = _yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.2\n", "b": line + "\n"})
    with pytest.raises(BadDataError, match=r"labels/b.txt line 1 \(image .*b.png\): " + match):
        load_dataset(str(path))
    info = load_dataset(str(path), bad_data="skip")
    assert info.problems.counts == {kind: 2} and [len(r.boxes) for r in info.val.records] == [1, 0]


def test_an_unreadable_label_file_is_bad_data(tmp_path):
    path = _yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.2\n", "b": b"\xff\xfe\x00garbage"})
    with pytest.raises(BadDataError, match=r"labels/b.txt: cannot read"):
        load_dataset(str(path))
    assert load_dataset(str(path), bad_data="skip").problems.counts == {"unreadable label": 2}


def test_empty_label_files_are_background_and_no_labels_at_all_warns(tmp_path):
    path = _yolo(tmp_path / "yolo", {"a": "", "b": None})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = load_dataset(str(path))
    assert [len(r.boxes) for r in info.val.records] == [0, 0] and not info.problems.total
    about = [str(w.message) for w in caught if "no labels" in str(w.message)]
    assert about and "labels/a.txt" in about[0]


def test_dry_run_checks_the_data_path_of_every_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "coco.yaml"
    path.write_text("name: c\ndata: coco-missing\ndetectors: [yolov3-tiny]\nlosses: [iou, giou]\n")
    result = CliRunner().invoke(app, ["run", "--grid", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert f"{path}:2: data: 'coco-missing': no such file or folder" in result.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "coco-missing").mkdir()
    result = CliRunner().invoke(app, ["run", "--grid", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------------------
# Attacks: every key of every entry removed or given a value of each wrong type


ODD_VALUES = (None, "x", 1.5, True, [1], {"a": 1}, -1, math.inf)


def _every_corruption(data: dict):
    """(label, corrupted copy) of ``data``: each key of the first entry of each section deleted or replaced."""
    for section in ("images", "annotations", "categories"):
        for key in data[section][0]:
            for value in (KeyError, *ODD_VALUES):
                copy = json.loads(json.dumps(data))
                entry = copy[section][0]
                if value is KeyError:
                    del entry[key]
                else:
                    entry[key] = value
                yield f"{section}[0].{key}={value!r}", copy


def test_no_corruption_of_a_coco_json_escapes_as_another_exception(tmp_path):
    root = _write_coco(tmp_path / "ds", [GOOD, {**GOOD, "id": 12, "image_id": 2}])
    clean = json.loads((root / "val.json").read_text())
    for label, data in _every_corruption(clean):
        _with_sections(root, **data)
        for policy in ("error", "skip"):
            try:
                _loads(root, policy)
            except BadDataError:
                pass
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{label} ({policy}): {type(exc).__name__}: {exc}")


def test_no_corruption_of_a_ground_truth_or_detection_escapes_as_another_exception():
    gt, dets = _gt(), _fixture_dets()
    for label, data in _every_corruption(gt):
        try:
            evaluate_coco(data, dets)
        except BadDataError:
            pass
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
    for key in dets[0]:
        for value in (KeyError, *ODD_VALUES):
            bad = json.loads(json.dumps(dets))
            if value is KeyError:
                del bad[0][key]
            else:
                bad[0][key] = value
            try:
                evaluate_coco(gt, bad)
            except BadDataError as exc:
                assert "detection 0" in str(exc), str(exc)
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"detection 0 {key}={value!r}: {type(exc).__name__}: {exc}")
