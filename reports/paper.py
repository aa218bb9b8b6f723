"""The SCALoss paper's published COCO val results (Zheng et al., AAAI 2022), for comparison.

AP, AP50, AP65, AP75, AP80, AP90 in percent, one seed per cell, no spread reported; the
authors' README prints each cell with its relative change against the IoU row (e.g. SCA AP90
2.7 = +42.11 %). Training: ultralytics/yolov3 v9.6.0 fork, 300 epochs at 640 px from scratch;
yolov3-tiny batch 128, yolov3 batch 32 on 4 GPUs (DDP).

The paper's CIoU is ultralytics' ``bbox_iou(CIoU=True)`` (alpha = v / (v - IoU + 1 + eps)):
our ``ciou-yolo``; we also match our ``ciou`` (torchvision's variant) to that row, and say so
in the report. The paper's SCA uses the code's default alpha = 1.0 (our ``sca`` defaults).
"""

from __future__ import annotations

METRICS = ("AP", "AP50", "AP65", "AP75", "AP80", "AP90")
SOURCE = "Zheng et al., SCALoss (AAAI 2022), COCO val, 1 seed, 300 epochs at 640 px"

# detector -> paper loss name -> metrics (percent)
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "yolov3-tiny": {
        "IoU": dict(zip(METRICS, (18.8, 36.2, 27.2, 17.3, 11.6, 1.9))),
        "GIoU": dict(zip(METRICS, (18.8, 36.2, 27.1, 17.6, 11.8, 2.1))),
        "DIoU": dict(zip(METRICS, (18.8, 36.4, 26.9, 17.2, 11.8, 1.9))),
        "CIoU": dict(zip(METRICS, (18.9, 36.6, 27.3, 17.2, 11.6, 2.1))),
        "SCA": dict(zip(METRICS, (19.9, 36.6, 28.3, 19.1, 13.3, 2.7))),
    },
    "yolov3": {
        "IoU": dict(zip(METRICS, (44.8, 64.2, 57.5, 48.8, 41.8, 20.7))),
        "GIoU": dict(zip(METRICS, (44.7, 64.4, 57.5, 48.5, 42.0, 20.4))),
        "DIoU": dict(zip(METRICS, (44.7, 64.3, 57.5, 48.9, 42.1, 19.8))),
        "CIoU": dict(zip(METRICS, (44.7, 64.3, 57.5, 48.9, 41.7, 19.8))),
        "SCA": dict(zip(METRICS, (45.3, 64.1, 57.9, 49.9, 43.3, 21.4))),
    },
}

# our loss label -> the paper's row
LOSS_NAMES = {"iou": "IoU", "giou": "GIoU", "diou": "DIoU", "ciou": "CIoU", "ciou-yolo": "CIoU", "sca": "SCA"}
BASELINE = "IoU"


def published(detector: str, loss_label: str) -> dict[str, float] | None:
    """The paper's metrics (percent) for our detector name and loss label, or None."""
    row = LOSS_NAMES.get(loss_label)
    if row is None:
        return None
    return PUBLISHED.get(detector, {}).get(row)


def relative_change(detector: str, loss_label: str, metric: str) -> float | None:
    """The paper's relative change (percent) against its IoU row, as its README prints it."""
    value = published(detector, loss_label)
    base = PUBLISHED.get(detector, {}).get(BASELINE)
    if value is None or base is None or metric not in value or not base.get(metric):
        return None
    return (value[metric] - base[metric]) / base[metric] * 100.0
