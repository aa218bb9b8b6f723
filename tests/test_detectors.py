"""Built-in detectors: models, target assignment, loss, evaluation, data and bad data, CLI (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scabench import losses
from scabench.detectors import BadDataError, TrainConfig, build_model, count_parameters, evaluate_coco, load_dataset
from scabench.detectors import evaluate as ev
from scabench.detectors.config import HYP_SCRATCH
from scabench.detectors.data import EpochSampler, ImageStore, TrainSet, collate_train
from scabench.detectors.loss import YoloLoss, build_targets
from scabench.detectors.optim import cosine, parameter_groups, warmup_iterations

FIXTURES = Path(__file__).parent / "fixtures" / "detectors"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SCABENCH_CACHE", str(tmp_path_factory.getbasetemp() / "scabench-cache"))


# --------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize(
    "name, expected", [("yolov3-tiny", 8_852_366), ("yolov3", 61_949_149), ("yolov3-spp", 62_998_749)]
)
def test_parameter_counts_match_the_reference(name, expected):
    assert count_parameters(build_model(name, num_classes=80)) == expected


def test_small_width_and_output_shapes():
    model = build_model("yolov3-tiny", num_classes=3, width=0.25)
    assert 0.5e6 < count_parameters(model) < 0.6e6  # "about 0.55 M"
    x = torch.zeros(2, 3, 128, 128)
    model.train()
    p4, p5 = model(x)
    assert p4.shape == (2, 3, 8, 8, 8) and p5.shape == (2, 3, 4, 4, 8)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3 * (64 + 16), 8)
    deep = build_model("yolov3", num_classes=3, width=0.25, depth=0.33)
    assert count_parameters(deep) < count_parameters(build_model("yolov3", num_classes=3, width=0.25))


def test_model_details_batchnorm_silu_and_bias_init():
    model = build_model("yolov3-tiny", num_classes=3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    assert any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    detect = model.detect
    for conv, stride in zip(detect.m, (16, 32)):
        b = conv.bias.detach().view(3, 8)
        # conv bias starts in a small uniform range; the init adds the prior on top
        assert torch.allclose(b[:, 4], torch.full((3,), np.log(8 / (640 / stride) ** 2)), atol=0.2)
        assert torch.allclose(b[:, 5:], torch.full((3, 3), np.log(0.6 / (3 - 0.99))), atol=0.2)
    with pytest.raises(ValueError, match="unknown detector"):
        build_model("yolov9")


def test_decode_places_boxes_in_pixels():
    model = build_model("yolov3-tiny", num_classes=1, width=0.25).eval()
    head = model.detect
    with torch.no_grad():
        for conv in head.m:
            conv.weight.zero_()
            conv.bias.zero_()  # sigmoid(0) = 0.5: xy offset 0.5, wh = anchor
        out = model(torch.zeros(1, 3, 64, 64))
    # level 0 (stride 16, 4x4 cells), anchor 0 (10x14 px), cell (0, 0): centre (0.5 * 2 - 0.5 + 0) * 16 = 8
    assert torch.allclose(out[0, 0, :4], torch.tensor([8.0, 8.0, 10.0, 14.0]))
    # cell (x=1, y=0) of the same anchor: centre x = 24
    assert torch.allclose(out[0, 1, :2], torch.tensor([24.0, 8.0]))


# --------------------------------------------------------------------------------------
# Target assignment and loss


def test_build_targets_on_hand_made_boxes():
    """One target, class 1, centre (0.30, 0.60), size 0.25 x 0.25 on an 8 x 8 grid.

    In grid units: centre (2.4, 4.8), size (2, 2). Anchors (grid units) 1x1, 2x2, 8x8: the size
    ratios are 2, 1 and 4; 4 is not < anchor_t = 4, so anchors 0 and 1 match. The centre's
    fractions are (0.4, 0.8): x < 0.5 takes the left neighbour (1, 4); y > 0.5 takes the one
    below (2, 5); the right (x frac > 0.5) and upper (y frac < 0.5) neighbours are not taken.
    Box targets are relative to each cell's corner: centre cell (0.4, 0.8), left (1.4, 0.8),
    lower (0.4, -0.2).
    """
    targets = torch.tensor([[0.0, 1.0, 0.30, 0.60, 0.25, 0.25]])
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]]])
    (t,) = build_targets(targets, anchors, [(8, 8)], anchor_t=4.0)
    for name in ("image", "anchor", "gj", "gi", "cls"):
        assert getattr(t, name).dtype == torch.long  # never float indices
    got = sorted(zip(t.anchor.tolist(), t.gi.tolist(), t.gj.tolist(), [tuple(round(v, 4) for v in b) for b in t.box.tolist()]))
    expected = sorted(
        (a, gi, gj, box)
        for a in (0, 1)
        for gi, gj, box in ((2, 4, (0.4, 0.8, 2.0, 2.0)), (1, 4, (1.4, 0.8, 2.0, 2.0)), (2, 5, (0.4, -0.2, 2.0, 2.0)))
    )
    assert got == expected
    assert t.cls.tolist() == [1] * 6 and t.image.tolist() == [0] * 6
    assert torch.equal(t.anchor_wh, anchors[0][t.anchor])


def test_build_targets_edges_and_levels():
    """A target at the image's left edge takes no left neighbour (x > 1 fails); a large one
    matches only the coarse level; an empty target list gives empty matches."""
    anchors = torch.tensor([[[0.5, 0.5], [1.0, 1.0], [1.5, 1.5]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    edge = torch.tensor([[1.0, 0.0, 0.05, 0.5, 0.1, 0.1]])  # x = 0.4 cells on the 8 x 8 level
    fine, coarse = build_targets(edge, anchors, [(8, 8), (4, 4)])
    assert set(fine.gi.tolist()) == {0} and len(fine) > 0
    assert fine.image.tolist() == [1] * len(fine)
    big = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.9, 0.9]])  # 7.2 cells on 8 x 8 (ratio 4.8 to 1.5), 3.6 on 4 x 4
    fine, coarse = build_targets(big, anchors, [(8, 8), (4, 4)])
    assert len(fine) == 0 and len(coarse) > 0
    empty = build_targets(torch.zeros((0, 6)), anchors, [(8, 8), (4, 4)])
    assert all(len(t) == 0 for t in empty)


def _toy_loss_inputs(nc=3):
    torch.manual_seed(0)
    preds = [torch.randn(2, 3, 8, 8, 5 + nc, requires_grad=True), torch.randn(2, 3, 4, 4, 5 + nc, requires_grad=True)]
    targets = torch.tensor([[0, 0, 0.3, 0.6, 0.25, 0.25], [1, 2, 0.7, 0.2, 0.4, 0.3], [1, 1, 0.5, 0.5, 0.1, 0.15]])
    anchors = torch.tensor([[[1.0, 1.0], [1.5, 1.5], [2.0, 2.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    return preds, targets, anchors


def test_loss_uses_the_registry_and_obj_target_modes():
    preds, targets, anchors = _toy_loss_inputs()
    hyp = dict(HYP_SCRATCH)
    results = {}
    for mode in ("loss", "iou"):
        crit = YoloLoss(losses.get_loss("sca"), anchors, 3, hyp, 128, obj_target=mode)
        total, items = crit(preds, targets)
        assert torch.isfinite(total) and items.shape == (3,)
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in preds)
        results[mode] = items
        for p in preds:
            p.grad = None
    # same box loss, different objectness targets (SCA's similarity is below IoU)
    assert torch.isclose(results["loss"][0], results["iou"][0])
    assert not torch.isclose(results["loss"][1], results["iou"][1])
    # gains: box 0.05 * 3/2, two levels
    crit = YoloLoss(losses.get_loss("iou"), anchors, 3, hyp, 128)
    assert crit.gain_box == pytest.approx(0.075) and crit.balance == [4.0, 1.0]
    assert crit.gain_obj == pytest.approx((128 / 640) ** 2 * 1.5)
    assert crit.gain_cls == pytest.approx(0.5 * 3 / 80 * 1.5)


def test_loss_objectness_target_is_the_clamped_similarity():
    """With one target, the objectness BCE equals BCE(p, t) where t = clamp(similarity, 0) at the
    assigned cells and 0 elsewhere (gr = 1): check it against a direct computation."""
    preds, targets, anchors = _toy_loss_inputs(nc=1)
    targets = targets[:1]
    box = losses.get_loss("giou")
    crit = YoloLoss(box, anchors, 1, dict(HYP_SCRATCH), 640)
    _, items = crit([p.detach() for p in preds], targets)
    assigned = build_targets(targets, anchors, [(8, 8), (4, 4)])
    expected = 0.0
    for level, (p, t) in enumerate(zip(preds, assigned)):
        p = p.detach()
        tobj = torch.zeros_like(p[..., 4])
        if len(t):
            ps = p[t.image, t.anchor, t.gj, t.gi]
            pxy = ps[:, :2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
            pb = torch.cat((pxy - pwh / 2, pxy + pwh / 2), 1)
            tb = torch.cat((t.box[:, :2] - t.box[:, 2:] / 2, t.box[:, :2] + t.box[:, 2:] / 2), 1)
            tobj[t.image, t.anchor, t.gj, t.gi] = (1 - box(pb, tb)).clamp(min=0)
        expected += torch.nn.functional.binary_cross_entropy_with_logits(p[..., 4], tobj) * [4.0, 1.0][level]
    assert items[1] == pytest.approx(float(expected) * 1.0 * 3 / 2, rel=1e-5)
    assert items[2] == 0  # one class: no class loss


# --------------------------------------------------------------------------------------
# Evaluation


def _stock_cocoeval(gt_path, dets_path, iou_thrs=None):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(dets_path))
        e = COCOeval(gt, dt, "bbox")
        if iou_thrs is not None:
            e.params.iouThrs = np.array(iou_thrs)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def test_evaluator_equals_pycocotools_on_a_fixture():
    gt, dets = FIXTURES / "coco_gt.json", FIXTURES / "coco_dets.json"
    ours = evaluate_coco(gt, dets)
    assert list(ours) == ["AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl"]
    stats = _stock_cocoeval(gt, dets).stats
    for key, index in (("AP", 0), ("AP50", 1), ("AP75", 2), ("APs", 3), ("APm", 4), ("APl", 5)):
        assert ours[key] == pytest.approx(stats[index], abs=1e-12), key
    for key, thr in (("AP65", 0.65), ("AP80", 0.80), ("AP90", 0.90)):  # a run at that single threshold
        assert ours[key] == pytest.approx(_stock_cocoeval(gt, dets, [thr]).stats[0], abs=1e-12), key
    assert 0 < ours["AP90"] < ours["AP50"] <= 1
    # the same from loaded objects; no detections gives zeros
    assert evaluate_coco(json.loads(gt.read_text()), json.loads(dets.read_text())) == ours
    assert evaluate_coco(gt, []) == {k: 0.0 for k in ours}
    # the trainer's path: ground truth loaded once, fresh detections evaluated in place
    fresh = json.loads(dets.read_text())
    assert ev.evaluate_predictions(ev.load_ground_truth(gt), fresh) == ours
    assert all({"id", "area", "iscrowd"} <= set(d) for d in fresh)


def test_fast_matching_gives_the_stock_precision_array():
    """Random ground truth with crowds and random detections: the precision and recall arrays
    of FastCOCOeval equal stock COCOeval's exactly."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(12)]
    anns, dets = [], []
    for im in images:
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(4, 120, 2)
            anns.append(
                {"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.integers(1, 3)), "bbox": [x, y, w, h],
                 "area": w * h, "iscrowd": int(rng.random() < 0.1)}
            )  # fmt: skip
            for _ in range(rng.integers(0, 4)):
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                dets.append({"image_id": im["id"], "category_id": anns[-1]["category_id"], "bbox": [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)], "score": float(rng.random())})
        for _ in range(rng.integers(0, 30)):
            x, y = rng.uniform(0, 180, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 3)), "bbox": [x, y, *rng.uniform(2, 60, 2)], "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = ev.load_ground_truth(gt)
        fast = ev._fast_coco_eval_class()(coco_gt, ev._results_index(coco_gt, dets), "bbox")
        fast.evaluate()
        fast.accumulate()
        coco_gt2 = ev.load_ground_truth(gt)
        stock = COCOeval(coco_gt2, coco_gt2.loadRes([dict(d) for d in dets]), "bbox")
        stock.evaluate()
        stock.accumulate()
    assert np.array_equal(fast.eval["precision"], stock.eval["precision"])
    assert np.array_equal(fast.eval["recall"], stock.eval["recall"])


