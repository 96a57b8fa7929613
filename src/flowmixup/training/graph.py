"""``trainer.cuda_graph=true``: the training step captured as a CUDA graph, so that the host is out of the step.

One step (the regularizer's forward with its mixing, the loss, backward, a fused capturable Adam step) is captured
once with ``torch.cuda.graph`` over static input buffers, then replayed for every batch:

* the batch is copied into static ``x`` / ``y`` tensors (every training batch has the graph's shape: the trainer's
  :class:`~flowmixup.training.build.EpochBatches` cuts each epoch into full batches only, with or without a graph);
* the regularizer's lambdas and permutations are drawn before each replay from the run's seeded generator, in the
  eager path's order, into static device buffers the captured mixing reads
  (:meth:`flowmixup.regularizers.base.Regularizer.fill_static`): every step draws new ones, the same as eager;
* Manifold Mixup draws its mix point on the host: one graph per point, each captured the first time it is drawn;
* Adam's learning rate is a device tensor (``ReduceLROnPlateau`` rewrites it in place), its step ``capturable``.

Capturing needs warm-up steps on a side stream (cuDNN autotuning, lazily created optimiser state): the model's and
the optimiser's state are restored after them, so the warm-up trains nothing. Opt-in until measured on a GPU;
configurations it cannot capture are refused in one line by :func:`check_capturable` and
:mod:`flowmixup.training.checks`.
"""

from __future__ import annotations

import torch

from .checks import ConfigError
from .step import train_step

WARMUP_STEPS = 3


def check_capturable(reg, device: torch.device) -> None:
    """One line if this run cannot be captured: a device that is not CUDA (e.g. ``trainer.device=auto`` on a machine
    without a GPU), or a regularizer that does not draw through the static buffers (a plug-in's own class)."""
    from ..regularizers import ERM, FlowMixup, ManifoldMixup, Mixup

    if device.type != "cuda":
        raise ConfigError(
            f"trainer.cuda_graph: true needs a CUDA device, this run is on {device}; allowed: false, or true with "
            "trainer.device=cuda, cuda:N (or auto on a machine with a GPU)",
            key="trainer.cuda_graph",
        )
    if type(reg) not in (ERM, Mixup, ManifoldMixup, FlowMixup):
        raise ConfigError(
            f"trainer.cuda_graph: true cannot capture regularizer {type(reg).__name__} (its draws may not go "
            "through the static buffers); allowed: false, or true with erm, mixup, manifold_mixup, flowmixup",
            key="trainer.cuda_graph",
        )


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Copies of the model's state and the optimiser's per-parameter state (None where it has none yet)."""
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_state = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            opt_state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()} if st else None
    return model_state, opt_state


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, snapshot) -> None:
    """Back to the snapshot, in place (the addresses a graph captures stay): state created since is zeroed, which
    is Adam's initial state (zero moments, step 0)."""
    model_state, opt_state = snapshot
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(model_state[k])
        for p, before in opt_state.items():
            for k, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and before is not None:
                    v.copy_(before[k])
                elif torch.is_tensor(v):
                    v.zero_()


class GraphStep:
    """``step(x, y) -> loss``: :func:`~flowmixup.training.loop.train_step` captured and replayed (see the module)."""

    def __init__(self, reg, criterion, optimizer, model, batch: int, bf16: bool, device: torch.device):
        check_capturable(reg, device)
        self.reg, self.criterion, self.optimizer, self.model = reg, criterion, optimizer, model
        self.bf16, self.device = bf16, device
        reg.use_static_buffers(batch, device)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _eager(self) -> torch.Tensor:
        self.reg.static.used = 0
        return train_step(self.reg, self.criterion, self.optimizer, self.x, self.y, self.bf16, autocast_cache=False)

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Warm up on a side stream, restore the state, capture one step (nothing runs during capture)."""
        saved = _snapshot(self.model, self.optimizer)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._eager()
        torch.cuda.current_stream(self.device).wait_stream(side)
        _restore(self.model, self.optimizer, saved)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = self._eager()
        return graph, loss

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.x is None:
            self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        if x.shape != self.x.shape or y.shape != self.y.shape:
            raise ConfigError(
                f"trainer.cuda_graph: a batch of shape {tuple(x.shape)} after {tuple(self.x.shape)}; allowed: "
                "false, or batches of one shape (every training batch full)",
                key="trainer.cuda_graph",
            )
        self.reg.fill_static()  # this step's draws, from the run's generator, before the replay
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        key = self.reg.static.point  # Manifold Mixup's drawn point; 0 for the others
        if key not in self.graphs:
            self.graphs[key] = self._capture()
        graph, loss = self.graphs[key]
        graph.replay()
        return loss.clone()  # the static output is overwritten by the next replay
