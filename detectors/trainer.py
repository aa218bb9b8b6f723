"""``train(config, out_dir)``: one YOLOv3 training run, resumable, with per-epoch COCO metrics.

The recipe is the reference trainer's (ultralytics/yolov3 v9.6.0 with hyp.scratch, REFERENCES 4),
see :mod:`detectors.optim`: gradient accumulation to ``nominal_batch`` images (weight decay
scaled by batch * accumulate / 64, so the decay per image stays the reference's), warmup, a
cosine schedule and an EMA of the weights, which is what gets evaluated. ``_Run.run`` reads
top to bottom: set up, resume, then per epoch train, validate and save; then finish.

Files in ``out_dir`` (:class:`scabench.results.RunFolder`; all written atomically: temp file + os.replace):

- ``last.pt``: the checkpoint after every epoch (:mod:`detectors.checkpoint`: model, EMA,
  optimizer, scaler, the box loss's state, per-epoch history, the best fitness so far, the
  config and what was resolved from it: hyperparameters, anchors, class names, warmup length, device);
- ``best.pt``: a copy of ``last.pt`` from the validated epoch of the highest fitness so far
  (ultralytics' ``best.pt``; fitness = 0.1 AP50 + 0.9 AP, :func:`detectors.evaluate.fitness`);
- ``metrics.jsonl``: one line per finished epoch: training losses and lr; for a validated epoch
  also the validation losses (``val_loss_box/obj/cls``: the training loss on the validation
  images, no gradients), AP ... APl, ``P``, ``R``, ``fitness`` and ``per_class`` (NMS IoU 0.6);
- ``tensorboard/``: TensorBoard event files, the same numbers per epoch (``tensorboard --logdir``
  a run folder or a whole grid's results folder);
- ``summary.json``: written last, final metrics from the EMA weights at NMS IoU 0.65, the best
  epoch and fitness, and whether early stopping ended the run;
- ``train.log``: what was resolved and what bad data was skipped; ``failure.json`` if a
  non-finite loss stopped the run.

Early stopping (``patience``, off by default and in benchmark grids): the run ends after
``patience`` validated epochs without a better fitness, as ultralytics' ``EarlyStopper``.

Resuming: calling ``train`` again with the same config and ``out_dir`` continues after the
last finished epoch and gives the same numbers an uninterrupted run gives on the same machine
(every sample's augmentation is seeded by (seed, epoch, index); pending accumulated gradients
are applied at the end of each epoch so epochs are clean boundaries). A finished run returns
its summary at once. A different config in the same folder is refused.

Several processes: launch with ``torchrun --nproc_per_node N`` (``scabench train`` or any
script calling ``train``); see :mod:`detectors.distributed`. ``batch_size`` is the total over
the processes; rank 0 evaluates and writes the files.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import ProgressColumn
from rich.text import Text
from torch import nn

from scabench import losses
from scabench.detectors import evaluate as ev
from scabench.detectors.anchors import choose_anchors
from scabench.detectors.checkpoint import BEST_CHECKPOINT, CHECKPOINT_FORMAT, load_checkpoint, same_run
from scabench.detectors.config import TrainConfig
from scabench.detectors.data import ImageStore, load_dataset, train_loader, val_loader
from scabench.detectors.distributed import Dist, setup_distributed
from scabench.detectors.loss import YoloLoss
from scabench.detectors.models import ANCHORS, build_model, count_parameters
from scabench.detectors.optim import (
    NOMINAL_BATCH, ModelEMA, cosine, make_optimizer, optimizer_step, set_momentum, train_step, warmup, warmup_iterations,
)
from scabench.results import RunFolder, atomic_path
from scabench.results.files import TENSORBOARD

TENSORBOARD_DIR = TENSORBOARD  # the run's TensorBoard event files
VAL_LOSS_KEYS = ("val_loss_box", "val_loss_obj", "val_loss_cls")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and iteration."""


