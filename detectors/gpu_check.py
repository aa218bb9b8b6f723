"""GPU check (prepared, run on a CUDA machine): ``python -m detectors.gpu_check``.

1. yolov3-tiny (full width, 3 classes) at 640 px, batch 64, AMP + channels_last + the SCA box
   loss in float32, pinned-memory loader with persistent workers, EMA: a few hundred training
   iterations on synthetic-shapes. Reports training images/s through the real loader and with
   a batch held on the GPU (compute alone), and checks that the loss falls (mean of the last
   50 iterations below the first 50). The published figure for this model is about 205 img/s
   on one V100 (300 epochs of COCO at 640 px in about 2 days, REFERENCES 4).
2. ``detectors.train`` for one short epoch on CUDA (evaluation, checkpoint, summary), so the
   CUDA paths of the trainer itself run once.

Prints one JSON line with the numbers; exits 1 if the loss did not fall or a step failed.
Takes about 2-4 minutes on an H100 (most of it generating and decoding the data).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("SCABENCH_RAM_CACHE_MB", "16384")  # keep 640 px images decoded in RAM

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from scabench import losses  # noqa: E402
from scabench.detectors.config import HYP_SCRATCH, TrainConfig  # noqa: E402
from scabench.detectors.data import EpochSampler, ImageStore, TrainSet, collate_train, load_dataset  # noqa: E402
from scabench.detectors.loss import YoloLoss  # noqa: E402
from scabench.detectors.models import build_model  # noqa: E402
from scabench.detectors.trainer import ModelEMA, parameter_groups, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="yolov3-tiny 640 px AMP throughput and loss check on CUDA")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=min(12, max((os.cpu_count() or 4) - 2, 1)))
    parser.add_argument("--skip-train", action="store_true", help="skip part 2 (detectors.train on CUDA)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    report: dict = {"device": torch.cuda.get_device_name(0), "img": args.img, "batch": args.batch, "workers": args.workers}

    t0 = time.perf_counter()
    info = load_dataset("synthetic-shapes", train_size=args.train_size, val_size=64)
    store = ImageStore(info.train.records, args.img, info.problems, threads=os.cpu_count() or 4)
    report["data_seconds"] = round(time.perf_counter() - t0, 1)
    hyp = dict(HYP_SCRATCH)
    sampler = EpochSampler(len(store), 0)
    loader = torch.utils.data.DataLoader(
        TrainSet(store, args.img, hyp), batch_size=args.batch, sampler=sampler, collate_fn=collate_train,
        num_workers=args.workers, pin_memory=True, persistent_workers=True, prefetch_factor=4, drop_last=True,
    )  # fmt: skip

    torch.manual_seed(0)
    model = build_model("yolov3-tiny", info.num_classes).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=0.01, momentum=0.937, nesterov=True)
    scaler = torch.amp.GradScaler("cuda")
    ema = ModelEMA(model)
    box_loss = losses.get_loss("sca")
    criterion = YoloLoss(box_loss, model.detect.anchors.clone(), info.num_classes, hyp, args.img).to(device)

    def step(images, targets):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last).float() / 255
        with torch.autocast("cuda", dtype=torch.float16):
            preds = model(images)
        loss, _ = criterion(preds, targets)  # float32, box loss included
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update()
        return loss.detach()

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = batches()
    for g in optimizer.param_groups:  # a short linear warmup so the first iterations are stable
        g["initial_lr"] = g["lr"]
    history = []
    warm = 20
    timed_start = None
    for i in range(warm + args.iters):
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * min(1.0, (i + 1) / 50)
        if i == warm:
            torch.cuda.synchronize()
            timed_start = time.perf_counter()
        history.append(step(*next(it)))
    torch.cuda.synchronize()
    loop_ips = args.iters * args.batch / (time.perf_counter() - timed_start)
    losses_ = torch.stack(history).float().cpu()
    finite = bool(torch.isfinite(losses_).all())
    first, last = float(losses_[:50].mean()), float(losses_[-50:].mean())
    report.update(loop_img_per_s=round(loop_ips, 1), loss_first50=round(first, 4), loss_last50=round(last, 4), finite=finite)

    images, targets = next(it)  # compute alone: one batch kept on the GPU
    images, targets = images.to(device), targets.to(device)
    for _ in range(10):
        step(images, targets)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        step(images, targets)
    torch.cuda.synchronize()
    report["step_img_per_s"] = round(50 * args.batch / (time.perf_counter() - t0), 1)
    report["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["published_v100_img_per_s"] = 205
    del loader

    ok = finite and last < first
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(
                data="synthetic-shapes", train_size=512, val_size=64, img_size=args.img, epochs=2, batch_size=args.batch,
                loss="sca", device="cuda", workers=args.workers,
            )  # fmt: skip
            t0 = time.perf_counter()
            try:
                summary = train(cfg, Path(tmp) / "run", progress=False)
                report["train_fn"] = {
                    "seconds": round(time.perf_counter() - t0, 1),
                    "images_per_second": summary["images_per_second"],
                    "AP50": round(summary["metrics"]["AP50"], 4),
                    "loss_box": summary["metrics"]["loss_box"],
                }
            except Exception as exc:  # noqa: BLE001 - report and fail
                report["train_fn"] = {"error": f"{type(exc).__name__}: {exc}"}
                ok = False
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