def test_nms_multilabel_per_image_and_max_det():
    # image 0: two overlapping boxes of the same class and one of another; image 1: one box
    pred = torch.zeros(2, 3, 7)
    pred[0, 0] = torch.tensor([50, 50, 20, 20, 0.9, 0.9, 0.8])  # both classes pass conf
    pred[0, 1] = torch.tensor([51, 50, 20, 20, 0.8, 0.9, 0.0])  # overlaps box 0, class 0
    pred[0, 2] = torch.tensor([10, 10, 8, 8, 0.5, 0.0, 0.9])
    pred[1, 0] = torch.tensor([30, 30, 10, 10, 0.7, 0.5, 0.0])
    out = ev.non_max_suppression(pred, conf=0.01, iou=0.6)
    assert [len(o) for o in out] == [3, 1]  # (box0, cls0), (box0, cls1), (box2, cls1); box1 suppressed
    assert sorted(out[0][:, 5].tolist()) == [0.0, 1.0, 1.0]
    assert torch.all(out[0][:-1, 4] >= out[0][1:, 4])  # by score
    assert len(ev.non_max_suppression(pred, conf=0.01, iou=0.6, max_det=2)[0]) == 2
    assert out[1][0, :4].tolist() == [25.0, 25.0, 35.0, 35.0]


