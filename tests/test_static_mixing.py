"""Static-buffer mixing (the path a captured CUDA graph reads, trainer.cuda_graph): with the same seed, lambdas and
permutations drawn by ``fill_static()`` into preallocated tensors before each step give the same draws, logits,
targets, loss and weights as the eager path, step after step, for every regularizer; on CPU, so it is always run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowmixup import ERM, FlowMixup, ManifoldMixup, Mixup, RegularizerError
from flowmixup.models import ResNet1d

B, STEPS = 8, 4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet1d(2, 3, blocks=(2, 1, 1, 1), width=4)


REGS = {
    "erm": lambda m: ERM(m),
    "mixup": lambda m: Mixup(m, alpha=1.0, generator=gen()),
    "manifold": lambda m: ManifoldMixup(m, ["input", "2", "4"], alpha=2.0, generator=gen()),
    "flow_op_false": lambda m: FlowMixup(m, ["2", "4"], alpha=3.0, keep_original=False, generator=gen()),
    "flow_op_true": lambda m: FlowMixup(m, ["2", "4"], alpha=3.0, keep_original=True, generator=gen()),
    "flow_resnet": lambda m: FlowMixup(m, m.paper_mix_points(), alpha=3.0, keep_original=False, generator=gen()),
}


def run(name: str, static: bool, bf16: bool = False) -> list[dict]:
    """STEPS Adam steps of one regularizer; per step its draws, logits, targets, loss and the weights after it."""
    model = resnet() if name == "flow_resnet" else mlp()
    reg = REGS[name](model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(1)
    shape = (B, 2, 64) if name == "flow_resnet" else (B, 4)
    if static:
        reg.use_static_buffers(B, torch.device("cpu"))
    out = []
    for _ in range(STEPS):
        x, y = torch.randn(shape, generator=data), (torch.rand(B, 3, generator=data) < 0.3).float()
        if static:
            reg.fill_static()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, targets = reg(x, y)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        draws = [(m["point"], float(m["lam"]), m["perm"].tolist()) for m in reg.last_mix]
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        out.append(dict(draws=draws, logits=logits.detach(), targets=targets, loss=loss.detach(), weights=weights))
    return out


@pytest.mark.parametrize("name", list(REGS))
def test_static_buffers_give_the_eager_draws_and_results(name):
    eager, static = run(name, static=False), run(name, static=True)
    for step, (a, b) in enumerate(zip(eager, static)):
        assert a["draws"] == b["draws"], step  # the same lambdas, permutations and points, in the same order
        torch.testing.assert_close(b["logits"], a["logits"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b["targets"], a["targets"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b["weights"], a["weights"], rtol=1e-5, atol=1e-6)
    if name != "erm":
        assert len({d[1] for s in eager for d in s["draws"]}) > 1  # a new lambda every step


@pytest.mark.parametrize("name", ["mixup", "flow_op_true"])
def test_static_buffers_under_bf16_autocast_mix_in_float32_as_the_eager_path(name):
    eager, static = run(name, static=False, bf16=True), run(name, static=True, bf16=True)
    for a, b in zip(eager, static):
        assert a["draws"] == b["draws"]
        torch.testing.assert_close(b["logits"], a["logits"], rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-3, atol=1e-3)


def test_the_buffers_are_rewritten_in_place_and_read_by_the_step():
    """What a graph needs: the same tensors every step (addresses unchanged), new values in them; the step reads
    them (a value written into the buffer, not drawn, is what mixes)."""
    model = mlp()
    reg = Mixup(model, alpha=1.0, generator=gen())
    bufs = reg.use_static_buffers(B, torch.device("cpu"))
    ptrs = (bufs.lam.data_ptr(), bufs.perm.data_ptr())
    seen = []
    for _ in range(3):
        reg.fill_static()
        assert (bufs.lam.data_ptr(), bufs.perm.data_ptr()) == ptrs
        seen.append(float(bufs.lam[0]))
    assert len(set(seen)) == 3
    bufs.lam.fill_(1.0)  # lam = 1: the mix is the identity whatever the permutation
    x, y = torch.randn(B, 4), torch.ones(B, 3)
    logits, targets = reg(x, y)
    torch.testing.assert_close(logits, model(x))


def test_a_batch_of_another_shape_or_one_draw_too_many_is_one_line():
    reg = FlowMixup(mlp(), ["2", "4"], alpha=3.0, generator=gen())
    reg.use_static_buffers(B, torch.device("cpu"))
    reg.fill_static()
    with pytest.raises(RegularizerError, match="every batch must have the graph's shape"):
        reg(torch.randn(B - 2, 4), torch.ones(B - 2, 3))


def test_counts_of_draws():
    assert ERM(mlp()).draws_per_step() == 0
    assert Mixup(mlp()).draws_per_step() == 1
    assert ManifoldMixup(mlp(), ["input", "2"]).draws_per_step() == 1
    assert FlowMixup(mlp(), ["2", "4"]).draws_per_step() == 2
