"""Mixing at the input of named submodules of any ``nn.Module``, through forward pre-hooks.

The hooks are registered once, at construction, and do nothing unless their regularizer is inside a training
call: a model wrapped by a regularizer behaves exactly as before everywhere else. ``reg.remove()`` detaches them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .base import INPUT, Regularizer, RegularizerError, resolve_mix_points

# (point name, hidden state, targets) -> (new hidden state, new targets)
MixFn = Callable[[str, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class _Pass:
    """The state of one training forward pass: which points to mix, which were reached, the targets so far."""

    def __init__(self, points: Sequence[str], targets: torch.Tensor, mix_fn: MixFn):
        self.points = set(points)
        self.reached: list[str] = []
        self.targets = targets
        self.mix_fn = mix_fn


class HookedRegularizer(Regularizer):
    """Base for the regularizers that mix hidden states: owns the hooks on the named mix points."""

    def __init__(self, model: nn.Module, mix_points: Sequence[str], generator: torch.Generator | None = None):
        super().__init__(model, generator)
        self.mix_points = resolve_mix_points(model, mix_points)
        self._pass: _Pass | None = None
        self._handles = [
            model.get_submodule(name).register_forward_pre_hook(self._hook(name))
            for name in self.mix_points
            if name != INPUT
        ]

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def pre_hook(module: nn.Module, args: tuple):
            state = self._pass
            if state is None or name not in state.points:
                return None
            if name in state.reached:
                raise RegularizerError(
                    f"mix point '{name}' was called twice in one forward pass; mix at a module the model calls once"
                )
            if not args or not torch.is_tensor(args[0]):
                raise RegularizerError(
                    f"mix point '{name}' does not take a tensor as its first input; choose another submodule"
                )
            state.reached.append(name)
            hidden, state.targets = state.mix_fn(name, args[0], state.targets)
            return (hidden, *args[1:])

        return pre_hook

    def run_mixed(
        self, x: torch.Tensor, y: torch.Tensor, points: Sequence[str], mix_fn: MixFn
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model once, applying ``mix_fn`` at the input of each of ``points``; return (output, targets)."""
        targets = y.to(torch.get_default_dtype() if not y.is_floating_point() else y.dtype)
        state = _Pass(points, targets, mix_fn)
        if INPUT in state.points:
            state.reached.append(INPUT)
            x, state.targets = mix_fn(INPUT, x, state.targets)
        self._pass = state
        try:
            out = self.model(x)
        finally:
            self._pass = None
        missing = [p for p in points if p not in state.reached]
        if missing:
            raise RegularizerError(
                f"mix points {missing} were never reached in the forward pass of {type(self.model).__name__}"
            )
        if out.shape[0] != state.targets.shape[0]:
            raise RegularizerError(
                f"model output has {out.shape[0]} rows but the mixed targets have {state.targets.shape[0]}: "
                "the model must keep the batch dimension first from the mix points to the output"
            )
        return out, state.targets