# --------------------------------------------------------------------------------------
# Data


def test_synthetic_shapes_is_deterministic_and_cached(tmp_path, monkeypatch):
    from scabench.detectors import synthetic

    monkeypatch.setenv("SCABENCH_CACHE", str(tmp_path))
    a, objs_a = synthetic.render(3, "train", 5)
    b, objs_b = synthetic.render(3, "train", 5)
    assert np.array_equal(a, b) and objs_a == objs_b
    assert not np.array_equal(a, synthetic.render(4, "train", 5)[0])
    root = synthetic.ensure_synthetic_shapes(12, 5, seed=3)
    assert root.parent == tmp_path and (root / "train.json").is_file()
    mtime = (root / "train.json").stat().st_mtime_ns
    assert synthetic.ensure_synthetic_shapes(12, 5, seed=3) == root
    assert (root / "train.json").stat().st_mtime_ns == mtime  # cached, not regenerated
    coco = json.loads((root / "train.json").read_text())
    assert len(coco["images"]) == 12 and [c["name"] for c in coco["categories"]] == ["rectangle", "ellipse", "triangle"]
    for ann in coco["annotations"]:  # tight boxes of the mask, inside the image, 1-4 per image
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 3 and h >= 3
        assert ann["area"] <= w * h
    counts = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=13)[1:]
    assert counts.min() >= 1 and counts.max() <= 4


