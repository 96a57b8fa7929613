"""What every regularizer shares: one call shape, mix points named by submodule, reproducible sampling.

A regularizer wraps a model. ``logits, targets = reg(x, y)``: in training mode it runs the model with its mixing
and returns the outputs (all flows stacked along the batch dimension) with the matching soft targets; the
training loss is the criterion averaged over every returned row. In eval mode it returns ``model(x), y``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

INPUT = "input"


class RegularizerError(ValueError):
    """A regularizer was configured with an impossible value (the message names it and the allowed values)."""


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha <= 0:
        raise RegularizerError(f"regularizer.alpha must be > 0 (the Beta(alpha, alpha) parameter), got {alpha}")
    return alpha


def resolve_mix_points(model: nn.Module, names: Sequence[str], allow_input: bool = True) -> list[str]:
    """Check that every name is ``"input"`` or a key of ``model.named_modules()``; fail listing the valid ones."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise RegularizerError("regularizer.mix_points is empty; name at least one submodule (or 'input')")
    modules = dict(model.named_modules())
    valid = ([INPUT] if allow_input else []) + [n for n in modules if n]
    for name in names:
        if name == INPUT and allow_input:
            continue
        if name not in modules or name == "":
            # the blocks (names two levels deep: layer2.0, features.denseblock3) are what people mix at; deeper
            # names are valid too, and counted rather than listed
            import difflib

            top = [n for n in valid if n.count(".") <= 1]
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            more = len(valid) - len(top)
            shown = ", ".join(top[:40]) + (", ..." if len(top) > 40 else "")
            raise RegularizerError(
                f"regularizer.mix_points: unknown submodule '{name}'{hint}; allowed: {shown}"
                + (f" (and {more} deeper submodules by their full names)" if more else "")
            )
    if len(set(names)) != len(names):
        raise RegularizerError(f"regularizer.mix_points has duplicates: {names}")
    return names


class Regularizer:
    """Base class. Subclasses implement :meth:`train_forward`."""

    #: whether the method mixes samples (and so needs at least two samples per batch)
    mixes = True

    def __init__(self, model: nn.Module, generator: torch.Generator | None = None):
        self.model = model
        self.generator = (
            generator
            if generator is not None
            else torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        )
        #: what the last training call drew: a list of dicts {"point", "lam", "perm"} (for inspection and tests)
        self.last_mix: list[dict] = []

    # -- sampling ---------------------------------------------------------------------------------------------
    def sample_lam(self, alpha: float) -> float:
        """lam ~ Beta(alpha, alpha), drawn on the host from ``self.generator`` (no device synchronisation)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator).item())
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def sample_perm(self, n: int, device: torch.device) -> torch.Tensor:
        """A random permutation of ``range(n)`` (the mixing partners), drawn on the host, copied without a sync."""
        perm = torch.randperm(n, generator=self.generator)
        return perm.to(device, non_blocking=True)

    # -- call -------------------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.model.training:
            return self.model(x), y
        if self.mixes and x.shape[0] < 2:
            raise RegularizerError(
                f"{type(self).__name__} needs at least 2 samples per batch to mix, got {x.shape[0]} "
                "(raise trainer.batch_size or keep the last partial batch out)"
            )
        self.last_mix = []
        return self.train_forward(x, y)

    def train_forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def flows(self) -> int:
        """How many flows (copies of the batch) the model's output holds in training mode."""
        return 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def mix(t: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """The mixup operation of Eq. (1) along the batch dimension: ``lam * t + (1 - lam) * t[perm]`` (one kernel)."""
    return torch.lerp(t.index_select(0, perm), t, lam)
