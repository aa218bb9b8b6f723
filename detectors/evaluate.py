"""Detections and COCO metrics: NMS with torchvision, AP at the paper's thresholds by pycocotools.

``evaluate_coco(gt, dets)`` returns ``AP, AP50, AP65, AP75, AP80, AP90, APs, APm, APl`` as
fractions, read from COCOeval's precision array ``[T, R, K, A, M]`` by index (REFERENCES 5):
thresholds 0.50:0.05:0.95 so AP50/65/75/80/90 are t = 0/3/5/6/8; area "all" and 100
detections per image for the AP columns, small/medium/large over all thresholds for APs/m/l.
A value with nothing to average (e.g. APl without large objects) is -1, as pycocotools prints.
With ``details=True`` the result also holds ``P`` and ``R`` (:func:`precision_recall`, as
ultralytics defines them) and ``per_class`` (AP and AP50 per class, the same function), all
read from the same COCOeval; :func:`fitness` is ultralytics' model-selection score.
Inputs are checked before pycocotools sees them: a bad entry is a ``BadDataError`` naming the
file, the entry and the key, never a KeyError from inside pycocotools.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert

from scabench.detectors.readers import (
    CATEGORY_ID, EVALUATION_KEYS, FINITE_XYWH, IMAGE_ID, BadDataError, Key, Problems, coco_entries, entry_problem,
    is_finite_number, is_finite_xywh,
)  # fmt: skip

METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl")
_THRESHOLD_INDEX = {"AP50": 0, "AP65": 3, "AP75": 5, "AP80": 6, "AP90": 8}
_AREA_INDEX = {"APs": 1, "APm": 2, "APl": 3}

CONF_THRES = 0.001
IOU_TRAINING = 0.6
IOU_REPORTED = 0.65
MAX_DET = 300
MAX_NMS = 30000


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def load_ground_truth(gt: str | Path | dict):
    """A pycocotools ``COCO`` index of a ground-truth file or dict (load once, evaluate often).

    Every entry is checked first (:data:`readers.EVALUATION_KEYS`: the keys pycocotools reads,
    ids unique, annotations of known images and categories); a problem is a ``BadDataError``
    naming the file, section, index and key. An annotation id 0 is given the next free id in
    the index (the dict is not changed): pycocotools reads a match to id 0 as no match.
    """
    from pycocotools.coco import COCO

    source = "ground truth" if isinstance(gt, dict) else str(gt)
    if not isinstance(gt, dict):
        gt = _read_json(gt, "ground truth")
    coco_entries(gt, source, Problems("error", hint=""), keys=EVALUATION_KEYS)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    anns = coco.dataset["annotations"]
    for ann in (a for a in anns if a["id"] == 0):  # ids are unique: one at most
        ann["id"] = max(a["id"] for a in anns) + 1
    with _quiet():
        coco.createIndex()
    return coco


DETECTION_KEYS = (IMAGE_ID, CATEGORY_ID, Key("bbox", is_finite_xywh, FINITE_XYWH), Key("score", is_finite_number, "a finite number"))


def load_detections(dets: str | Path | list) -> list[dict]:
    """A COCO results list from a file (or a list), each entry's four keys checked (``BadDataError``
    naming the file, the detection's index and the key)."""
    source = "detections" if isinstance(dets, list) else str(dets)
    if isinstance(dets, (str, Path)):
        dets = _read_json(dets, "detections")
    if not isinstance(dets, list):
        raise BadDataError(f"{source}: detections must be a COCO results list of {{image_id, category_id, bbox, score}}")
    for k, d in enumerate(dets):
        problem = entry_problem(d, DETECTION_KEYS)
        if problem is not None:
            raise BadDataError(f"{source}: detection {k}: {problem[1]}")
    return dets


