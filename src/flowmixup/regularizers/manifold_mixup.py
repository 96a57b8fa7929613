"""Manifold Mixup (Verma et al., ICML 2019) for multi-label targets.

Each training step draws one mix point uniformly from ``mix_points`` (``"input"`` is the input itself), one
``lam ~ Beta(alpha, alpha)`` and one partner permutation, and replaces the hidden state at that point by
``lam h + (1 - lam) h[perm]``; the multi-hot targets are mixed the same way.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import check_alpha, mix
from .hooks import HookedRegularizer


class ManifoldMixup(HookedRegularizer):
    def __init__(
        self,
        model: nn.Module,
        mix_points: Sequence[str],
        alpha: float = 2.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(model, mix_points, generator)
        self.alpha = check_alpha(alpha)

    def sample_point(self) -> int:
        return int(torch.randint(len(self.mix_points), (1,), generator=self.generator).item())

    def train_forward(self, x: torch.Tensor, y: torch.Tensor):
        k = self.sample_point() if self.static is None else self.static.point  # static: drawn by fill_static
        point = self.mix_points[k]
        lam, perm = self.draw(x.shape[0], x.device)

        def mix_fn(name: str, h: torch.Tensor, t: torch.Tensor):
            self.record(name, lam, perm)
            return mix(h, lam, perm), mix(t, lam, perm.to(t.device))

        return self.run_mixed(x, y, [point], mix_fn)

    def __repr__(self) -> str:
        return f"ManifoldMixup(mix_points={self.mix_points}, alpha={self.alpha})"
