"""``train(config, out_dir)``: one YOLOv3 training run, resumable, with per-epoch COCO metrics.

The recipe is the reference trainer's (ultralytics/yolov3 v9.6.0 with hyp.scratch, REFERENCES 4):
SGD (nesterov) with three parameter groups (BatchNorm weights and biases without weight
decay), gradient accumulation to a nominal batch of 64 (``nominal_batch``; weight decay scaled
by batch * accumulate / 64, so the decay per image stays the reference's), warmup of learning rate (bias group from warmup_bias_lr down,
the others from 0 up), momentum (0.8 -> 0.937) and accumulation, then a cosine schedule from
lr0 to lr0 * lrf, and an EMA of the weights (decay 0.9999 (1 - exp(-updates / 2000))) that is
what gets evaluated.

Files in ``out_dir`` (all written atomically: temp file + os.replace):

- ``last.pt``: the checkpoint after every epoch (model, EMA, optimizer, scaler, the box loss's
  state, per-epoch history, the config and what was resolved from it: hyperparameters,
  anchors, class names, warmup length, device);
- ``metrics.jsonl``: one line per finished epoch (validation at NMS IoU 0.6);
- ``summary.json``: written last, final metrics from the EMA weights at NMS IoU 0.65;
- ``train.log``: what was resolved and what bad data was skipped; ``failure.json`` if a
  non-finite loss stopped the run.

Resuming: calling ``train`` again with the same config and ``out_dir`` continues after the
last finished epoch and gives the same numbers an uninterrupted run gives on the same machine
(every sample's augmentation is seeded by (seed, epoch, index); pending accumulated gradients
are applied at the end of each epoch so epochs are clean boundaries). A finished run returns
its summary at once. A different config in the same folder is refused.

Several processes: launch with ``torchrun --nproc_per_node N`` (``scabench train`` or any
script calling ``train``); NCCL on CUDA, gloo on CPU. ``batch_size`` is the total over the
processes; rank 0 evaluates and writes the files.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from scabench import losses
from scabench.detectors import evaluate as ev
from scabench.detectors.anchors import choose_anchors
from scabench.detectors.config import TrainConfig
from scabench.results import atomic_torch_save, atomic_write_bytes, atomic_write_json
from scabench.detectors.data import EpochSampler, ImageStore, TrainSet, ValSet, collate_train, collate_val, load_dataset
from scabench.detectors.loss import YoloLoss
from scabench.detectors.models import ANCHORS, build_model, count_parameters

NOMINAL_BATCH = 64
CHECKPOINT_FORMAT = "scabench-yolov3-v1"
METRIC_KEYS = ("epoch", "loss_box", "loss_obj", "loss_cls", "lr", *ev.METRICS, "seconds")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and iteration."""


# --------------------------------------------------------------------------------------
# Small pieces


def warmup_iterations(warmup_epochs: float, iters_per_epoch: int, total_iters: int) -> int:
    """Warmup length in iterations (batches).

    Reference: max(warmup_epochs epochs, 1000 iterations), made for 300-epoch COCO runs where it
    is about 1 % of the run. A short run would spend most of itself warming up (3 of 10 epochs,
    or all of it), so the warmup is capped at a tenth of the run, but kept at no less than
    min(50 iterations, a third of the run). COCO-sized runs get exactly the reference value.
    """
    reference = max(round(warmup_epochs * iters_per_epoch), 1000)
    cap = max(total_iters // 10, min(50, total_iters // 3))
    return max(1, min(reference, cap))


def cosine(epoch: int, epochs: int, lrf: float) -> float:
    """Learning-rate factor: 1 at epoch 0 down to lrf at the last epoch (one cosine half-wave)."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[BatchNorm weights (no decay), other weights (decay), biases (no decay)]."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            biases.append(bias)
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            (bn_weights if isinstance(module, nn.modules.batchnorm._BatchNorm) else weights).append(weight)
    return [
        {"params": bn_weights, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


class ModelEMA:
    """Exponential moving average of a model's floating-point state (weights and BN statistics)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        src = model.state_dict()
        dst = self.ema.state_dict()
        keys = [k for k, v in dst.items() if v.dtype.is_floating_point]
        self._dst = [dst[k] for k in keys]
        self._src = [src[k] for k in keys]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref == "auto":
        device_type = "cuda" if cuda else "cpu"
    else:
        device_type = torch.device(device_pref).type
        if device_type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device_pref!r} asked for but CUDA is not available")
    if world <= 1:
        return Dist(), torch.device(device_pref if device_pref not in ("auto",) else device_type)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if owns:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, owns), device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss_state(box_loss) -> Any:
    if hasattr(box_loss, "terms"):
        return [dict(term.state) for _, term in box_loss.terms]
    return dict(box_loss.state)