def train(config: TrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train (or resume, or return the finished result of) one run; returns the summary dict.

    Raises :class:`NonFiniteLossError` on a NaN/inf loss (``failure.json`` says where; the
    last checkpoint stays the last good epoch), :class:`detectors.readers.BadDataError` on bad
    data (unless ``bad_data="skip"``), ValueError when ``out_dir`` holds a different run.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.model_validate(config)
    ctx, device = setup_distributed(config.device)
    try:
        return _Run(config, Path(out_dir), ctx, device, progress).run()
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    def __init__(self, config: TrainConfig, out_dir: Path, ctx: Dist, device: torch.device, progress: bool):
        self.config, self.ctx, self.device = config, ctx, device
        self.files = RunFolder(out_dir)
        self.show = progress and ctx.main
        self.hyp = config.resolved_hyp()
        self.cuda = device.type == "cuda"
        self.amp = config.amp and self.cuda
        self.history: list[dict] = []
        self.start_epoch, self.train_seconds, self.images_seen = 0, 0.0, 0
        self.best_fitness: float | None = None
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.tensorboard = None

    def run(self) -> dict:
        cfg, ctx = self.config, self.ctx
        if ctx.main:
            self.files.path.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        summary, ckpt = self._previous()
        if summary is not None:
            return summary
        _seed_everything(cfg.seed)
        self._load_data()
        self._build(ckpt)
        if ckpt is not None:
            self._resume(ckpt)
        self.train_model = self._distributed(self.model)
        if ctx.main:
            self.files.rewrite_epochs(self.history)
            self._log_start(resumed=ckpt is not None)
            if self.best_epoch is not None and self.best_epoch == self.start_epoch:
                self._copy_best()  # a kill may have fallen between last.pt and best.pt
            self.tensorboard = _tensorboard_writer(self.files.path / TENSORBOARD_DIR, self.start_epoch, cfg)
        try:
            bar = _progress(self.show)
            with bar if bar is not None else nullcontext():
                for epoch in range(self.start_epoch, cfg.epochs):
                    if self._out_of_patience():
                        self._stop_early(bar)
                        break
                    self._epoch(epoch, bar)
                    ctx.barrier()
            if ctx.main:
                summary = self._finish()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        ctx.barrier()
        return summary if ctx.main else self.files.read_summary()

    # -- set-up ----------------------------------------------------------------------------

    def _previous(self) -> tuple[dict | None, dict | None]:
        """A finished run's summary and an unfinished run's checkpoint, both of this config."""
        summary = self.files.read_summary()
        if summary is not None and not same_run(summary.get("config", {}), self.config):
            raise ValueError(f"{self.files.path} holds a finished run of a different config; choose another output folder")
        ckpt = load_checkpoint(self.files.checkpoint) if self.files.checkpoint.is_file() else None
        if ckpt is not None and not same_run(ckpt["config"], self.config):
            raise ValueError(
                f"{self.files.checkpoint} is a checkpoint of a different config; choose another output folder "
                "(or delete it to start over)"
            )
        return summary, ckpt

    def _load_data(self) -> None:
        """Records and decoded images (rank 0 first: it may generate synthetic-shapes)."""
        cfg, ctx = self.config, self.ctx
        if not ctx.main:
            ctx.barrier()
        info = load_dataset(
            cfg.data, bad_data=cfg.bad_data, train_size=cfg.train_size, val_size=cfg.val_size, data_seed=cfg.data_seed,
            tile_size=cfg.tile_size, tile_overlap=cfg.tile_overlap,
        )  # fmt: skip
        if ctx.main:
            ctx.barrier()
        self.train_store = ImageStore(info.train.records, cfg.img_size, info.problems)
        self.val_store = ImageStore(info.val.records, cfg.img_size, info.problems) if ctx.main else None
        if not len(self.train_store):
            raise ValueError(f"no usable training images in {info.train.source}")
        if ctx.main and not len(self.val_store):
            raise ValueError(f"no usable validation images in {info.val.source}")
        self.info = info

    def _build(self, ckpt: dict | None) -> None:
        """Anchors (a resumed run keeps its own), model, loaders, optimizer, EMA and loss."""
        cfg, ctx, hyp, info = self.config, self.ctx, self.hyp, self.info
        if ckpt is not None:
            self.anchors, self.anchor_note = torch.tensor(ckpt["resolved"]["anchors"]), ckpt["resolved"]["anchor_info"]
        else:
            default = torch.tensor(ANCHORS[cfg.detector], dtype=torch.float32)
            self.anchors, self.anchor_note = choose_anchors(
                cfg.anchors, default, self.train_store.records, cfg.img_size, hyp["anchor_t"], cfg.seed
            )
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.detector, info.num_classes, cfg.width, cfg.depth, self.anchors).to(self.device)
        # channels_last: faster convolutions and pooling on GPUs and on the CPU alike (12 % here)
        self.model = model.to(memory_format=torch.channels_last)
        self.params = count_parameters(self.model)

        per_rank = max(cfg.batch_size // ctx.world, 1)
        loader_kw = dict(workers=cfg.workers, pin_memory=self.cuda)
        self.train_loader = train_loader(
            self.train_store, hyp, per_rank, seed=cfg.seed, rank=ctx.rank, world=ctx.world,
            close_mosaic_at=cfg.epochs - cfg.close_mosaic if cfg.close_mosaic else None, **loader_kw,
        )  # fmt: skip
        self.iters_per_epoch = len(self.train_loader)
        self.accumulate = max(round(cfg.nominal_batch / cfg.batch_size), 1)
        # decay per image as the reference: weight_decay per 64 images, whatever the step size
        weight_decay = hyp["weight_decay"] * cfg.batch_size * self.accumulate / NOMINAL_BATCH
        self.warmup_iters = warmup_iterations(hyp["warmup_epochs"], self.iters_per_epoch, self.iters_per_epoch * cfg.epochs)
        self.optimizer = make_optimizer(cfg.optimizer, self.model, hyp, weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = ModelEMA(self.model) if ctx.main else None
        self.box_loss = losses.get_loss(cfg.loss, **cfg.loss_params).train()
        anchors_grid = self.model.detect.anchors.detach().clone()
        self.criterion = YoloLoss(self.box_loss, anchors_grid, info.num_classes, hyp, cfg.img_size, cfg.obj_target).to(self.device)
        if ctx.main:
            self.val_loader = val_loader(self.val_store, max(per_rank * 2, 32), **loader_kw)
            self.gt = ev.load_ground_truth(info.coco_ground_truth("val"))
            self.val_boxes = {r.image_id: (r.boxes, r.classes) for r in self.val_store.records}

    def _resume(self, ckpt: dict) -> None:
        """Continue after the checkpoint's last finished epoch."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.box_loss.load_state_dict(ckpt["loss_state"], self.device)
        if self.ema is not None:
            self.ema.ema.load_state_dict(ckpt["ema"])
            self.ema.updates = ckpt["ema_updates"]
        self.start_epoch, self.history = ckpt["epoch"], ckpt["history"]
        self.train_seconds, self.images_seen = ckpt["train_seconds"], ckpt["images_seen"]
        self.best_fitness, self.best_epoch = ckpt.get("best_fitness"), ckpt.get("best_epoch")  # absent before best.pt existed

    def _distributed(self, model: nn.Module) -> nn.Module:
        """The module the epochs run: DDP over the processes, or the model itself."""
        if self.ctx.world <= 1:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.cuda else None)

    def _resolved(self) -> dict:
        """What the config resolved to on this machine and data (stored in the checkpoint)."""
        info = self.info
        return {
            "hyp": self.hyp,
            "device": str(self.device),
            "world_size": self.ctx.world,
            "anchors": [[[round(v, 2) for v in a] for a in level] for level in self.anchors.tolist()],
            "anchor_info": self.anchor_note,
            "names": info.names,
            "category_ids": info.category_ids,
            "num_classes": info.num_classes,
            "train_images": len(self.train_store),
            "val_images": len(self.val_store) if self.val_store is not None else None,
            "iterations_per_epoch": self.iters_per_epoch,
            "accumulate": self.accumulate,
            "warmup_iterations": self.warmup_iters,
            "params": self.params,
            "data_root": info.root,
            "bad_data_skipped": dict(info.problems.counts),
        }

    def _log_start(self, resumed: bool) -> None:
        cfg, info = self.config, self.info
        log = self.files.log_line
        log(f"resume after epoch {self.start_epoch}" if resumed else f"start: {json.dumps(cfg.model_dump())}")
        log(
            f"data {info.root}: {len(self.train_store)} train / {len(self.val_store)} val images, {info.num_classes} classes; "
            f"{info.problems.summary()}"
        )
        for example in info.problems.examples:
            log(f"  skipped: {example}")
        log(f"{self.anchor_note}: {[[[round(v, 1) for v in a] for a in level] for level in self.anchors.tolist()]}")
        log(
            f"{cfg.detector} width {cfg.width} depth {cfg.depth}: {self.params} parameters; device {self.device} x{self.ctx.world}; "
            f"batch {cfg.batch_size} x accumulate {self.accumulate}; "
            f"warmup {self.warmup_iters} of {self.iters_per_epoch * cfg.epochs} iterations"
        )

    # -- one epoch -------------------------------------------------------------------------

    def _epoch(self, epoch: int, bar) -> None:
        """Train one epoch; on rank 0 validate, save the checkpoint and the epoch's line."""
        t0 = time.perf_counter()
        self.train_loader.sampler.set_epoch(epoch)
        items, seen = self._train_epoch(epoch, bar)
        if self.cuda:
            torch.cuda.synchronize()
        self.train_seconds += time.perf_counter() - t0
        self.images_seen += seen
        if not self.ctx.main:
            return
        t_val = time.perf_counter()
        validate = (epoch + 1) % self.config.val_interval == 0 or epoch + 1 == self.config.epochs
        metrics = self._validate(ev.IOU_TRAINING, with_losses=True) if validate else {}
        t_val = time.perf_counter() - t_val
        record = {
            "epoch": epoch + 1,
            "loss_box": items[0],
            "loss_obj": items[1],
            "loss_cls": items[2],
            "lr": self.optimizer.param_groups[0]["lr"],
            **metrics,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self.history.append(record)
        improved = validate and self._improves(record["fitness"])
        if improved:
            self.best_fitness, self.best_epoch = record["fitness"], epoch + 1
        self._log_tensorboard(record)  # before the checkpoint: a resume purges the steps it redoes
        self.files.save_checkpoint(self._checkpoint(epoch + 1))  # first: a line always has its checkpoint
        if improved:
            self._copy_best()
        self.files.append_epoch(record)
        done = f"epoch {epoch + 1}/{self.config.epochs}"
        scores = (
            f"P {metrics['P']:.3f} R {metrics['R']:.3f} AP50 {metrics['AP50']:.4f} AP {metrics['AP']:.4f}"
            + (" (best)" if improved else "")
            if metrics else "not validated"
        )  # fmt: skip
        val_losses = f", val box {metrics['val_loss_box']:.4f} obj {metrics['val_loss_obj']:.4f} cls {metrics['val_loss_cls']:.4f}" if metrics else ""
        self.files.log_line(
            f"{done}: loss box {items[0]:.4f} obj {items[1]:.4f} cls {items[2]:.4f}{val_losses}, "
            f"{scores}, {record['seconds']:.1f} s (validation {t_val:.1f} s)"
        )
        if bar is not None:
            bar.console.print(
                f"{done} box {items[0]:.4f} obj {items[1]:.4f} cls {items[2]:.4f} {scores} {record['seconds']:.1f}s",
                highlight=False,
            )

    def _train_epoch(self, epoch: int, bar) -> tuple[list[float], int]:
        """The epoch's batches through :func:`train_step`; returns mean [box, obj, cls] and images seen.

        Finiteness is checked without a host sync per batch on CUDA (every 50 batches).
        """
        cfg, ctx, nb = self.config, self.ctx, self.iters_per_epoch
        lr_epoch = self.hyp["lr0"] * cosine(epoch, cfg.epochs, self.hyp["lrf"])
        for g in self.optimizer.param_groups:
            g["lr"] = lr_epoch
            set_momentum(g, self.hyp["momentum"])
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(3, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        check_every = 50 if self.cuda else 1
        last_step, pending, accumulate, seen = epoch * nb - 1, False, self.accumulate, 0
        task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=nb, **_progress_fields(self.device, cfg.img_size)) if bar is not None else None
        for i, (images, targets) in enumerate(self.train_loader):
            ni = epoch * nb + i
            if ni <= self.warmup_iters:
                accumulate = warmup(self.optimizer, ni, self.warmup_iters, lr_epoch, self.hyp, cfg.nominal_batch / cfg.batch_size)
            step = ni - last_step >= accumulate
            loss, items = train_step(
                self.train_model, self.criterion, images, targets, self.optimizer, self.scaler,
                ema=self.ema, amp=self.amp, step=step, loss_gain=ctx.world,
            )  # fmt: skip
            pending = not step
            if step:
                last_step = ni
            sums += items
            seen += images.shape[0] * ctx.world
            first_bad = torch.where(~torch.isfinite(loss) & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
            if (i + 1) % check_every == 0 or i + 1 == nb:
                self._check_finite(first_bad, epoch, sums / (i + 1))
            if task is not None:
                fresh = not self.cuda or (i + 1) % 20 == 0 or i + 1 == nb
                _show_batch(bar, task, sums, i + 1, targets.shape[0], self.device, fresh)
        if pending:  # a clean epoch boundary: apply what was accumulated
            optimizer_step(self.optimizer, self.scaler, self.ema)
        if task is not None:
            bar.remove_task(task)
        return [round(v, 6) for v in (sums / max(nb, 1)).tolist()], seen

    def _check_finite(self, first_bad: torch.Tensor, epoch: int, means: torch.Tensor) -> None:
        """Stop the run (all ranks) at the first non-finite loss, recording where in ``failure.json``."""
        flag = first_bad.clone()
        if self.ctx.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        iteration = int(flag)
        if iteration < 0:
            return
        finished = len(self.history)
        if self.files.checkpoint.is_file():
            kept = f"{self.files.checkpoint} holds the last good epoch ({finished})"
        else:
            kept = "no checkpoint was saved before it (a rerun starts from epoch 1)"
        message = (
            f"non-finite loss at epoch {epoch + 1} iteration {iteration + 1} (loss {self.config.loss!r}, "
            f"mean box/obj/cls so far {[round(v, 4) for v in means.tolist()]}); the run stopped; {kept}"
        )
        if self.ctx.main:
            self.files.write_failure(
                {"error": "non-finite loss", "epoch": epoch + 1, "iteration": iteration + 1, "message": message, "last_good_epoch": finished}
            )
            self.files.log_line(message)
        raise NonFiniteLossError(message)

    # -- validation, checkpoint, finish ----------------------------------------------------

    def _validate(self, iou: float, with_losses: bool = False) -> dict:
        """The EMA weights on the validation split at NMS IoU ``iou``: COCO metrics, P, R, per
        class (:func:`evaluate.metrics_with_details`) and fitness; ``with_losses`` first the
        validation losses, from the same forward pass: the training criterion on the raw head
        outputs (mean of the batches' [box, obj, cls], as the training losses), no gradients,
        the box loss's own state frozen (``eval()``) so validation leaves training unchanged."""
        sums, batches = torch.zeros(3, device=self.device), [0]

        def add_losses(raw: list[torch.Tensor], meta: torch.Tensor) -> None:
            sums.add_(self.criterion(raw, ev.letterboxed_targets(meta, self.val_boxes, self.config.img_size))[1])
            batches[0] += 1

        self.box_loss.eval()
        try:
            results = ev.predict(
                self.ema.ema, self.val_loader, self.device, self.info.category_ids, iou, amp=self.amp, channels_last=True,
                on_raw=add_losses if with_losses else None,
            )  # fmt: skip
        finally:
            self.box_loss.train()
        losses_ = dict(zip(VAL_LOSS_KEYS, [round(v, 6) for v in (sums / max(batches[0], 1)).tolist()])) if with_losses else {}
        metrics = ev.evaluate_predictions(self.gt, results, details=True)
        per_class = metrics.pop("per_class")
        return {**losses_, **metrics, "fitness": ev.fitness(metrics), "per_class": per_class}

    def _improves(self, fitness: float) -> bool:
        """A new best, as ultralytics decides it: higher, or the best so far is 0 (early training)."""
        return self.best_fitness is None or fitness > self.best_fitness or self.best_fitness == 0

    def _copy_best(self) -> None:
        """``best.pt``: a copy of ``last.pt`` (written atomically)."""
        with atomic_path(self.files.path / BEST_CHECKPOINT) as tmp:
            shutil.copyfile(self.files.checkpoint, tmp)

    def _out_of_patience(self) -> bool:
        """``patience`` validated epochs since the best fitness (ultralytics' ``EarlyStopper``,
        counted in validated epochs); rank 0 decides, every rank hears. Off for None or 0."""
        if not self.config.patience:
            return False
        stale = sum(1 for row in self.history if "fitness" in row and row["epoch"] > (self.best_epoch or 0))
        stop = torch.tensor([int(self.ctx.main and self.best_epoch is not None and stale >= self.config.patience)], device=self.device)
        if self.ctx.world > 1:
            dist.broadcast(stop, 0)
        return bool(stop.item())

    def _stop_early(self, bar) -> None:
        self.stopped_early = True
        if self.ctx.main:
            line = (
                f"early stop after epoch {len(self.history)}: no better fitness in {self.config.patience} validated epochs "
                f"(best {self.best_fitness:.4f} at epoch {self.best_epoch}, {BEST_CHECKPOINT})"
            )
            self.files.log_line(line)
            if bar is not None:
                bar.console.print(line, highlight=False)

    def _log_tensorboard(self, record: dict) -> None:
        """The epoch's scalars (tags as ultralytics': train/box_loss, val/box_loss, metrics/AP50, lr/pg0, ...)."""
        step = record["epoch"]
        for key, value in record.items():
            tag = _tensorboard_tag(key)
            if tag is not None:
                self.tensorboard.add_scalar(tag, value, step)
        for i, group in enumerate(self.optimizer.param_groups):
            self.tensorboard.add_scalar(f"lr/pg{i}", group["lr"], step)
        self.tensorboard.flush()

    def _checkpoint(self, epochs_done: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.model_dump(),
            "resolved": self._resolved(),
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "ema": self.ema.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss_state": self.box_loss.state_dict(),
            "history": self.history,
            "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
        }

    def _finish(self) -> dict:
        """Final metrics at the reported NMS IoU; ``summary.json`` written last."""
        final = self._validate(ev.IOU_REPORTED)
        last = dict(self.history[-1])
        last.update(final)
        summary = {
            "config": self.config.model_dump(),
            "metrics": last,
            "epochs": last["epoch"],
            "best_epoch": self.best_epoch,
            "best_fitness": self.best_fitness,
            "stopped_early": self.stopped_early,
            "params": self.params,
            "val_images": len(self.val_store),
            "train_seconds": round(self.train_seconds, 3),
            "images_per_second": round(self.images_seen / max(self.train_seconds, 1e-9), 2),
        }
        self.files.write_summary(summary)
        self.files.log_line(f"done: AP50 {final['AP50']:.4f} AP {final['AP']:.4f} (NMS IoU {ev.IOU_REPORTED}); summary.json written")
        return summary


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tensorboard_writer(folder: Path, start_epoch: int, config: TrainConfig):
    """A SummaryWriter for the run; ``purge_step``: TensorBoard drops what an interrupted run
    logged for the epochs a resume trains again."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder), purge_step=start_epoch + 1)
    if start_epoch == 0:
        writer.add_text("config", f"```\n{json.dumps(config.model_dump(), indent=1)}\n```")
    return writer


def _tensorboard_tag(key: str) -> str | None:
    """The TensorBoard tag of a metrics.jsonl key (None: not a scalar to plot)."""
    if key.startswith("val_loss_"):
        return f"val/{key.removeprefix('val_loss_')}_loss"
    if key.startswith("loss_"):
        return f"train/{key.removeprefix('loss_')}_loss"
    if key in (*ev.METRICS, "P", "R", "fitness"):
        return f"metrics/{key}"
    return None


def _progress(enabled: bool):
    """The per-epoch bar, one line like ultralytics' ``Epoch GPU_mem box_loss obj_loss cls_loss
    Instances Size``, then batches done, it/s, elapsed and ETA. Quiet where the console is not a
    terminal (rich draws no live bar there; the epoch lines are still printed)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        TextColumn("{task.fields[memory]}{task.fields[losses]} inst {task.fields[instances]:>4} {task.fields[size]}px"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        _BatchesPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


class _BatchesPerSecond(ProgressColumn):
    """Batches per second (rich's estimate), ultralytics' it/s."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} it/s" if task.speed else "- it/s")


def _progress_fields(device: torch.device, size: int) -> dict:
    return {"memory": _gpu_memory(device), "losses": "box - obj - cls -", "instances": 0, "size": size}


def _gpu_memory(device: torch.device) -> str:
    """Reserved GPU memory (no host sync), empty on the CPU."""
    return f"{torch.cuda.memory_reserved(device) / 2**30:.2f}G " if device.type == "cuda" else ""


def _show_batch(bar, task, sums: torch.Tensor, done: int, instances: int, device: torch.device, fresh: bool) -> None:
    """Advance the epoch's bar by one batch with its instances; ``fresh`` also shows the epoch's
    mean losses so far, as ultralytics (a host sync on CUDA, so every 20 batches there)."""
    fields = {"instances": instances, "memory": _gpu_memory(device)}
    if fresh:
        m = (sums / done).tolist()
        fields["losses"] = f"box {m[0]:.4f} obj {m[1]:.4f} cls {m[2]:.4f}"
    bar.update(task, advance=1, **fields)