def check_detections_against(coco_gt, dets: list[dict], source: str = "detections") -> None:
    """Every detection's image and category are the ground truth's (``BadDataError`` naming the first that is not)."""
    images, categories = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for k, d in enumerate(dets):
        if d["image_id"] not in images:
            raise BadDataError(f"{source}: detection {k}: image_id {d['image_id']} is not an image of the ground truth")
        if d["category_id"] not in categories:
            shown = sorted(categories)[:20]
            raise BadDataError(f"{source}: detection {k}: category_id {d['category_id']} is not a category of the ground truth ({shown})")


def metrics_from_eval(coco_eval) -> dict[str, float]:
    """The nine metrics from an evaluated-and-accumulated COCOeval (precision by index)."""
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    out = {"AP": _mean_valid(precision[:, :, :, 0, -1])}
    for name, t in _THRESHOLD_INDEX.items():
        out[name] = _mean_valid(precision[t, :, :, 0, -1])
    for name, a in _AREA_INDEX.items():
        out[name] = _mean_valid(precision[:, :, :, a, -1])
    return {k: out[k] for k in METRICS}


def metrics_with_details(coco_eval) -> dict[str, Any]:
    """:func:`metrics_from_eval` plus ``P``, ``R`` and ``per_class`` (:func:`precision_recall`)."""
    p, r, rows = precision_recall(coco_eval)
    return {**metrics_from_eval(coco_eval), "P": p, "R": r, "per_class": rows}


def fitness(metrics: dict[str, float]) -> float:
    """ultralytics' fitness, what ``best.pt`` and early stopping maximise: 0.1 AP50 + 0.9 AP50-95
    (``Metric.fitness`` in ultralytics/utils/metrics.py: weights [0, 0, 0.1, 0.9] on [P, R, AP50, AP])."""
    return round(0.1 * metrics["AP50"] + 0.9 * metrics["AP"], 6)


