"""Training criteria on (soft) multi-hot targets; each averages over every returned row and class."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class BCE(nn.Module):
    """Binary cross-entropy with logits, mean over rows and classes (plain BCE, used for the ECG datasets)."""

    def __init__(self, train_labels: np.ndarray | None = None):
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)


class WeightedBCE(nn.Module):
    """Weighted BCE of Wang et al. (CVPR 2017), used by the paper for ChestX-ray14.

    For class c with P_c positive and N_c negative training labels, the positive term is weighted by
    (P_c + N_c) / P_c and the negative term by (P_c + N_c) / N_c (each term by its inverse proportion), from the
    training labels the model sees (after corruption). Wang et al. compute P and N per batch; we use the whole
    training split, which gives the same expectation without the noise of a 32-image batch (and no division by
    zero for a class absent from a batch). A class with no positives (or no negatives) gets weight 1 on the
    missing side. Mean over rows and classes.
    """

    def __init__(self, train_labels: np.ndarray):
        super().__init__()
        y = np.asarray(train_labels, dtype=np.float64)
        n = float(len(y))
        pos = y.sum(axis=0)
        neg = n - pos
        w_pos = np.where(pos > 0, n / np.maximum(pos, 1e-12), 1.0)
        w_neg = np.where(neg > 0, n / np.maximum(neg, 1e-12), 1.0)
        self.register_buffer("w_pos", torch.tensor(w_pos, dtype=torch.float32))
        self.register_buffer("w_neg", torch.tensor(w_neg, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # -[w_pos * t * log s(z) + w_neg * (1 - t) * log(1 - s(z))], with log s(z) = -softplus(-z)
        pos_term = self.w_pos * targets * F.softplus(-logits)
        neg_term = self.w_neg * (1.0 - targets) * F.softplus(logits)
        return (pos_term + neg_term).mean()


BY_NAME = {"bce": BCE, "weighted_bce": WeightedBCE}


def dataset_default(loss: str, train_labels: np.ndarray) -> nn.Module:
    """``loss=auto``: the criterion the dataset names in ``dataset.loss_default`` (bce or weighted_bce)."""
    if loss not in BY_NAME:
        from .checks import ConfigError

        raise ConfigError(
            f"dataset.loss_default: {loss!r} is unknown; allowed: {', '.join(BY_NAME)}", key="dataset.loss_default"
        )
    return BY_NAME[loss](train_labels)
