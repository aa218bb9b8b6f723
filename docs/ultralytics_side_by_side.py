"""Train ultralytics' yolov3-tiny on scabench's synthetic-shapes and score it with pycocotools.

The trainer a user would pick instead, on the same images, at the same budget (10 epochs,
128 px, batch 32, CPU), with its own defaults; scored exactly as scabench scores itself (COCO
json, conf 0.001, NMS IoU 0.65, 300 per image, pycocotools). Not part of scabench: run it with
an interpreter that has ultralytics (a separate virtual environment), never scabench's own:

    python -m venv /tmp/ultra && /tmp/ultra/bin/pip install torch==2.14.1 torchvision==0.29.1 'ultralytics>=8.4,<8.5'
    /tmp/ultra/bin/python docs/ultralytics_side_by_side.py ~/.cache/scabench/synthetic-shapes-v1-1280-300-seed0 /tmp/ultra-run
    .venv/bin/scabench evaluate DATA/val.json /tmp/ultra-run/detections.json --json

The model: ultralytics' yolov3-tiny.yaml (anchor-free DFL head) at width 0.1875 and 3 classes,
577,166 parameters against scabench's yolov3-tiny x0.25 with 547,336.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def to_yolo(data: Path, out: Path) -> Path:
    """YOLO-txt labels beside symlinked images for both splits; returns the dataset yaml."""
    names = {}
    for split in ("train", "val"):
        coco = json.loads((data / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        index = {c: i for i, c in enumerate(sorted(names))}
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        lines: dict[int, list[str]] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            lines[a["image_id"]].append((a["category_id"], x, y, w, h))
        for im in coco["images"]:
            stem = Path(im["file_name"]).stem
            link = out / "images" / split / Path(im["file_name"]).name
            if not link.exists():
                link.symlink_to((data / im["file_name"]).resolve())
            W, H = im["width"], im["height"]
            rows = [f"{index[c]} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}" for c, x, y, w, h in lines[im["id"]]]
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    spec = {"path": str(out), "train": "images/train", "val": "images/val", "names": {i: names[c] for c, i in index.items()}}
    (out / "data.yaml").write_text(yaml.safe_dump(spec))
    return out / "data.yaml"


def main(data: Path, out: Path, epochs: int = 10, img: int = 128, batch: int = 32) -> None:
    import ultralytics
    from ultralytics import YOLO

    data_yaml = to_yolo(data, out / "yolo")
    model_yaml = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v3/yolov3-tiny.yaml").read_text())
    model_yaml.update(nc=len(yaml.safe_load(data_yaml.read_text())["names"]), width_multiple=0.1875)
    (out / "yolov3-tiny-s.yaml").write_text(yaml.safe_dump(model_yaml))
    model = YOLO(str(out / "yolov3-tiny-s.yaml"))
    model.train(data=str(data_yaml), epochs=epochs, imgsz=img, batch=batch, device="cpu", project=str(out), name="train",
                exist_ok=True, plots=False, seed=0)
    # Score like scabench: every detection over conf 0.001 after NMS IoU 0.65, 300 per image.
    val = json.loads((data / "val.json").read_text())
    ids = {Path(im["file_name"]).stem: im["id"] for im in val["images"]}
    cats = sorted(c["id"] for c in val["categories"])
    detections = []
    for result in model.predict(str(out / "yolo/images/val"), imgsz=img, conf=0.001, iou=0.65, max_det=300, device="cpu",
                                stream=True, verbose=False):
        for (x1, y1, x2, y2), score, cls in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist()):
            detections.append({"image_id": ids[Path(result.path).stem], "category_id": cats[int(cls)],
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    (out / "detections.json").write_text(json.dumps(detections))
    print(f"{len(detections)} detections -> {out / 'detections.json'}; parameters {sum(p.numel() for p in model.model.parameters()):,}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser(), Path(sys.argv[2]))
