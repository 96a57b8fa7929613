"""Empirical risk minimisation: the plain model, no mixing (the paper's baseline)."""

from __future__ import annotations

import torch

from .base import Regularizer


class ERM(Regularizer):
    """``ERM(model)``: ``reg(x, y)`` returns ``model(x), y`` in training and in eval mode."""

    mixes = False

    def train_forward(self, x: torch.Tensor, y: torch.Tensor):
        return self.model(x), y
