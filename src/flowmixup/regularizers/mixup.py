"""Mixup (Zhang et al., ICLR 2018) for multi-label targets: mix the inputs, mix the multi-hot targets linearly."""

from __future__ import annotations

import torch
from torch import nn

from .base import Regularizer, check_alpha, mix


class Mixup(Regularizer):
    """``Mixup(model, alpha)``: one ``lam ~ Beta(alpha, alpha)`` and one partner permutation per step;
    ``x~ = lam x + (1 - lam) x[perm]``, ``y~ = lam y + (1 - lam) y[perm]`` (no one-hot encoding: y is multi-hot)."""

    def __init__(self, model: nn.Module, alpha: float = 1.0, generator: torch.Generator | None = None):
        super().__init__(model, generator)
        self.alpha = check_alpha(alpha)

    def train_forward(self, x: torch.Tensor, y: torch.Tensor):
        lam, perm = self.draw(x.shape[0], x.device)
        self.record("input", lam, perm)
        return self.model(mix(x, lam, perm)), mix(y.to(torch.get_default_dtype()), lam, perm)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha})"