def _set_loss_state(box_loss, state: Any, device: torch.device) -> None:
    move = lambda s: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in s.items()}  # noqa: E731
    if hasattr(box_loss, "terms"):
        for (_, term), s in zip(box_loss.terms, state):
            term.state.clear()
            term.state.update(move(s))
    else:
        box_loss.state.clear()
        box_loss.state.update(move(state))


class _Log:
    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, line: str) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )


def _same_run(saved: dict, config: TrainConfig) -> bool:
    try:
        return TrainConfig.model_validate(saved).run_key() == config.run_key()
    except Exception:  # noqa: BLE001 - an unreadable config is simply not the same run
        return False


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``last.pt`` written by :func:`train`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable scabench checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a scabench detector checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def model_from_checkpoint(ckpt: dict, weights: str = "ema") -> nn.Module:
    """Rebuild the detector of a checkpoint with its EMA (default) or raw weights, in eval mode."""
    cfg, res = ckpt["config"], ckpt["resolved"]
    model = build_model(cfg["detector"], res["num_classes"], cfg["width"], cfg["depth"], res["anchors"])
    model.load_state_dict(ckpt[weights])
    return model.eval()


# --------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train (or resume, or return the finished result of) one run; returns the summary dict.

    Raises :class:`NonFiniteLossError` on a NaN/inf loss (``failure.json`` says where; the
    last checkpoint stays the last good epoch), :class:`detectors.data.BadDataError` on bad
    data (unless ``bad_data="skip"``), ValueError when ``out_dir`` holds a different run.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.model_validate(config)
    out_dir = Path(out_dir)
    ctx, device = _setup_distributed(config.device)
    try:
        return _Run(config, out_dir, ctx, device, progress).run()
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    def __init__(self, config: TrainConfig, out_dir: Path, ctx: Dist, device: torch.device, progress: bool):
        self.config, self.out_dir, self.ctx, self.device = config, out_dir, ctx, device
        self.show = progress and ctx.main
        self.hyp = config.resolved_hyp()
        self.summary_path = out_dir / "summary.json"
        self.ckpt_path = out_dir / "last.pt"
        self.metrics_path = out_dir / "metrics.jsonl"
        self.cuda = device.type == "cuda"
        self.amp = config.amp and self.cuda

    # -- setup ---------------------------------------------------------------------------

    def _previous(self) -> tuple[dict | None, dict | None]:
        summary = ckpt = None
        if self.summary_path.is_file():
            summary = json.loads(self.summary_path.read_text())
            if not _same_run(summary.get("config", {}), self.config):
                raise ValueError(f"{self.out_dir} holds a finished run of a different config; choose another output folder")
        if self.ckpt_path.is_file():
            ckpt = load_checkpoint(self.ckpt_path)
            if not _same_run(ckpt["config"], self.config):
                raise ValueError(
                    f"{self.ckpt_path} is a checkpoint of a different config; choose another output folder "
                    "(or delete it to start over)"
                )
        return summary, ckpt

    def run(self) -> dict:
        cfg, ctx = self.config, self.ctx
        if ctx.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        summary, ckpt = self._previous()
        if summary is not None:
            return summary
        self.log = _Log(self.out_dir / "train.log" if ctx.main else None)
        _seed_everything(cfg.seed)

        # data (rank 0 first: it may generate synthetic-shapes)
        if not ctx.main:
            ctx.barrier()
        info = load_dataset(cfg.data, bad_data=cfg.bad_data, train_size=cfg.train_size, val_size=cfg.val_size, data_seed=cfg.data_seed)
        if ctx.main:
            ctx.barrier()
        train_store = ImageStore(info.train.records, cfg.img_size, info.problems)
        val_store = ImageStore(info.val.records, cfg.img_size, info.problems) if ctx.main else None
        if not len(train_store):
            raise ValueError(f"no usable training images in {info.train.source}")
        if ctx.main and not len(val_store):
            raise ValueError(f"no usable validation images in {info.val.source}")
        self.info = info

        # model, anchors
        default_anchors = torch.tensor(ANCHORS[cfg.detector], dtype=torch.float32)
        if ckpt is not None:
            anchors, anchor_note = torch.tensor(ckpt["resolved"]["anchors"]), ckpt["resolved"]["anchor_info"]
        else:
            anchors, anchor_note = choose_anchors(
                cfg.anchors, default_anchors, train_store.records, cfg.img_size, self.hyp["anchor_t"], cfg.seed
            )
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.detector, info.num_classes, cfg.width, cfg.depth, anchors).to(self.device)
        # channels_last: faster convolutions and pooling on GPUs and on the CPU alike (12 % here)
        model = model.to(memory_format=torch.channels_last)
        self.params = count_parameters(model)

        # schedule
        per_rank = max(cfg.batch_size // ctx.world, 1)
        sampler = EpochSampler(len(train_store), cfg.seed, ctx.rank, ctx.world)
        loader_kw = dict(
            num_workers=cfg.workers,
            pin_memory=self.cuda,
            persistent_workers=cfg.workers > 0,
        )
        train_loader = torch.utils.data.DataLoader(
            TrainSet(train_store, cfg.img_size, self.hyp), batch_size=per_rank, sampler=sampler, collate_fn=collate_train, **loader_kw
        )
        nb = len(train_loader)
        total_iters = nb * cfg.epochs
        accumulate = max(round(cfg.nominal_batch / cfg.batch_size), 1)
        # decay per image as the reference: weight_decay per 64 images, whatever the step size
        weight_decay = self.hyp["weight_decay"] * cfg.batch_size * accumulate / NOMINAL_BATCH
        nw = warmup_iterations(self.hyp["warmup_epochs"], nb, total_iters)
        optimizer = torch.optim.SGD(parameter_groups(model, weight_decay), lr=self.hyp["lr0"], momentum=self.hyp["momentum"], nesterov=True)
        for g in optimizer.param_groups:
            g["initial_lr"] = self.hyp["lr0"]
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        ema = ModelEMA(model) if ctx.main else None
        box_loss = losses.get_loss(cfg.loss, **cfg.loss_params)
        box_loss.train()
        head = model.detect
        criterion = YoloLoss(box_loss, head.anchors.detach().clone(), info.num_classes, self.hyp, cfg.img_size, cfg.obj_target).to(self.device)

        self.resolved = {
            "hyp": self.hyp,
            "device": str(self.device),
            "world_size": ctx.world,
            "anchors": [[[round(v, 2) for v in a] for a in level] for level in anchors.tolist()],
            "anchor_info": anchor_note,
            "names": info.names,
            "category_ids": info.category_ids,
            "num_classes": info.num_classes,
            "train_images": len(train_store),
            "val_images": len(val_store) if val_store is not None else None,
            "iterations_per_epoch": nb,
            "accumulate": accumulate,
            "warmup_iterations": nw,
            "params": self.params,
            "data_root": info.root,
            "bad_data_skipped": dict(info.problems.counts),
        }

        start_epoch, history, train_seconds, images_seen = 0, [], 0.0, 0
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            _set_loss_state(box_loss, ckpt["loss_state"], self.device)
            if ema is not None:
                ema.ema.load_state_dict(ckpt["ema"])
                ema.updates = ckpt["ema_updates"]
            start_epoch, history = ckpt["epoch"], ckpt["history"]
            train_seconds, images_seen = ckpt["train_seconds"], ckpt["images_seen"]
            if ctx.main:  # exactly the finished epochs, whatever a kill left behind
                atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in history).encode())
        elif ctx.main:
            self.metrics_path.unlink(missing_ok=True)

        if ctx.main:
            if ckpt is None:
                self.log(f"start: {json.dumps(cfg.model_dump())}")
            else:
                self.log(f"resume after epoch {start_epoch}")
            self.log(
                f"data {info.root}: {len(train_store)} train / {len(val_store)} val images, {info.num_classes} classes; "
                f"{info.problems.summary()}"
            )
            for example in info.problems.examples:
                self.log(f"  skipped: {example}")
            self.log(f"{anchor_note}: {[[[round(v, 1) for v in a] for a in level] for level in anchors.tolist()]}")
            self.log(
                f"{cfg.detector} width {cfg.width} depth {cfg.depth}: {self.params} parameters; device {self.device} x{ctx.world}; "
                f"batch {cfg.batch_size} x accumulate {accumulate}; warmup {nw} of {total_iters} iterations"
            )

        train_model: nn.Module = model
        if ctx.world > 1:
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.cuda else None)

        val_loader = None
        if ctx.main:
            val_loader = torch.utils.data.DataLoader(
                ValSet(val_store, cfg.img_size), batch_size=max(per_rank * 2, 32), shuffle=False, collate_fn=collate_val, **loader_kw
            )
            self.gt = ev._load_gt(info.coco_ground_truth("val"))

        self.model, self.ema, self.optimizer, self.scaler = model, ema, optimizer, scaler
        self.box_loss, self.criterion = box_loss, criterion
        self.val_loader = val_loader
        self.history, self.train_seconds, self.images_seen = history, train_seconds, images_seen

        bar = _progress(self.show)
        with bar if bar is not None else nullcontext():
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                sampler.set_epoch(epoch)
                items, seen = self._train_epoch(epoch, train_model, train_loader, nb, nw, accumulate, bar)
                if self.cuda:
                    torch.cuda.synchronize()
                self.train_seconds += time.perf_counter() - t0
                self.images_seen += seen
                if ctx.main:
                    t_val = time.perf_counter()
                    metrics = self._validate(ev.IOU_TRAINING)
                    t_val = time.perf_counter() - t_val
                    record = {
                        "epoch": epoch + 1,
                        "loss_box": items[0],
                        "loss_obj": items[1],
                        "loss_cls": items[2],
                        "lr": optimizer.param_groups[0]["lr"],
                        **metrics,
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                    self.history.append(record)
                    self._save_checkpoint(epoch + 1)
                    with open(self.metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    self.log(
                        f"epoch {epoch + 1}/{cfg.epochs}: loss box {items[0]:.4f} obj {items[1]:.4f} cls {items[2]:.4f}, "
                        f"AP50 {metrics['AP50']:.4f} AP {metrics['AP']:.4f}, {record['seconds']:.1f} s (validation {t_val:.1f} s)"
                    )
                    if bar is not None:
                        bar.console.print(
                            f"epoch {epoch + 1}/{cfg.epochs} box {items[0]:.4f} obj {items[1]:.4f} cls {items[2]:.4f} "
                            f"AP50 {metrics['AP50']:.3f} AP {metrics['AP']:.3f} {record['seconds']:.1f}s",
                            highlight=False,
                        )
                ctx.barrier()

        if ctx.main:
            summary = self._finish()
        ctx.barrier()
        if not ctx.main:
            summary = json.loads(self.summary_path.read_text())
        return summary

    # -- one epoch -----------------------------------------------------------------------

    def _train_epoch(self, epoch, train_model, loader, nb, nw, accumulate_final, bar):
        hyp, cfg, ctx = self.hyp, self.config, self.ctx
        optimizer, scaler = self.optimizer, self.scaler
        lr_epoch = hyp["lr0"] * cosine(epoch, cfg.epochs, hyp["lrf"])
        for g in optimizer.param_groups:
            g["lr"], g["momentum"] = lr_epoch, hyp["momentum"]
        train_model.train()
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(3, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        check_every = 1 if not self.cuda else 50
        pending = False
        last_step = epoch * nb - 1
        accumulate = accumulate_final
        seen = 0
        task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=nb, info="") if bar is not None else None
        for i, (images, targets) in enumerate(loader):
            ni = epoch * nb + i
            if ni <= nw:
                x = [0, nw]
                accumulate = max(1, int(np.interp(ni, x, [1, cfg.nominal_batch / cfg.batch_size]).round()))
                for j, g in enumerate(optimizer.param_groups):
                    g["lr"] = float(np.interp(ni, x, [hyp["warmup_bias_lr"] if j == 2 else 0.0, lr_epoch]))
                    g["momentum"] = float(np.interp(ni, x, [hyp["warmup_momentum"], hyp["momentum"]]))
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            images = images.float() / 255
            with torch.autocast(self.device.type, enabled=self.amp):
                preds = train_model(images)
            loss, items = self.criterion(preds, targets.to(self.device, non_blocking=True))
            if ctx.world > 1:
                loss = loss * ctx.world  # DDP averages gradients over processes
            scaler.scale(loss).backward()
            pending = True
            sums += items
            seen += images.shape[0] * ctx.world
            bad_now = ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad_now & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
            if ni - last_step >= accumulate:
                self._step()
                last_step, pending = ni, False
            if (i + 1) % check_every == 0 or i + 1 == nb:
                self._check_finite(first_bad, epoch, sums / (i + 1))
            if task is not None:
                info = ""
                if not self.cuda or (i + 1) % 20 == 0 or i + 1 == nb:
                    m = (sums / (i + 1)).tolist()
                    info = f"box {m[0]:.4f} obj {m[1]:.4f} cls {m[2]:.4f}"
                bar.update(task, advance=1, **({"info": info} if info else {}))
        if pending:  # a clean epoch boundary: apply what was accumulated
            self._step()
        if task is not None:
            bar.remove_task(task)
        means = (sums / max(nb, 1)).tolist()
        return [round(v, 6) for v in means], seen

    def _step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()

    def _check_finite(self, first_bad: torch.Tensor, epoch: int, means: torch.Tensor) -> None:
        flag = first_bad.clone()
        if self.ctx.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        iteration = int(flag)
        if iteration < 0:
            return
        where = f"epoch {epoch + 1} iteration {iteration + 1}"
        finished = len(self.history)
        message = (
            f"non-finite loss at {where} (loss {self.config.loss!r}, mean box/obj/cls so far {[round(v, 4) for v in means.tolist()]}); "
            f"the run stopped; {self.ckpt_path} holds the last good epoch ({finished})"
        )
        if self.ctx.main:
            atomic_write_json(
                self.out_dir / "failure.json",
                {"error": "non-finite loss", "epoch": epoch + 1, "iteration": iteration + 1, "message": message, "last_good_epoch": finished},
            )
            self.log(message)
        raise NonFiniteLossError(message)

    # -- evaluation, checkpoint, summary ---------------------------------------------------

    def _validate(self, iou: float) -> dict[str, float]:
        results = ev.predict(
            self.ema.ema, self.val_loader, self.device, self.info.category_ids, iou, amp=self.amp, channels_last=True
        )
        return ev._evaluate(self.gt, results, copy_dets=False)  # fresh dicts: no copy needed

    def _save_checkpoint(self, epochs_done: int) -> None:
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.model_dump(),
            "resolved": self.resolved,
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "ema": self.ema.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss_state": _loss_state(self.box_loss),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
        }
        atomic_torch_save(ckpt, self.ckpt_path)

    def _finish(self) -> dict:
        final = self._validate(ev.IOU_REPORTED)
        last = dict(self.history[-1])
        last.update(final)
        summary = {
            "config": self.config.model_dump(),
            "metrics": last,
            "epochs": self.config.epochs,
            "params": self.params,
            "train_seconds": round(self.train_seconds, 3),
            "images_per_second": round(self.images_seen / max(self.train_seconds, 1e-9), 2),
        }
        atomic_write_json(self.summary_path, summary)
        self.log(f"done: AP50 {final['AP50']:.4f} AP {final['AP']:.4f} (NMS IoU {ev.IOU_REPORTED}); summary.json written")
        return summary
