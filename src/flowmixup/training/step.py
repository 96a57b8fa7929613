"""One optimisation step, shared by the training loop (:mod:`.loop`), the captured CUDA graph (:mod:`.graph`) and the
benchmarks (:mod:`flowmixup.perf`); it imports nothing of the trainer's, so any of them may import it."""

from __future__ import annotations

import torch


def train_step(
    reg,
    criterion,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    bf16: bool = False,
    autocast_cache: bool | None = None,
) -> torch.Tensor:
    """One optimisation step on a batch already on its device: the regularizer's forward (under bf16 autocast if
    asked; ``autocast_cache=False`` when a CUDA graph captures it, as PyTorch requires), the criterion over every
    returned row, backward, optimiser step. Returns the loss (not synchronised)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=autocast_cache):
        logits, targets = reg(x, y)
    loss = criterion(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
