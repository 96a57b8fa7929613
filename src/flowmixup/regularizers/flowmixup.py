"""Flow-Mixup (Chen et al., BIBM 2020, section III-C).

The batch gains a *flow dimension*, laid out along the batch dimension: a tensor holding F flows of a batch of
B samples has F*B rows, flow f in rows [f*B, (f+1)*B). At each mix point (the input of a named submodule), the
Mixing module of Eq. (2) keeps the incoming flows and appends a mixed copy of them::

    z' = [z, Mixing(p, z)],   Mixing(p, z) = p z + (1 - p) z[perm]   (perm within each flow),

with one ``p ~ Beta(alpha, alpha)`` and one permutation per module per step. Targets travel the same path, so
every output row has the soft target of the very samples mixed into it. With two modules the flows go 1 -> 2 -> 4.

Eq. (3), ``grad = (grad' + grad_m) / 2``, keeps the gradient's magnitude when a module doubles the flows. The
returned rows hold every flow, and the training loss averages over all of them (``flows x B`` rows): that average
already gives each flow 1/F of the loss, which is Eq. (3)'s halving, compounded over the modules. So the module
itself passes ``grad' + grad_m`` back unscaled, and with a batch of identical samples (every mix the identity)
every parameter gets exactly ERM's gradient. Written out with a loss summed over flows and the halving in each
module, the gradient is the same at the input and before the first module, and F times larger in a part of the
model that carries F flows (tests/test_regularizers.py checks both forms).

``keep_original=False`` (the paper's Op=False): the original flows do not go forward from the LAST module,
which then computes ``z' = Mixing(p, z)`` (so ``grad = grad_m``): 1 -> 2 -> 2 with two modules,
and Manifold Mixup at a fixed layer with one.

In eval mode the model runs unchanged: ``reg(x, y) == (model(x), y)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import check_alpha, mix
from .hooks import HookedRegularizer


def flow_permutation(perm: torch.Tensor, flows: int) -> torch.Tensor:
    """Row indices applying the partner permutation ``perm`` (of B) inside each of ``flows`` flows."""
    batch = perm.shape[0]
    offsets = torch.arange(flows, device=perm.device).mul_(batch).unsqueeze(1)
    return (perm.unsqueeze(0) + offsets).reshape(-1)


class FlowMixup(HookedRegularizer):
    """``FlowMixup(model, mix_points, alpha=3.0, keep_original=False)``; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        mix_points: Sequence[str],
        alpha: float = 3.0,
        keep_original: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__(model, mix_points, generator)
        self.alpha = check_alpha(alpha)
        self.keep_original = bool(keep_original)

    def draws_per_step(self) -> int:
        return len(self.mix_points)

    def flows(self) -> int:
        m = len(self.mix_points)
        return 2**m if self.keep_original else 2 ** (m - 1)

    def train_forward(self, x: torch.Tensor, y: torch.Tensor):
        batch = x.shape[0]
        n_points = len(self.mix_points)

        def mixing_module(name: str, z: torch.Tensor, t: torch.Tensor):
            lam, perm = self.draw(batch, z.device)
            self.record(name, lam, perm)
            rows = flow_permutation(perm, z.shape[0] // batch)
            z_mixed, t_mixed = mix(z, lam, rows), mix(t, lam, rows.to(t.device))
            is_last = len(self.last_mix) == n_points
            if is_last and not self.keep_original:
                return z_mixed, t_mixed
            return torch.cat([z, z_mixed]), torch.cat([t, t_mixed])

        return self.run_mixed(x, y, self.mix_points, mixing_module)

    def __repr__(self) -> str:
        return f"FlowMixup(mix_points={self.mix_points}, alpha={self.alpha}, keep_original={self.keep_original})"
