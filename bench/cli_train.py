"""``scabench train``, ``scabench val`` and ``scabench evaluate``: the detector commands.

Registered on the main app by ``register_train_commands(app)`` (see bench/cli.py). Exit codes:
0 ok, 1 the run failed (non-finite loss), 2 usage, config or data error (a message, no traceback).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from scabench.bench.cli_options import defaults_of, device_option, given
from scabench.bench.console import console, fail


def _parse_pairs(pairs: list[str] | None, what: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"{what} must look like KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _percent(value: float) -> str:
    return f"{100 * value:.1f}" if value >= 0 else "-"


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    from scabench.detectors.evaluate import METRICS

    table = Table(title=title)
    for name in METRICS:
        table.add_column(name, justify="right")
    table.add_row(*(_percent(metrics[m]) for m in METRICS))
    return table


def _class_table(metrics: dict, images: int | None) -> Table:
    """ultralytics' validation table (percent): all, then each class with ground truth; P and R at
    IoU 0.5 at the confidence of the best mean F1 (detectors.evaluate.precision_recall)."""
    table = Table(title="per class (P, R: IoU 0.5 at the confidence of the best mean F1)")
    for column in ("class", "images", "instances", "P", "R", "AP50", "AP50-95"):
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = metrics.get("per_class") or []
    shown = "-" if images is None else str(images)
    table.add_row("all", shown, str(sum(r["instances"] for r in rows)), *(_percent(metrics[k]) for k in ("P", "R", "AP50", "AP")))
    for r in rows:
        table.add_row(r["class"], str(r["images"]), str(r["instances"]), *(_percent(r[k]) for k in ("P", "R", "AP50", "AP")))
    return table


def train_command(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: last.pt, metrics.jsonl, summary.json, train.log."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of TrainConfig fields; options given here override it."),
    data: Optional[str] = typer.Option(None, help="'synthetic-shapes', 'neon-trees', a COCO-json folder or file, a VOC folder, or a dataset YAML."),
    train_size: Optional[int] = typer.Option(None, help="synthetic-shapes: training images."),
    val_size: Optional[int] = typer.Option(None, help="synthetic-shapes: validation images."),
    data_seed: Optional[int] = typer.Option(None, help="synthetic-shapes: generator seed."),
    detector: Optional[str] = typer.Option(None, help="yolov3-tiny | yolov3 | yolov3-spp."),
    width: Optional[float] = typer.Option(None, help="Channel multiplier."),
    depth: Optional[float] = typer.Option(None, help="Repeat multiplier."),
    anchors: Optional[str] = typer.Option(None, help="auto | default | kmeans."),
    img_size: Optional[int] = typer.Option(None, help="Training and validation size, multiple of 32."),
    epochs: Optional[int] = typer.Option(None, help="Epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Total batch size (gradients accumulate to --nominal-batch)."),
    nominal_batch: Optional[int] = typer.Option(None, help="Images per optimizer step; smaller for short runs."),
    loss: Optional[str] = typer.Option(None, help="Box loss: registered (sca, iou+cd, ...) or 'module:function'."),
    loss_param: Optional[list[str]] = typer.Option(None, "--loss-param", help="Loss parameter KEY=VALUE (repeatable)."),
    obj_target: Optional[str] = typer.Option(None, help="Objectness target: loss (its similarity) | iou."),
    seed: Optional[int] = typer.Option(None, help="Seed."),
    device: Optional[str] = typer.Option(None, callback=device_option, help="auto | cpu | cuda | cuda:N."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA."),
    workers: Optional[int] = typer.Option(None, help="Data-loader worker processes."),
    hyp: Optional[Path] = typer.Option(None, "--hyp", help="Hyperparameter YAML (hyp.scratch keys)."),
    hyp_set: Optional[list[str]] = typer.Option(None, "--hyp-set", "-H", help="Hyperparameter override KEY=VALUE (repeatable)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd (the reference) | adamw."),
    close_mosaic: Optional[int] = typer.Option(None, help="Last epochs trained without mosaic."),
    val_interval: Optional[int] = typer.Option(None, help="Validate every N epochs and the last."),
    patience: Optional[int] = typer.Option(None, help="Early stopping: stop after N validated epochs without a better fitness (0: off)."),
    bad_data: Optional[str] = typer.Option(None, help="error | skip: what to do with bad annotations or images."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per epoch."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", "-s", help="TrainConfig override KEY=VALUE (dotted: hyp.lr0=0.02; YAML value), applied last; repeatable.",
    ),
) -> None:
    """Train a YOLOv3 detector with a box loss from the registry; writes OUT/summary.json."""
    from pydantic import ValidationError

    from scabench.bench.overrides import apply_overrides, parse_overrides, validation_messages
    from scabench.detectors import BadDataError, NonFiniteLossError, TrainConfig, train
    from scabench.results import LockBusy

    fields = _config_file(config)
    fields.update(given(
        data=data, train_size=train_size, val_size=val_size, data_seed=data_seed, detector=detector, width=width,
        depth=depth, anchors=anchors, img_size=img_size, epochs=epochs, batch_size=batch_size,
        nominal_batch=nominal_batch, loss=loss,
        obj_target=obj_target, seed=seed, device=device, amp=amp, workers=workers, bad_data=bad_data,
        optimizer=optimizer, close_mosaic=close_mosaic, val_interval=val_interval, patience=patience,
    ))  # fmt: skip
    if loss_param:
        fields["loss_params"] = {**fields.get("loss_params", {}), **_parse_pairs(loss_param, "--loss-param")}
    hyp_overrides = _hyp_overrides(dict(fields.get("hyp", {}) or {}), hyp, hyp_set)
    if hyp_overrides:
        fields["hyp"] = hyp_overrides
    try:
        given_sets = parse_overrides(overrides, flat_under=())
        fields = apply_overrides(fields, given_sets)
    except ValueError as exc:
        fail(str(exc))
    try:
        cfg = TrainConfig(**fields)
    except ValidationError as exc:
        fail(f"invalid training config: {'; '.join(validation_messages(exc, TrainConfig, given_sets))}")
    try:
        with _run_lock(out):
            summary = train(cfg, out, progress=progress)
    except NonFiniteLossError as exc:
        fail(str(exc), code=1)
    except LockBusy as exc:
        fail(f"another run is writing to {out}: {exc}")
    except (BadDataError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports
        return
    metrics = summary["metrics"]
    console.print(_metrics_table(f"{cfg.detector} x{cfg.width} {cfg.img_size}px, loss {cfg.loss}: final (NMS IoU 0.65)", metrics))
    if "per_class" in metrics:  # summaries written before P, R and per-class AP have none
        console.print(_class_table(metrics, summary.get("val_images")))
    stopped = f" (early stop: patience {cfg.patience})" if summary.get("stopped_early") else ""
    best = f"; best epoch {summary['best_epoch']} (fitness {summary['best_fitness']:.4f}): {out / 'best.pt'}" if summary.get("best_epoch") else ""
    console.print(
        f"{summary['epochs']} epochs{stopped}, {summary['params']:,} parameters, {summary['images_per_second']:.1f} img/s; "
        f"[bold]{out / 'summary.json'}[/]{best}", soft_wrap=True,
    )


def _run_lock(out: Path) -> Any:
    """The run folder's lock (the one a grid cell's process holds), taken by rank 0 only."""
    from contextlib import nullcontext

    from scabench.results import RunFolder

    if int(os.environ.get("RANK", "0")) != 0:
        return nullcontext()
    return RunFolder(out).lock(cmd="scabench train")


def _config_file(config: Path | None) -> dict[str, Any]:
    """The TrainConfig fields of ``--config`` (none without it)."""
    import yaml

    if config is None:
        return {}
    try:
        loaded = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read config {config}: {exc}")
    if not isinstance(loaded, dict):
        fail(f"{config}: expected a mapping of TrainConfig fields")
    return loaded


def _hyp_overrides(overrides: dict[str, Any], hyp: Path | None, hyp_set: list[str] | None) -> dict[str, Any]:
    """Hyperparameter overrides: the config's, then ``--hyp`` file's, then ``--hyp-set`` pairs."""
    if hyp is not None:
        from scabench.detectors.config import load_hyp_file

        try:
            overrides.update(load_hyp_file(hyp))
        except ValueError as exc:
            fail(str(exc))
    overrides.update(_parse_pairs(hyp_set, "--hyp-set"))
    return overrides


def val_command(
    weights: Path = typer.Option(..., "--weights", "-w", help="A last.pt or best.pt checkpoint written by scabench train."),
    data: Optional[str] = typer.Option(None, help="Dataset to evaluate on (its val split); default: the checkpoint's."),
    img_size: Optional[int] = typer.Option(None, help="Evaluation size; default: the checkpoint's."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    iou: float = typer.Option(0.65, help="NMS IoU threshold (0.65 reported, 0.6 during training)."),
    device: str = typer.Option("auto", callback=device_option, help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(2, help="Data-loader worker processes."),
    raw: bool = typer.Option(False, "--raw", help="Evaluate the raw weights instead of the EMA."),
    bad_data: str = typer.Option("error", help="error | skip."),
    save_dets: Optional[Path] = typer.Option(None, "--save-dets", help="Also write the COCO results list here."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Evaluate a checkpoint on a dataset's validation split: COCO metrics, P, R and AP per class."""
    import torch

    from scabench.detectors import BadDataError, load_checkpoint, model_from_checkpoint
    from scabench.detectors import evaluate as ev
    from scabench.detectors.data import ImageStore, ValSet, collate_val, load_dataset
    from scabench.devices import resolve_device

    if bad_data not in ("error", "skip"):
        fail(f"--bad-data must be error or skip, got {bad_data!r}")
    if not 0 < iou <= 1:
        fail(f"--iou must be in (0, 1], got {iou}")
    try:
        ckpt = load_checkpoint(weights)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    cfg = ckpt["config"]
    size = img_size or cfg["img_size"]
    if size % 32:
        fail(f"--img-size must be a multiple of 32, got {size}")
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        fail(str(exc))
    try:
        info = load_dataset(
            data or cfg["data"], bad_data=bad_data, train_size=cfg["train_size"], val_size=cfg["val_size"],
            data_seed=cfg["data_seed"], splits=("val",), tile_size=cfg.get("tile_size", 400), tile_overlap=cfg.get("tile_overlap", 0.25),
        )  # fmt: skip
        store = ImageStore(info.val.records, size, info.problems)
    except (BadDataError, ValueError) as exc:
        fail(str(exc))
    if info.num_classes != ckpt["resolved"]["num_classes"]:
        fail(f"the checkpoint has {ckpt['resolved']['num_classes']} classes but {info.root} has {info.num_classes}")
    model = model_from_checkpoint(ckpt, "model" if raw else "ema").to(dev)
    loader = torch.utils.data.DataLoader(ValSet(store, size), batch_size=batch_size, collate_fn=collate_val, num_workers=workers)
    dets = ev.predict(model, loader, dev, info.category_ids, iou, amp=dev.type == "cuda")
    try:
        metrics = ev.evaluate_coco(info.coco_ground_truth("val"), dets, details=True)
    except ValueError as exc:  # BadDataError included: e.g. a non-finite predicted box
        fail(f"{weights}: its predictions cannot be evaluated: {exc}", code=1)
    if save_dets is not None:
        save_dets.write_text(json.dumps(dets))
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        console.print(_metrics_table(f"{weights} on {info.root} ({len(store)} images, NMS IoU {iou})", metrics))
        console.print(_class_table(metrics, len(store)))
        if info.problems.total:
            console.print(info.problems.summary())


