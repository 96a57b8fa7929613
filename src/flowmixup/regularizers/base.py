"""What every regularizer shares: one call shape, mix points named by submodule, reproducible sampling.

A regularizer wraps a model. ``logits, targets = reg(x, y)``: in training mode it runs the model with its mixing
and returns the outputs (all flows stacked along the batch dimension) with the matching soft targets; the
training loss is the criterion averaged over every returned row. In eval mode it returns ``model(x), y``.

Static buffers (the path a captured CUDA graph needs, ``trainer.cuda_graph``): after ``reg.use_static_buffers(batch,
device)``, a step's lambdas and permutations are drawn by ``reg.fill_static()`` (before the step, or before a graph's
replay) from the same generator in the same order as the eager path, written into preallocated tensors
(:class:`MixBuffers`), and the mixing reads them from there: same draws, same mixing, no Python value baked into a
captured graph.
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


class MixBuffers:
    """One step's draws in preallocated tensors on the device, rewritten in place before every step: ``lam``
    (draws,) float32 and ``perm`` (draws, batch) int64; ``point`` the mix point drawn on the host (Manifold Mixup's);
    ``drawn`` the host values of the last fill ((lam, perm) per draw), ``used`` how many the step has read."""

    def __init__(self, draws: int, batch: int, device: torch.device):
        self.batch = batch
        self.lam = torch.full((draws,), 0.5, device=device)
        self.perm = torch.arange(batch, device=device).repeat(draws, 1)
        self.point = 0
        self.drawn: list[tuple[float, torch.Tensor]] = []
        self.used = 0


class Regularizer:
    """Base class. Subclasses implement :meth:`train_forward`, drawing through :meth:`draw`."""

    #: whether the method mixes samples (and so needs at least two samples per batch)
    mixes = True
    #: the static buffers the draws are read from (:meth:`use_static_buffers`); None: drawn eagerly in the step
    static: MixBuffers | None = None

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

    def draws_per_step(self) -> int:
        """How many (lambda, permutation) draws one training step makes."""
        return 1 if self.mixes else 0

    def sample_point(self) -> int:
        """The draw that comes before the step's lambdas (Manifold Mixup: its mix point); none by default."""
        return 0

    def draw(self, n: int, device: torch.device) -> tuple[float | torch.Tensor, torch.Tensor]:
        """The next (lam, perm) of this step: drawn now (eager), or read from the static buffers (a 0-dim float32
        tensor and a device tensor, filled before the step by :meth:`fill_static`)."""
        if self.static is None:
            return self.sample_lam(self.alpha), self.sample_perm(n, device)
        s, i = self.static, self.static.used
        if i >= s.lam.shape[0] or n != s.batch:
            raise RegularizerError(
                f"{type(self).__name__}: static buffers hold {s.lam.shape[0]} draw(s) for batches of {s.batch}; "
                f"this step asks draw {i + 1} for a batch of {n} (every batch must have the graph's shape)"
            )
        s.used += 1
        return s.lam[i], s.perm[i]

    def record(self, point: str, lam, perm: torch.Tensor) -> None:
        """Note a mix in ``last_mix`` (host values: under static buffers, those of the fill)."""
        if self.static is not None and self.static.drawn:
            lam, perm = self.static.drawn[self.static.used - 1]
        self.last_mix.append({"point": point, "lam": lam, "perm": perm})

    def use_static_buffers(self, batch: int, device: torch.device) -> MixBuffers:
        """From now on draw into preallocated tensors (:meth:`fill_static` before each step) instead of in it."""
        self.static = MixBuffers(self.draws_per_step(), batch, device)
        return self.static

    def fill_static(self) -> None:
        """Draw one step's values from ``self.generator``, in the eager path's order (the point, then lam and perm of
        each draw), and copy them into the static buffers. On CUDA through freshly pinned host tensors, copied without
        blocking: PyTorch's pinned-memory cache does not hand a block out again before its copy has completed, so the
        next fill cannot race this one, and the host never waits for the device."""
        s = self.static
        s.point = self.sample_point()
        n = s.lam.shape[0]
        lams, perms = [], torch.empty((n, s.batch), dtype=torch.long)
        for i in range(n):
            lams.append(self.sample_lam(self.alpha))
            perms[i] = torch.randperm(s.batch, generator=self.generator)
        host_lams = torch.tensor(lams, dtype=torch.float32)  # float32: as the eager mix rounds a float lam
        if s.lam.is_cuda:
            host_lams, perms = host_lams.pin_memory(), perms.pin_memory()
        s.lam.copy_(host_lams, non_blocking=True)
        s.perm.copy_(perms, non_blocking=True)
        s.drawn = list(zip(lams, perms))
        s.used = 0

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


def mix(t: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The mixup operation of Eq. (1) along the batch dimension: ``lam * t + (1 - lam) * t[perm]`` (one kernel).

    ``lam`` a float (eager), or a 0-dim float32 tensor (static buffers): a tensor of another dtype (bf16 under
    autocast) is mixed in float32 and rounded back, as the float path computes it."""
    if torch.is_tensor(lam) and lam.dtype != t.dtype:
        return torch.lerp(t.index_select(0, perm).to(lam.dtype), t.to(lam.dtype), lam).to(t.dtype)
    return torch.lerp(t.index_select(0, perm), t, lam)
