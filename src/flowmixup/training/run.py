"""``run(cfg) -> summary``: one training run, top to bottom.

check -> lock the run directory -> build (data, corrupted labels, model, regularizer, loss, optimiser) -> resume
from its checkpoint -> for each epoch: train, evaluate validation AND test, checkpoint, metrics.csv -> per-class
table, predictions, and ``summary.json`` written last (its presence means the run ended).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..data.expert_labels import MIN_POSITIVES
from ..io import on_write_failure, write_json, write_text
from .build import Built, build
from .checkpoint import (
    CHECKPOINT,
    capture_rng,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temps,
    restore_rng,
    save_rotating,
)
from .checks import ConfigError, check_config, check_writable
from .expert import EXPERT_COLUMNS, EXPERT_METRICS, expert_row, expert_summary, write_expert_per_class
from .loggers import make_logger
from .loop import NonFiniteLoss, evaluate, extra_scores, train_epoch
from .metrics import score
from .records import RunState, Summary, metric_columns, summarize, write_csv, write_final_files
from .rundir import RunDirLock
from .signals import SignalWatch, StopRequested

log = logging.getLogger("flowmixup")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> Summary:
    """Train one configuration; write every output into ``run_dir`` (the Hydra run dir by default).

    If ``run_dir`` holds a checkpoint of the same configuration and no ``summary.json``, the run resumes from it
    (``trainer.resume=auto``, the default): an interrupted run ends with the same metrics as an uninterrupted one.
    """
    run_dir = Path(run_dir if run_dir is not None else _hydra_run_dir())
    check_config(cfg)
    check_writable(run_dir, "hydra.run.dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(run_dir):
        started = time.time()
        if cfg.trainer.skip_finished and (run_dir / "summary.json").is_file():
            return _already_finished(run_dir)
        b = build(cfg)
        state = resume(cfg, b, run_dir)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(b.resolved)))
        log.info(
            "dataset=%s (%d train / %d val / %d test, %d classes) backbone=%s %s noise=%s (%.1f%% of training "
            "labels changed) device=%s",
            cfg.dataset.name,
            *(len(b.data.splits[s]) for s in ("train", "val", "test")),
            len(b.names),
            cfg.backbone.name,
            b.reg,
            cfg.noise,
            100 * b.labels.corrupted,
            b.device,
        )
        status, reason = train(cfg, b, state, run_dir)
        extra, facts = list(b.extra_metrics), None
        if b.expert is not None:  # dataset.expert_labels: the expert metrics' best / last / at-best-val values
            extra, facts = (
                extra + EXPERT_METRICS,
                expert_summary(b.expert, b.names, state.expert, state.history, state.best_val[1]),
            )
        summary = summarize(cfg, b.resolved, state, b.labels.corrupted, status, reason, started, extra, facts)
        with on_write_failure(
            kept=f"the training itself is done and kept in {run_dir / CHECKPOINT}",
            todo="free some space and run the same command again: it resumes from that "
            "checkpoint and writes the final files",
        ):
            if state.history:
                write_final_files(
                    run_dir,
                    state,
                    b.names,
                    cfg.dataset.primary_metric,
                    b.labels.clean[b.data.splits["train"]],
                    b.labels.train,
                )
                if b.expert is not None and state.expert:
                    write_expert_per_class(run_dir, b.names, b.expert, state.expert, state.history, state.best_val[1])
            write_json(run_dir / "summary.json", summary)
        return summary


def _hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def _already_finished(run_dir: Path) -> Summary:
    summary = json.loads((run_dir / "summary.json").read_text())
    log.info("%s already finished (status %s): skipped", run_dir, summary.get("status"))
    return summary


def checkpoint(b: Built, state: RunState) -> dict:
    """The checkpoint: a plain dict of tensors and primitives (see :mod:`.checkpoint`)."""
    return {
        "config": b.resolved,
        "state": state.to_dict(),
        "model": b.model.state_dict(),
        "optimizer": b.optimizer.state_dict(),
        "scheduler": b.scheduler.state_dict(),
        "rng": capture_rng(b.generators),
    }


def resume(cfg: DictConfig, b: Built, run_dir: Path) -> RunState:
    """A fresh state, or (``trainer.resume`` auto/true and a checkpoint there) the checkpoint's, with the model,
    optimiser, scheduler and every random stream as they were when it was saved."""
    path = latest_checkpoint(run_dir)
    mode = str(cfg.trainer.resume).lower()
    if mode == "true" and not path.is_file():
        raise ConfigError(f"trainer.resume: true but {path} does not exist; allowed: auto, false", key="trainer.resume")
    state = RunState()
    if mode in ("auto", "true") and path.is_file():
        ckpt = load_checkpoint(path)
        check_resumable(ckpt["config"], b.resolved, path)
        b.model.load_state_dict(ckpt["model"])
        b.optimizer.load_state_dict(ckpt["optimizer"])
        b.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"], b.generators)
        state = RunState.from_dict(ckpt["state"])
        log.info("resuming %s from epoch %d, step %d", run_dir, state.epoch + 1, state.step)
    remove_stale_temps(run_dir)
    return state


def train(cfg: DictConfig, b: Built, state: RunState, run_dir: Path) -> tuple[str, str | None]:
    """The epoch loop: ("ok", None), or ("failed", why) on a non-finite loss. A signal saves and exits 128 + signal."""
    logger = make_logger(cfg, run_dir, b.resolved)
    columns = metric_columns(list(b.extra_metrics)) + (EXPERT_COLUMNS if b.expert is not None else [])
    save = lambda: save_rotating(checkpoint(b, state), run_dir)  # noqa: E731
    try:
        with SignalWatch() as watch:
            while state.epoch < cfg.trainer.epochs:
                row = run_epoch(cfg, b, state, watch, save)
                save()
                with on_write_failure(
                    kept=f"the checkpoint of epoch {state.epoch} is saved in {run_dir / CHECKPOINT}",
                    todo="free some space and run the same command again to resume from it",
                ):
                    write_csv(run_dir / "metrics.csv", state.history, columns)
                logger.log(row)
                if watch.signum is not None and state.epoch < cfg.trainer.epochs:
                    raise StopRequested(watch.signum)
    except NonFiniteLoss as err:
        log.error("%s; stopping (the last good checkpoint is kept in %s)", err, run_dir)
        return "failed", str(err)
    except StopRequested as stop:
        where = f"epoch {state.epoch + 1}, step {state.step}" if state.step else f"the end of epoch {state.epoch}"
        log.warning(
            "%s received: checkpoint saved at %s in %s; run the same command again (same run directory) to resume",
            stop,
            where,
            run_dir,
        )
        watch.forward()
        raise SystemExit(128 + stop.signum) from None
    finally:
        logger.finish()
    return "ok", None


def run_epoch(cfg: DictConfig, b: Built, state: RunState, watch: SignalWatch, save) -> dict:
    """Train epoch ``state.epoch + 1`` (from its saved step), evaluate validation and test, step the scheduler,
    record the epoch in ``state``; its metrics.csv row."""
    epoch, t0 = state.epoch + 1, time.time()
    if state.perm is None:
        state.perm = torch.randperm(b.batches.n, generator=b.generators["batches"])
        state.step, state.loss_sum = 0, 0.0
    b.batches.perm, b.batches.start = state.perm, state.step
    train_loss = train_epoch(b, state, cfg, watch, save)
    val_loss, yv, pv = evaluate(b, "val", cfg)
    _, state.y_test, probs = evaluate(b, "test", cfg)
    if not math.isfinite(val_loss):
        raise NonFiniteLoss(f"non-finite validation loss at epoch {epoch}")
    vs = score(yv, pv, b.names, cfg.metrics.threshold)
    ts = score(state.y_test, probs, b.names, cfg.metrics.threshold)
    lr = float(b.optimizer.param_groups[0]["lr"])  # a device tensor under trainer.cuda_graph
    b.scheduler.step(val_loss)
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_auc": vs.auc,
        "val_macro_f1": vs.macro_f1,
        "test_auc": ts.auc,
        "test_macro_f1": ts.macro_f1,
    }
    for split, (y, p) in (("val", (yv, pv)), ("test", (state.y_test, probs))):
        row.update({f"{split}_{name}": v for name, v in extra_scores(b, y, p).items()})
    if b.expert is not None:  # dataset.expert_labels: the expert-labelled test images against their expert labels
        _, ye, pe = evaluate(b, "expert", cfg)
        es = score(ye, pe, b.names, cfg.metrics.threshold)
        row.update(expert_row(es, b.expert))
        state.expert.append(es)
    state.record(row, ts, probs)
    log.info(
        "epoch %d/%d  train_loss %.4f  val_loss %.4f  test_auc %.4f  test_macro_f1 %.4f  lr %.1e (%.1fs)",
        epoch,
        cfg.trainer.epochs,
        train_loss,
        val_loss,
        ts.auc,
        ts.macro_f1,
        lr,
        time.time() - t0,
    )
    if b.expert is not None:
        log.info(
            "epoch %d/%d  test_expert_auc %.4f  test_expert_macro_f1 %.4f (%d classes with >= %d expert positives; "
            "all classes: %.4f, %.4f)",
            epoch,
            cfg.trainer.epochs,
            row["test_expert_auc"],
            row["test_expert_macro_f1"],
            int(b.expert.in_mean.sum()),
            MIN_POSITIVES,
            row["test_expert_auc_all"],
            row["test_expert_macro_f1_all"],
        )
    return row