def _smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the points, ends padded (ultralytics' ``smooth``)."""
    width = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(width // 2)
    return np.convolve(np.concatenate((pad * y[0], y, pad * y[-1])), np.ones(width) / width, mode="valid")


def _class_matches(coco_eval, k: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Class ``k``'s detections at IoU 0.5 as pycocotools matched them (area all, the last maxDets
    column, read from ``evalImgs`` as ``COCOeval.accumulate`` reads it): their scores (descending)
    and true-positive flags without the ignored ones (matched to a crowd box), the number of
    ground-truth boxes that count, and of images holding one."""
    p = coco_eval.params
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    start = k * n_area * n_img  # evalImgs: category-major, then area range (0 = all), then image
    found = [e for e in coco_eval.evalImgs[start : start + n_img] if e is not None]
    if not found:
        return np.zeros(0), np.zeros(0, bool), 0, 0
    scores = np.concatenate([e["dtScores"] for e in found])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["dtMatches"][0] for e in found])[order] > 0
    ignored = np.concatenate([e["dtIgnore"][0] for e in found])[order].astype(bool)
    counted = [int(np.count_nonzero(e["gtIgnore"] == 0)) for e in found]
    return scores[order][~ignored], matched[~ignored], sum(counted), sum(c > 0 for c in counted)


def precision_recall(coco_eval) -> tuple[float, float, list[dict]]:
    """P, R and the per-class rows of an accumulated COCOeval, P and R as ultralytics defines them.

    ultralytics (``ap_per_class`` in ultralytics/utils/metrics.py): for each class with ground
    truth, precision and recall at IoU 0.5 as functions of the confidence threshold, sampled at
    1000 thresholds in [0, 1]; the mean F1 over the classes, smoothed by a box filter over 10 %
    of the range, picks one threshold, and P and R are the mean over the classes of precision
    and recall there (a class without detections counts 0). The true and false positives are
    pycocotools' own matches (:func:`_class_matches`), so P and R describe the same matching as
    AP; ultralytics matches with its own code and every detection. Without ground truth P = R = -1.
    Rows (classes with ground truth only, as ultralytics prints): class, images, instances, P, R,
    AP50, AP (AP50-95), from the precision array of class ``k``.
    """
    p = coco_eval.params
    thresholds = np.linspace(0, 1, 1000)
    found, p_curves, r_curves = [], [], []
    for k, cat_id in enumerate(p.catIds):
        scores, tp, n_gt, n_images = _class_matches(coco_eval, k)
        if not n_gt:
            continue
        found.append((k, cat_id, n_images, n_gt))
        if not len(scores):
            p_curves.append(np.zeros_like(thresholds))
            r_curves.append(np.zeros_like(thresholds))
            continue
        true, false = np.cumsum(tp), np.cumsum(~tp)
        r_curves.append(np.interp(-thresholds, -scores, true / n_gt, left=0))
        p_curves.append(np.interp(-thresholds, -scores, true / (true + false), left=1))
    if not found:
        return -1.0, -1.0, []
    precision, recall = np.array(p_curves), np.array(r_curves)
    f1 = 2 * precision * recall / (precision + recall + 1e-16)
    best = int(_smooth(f1.mean(0), 0.1).argmax())
    at_best_p, at_best_r = precision[:, best], recall[:, best]
    curve = coco_eval.eval["precision"]  # [T, R, K, A, M]
    rows = []
    for (k, cat_id, n_images, n_gt), pk, rk in zip(found, at_best_p, at_best_r):
        name = coco_eval.cocoGt.cats.get(cat_id, {}).get("name", str(cat_id))
        rows.append({
            "class": str(name), "images": n_images, "instances": n_gt, "P": round(float(pk), 6), "R": round(float(rk), 6),
            "AP50": _mean_valid(curve[0, :, k, 0, -1]), "AP": _mean_valid(curve[:, :, k, 0, -1]),
        })  # fmt: skip
    return float(at_best_p.mean()), float(at_best_r.mean()), rows


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else -1.0


def _fast_coco_eval_class():
    """``FastCOCOeval`` (pycocotools imported on first use). Long: its ``evaluateImg`` is
    pycocotools' own matching loop, kept line for line so it can be compared with it."""
    from pycocotools.cocoeval import COCOeval

    class FastCOCOeval(COCOeval):
        """COCOeval whose per-image matching skips detections that cannot match anything.

        A detection whose IoU with every ground truth box of its image and category is below
        the lowest IoU threshold stays unmatched at every threshold and changes no match of
        another detection, so leaving it out of the greedy loop gives identical results (the
        tests compare against stock COCOeval). The loop itself is pycocotools' logic.
        """

        def evaluateImg(self, imgId, catId, aRng, maxDet):  # noqa: N802 - pycocotools' name
            p = self.params
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
            if len(gt) == 0 and len(dt) == 0:
                return None
            g_ignore = [1 if (g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1]) else 0 for g in gt]
            gtind = np.argsort(g_ignore, kind="mergesort")
            gt = [gt[i] for i in gtind]
            dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in dtind[0:maxDet]]
            iscrowd = [int(o["iscrowd"]) for o in gt]
            ious = self.ious[imgId, catId]
            ious = ious[:, gtind] if len(ious) > 0 else ious
            T, G, D = len(p.iouThrs), len(gt), len(dt)
            gtm = np.zeros((T, G))
            dtm = np.zeros((T, D))
            gtIg = np.array([g_ignore[i] for i in gtind])
            dtIg = np.zeros((T, D))
            if len(ious) != 0:
                best = ious.max(1)
                gt_ids = [g["id"] for g in gt]
                for tind, t in enumerate(p.iouThrs):
                    thr = min(t, 1 - 1e-10)
                    for dind in np.nonzero(best >= thr)[0].tolist():
                        iou, m = thr, -1
                        row = ious[dind]
                        for gind in range(G):
                            if gtm[tind, gind] > 0 and not iscrowd[gind]:
                                continue
                            if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                                break
                            if row[gind] < iou:
                                continue
                            iou, m = row[gind], gind
                        if m == -1:
                            continue
                        dtIg[tind, dind] = gtIg[m]
                        dtm[tind, dind] = gt_ids[m]
                        gtm[tind, m] = dt[dind]["id"]
            a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, D))
            dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
            return {
                "image_id": imgId,
                "category_id": catId,
                "aRng": aRng,
                "maxDet": maxDet,
                "dtIds": [d["id"] for d in dt],
                "gtIds": [g["id"] for g in gt],
                "dtMatches": dtm,
                "gtMatches": gtm,
                "dtScores": [d["score"] for d in dt],
                "gtIgnore": gtIg,
                "dtIgnore": dtIg,
            }

    return FastCOCOeval


