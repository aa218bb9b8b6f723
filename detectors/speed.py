"""CPU speed of the built-in detectors: ``python -m detectors.speed`` (a benchmark, not a test).

For yolov3-tiny at width 0.25 / 128 px and at width 1.0 / 320 px (batch 32 and 8) on
synthetic-shapes it prints images per second of

- the data loader alone (mosaic, affine, HSV, flip; ``--workers`` processes),
- one training step alone (forward, loss, backward, SGD step) on a batch held in memory,
- the whole loop (loader + step), as the trainer runs it,

and the ratios loader / step (how much headroom the loader has: it must be well above 1) and
loop / step (what the loader costs the loop). REFERENCES 8 quotes about 230 img/s (0.25 / 128)
and about 8 img/s (1.0 / 320) for forward + backward on this 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see detectors/__init__.py)

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from scabench import losses  # noqa: E402
from scabench.detectors.config import HYP_SCRATCH  # noqa: E402
from scabench.detectors.data import EpochSampler, ImageStore, TrainSet, collate_train, load_dataset  # noqa: E402
from scabench.detectors.loss import YoloLoss  # noqa: E402
from scabench.detectors.models import build_model  # noqa: E402

CASES = [("yolov3-tiny", 0.25, 128, 32), ("yolov3-tiny", 1.0, 320, 8)]


def _loader(store: ImageStore, img_size: int, batch: int, workers: int, seed: int = 0):
    sampler = EpochSampler(len(store), seed)
    return torch.utils.data.DataLoader(
        TrainSet(store, img_size, dict(HYP_SCRATCH)), batch_size=batch, sampler=sampler, collate_fn=collate_train,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip


def _cycle(loader):
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def loader_speed(loader, batches: int) -> float:
    it = _cycle(loader)
    next(it)  # start the workers
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def _trainer(detector: str, width: float, img_size: int, nc: int):
    torch.manual_seed(0)
    model = build_model(detector, nc, width).train()
    criterion = YoloLoss(losses.get_loss("sca"), model.detect.anchors.clone(), nc, dict(HYP_SCRATCH), img_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(images, targets):
        loss, _ = criterion(model(images.float() / 255), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_speed(step, batch, iters: int) -> float:
    step(*batch)  # warm up
    t0 = time.perf_counter()
    for _ in range(iters):
        step(*batch)
    return batch[0].shape[0] * iters / (time.perf_counter() - t0)


def loop_speed(step, loader, iters: int) -> float:
    it = _cycle(loader)
    step(*next(it))
    t0 = time.perf_counter()
    n = 0
    for _ in range(iters):
        images, targets = next(it)
        step(images, targets)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=10, help="timed training iterations per case")
    parser.add_argument("--workers", type=int, default=1, help="data-loader worker processes")
    parser.add_argument("--train-size", type=int, default=512, help="synthetic-shapes images to load")
    parser.add_argument("--quick", action="store_true", help="only the 0.25 / 128 px case")
    args = parser.parse_args(argv)

    info = load_dataset("synthetic-shapes", train_size=args.train_size, val_size=16)
    rows = []
    for detector, width, img_size, batch in CASES[:1] if args.quick else CASES:
        store = ImageStore(info.train.records, img_size, info.problems)
        loader = _loader(store, img_size, batch, args.workers)
        load = loader_speed(loader, max(args.iters, 10))
        step = _trainer(detector, width, img_size, info.num_classes)
        sample = next(iter(_loader(store, img_size, batch, 0)))
        compute = step_speed(step, sample, args.iters)
        loop = loop_speed(step, loader, args.iters)
        del loader
        rows.append(
            {"case": f"{detector} x{width} {img_size}px b{batch}", "loader": load, "step": compute, "loop": loop,
             "loader/step": load / compute, "loop/step": loop / compute}
        )  # fmt: skip
        print(
            f"{rows[-1]['case']:<28} loader {load:8.1f} img/s   step {compute:7.1f} img/s   loop {loop:7.1f} img/s   "
            f"loader/step {load / compute:5.1f}   loop/step {loop / compute:4.2f}",
            flush=True,
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, workers {args.workers}; "
          f"load average {os.getloadavg()[0]:.1f} (other processes slow these numbers down)")  # fmt: skip
    return rows


if __name__ == "__main__":  # pragma: no cover
    main()
