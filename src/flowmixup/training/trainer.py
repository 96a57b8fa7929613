"""``run(cfg) -> summary``: one training run, top to bottom.

data -> label corruption -> backbone -> regularizer -> Adam + ReduceLROnPlateau -> for each epoch: train, evaluate
validation AND test, checkpoint -> per-class table, predictions, and ``summary.json`` written last (its presence
means the run ended). Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.base import ArrayDataset, DataError, LabeledArrays, batch_collate
from ..data.corruption import changed_fraction, corrupt_labels
from ..io import atomic_path, write_json, write_text
from .checks import check_config
from .losses import BCE, WeightedBCE
from .loggers import make_logger
from .metrics import Scores, normalized_variance, score, sigmoid

log = logging.getLogger("flowmixup")

LOSSES = {"bce": BCE, "weighted_bce": WeightedBCE}
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "val_macro_f1", "test_auc", "test_macro_f1"]


class NonFiniteLoss(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu or auto")
    return torch.device(name)


def call_target(node, **extra):
    """Call ``node._target_`` with the node's other keys (resolved, as plain containers) and ``extra``.

    Unlike ``hydra.utils.instantiate`` this lets the callee's own exception through unwrapped, so a bad value
    reaches the user as the callee's one-line message.
    """
    kwargs = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    kwargs = {k: v for k, v in kwargs.items() if k != "name" and not k.startswith("_")}
    return hydra.utils.get_object(node["_target_"])(**kwargs, **extra)


def load_data(cfg: DictConfig) -> LabeledArrays:
    data = call_target(cfg.dataset.loader)
    for split in ("train", "val", "test"):
        if len(data.splits[split]) == 0:
            raise DataError(f"dataset={cfg.dataset.name}: the {split} split is empty; check the dataset's size and split settings")
    return data


def build_model(cfg: DictConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    return call_target(cfg.backbone, in_channels=in_channels, num_classes=num_classes)


def resolve_mix_points(cfg: DictConfig, model: torch.nn.Module) -> list[str] | None:
    if "mix_points" not in cfg.regularizer:
        return None
    if cfg.regularizer.mix_points is not None:
        return list(cfg.regularizer.mix_points)
    if not hasattr(model, "paper_mix_points"):
        raise ValueError(f"backbone={cfg.backbone.name} has no default mix points; set regularizer.mix_points=[...]")
    return model.paper_mix_points()


def build_regularizer(cfg: DictConfig, model: torch.nn.Module, mix_points, generator: torch.Generator):
    kwargs = OmegaConf.to_container(cfg.regularizer, resolve=True)
    if mix_points is not None:
        kwargs["mix_points"] = mix_points
    return call_target(kwargs, model=model, generator=generator)


def build_loss(cfg: DictConfig, train_labels: np.ndarray) -> torch.nn.Module:
    name = cfg.loss.name if cfg.loss.name != "auto" else cfg.dataset.get("loss_default", "bce")
    if name not in LOSSES:
        raise ValueError(f"loss={name} is unknown; allowed: auto, {', '.join(LOSSES)}")
    return LOSSES[name](train_labels)


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def save_predictions(path: Path, y_true: np.ndarray, y_score: np.ndarray, class_names: list[str], epoch: int) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, y_true=y_true.astype(np.uint8), y_score=y_score.astype(np.float32),
                     class_names=np.array(class_names), epoch=np.array(epoch))


# ----------------------------------------------------------------------------------------------------------------
# one epoch
# ----------------------------------------------------------------------------------------------------------------
def train_epoch(reg, model, loader, criterion, optimizer, device, cfg, epoch: int) -> float:
    model.train()
    precision_bf16 = cfg.trainer.precision == "bf16"
    check_every = 1 if device.type == "cpu" else 50
    pending: list[torch.Tensor] = []
    total, steps = torch.zeros((), device=device), 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.trainer.epochs}", leave=False,
               disable=not cfg.trainer.progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar, start=1):
        x = to_input(x, device, cfg.trainer.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_bf16):
            logits, targets = reg(x, y)
        loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pending.append(loss.detach())
        if step % check_every == 0 or step == len(loader):
            losses = torch.stack(pending)
            bad = ~torch.isfinite(losses)
            if bool(bad.any()):
                first = step - len(pending) + 1 + int(bad.nonzero()[0, 0])
                raise NonFiniteLoss(f"non-finite training loss at epoch {epoch}, step {first}")
            total += losses.sum()
            steps += len(pending)
            pending = []
            if cfg.trainer.progress:
                bar.set_postfix(loss=f"{float(total) / steps:.4f}", refresh=False)
    bar.close()
    return float(total) / max(steps, 1)


@torch.inference_mode()
def evaluate(model, loader, criterion, device, cfg) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss against the split's labels, and (labels, probabilities) as numpy arrays."""
    model.eval()
    loss_sum, n = 0.0, 0
    probs, labels = [], []
    for x, y in loader:
        x = to_input(x, device, cfg.trainer.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16"):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(criterion(logits, y)) * len(y)
        n += len(y)
        probs.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    return loss_sum / max(n, 1), np.concatenate(labels), np.concatenate(probs)


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train one configuration; write every output into ``run_dir`` (the Hydra run dir by default)."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    check_config(cfg)
    done = run_dir / "summary.json"
    if cfg.trainer.skip_finished and done.is_file():
        summary = json.loads(done.read_text())
        log.info("%s already finished (status %s): skipped", run_dir, summary.get("status"))
        return summary
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(cfg.trainer.device)

    # data and labels: corruption hits train and validation, never test
    data = load_data(cfg)
    names = data.class_names
    y_clean = np.asarray(data.y, dtype=np.uint8)
    idx = data.splits
    y_train = corrupt_labels(y_clean[idx["train"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed)
    y_val = corrupt_labels(y_clean[idx["val"]], cfg.noise, cfg.corruption.kind, seed=cfg.corruption.seed + 1)
    y_used = y_clean.astype(np.float32)
    y_used[idx["train"]] = y_train
    y_used[idx["val"]] = y_val
    corrupted = changed_fraction(y_clean[idx["train"]], y_train)
    if len(idx["train"]) < cfg.trainer.batch_size:
        raise DataError(f"the train split has {len(idx['train'])} samples, fewer than trainer.batch_size={cfg.trainer.batch_size}")

    # model, regularizer, loss, optimiser
    sample_shape = np.asarray(data.x[np.array([0])]).shape
    model = build_model(cfg, in_channels=sample_shape[1], num_classes=len(names)).to(device)
    if cfg.trainer.channels_last and len(sample_shape) == 4:
        model = model.to(memory_format=torch.channels_last)
    mix_points = resolve_mix_points(cfg, model)
    reg_gen = torch.Generator().manual_seed(cfg.seed + 1)
    reg = build_regularizer(cfg, model, mix_points, reg_gen)
    criterion = build_loss(cfg, y_train).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr, betas=tuple(cfg.trainer.betas),
                                 weight_decay=cfg.trainer.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.trainer.plateau_factor,
                                                           patience=cfg.trainer.plateau_patience)

    # the resolved config, with the mix points actually used
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if mix_points is not None:
        resolved["regularizer"]["mix_points"] = list(mix_points)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))

    loader_gen = torch.Generator().manual_seed(cfg.seed + 2)
    pin = device.type == "cuda"
    common = dict(collate_fn=batch_collate, num_workers=cfg.trainer.num_workers, pin_memory=pin,
                  persistent_workers=cfg.trainer.num_workers > 0)
    train_loader = DataLoader(ArrayDataset(data.x, y_used, idx["train"]), batch_size=cfg.trainer.batch_size,
                              shuffle=True, drop_last=True, generator=loader_gen, **common)
    val_loader = DataLoader(ArrayDataset(data.x, y_used, idx["val"]), batch_size=cfg.trainer.eval_batch_size, **common)
    test_loader = DataLoader(ArrayDataset(data.x, y_used, idx["test"]), batch_size=cfg.trainer.eval_batch_size, **common)

    log.info("dataset=%s (%d train / %d val / %d test, %d classes) backbone=%s %s noise=%s (%.1f%% of training "
             "labels changed) device=%s", cfg.dataset.name, len(idx["train"]), len(idx["val"]), len(idx["test"]),
             len(names), cfg.backbone.name, reg, cfg.noise, 100 * corrupted, device)

    logger = make_logger(cfg, run_dir, resolved)
    history: list[dict] = []
    per_epoch: list[Scores] = []
    best = {"auc": (-1.0, None), "macro_f1": (-1.0, None)}  # metric -> (value, test probabilities)
    best_val = (math.inf, -1)
    last_probs = None
    y_test = None
    status, reason = "ok", None
    try:
        for epoch in range(1, cfg.trainer.epochs + 1):
            t0 = time.time()
            train_loss = train_epoch(reg, model, train_loader, criterion, optimizer, device, cfg, epoch)
            val_loss, yv, pv = evaluate(model, val_loader, criterion, device, cfg)
            _, y_test, last_probs = evaluate(model, test_loader, criterion, device, cfg)
            if not math.isfinite(val_loss):
                raise NonFiniteLoss(f"non-finite validation loss at epoch {epoch}")
            vs = score(yv, pv, names, cfg.metrics.threshold)
            ts = score(y_test, last_probs, names, cfg.metrics.threshold)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step(val_loss)
            per_epoch.append(ts)
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss, "val_auc": vs.auc,
                   "val_macro_f1": vs.macro_f1, "test_auc": ts.auc, "test_macro_f1": ts.macro_f1}
            history.append(row)
            for metric in best:
                value = getattr(ts, metric)
                if math.isfinite(value) and value > best[metric][0]:
                    best[metric] = (value, last_probs.copy())
            if val_loss < best_val[0]:
                best_val = (val_loss, epoch)
            write_csv(run_dir / "metrics.csv", history, METRIC_COLUMNS)
            logger.log(row)
            log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  test_auc %.4f  test_macro_f1 %.4f  lr %.1e  (%.1fs)",
                     epoch, cfg.trainer.epochs, train_loss, val_loss, ts.auc, ts.macro_f1, lr, time.time() - t0)
            with atomic_path(run_dir / "checkpoint.pt") as tmp:
                torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict()}, tmp)
    except NonFiniteLoss as err:
        status, reason = "failed", str(err)
        log.error("%s; stopping (the last good checkpoint is kept in %s)", err, run_dir)
    finally:
        logger.finish()

    summary = _summarize(cfg, resolved, history, per_epoch, best, best_val, corrupted, status, reason, started)
    if history:
        primary = cfg.dataset.primary_metric
        best_probs = best[primary][1] if best[primary][1] is not None else last_probs
        save_predictions(run_dir / "predictions_test_last.npz", y_test, last_probs, names, len(history))
        save_predictions(run_dir / "predictions_test_best.npz", y_test, best_probs, names,
                         int(np.nanargmax([getattr(s, primary) for s in per_epoch])) + 1)
        write_csv(run_dir / "per_class.csv", _per_class_rows(names, y_train, y_test, per_epoch, best_val[1]),
                  ["class", "train_count", "train_single_count", "test_count", "test_auc_best", "test_f1_best",
                   "test_auc_last", "test_f1_last", "test_auc_at_best_val", "test_f1_at_best_val"])
    write_json(run_dir / "summary.json", summary)
    return summary