def _results_index(coco_gt, dets: list[dict], copy_dets: bool = True):
    """The COCO object pycocotools' loadRes would build for box results (without segmentations).

    ``copy_dets=False`` adds the id, area and iscrowd keys to the given dicts (no copies).
    """
    from pycocotools.coco import COCO

    anns = [dict(d) for d in dets] if copy_dets else dets
    for k, ann in enumerate(anns):
        bbox = ann["bbox"]
        ann["id"] = k + 1
        ann["area"] = float(bbox[2]) * float(bbox[3])
        ann["iscrowd"] = 0
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]), "annotations": anns}
    with _quiet():
        res.createIndex()
    return res


def evaluate_coco(gt_json: str | Path | dict | Any, dets_json: str | Path | list, *, details: bool = False) -> dict[str, Any]:
    """COCO box metrics of a results list against ground truth (paths, or loaded dict / list).

    Any image and category ids work; both inputs are checked (:func:`load_ground_truth`,
    :func:`load_detections`, :func:`check_detections_against`: a detection of an image or a
    category the ground truth lacks is an error). No detections at all gives 0 where the
    ground truth has boxes in the metric's area range and -1 where it has none, as COCOeval.
    Detections are read as pycocotools' ``loadRes`` reads them (area = w * h, ids in list
    order) and evaluated with COCOeval (``iouType="bbox"``, default parameters); the matching
    step skips detections that cannot match (exact, see ``FastCOCOeval``). ``details``: also
    P, R and per-class AP (:func:`metrics_with_details`).
    """
    coco_gt = gt_json if hasattr(gt_json, "getImgIds") else load_ground_truth(gt_json)
    dets = load_detections(dets_json)
    check_detections_against(coco_gt, dets, "detections" if isinstance(dets_json, list) else str(dets_json))
    return _evaluate(coco_gt, dets, copy_dets=True, details=details)


def evaluate_predictions(coco_gt, dets: list[dict], *, details: bool = False) -> dict[str, Any]:
    """:func:`evaluate_coco` of :func:`predict`'s fresh results against a :func:`load_ground_truth` index.

    No checks of the dicts, and they gain pycocotools' id, area and iscrowd keys in place (no
    copies): the per-epoch validation of the trainer.
    """
    return _evaluate(coco_gt, dets, copy_dets=False, details=details)


def _evaluate(coco_gt, dets: list[dict], copy_dets: bool, details: bool = False) -> dict[str, Any]:
    with _quiet():
        coco_dt = _results_index(coco_gt, dets, copy_dets)
        ev = _fast_coco_eval_class()(coco_gt, coco_dt, "bbox")
        # Every reported metric reads the last max-dets column (100, the COCO standard);
        # dropping the 1 and 10 columns leaves it unchanged and accumulates 3x faster.
        ev.params.maxDets = ev.params.maxDets[-1:]
        ev.evaluate()
        ev.accumulate()
    return metrics_with_details(ev) if details else metrics_from_eval(ev)


