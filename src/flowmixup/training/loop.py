"""One training epoch (its step: :func:`.step.train_step`, re-exported here), one evaluation."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from .. import faults
from ..progress import progress
from .build import Built, to_input
from .records import RunState
from .signals import SignalWatch, StopRequested
from .step import train_step


class NonFiniteLoss(RuntimeError):
    pass


class _LossWatch:
    """Sums the step losses on the device and checks them for NaN/inf every ``every`` steps (each check waits for
    the device, so not after every step on a GPU)."""

    def __init__(self, state: RunState, device: torch.device, epoch: int):
        self.state, self.epoch, self.pending = state, epoch, []
        self.total = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
        self.every = 1 if device.type == "cpu" else 50

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)
        self.total += loss.double()

    def flush(self) -> None:
        if self.pending:
            bad = ~torch.isfinite(torch.stack(self.pending))
            if bool(bad.any()):
                first = self.state.step - len(self.pending) + 1 + int(bad.nonzero()[0, 0])
                raise NonFiniteLoss(f"non-finite training loss at epoch {self.epoch}, step {first}")
            self.pending.clear()


def train_epoch(b: Built, state: RunState, cfg: DictConfig, watch: SignalWatch, save: Callable[[], None]) -> float:
    """Train from ``state.step`` to the end of epoch ``state.epoch + 1``; return its mean training loss.

    On a signal, the step finishes, ``save()`` writes a mid-epoch checkpoint and :class:`StopRequested` is raised."""
    b.model.train()
    epoch, loader = state.epoch + 1, b.loaders["train"]
    n_batches = state.step + len(loader)
    losses = _LossWatch(state, b.device, epoch)
    bar = progress(
        loader,
        desc=f"epoch {epoch}/{cfg.trainer.epochs}",
        leave=False,
        initial=state.step,
        total=n_batches,
        unit="steps",
        enabled=cfg.trainer.progress,
        dynamic_ncols=True,
    )
    speed, started = state.speed, time.perf_counter()
    asked = started
    for x, y in bar:
        speed.data_wait_s += time.perf_counter() - asked  # the loader kept up if this stays near zero
        x = to_input(x, b.device, cfg.trainer.channels_last)
        y = y.to(b.device, non_blocking=True)
        if b.graph_step is not None:  # trainer.cuda_graph: the captured step, replayed
            losses.add(b.graph_step(x, y))
        else:
            losses.add(train_step(b.reg, b.criterion, b.optimizer, x, y, cfg.trainer.precision == "bf16"))
        state.step += 1
        speed.steps, speed.samples = speed.steps + 1, speed.samples + len(y)
        faults.after_step(epoch, state.step)
        if state.step % losses.every == 0 or state.step == n_batches:
            losses.flush()
            if cfg.trainer.progress:
                bar.set_postfix(loss=f"{float(losses.total) / state.step:.4f}", refresh=False)
        if watch.signum is not None and state.step < n_batches:
            losses.flush()
            state.loss_sum = float(losses.total)
            save()
            bar.close()
            raise StopRequested(watch.signum)
        asked = time.perf_counter()
    speed.train_s += time.perf_counter() - started
    bar.close()
    return float(losses.total) / max(n_batches, 1)


@torch.inference_mode()
def evaluate(b: Built, split: str, cfg: DictConfig) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss of ``split`` ("val" or "test") against its labels, and (labels, probabilities) as numpy arrays."""
    b.model.eval()
    loss_sum, n = 0.0, 0
    probs, labels = [], []
    for x, y in b.loaders[split]:
        x = to_input(x, b.device, cfg.trainer.channels_last)
        y = y.to(b.device, non_blocking=True)
        with torch.autocast(b.device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16"):
            logits = b.model(x)
        logits = logits.float()
        loss_sum += float(b.criterion(logits, y)) * len(y)
        n += len(y)
        probs.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    return loss_sum / max(n, 1), np.concatenate(labels), np.concatenate(probs)


def extra_scores(b: Built, y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """Each extra metric (``dataset.extra_metrics``) on one split: name -> float."""
    y01 = (np.asarray(y_true) >= 0.5).astype(np.uint8)
    return {name: float(fn(y01, y_score, list(b.names))) for name, fn in b.extra_metrics.items()}