def _per_class_rows(names, y_train, y_test, per_epoch: list[Scores], best_val_epoch: int) -> list[dict]:
    y_train = np.asarray(y_train) >= 0.5
    single = y_train.sum(axis=1) == 1
    auc_epoch = int(np.nanargmax([s.auc for s in per_epoch])) if any(np.isfinite(s.auc) for s in per_epoch) else -1
    f1_epoch = int(np.nanargmax([s.macro_f1 for s in per_epoch])) if any(np.isfinite(s.macro_f1) for s in per_epoch) else -1
    bv = per_epoch[best_val_epoch - 1] if best_val_epoch >= 1 else per_epoch[-1]
    rows = []
    for c, name in enumerate(names):
        rows.append({
            "class": name,
            "train_count": int(y_train[:, c].sum()),
            "train_single_count": int((y_train[:, c] & single).sum()),
            "test_count": int((np.asarray(y_test)[:, c] >= 0.5).sum()),
            "test_auc_best": per_epoch[auc_epoch].per_class_auc[c],
            "test_f1_best": per_epoch[f1_epoch].per_class_f1[c],
            "test_auc_last": per_epoch[-1].per_class_auc[c],
            "test_f1_last": per_epoch[-1].per_class_f1[c],
            "test_auc_at_best_val": bv.per_class_auc[c],
            "test_f1_at_best_val": bv.per_class_f1[c],
        })
    return rows