def non_max_suppression(
    pred: Tensor, conf: float = CONF_THRES, iou: float = IOU_REPORTED, max_det: int = MAX_DET
) -> list[Tensor]:
    """Per image ``[k, 6]`` = (x1, y1, x2, y2, score, class) from decoded ``[b, n, 5 + nc]``.

    Multi-label: every class with obj * cls > conf is a candidate (one class: obj alone).
    One batched_nms call for the whole batch (boxes grouped by image and class).
    """
    bs, _, no = pred.shape
    nc = no - 5
    boxes = box_convert(pred[..., :4], "cxcywh", "xyxy")
    obj = pred[..., 4]
    scores = obj[..., None] if nc == 1 else obj[..., None] * pred[..., 5:]
    img_i, box_i, cls_i = (scores > conf).nonzero(as_tuple=True)
    score = scores[img_i, box_i, cls_i]
    if score.numel() > MAX_NMS * bs:
        top = score.topk(MAX_NMS * bs).indices
        img_i, box_i, cls_i, score = img_i[top], box_i[top], cls_i[top], score[top]
    cand = boxes[img_i, box_i].float()
    keep = batched_nms(cand, score.float(), img_i * nc + cls_i, iou)  # sorted by score
    kept_img = img_i[keep]
    order = torch.sort(kept_img, stable=True).indices  # group by image, scores stay descending
    keep, kept_img = keep[order], kept_img[order]
    counts = torch.bincount(kept_img, minlength=bs).tolist()
    rows = torch.cat((cand[keep], score[keep, None].float(), cls_i[keep, None].float()), 1)
    return [chunk[:max_det] for chunk in torch.split(rows, counts)]