def test_train_samples_are_seeded_and_labels_normalised():
    info = load_dataset("synthetic-shapes", train_size=16, val_size=4)
    store = ImageStore(info.train.records, 128, info.problems)
    ds = TrainSet(store, 128, dict(HYP_SCRATCH))
    img, labels = ds[(3, 11)]
    img2, labels2 = ds[(3, 11)]
    assert img.dtype == torch.uint8 and img.shape == (3, 128, 128)
    assert torch.equal(img, img2) and torch.equal(labels, labels2)
    assert not torch.equal(img, ds[(3, 12)][0])
    assert labels.shape[1] == 5 and (labels[:, 1:] >= 0).all() and (labels[:, 1:] <= 1).all()
    batch = collate_train([ds[(i, 1)] for i in range(4)])
    assert batch[0].shape == (4, 3, 128, 128) and batch[1].shape[1] == 6
    assert set(batch[1][:, 0].long().tolist()) <= {0, 1, 2, 3}
    # no augmentation: labels are the dataset's boxes
    plain = TrainSet(store, 128, {**HYP_SCRATCH, "mosaic": 0, "scale": 0, "translate": 0, "fliplr": 0, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0})
    _, labels = plain[(0, 0)]
    rec = store.records[0]
    xyxy = torch.cat((labels[:, 1:3] - labels[:, 3:] / 2, labels[:, 1:3] + labels[:, 3:] / 2), 1) * 128
    assert torch.allclose(xyxy, torch.from_numpy(rec.boxes), atol=1e-3)