def _summarize(cfg, resolved, history, per_epoch, best, best_val, corrupted, status, reason, started) -> dict:
    reg = resolved["regularizer"]
    test_auc = [r["test_auc"] for r in history]
    test_f1 = [r["test_macro_f1"] for r in history]
    n_var = int(cfg.metrics.variance_epochs)
    var_auc, used = normalized_variance(test_auc, n_var)
    var_f1, _ = normalized_variance(test_f1, n_var)
    at = history[best_val[1] - 1] if best_val[1] >= 1 else None
    nan = float("nan")
    summary = {
        "status": status,
        "dataset": cfg.dataset.name,
        "primary_metric": cfg.dataset.primary_metric,
        "backbone": cfg.backbone.name,
        "regularizer": reg["name"],
        "alpha": reg.get("alpha"),
        "keep_original": reg.get("keep_original"),
        "mix_points": reg.get("mix_points"),
        "noise": float(cfg.noise),
        "corruption_kind": cfg.corruption.kind,
        "seed": int(cfg.seed),
        "epochs": len(history),
        "epochs_planned": int(cfg.trainer.epochs),
        "best_test_auc": max(test_auc, default=nan),
        "last_test_auc": test_auc[-1] if history else nan,
        "best_test_macro_f1": max(test_f1, default=nan),
        "last_test_macro_f1": test_f1[-1] if history else nan,
        "best_val_epoch": best_val[1] if history else None,
        "test_auc_at_best_val": at["test_auc"] if at else nan,
        "test_macro_f1_at_best_val": at["test_macro_f1"] if at else nan,
        "variance_auc": var_auc,
        "variance_macro_f1": var_f1,
        "variance_epochs": used,
        "corrupted_fraction": corrupted,
        "auc_excluded_classes": per_epoch[-1].auc_excluded if per_epoch else [],
        "f1_excluded_classes": per_epoch[-1].f1_excluded if per_epoch else [],
        "wall_time_s": round(time.time() - started, 2),
    }
    if reason:
        summary["reason"] = reason
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