def evaluate_command(
    gt_json: Path = typer.Argument(..., help="COCO ground truth (instances json)."),
    dets_json: list[Path] = typer.Argument(..., help="COCO results lists: [{image_id, category_id, bbox, score}]; several with --bootstrap."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Resample the images N times: each run's spread, and each run's paired difference to the first."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object (with --bootstrap: the rows)."),
) -> None:
    """COCO box metrics AP, AP50, AP65, AP75, AP80, AP90, APs, APm, APl (fractions) of a results file.

    With ``--bootstrap N``: the evaluation noise, i.e. how much the metrics move when the
    validation images are drawn again (the same draw for every run, so differences stay paired).
    """
    from scabench.detectors import evaluate as ev

    if bootstrap < 0:
        fail(f"--bootstrap must be >= 0, got {bootstrap}")
    if len(dets_json) > 1 and not bootstrap:
        fail("several detection files go with --bootstrap N (one file is evaluated at a time otherwise)")
    try:  # every input is checked: a bad entry is a BadDataError (a ValueError) naming file, entry and key
        if bootstrap:
            runs = {str(p): ev.load_detections(p) for p in dets_json}
            rows = ev.bootstrap_over_images(gt_json, runs, n=bootstrap)
        else:
            metrics = ev.evaluate_coco(gt_json, dets_json[0])
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if bootstrap:
        _print_bootstrap(rows, [str(p) for p in dets_json], as_json)
    elif as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        console.print(_metrics_table(f"{dets_json[0]} vs {gt_json}", metrics))