def test_epoch_sampler_is_seeded_and_splits_ranks():
    s = EpochSampler(10, seed=1)
    s.set_epoch(2)
    first = list(s)
    assert list(s) == first and sorted(i for i, *_ in first) == list(range(10))
    s.set_epoch(3)
    assert list(s) != first
    parts = [EpochSampler(10, seed=1, rank=r, world=2) for r in range(2)]
    for p in parts:
        p.set_epoch(2)
    assert sorted(i for p in parts for i, *_ in p) == list(range(10))


def _write_coco(root: Path, anns: list[dict], *, images=None, categories=None, corrupt=(), missing=()):
    root.mkdir(parents=True, exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"id": 2, "file_name": "b.png", "width": 64, "height": 48}]
    for im in images:
        if im["file_name"] in missing:
            continue
        if im["file_name"] in corrupt:
            (root / im["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
        else:
            Image.new("RGB", (im["width"], im["height"]), (90, 120, 30)).save(root / im["file_name"])
    coco = {"images": images, "annotations": anns, "categories": categories or [{"id": 1, "name": "thing"}, {"id": 5, "name": "other"}]}
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(json.dumps(coco))
    return root


GOOD = {"id": 11, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0}


@pytest.mark.parametrize(
    "case, ann, kw, match",
    [
        ("missing image", GOOD, {"missing": ("b.png",)}, r"image id 2 \('b.png'\): image file not found"),
        ("corrupt image", GOOD, {"corrupt": ("b.png",)}, r"b.png.*cannot (read|decode)"),
        ("box outside", {**GOOD, "id": 12, "bbox": [50, 4, 30, 10]}, {}, r"annotation id 12 \(image id 1, 'a.png'\).*outside the 64x48 image"),
        ("zero area", {**GOOD, "id": 13, "bbox": [5, 5, 0, 10]}, {}, r"annotation id 13 .*zero-area box"),
        ("unknown category", {**GOOD, "id": 14, "category_id": 3}, {}, r"annotation id 14 .*unknown category_id 3"),
        ("malformed box", {**GOOD, "id": 15, "bbox": [1, 2, 3]}, {}, r"annotation id 15 .*bbox must be"),
    ],
)
def test_bad_coco_data_names_file_and_annotation(tmp_path, case, ann, kw, match):
    root = _write_coco(tmp_path / "ds", [GOOD, ann] if ann is not GOOD else [GOOD], **kw)
    with pytest.raises(BadDataError, match=match) as err:
        info = load_dataset(str(root))
        ImageStore(info.val.records, 64, info.problems)  # decoding finds corrupt files
    assert "train.json" in str(err.value) or "val.json" in str(err.value) or "b.png" in str(err.value)
    # skip: the bad thing is dropped and counted, the rest is kept
    info = load_dataset(str(root), bad_data="skip")
    store = ImageStore(info.val.records, 64, info.problems)
    assert info.problems.total >= 1 and case.split()[0] in info.problems.summary()
    assert any(len(r.boxes) for r in store.records)
    assert 11 in [a["id"] for a in info.coco_ground_truth("val")["annotations"]]


def test_bad_yolo_labels(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (40, 40)).save(root / "images" / f"{name}.png")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n")
    (root / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.3 0.3 0.1 0.1\n0 0.5 0.5 0.0 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [x, y]\n")
    with pytest.raises(BadDataError, match=r"labels/b.txt line 2 \(image .*b.png\): class 7 not in 0..1"):
        load_dataset(str(root / "data.yaml"))
    info = load_dataset(str(root), bad_data="skip")  # the folder's data.yaml is found
    assert info.names == ["x", "y"] and info.problems.counts == {"unknown category": 2, "zero-area box": 2}
    assert [len(r.boxes) for r in info.val.records] == [2, 1]


def test_single_annotation_file_and_missing_dataset(tmp_path):
    root = _write_coco(tmp_path / "ds", [GOOD])
    with pytest.warns(UserWarning, match="training and validation alike"):
        info = load_dataset(str(root / "val.json"))
    assert info.category_ids == [1, 5] and info.num_classes == 2
    with pytest.raises(BadDataError, match="not found"):
        load_dataset(str(tmp_path / "nope"))


# --------------------------------------------------------------------------------------
# Config, schedule


def test_train_config_validation():
    cfg = TrainConfig(loss="sca", loss_params={"alpha": 2.0}, hyp={"lr0": 0.02})
    assert cfg.resolved_hyp()["lr0"] == 0.02 and cfg.resolved_hyp()["momentum"] == 0.937
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        TrainConfig(hyp={"lr": 0.1})
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epochz=3)
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(img_size=100)
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(loss="nope")
    with pytest.raises(ValueError, match="alpha|parameter"):
        TrainConfig(loss="iou", loss_params={"alpha": 1})
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    assert TrainConfig(device=" CUDA:1 ").device == "cuda:1"  # scabench.devices.parse_device
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu please")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        TrainConfig(device="mps")  # a torch device, but not one scabench runs on


def test_warmup_and_schedule():
    assert warmup_iterations(3, 1848, 1848 * 300) == 5544  # COCO: the reference max(3 epochs, 1000)
    assert warmup_iterations(3, 100, 100 * 300) == 1000  # reference floor for long runs
    assert warmup_iterations(3, 50, 500) == 50  # quick run: a tenth of it, not 1000 iterations
    assert warmup_iterations(3, 100, 2000) == 200
    assert warmup_iterations(3, 5, 10) == 3  # never more than a third of the run
    assert cosine(0, 10, 0.1) == 1 and cosine(10, 10, 0.1) == pytest.approx(0.1)
    model = build_model("yolov3-tiny", num_classes=2, width=0.25)
    bn, weights, biases = parameter_groups(model, 5e-4)
    assert bn["weight_decay"] == 0 and biases["weight_decay"] == 0 and weights["weight_decay"] == 5e-4
    n = sum(len(g["params"]) for g in (bn, weights, biases))
    assert n == len(list(model.parameters()))


# --------------------------------------------------------------------------------------
# CLI


def test_cli_evaluate_json_and_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    runner = CliRunner()
    gt, dets = FIXTURES / "coco_gt.json", FIXTURES / "coco_dets.json"
    result = runner.invoke(app, ["evaluate", str(gt), str(dets), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == pytest.approx(evaluate_coco(gt, dets))
    result = runner.invoke(app, ["evaluate", str(gt), str(tmp_path / "missing.json"), "--json"])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--img-size", "100"])
    assert result.exit_code == 2 and "multiple of 32" in result.output
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "-H", "lr=0.1"])
    assert result.exit_code == 2 and "unknown hyperparameter" in result.output
    bad = _write_coco(tmp_path / "bad", [{**GOOD, "id": 77, "bbox": [60, 4, 30, 10]}])
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--data", str(bad), "--img-size", "64", "--epochs", "1", "--no-progress"])
    assert result.exit_code == 2 and "annotation id 77" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["val", "--weights", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "not found" in result.output


def test_anchor_fit_and_kmeans():
    from types import SimpleNamespace

    from scabench.detectors.anchors import best_possible_recall, choose_anchors, fitness, kmeans_anchors

    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(12, 2, (300, 2)), rng.normal(60, 8, (300, 2)) * [1.0, 3.0]]).clip(3)
    default = torch.tensor([[[300.0, 300.0]] * 3, [[400.0, 400.0]] * 3])  # fits nothing
    assert best_possible_recall(wh, default.numpy()) < 0.5
    km = kmeans_anchors(wh, 6, seed=0)
    assert km.shape == (6, 2) and np.all(np.diff(km.prod(1)) >= 0)  # sorted by area
    assert best_possible_recall(wh, km) > 0.98 and fitness(wh, km) > fitness(wh, default.reshape(-1, 2).numpy())
    assert np.array_equal(km, kmeans_anchors(wh, 6, seed=0))  # seeded
    records = [SimpleNamespace(boxes=np.concatenate([np.zeros_like(wh), wh], 1).astype(np.float32), width=640, height=640)]
    anchors, note = choose_anchors("auto", default, records, 640, 4.0, 0)
    assert anchors.shape == (2, 3, 2) and "k-means" in note
    good = torch.tensor(km, dtype=torch.float32).view(2, 3, 2)
    assert choose_anchors("auto", good, records, 640, 4.0, 0)[0] is good  # fits: kept
    assert choose_anchors("default", default, records, 640, 4.0, 0)[0] is default


# --------------------------------------------------------------------------------------
# Training step, box-loss state, the package's lazy names, the benchmark functions


def _step_parts(nc: int = 2):
    from scabench.detectors.optim import ModelEMA, sgd

    torch.manual_seed(0)
    model = build_model("yolov3-tiny", nc, 0.25).to(memory_format=torch.channels_last).train()
    criterion = YoloLoss(losses.get_loss("sca"), model.detect.anchors.clone(), nc, dict(HYP_SCRATCH), 64)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 1, 0.3, 0.6, 0.2, 0.2]])
    return model, criterion, sgd(model, HYP_SCRATCH, 5e-4), torch.amp.GradScaler("cuda", enabled=False), ModelEMA(model), images, targets