def to_coco_results(
    dets: list[Tensor], meta: Tensor, category_ids: list[int]
) -> list[dict]:
    """Map letterboxed detections back to original pixels and into COCO results dicts.

    ``meta`` rows: image_id, ratio, pad left, pad top, width, height (see data.ValSet).
    """
    out: list[dict] = []
    for d, m in zip(dets, meta.tolist()):
        if not len(d):
            continue
        image_id, r, left, top, w, h = m
        d = d.detach().cpu().double()
        pad, size = d.new_tensor([left, top, left, top]), d.new_tensor([w, h, w, h])
        xyxy = ((d[:, :4] - pad) / r).clamp(torch.zeros_like(size), size)  # in original pixels, inside the image
        boxes = box_convert(xyxy, "xyxy", "xywh").tolist()
        cats = [category_ids[c] for c in d[:, 5].long().tolist()]
        image_id = int(image_id)
        out += [
            {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
            for b, s, c in zip(boxes, d[:, 4].tolist(), cats)
        ]
    return out


@torch.no_grad()
def predict(
    model, loader, device: torch.device, category_ids: list[int], iou: float, amp: bool = False, channels_last: bool = False,
    on_raw: Callable[[list[Tensor], Tensor], None] | None = None,
) -> list[dict]:
    """Run ``model`` (eval mode) over a validation loader; COCO results list.

    ``on_raw(raw, meta)``, if given, hears of every batch's raw head outputs (the training
    layout, :func:`raw_head_outputs`) with its meta rows: the validation losses, from the same
    forward pass.
    """
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        with raw_head_outputs(model) if on_raw is not None else contextlib.nullcontext([]) as raw:
            for images, meta in loader:
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                    pred = model(images.float() / 255)
                if on_raw is not None:
                    on_raw(list(raw), meta)
                    raw.clear()
                results += to_coco_results(non_max_suppression(pred.float(), iou=iou), meta, category_ids)
    finally:
        model.train(was_training)
    return results


@contextlib.contextmanager
def raw_head_outputs(model) -> Iterator[list[Tensor]]:
    """While inside, every forward of ``model`` appends its head's raw per-level outputs to the
    yielded list, laid out as ``Detect.forward`` returns them in training mode
    (``[batch, anchors, ny, nx, 5 + classes]``, logits): what :class:`detectors.loss.YoloLoss`
    takes, from an eval-mode forward that returns decoded boxes."""
    head, raw = model.detect, []

    def keep(conv, inputs, out: Tensor) -> None:
        bs, _, ny, nx = out.shape
        raw.append(out.view(bs, head.na, head.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())

    hooks = [conv.register_forward_hook(keep) for conv in head.m]
    try:
        yield raw
    finally:
        for hook in hooks:
            hook.remove()


def letterboxed_targets(meta: Tensor, boxes_of: dict[int, tuple[np.ndarray, np.ndarray]], img_size: int) -> Tensor:
    """The training targets ``[n, 6]`` (image in batch, class, cx, cy, w, h normalised) of a
    validation batch: each image's boxes (``boxes_of[image_id]`` = (xyxy in original pixels,
    classes), as :class:`readers.ImageRecord` holds them) scaled and padded as ``ValSet``
    letterboxed the image (``meta`` rows: image_id, ratio, pad left, pad top, width, height);
    the labels an unaugmented ``TrainSet`` sample of the image has."""
    rows = []
    for b, (image_id, ratio, left, top, _, _) in enumerate(meta.tolist()):
        boxes, classes = boxes_of[int(image_id)]
        if not len(boxes):
            continue
        xyxy = torch.from_numpy(boxes).double() * ratio + torch.tensor([left, top, left, top], dtype=torch.float64)
        xywh = box_convert(xyxy, "xyxy", "cxcywh") / img_size
        index = torch.full((len(boxes), 1), float(b), dtype=torch.float64)
        rows.append(torch.cat((index, torch.from_numpy(classes).double()[:, None], xywh), 1))
    return torch.cat(rows).float() if rows else torch.zeros((0, 6))


def bootstrap_over_images(gt: str | Path | dict, runs: dict[str, list[dict]], *, n: int = 100, seed: int = 0) -> list[dict]:
    """Evaluation noise: every run's metrics on ``n`` resamples of the validation images.

    Each resample draws the ground truth's images with replacement (a drawn twice image counts
    twice, under a new id), the same draw for every run, so the spread of a *paired* difference
    over resamples is the part of it that the choice of validation images explains; compare it
    with the spread over training seeds. Returns rows ``{"resample": k, "run": name, **metrics}``.
    The ground truth (a path or dict) and each run (named by its file) are checked first, as in
    :func:`evaluate_coco`.
    """
    checked = load_ground_truth(gt)
    for name, dets in runs.items():
        check_detections_against(checked, load_detections(dets), name)
    gt = checked.dataset
    rng = np.random.default_rng(seed)
    images = gt["images"]
    anns_of: dict[Any, list[dict]] = {}
    for ann in gt["annotations"]:
        anns_of.setdefault(ann["image_id"], []).append(ann)
    dets_of = {name: _by_image(dets) for name, dets in runs.items()}
    rows = []
    for k in range(n):
        picks = rng.integers(0, len(images), len(images))
        new_images, new_anns, new_id = [], [], {}
        for j, i in enumerate(picks.tolist(), start=1):
            image = images[i]
            new_id[j] = image["id"]
            new_images.append({**image, "id": j})
            new_anns += [{**a, "id": len(new_anns) + m + 1, "image_id": j} for m, a in enumerate(anns_of.get(image["id"], []))]
        coco_gt = load_ground_truth({"images": new_images, "annotations": new_anns, "categories": gt["categories"]})
        for name, by_image in dets_of.items():
            dets = [{**d, "image_id": j} for j, old in new_id.items() for d in by_image.get(old, [])]
            rows.append({"resample": k, "run": name, **evaluate_predictions(coco_gt, dets)})
    return rows


def _by_image(dets: list[dict]) -> dict[Any, list[dict]]:
    grouped: dict[Any, list[dict]] = {}
    for d in dets:
        grouped.setdefault(d["image_id"], []).append({k: d[k] for k in ("image_id", "category_id", "bbox", "score")})
    return grouped