def _print_bootstrap(rows: list[dict], runs: list[str], as_json: bool) -> None:
    """Per run and metric: mean, std and 95 % range over the resamples; then each run minus the first."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    metrics = ["AP", "AP50", "AP65", "AP75", "AP80", "AP90"]
    if as_json:
        sys.stdout.write(frame.to_json(orient="records") + "\n")
        return
    spread = Table(title=f"evaluation noise: {frame['resample'].nunique()} resamples of the images (AP points)")
    for column in ("run", "metric", "mean", "std", "95% range"):
        spread.add_column(column)
    wide = frame.pivot(index="resample", columns="run", values=metrics)
    for run in runs:
        for m in metrics:
            v = wide[(m, run)] * 100
            spread.add_row(run, m, f"{v.mean():.2f}", f"{v.std(ddof=1):.2f}", f"[{v.quantile(0.025):.2f}, {v.quantile(0.975):.2f}]")
        if run != runs[0]:
            for m in metrics:
                d = (wide[(m, run)] - wide[(m, runs[0])]) * 100
                spread.add_row(f"{run} - first", m, f"{d.mean():+.2f}", f"{d.std(ddof=1):.2f}", f"[{d.quantile(0.025):+.2f}, {d.quantile(0.975):+.2f}]")
    console.print(spread)


def register_train_commands(app: typer.Typer) -> None:
    """Add ``train``, ``val`` and ``evaluate`` to the scabench app."""
    app.command("train", cls=defaults_of("scabench.detectors.config:TrainConfig"))(train_command)
    app.command("val")(val_command)
    app.command("evaluate")(evaluate_command)