def test_train_step_accumulates_then_steps():
    """step=False leaves the weights and adds to the gradients; step=True applies them, clears
    them and updates the EMA once; loss_gain scales the gradients, not the returned loss."""
    from scabench.detectors import train_step

    model, criterion, optimizer, scaler, ema, images, targets = _step_parts()
    weight = model.detect.m[0].weight
    before = weight.detach().clone()
    loss, items = train_step(model, criterion, images, targets, optimizer, scaler, ema=ema, step=False)
    once = weight.grad.clone()
    assert torch.equal(weight.detach(), before) and ema.updates == 0
    assert not loss.requires_grad and items.shape == (3,) and torch.isfinite(loss)
    again, _ = train_step(model, criterion, images, targets, optimizer, scaler, ema=ema, step=False, loss_gain=2.0)
    assert torch.equal(again, loss)  # same batch, same weights: same loss, before the gain
    assert torch.allclose(weight.grad, 3 * once, rtol=1e-4, atol=1e-7)  # 1x + 2x accumulated
    train_step(model, criterion, images, targets, optimizer, scaler, ema=ema, step=True)
    assert not torch.equal(weight.detach(), before) and weight.grad is None and ema.updates == 1


def test_box_loss_saves_and_loads_its_state():
    """Wise-IoU v3 keeps a running mean; a fresh loss loaded with the saved state gives the
    same values as the trained one (composed losses carry each term's state)."""
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]])
    target = torch.tensor([[0.5, 0.0, 2.0, 2.5], [1.0, 1.5, 3.0, 3.0]])
    for name, params in (("wiou-v3", {"momentum": 0.5}), ("iou+0.5*wiou-v3", {})):
        trained = losses.get_loss(name, **params)
        for _ in range(3):
            trained(pred, target)
        trained.eval()  # evaluation reads the state without updating it
        fresh = losses.get_loss(name, **params)
        if params:  # the state matters
            assert not torch.equal(fresh.eval()(pred, target), trained(pred, target))
        fresh.load_state_dict(trained.state_dict(), "cpu")
        assert torch.equal(fresh.eval()(pred, target), trained(pred, target)), name
    assert losses.get_loss("sca").state_dict() == {}
    with pytest.raises(ValueError, match="terms"):
        losses.get_loss("iou+cd").load_state_dict({"terms": [{}]})


def test_package_names_load_lazily():
    """The config (a package name) loads without the trainer or torch; every name resolves."""
    import subprocess
    import sys

    code = (
        "import sys, scabench.detectors as d; d.TrainConfig; "
        "print('scabench.detectors.trainer' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    import scabench.detectors as package
    from scabench.detectors import trainer

    assert package.train is trainer.train and "train_step" in dir(package)
    assert all(getattr(package, name) is not None for name in package.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


def test_measure_speed_and_gpu_check_are_plain_functions(capsys):
    from scabench.detectors.gpu_check import run_gpu_check
    from scabench.detectors.speed import measure_speed

    rows = measure_speed(iters=1, workers=0, train_size=32, quick=True)
    assert [list(r) for r in rows] == [["case", "loader", "step", "loop", "loader/step", "loop/step", "load_average"]]
    assert rows[0]["case"] == "yolov3-tiny x0.25 128px b32" and all(rows[0][k] > 0 for k in ("loader", "step", "loop"))
    if not torch.cuda.is_available():
        assert run_gpu_check(iters=1) == 2
        assert "needs a GPU" in capsys.readouterr().err



def test_close_mosaic_turns_mosaic_off_for_the_last_epochs_and_keeps_the_stream():
    """EpochSampler(close_mosaic_at=2) marks epochs 0-1 mosaic, 2+ not; a sample with mosaic
    closed equals the same (index, seed) drawn with mosaic probability 0 (the draw is kept)."""
    sampler = EpochSampler(6, seed=0, close_mosaic_at=2)
    flags = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        flags.append({m for *_, m in sampler})
    assert flags == [{True}, {True}, {False}, {False}]
    info = load_dataset("synthetic-shapes", train_size=8, val_size=4)
    store = ImageStore(info.train.records, 64, info.problems)
    with_mosaic = TrainSet(store, store.img_size, {**HYP_SCRATCH, "mosaic": 1.0})
    without = TrainSet(store, store.img_size, {**HYP_SCRATCH, "mosaic": 0.0})
    for i in range(len(store)):
        closed, plain = with_mosaic[(i, 11, False)], without[(i, 11)]
        assert torch.equal(closed[0], plain[0]) and torch.equal(closed[1], plain[1])
    assert any(not torch.equal(with_mosaic[(i, 11, True)][0], without[(i, 11)][0]) for i in range(len(store)))


def test_adamw_warmup_moves_its_first_beta():
    from scabench.detectors.optim import make_optimizer, warmup

    model = build_model("yolov3-tiny", 3, 0.25)
    optimizer = make_optimizer("adamw", model, {**HYP_SCRATCH, "lr0": 0.002, "momentum": 0.9}, 5e-4)
    assert isinstance(optimizer, torch.optim.AdamW) and [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 5e-4, 0.0]
    warmup(optimizer, 0, 100, 0.002, {**HYP_SCRATCH, "momentum": 0.9}, 1.0)
    assert all(g["betas"] == (pytest.approx(HYP_SCRATCH["warmup_momentum"]), 0.999) for g in optimizer.param_groups)
    with pytest.raises(ValueError, match="optimizer must be"):
        make_optimizer("lion", model, HYP_SCRATCH, 0.0)


def test_bootstrap_over_images_is_paired_and_spreads_only_with_image_dependent_errors():
    """Perfect detections score AP 1 on every resample; a run against itself differs by 0 on
    every resample; detections that miss half the images give a spread of AP over resamples."""
    from scabench.detectors.evaluate import bootstrap_over_images

    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in range(1, 9)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 30, 40], "area": 1200, "iscrowd": 0} for i in range(1, 9)]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}
    perfect = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 30, 40], "score": 0.9} for i in range(1, 9)]
    half = perfect[:4]
    rows = bootstrap_over_images(gt, {"perfect": perfect, "same": list(perfect), "half": half}, n=12, seed=1)
    by_run = {name: [r["AP"] for r in rows if r["run"] == name] for name in ("perfect", "same", "half")}
    assert len(by_run["perfect"]) == 12 and all(ap == pytest.approx(1.0) for ap in by_run["perfect"])
    assert by_run["same"] == by_run["perfect"]
    assert len(set(round(ap, 6) for ap in by_run["half"])) > 1 and all(0 < ap < 1 for ap in by_run["half"])


def test_evaluate_bootstrap_command(tmp_path):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 3)],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0} for i in (1, 2, 3)],
          "categories": [{"id": 1, "name": "box"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    dets = [{"image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.8} for i in (1, 2)]
    (tmp_path / "a.json").write_text(json.dumps(dets))
    (tmp_path / "b.json").write_text(json.dumps(dets[:1]))
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--bootstrap", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "evaluation noise: 5 resamples" in result.output and "b.json - first" in result.output
    assert runner.invoke(app, ["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "a.json"), str(tmp_path / "b.json")]).exit_code == 2
