"""Semantics of the four regularizers, each checked against an explicit computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from scipy import stats
from torch import nn

from flowmixup import ERM, FlowMixup, ManifoldMixup, Mixup, RegularizerError

B, D = 6, 5


def identity_mlp(d: int = D) -> nn.Module:
    """A model whose every layer is the identity map, so output == input for any flow layout.

    Mixing commutes with linear maps, so with targets equal to the inputs, every returned row's logits must equal
    its target exactly: a direct check that targets travel the same path as features.
    """
    model = nn.Sequential(nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False))
    for layer in model:
        nn.init.eye_(layer.weight)
    return model


def small_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


ALL = {
    "erm": lambda m: ERM(m),
    "mixup": lambda m: Mixup(m, alpha=1.0, generator=gen()),
    "manifold": lambda m: ManifoldMixup(m, ["input", "1", "2"], alpha=2.0, generator=gen()),
    "flow_op_false": lambda m: FlowMixup(m, ["1", "2"], alpha=3.0, keep_original=False, generator=gen()),
    "flow_op_true": lambda m: FlowMixup(m, ["1", "2"], alpha=3.0, keep_original=True, generator=gen()),
}


@pytest.mark.parametrize("name", list(ALL))
def test_eval_mode_is_exactly_the_model(name):
    model = small_mlp()
    reg = ALL[name](model)
    x, y = torch.randn(B, 4), torch.randint(0, 2, (B, 3)).float()
    model.eval()
    out, targets = reg(x, y)
    assert torch.equal(out, model(x)) and targets is y


@pytest.mark.parametrize("name", list(ALL))
def test_targets_travel_with_features(name):
    model = identity_mlp()
    reg = ALL[name](model)
    x = torch.rand(B, D)
    for _ in range(5):
        out, targets = reg(x, x.clone())
        assert out.shape == targets.shape
        torch.testing.assert_close(out, targets, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "points,keep,flows",
    [
        (["1"], False, 1),
        (["1"], True, 2),
        (["1", "2"], False, 2),
        (["1", "2"], True, 4),
        (["input", "1", "2"], True, 8),
        (["input", "1", "2"], False, 4),
    ],
)
def test_flow_counts(points, keep, flows):
    reg = FlowMixup(identity_mlp(), points, keep_original=keep, generator=gen())
    x = torch.rand(B, D)
    out, targets = reg(x, torch.rand(B, D))
    assert reg.flows() == flows
    assert out.shape == (flows * B, D) and targets.shape == (flows * B, D)
    if keep:  # the first flow is the untouched original batch
        torch.testing.assert_close(out[:B], x)


def test_flow_layout_matches_equation_2():
    """With Op=True and two modules, output flows are [z, m1(z), m2(z), m2(m1(z))] with per-flow permutations."""
    reg = FlowMixup(identity_mlp(), ["1", "2"], alpha=3.0, keep_original=True, generator=gen(3))
    x = torch.rand(B, D)
    out, _ = reg(x, x.clone())
    (l1, p1), (l2, p2) = [(m["lam"], m["perm"]) for m in reg.last_mix]
    mix = lambda t, lam, p: lam * t + (1 - lam) * t[p]  # noqa: E731
    m1 = mix(x, l1, p1)
    expected = torch.cat([x, m1, mix(x, l2, p2), mix(m1, l2, p2)])
    torch.testing.assert_close(out, expected)


def test_mixup_mixes_input_and_targets_linearly():
    model = small_mlp()
    reg = Mixup(model, alpha=0.7, generator=gen(1))
    x, y = torch.randn(B, 4), torch.randint(0, 2, (B, 3)).float()
    out, t = reg(x, y)
    lam, perm = reg.last_mix[0]["lam"], reg.last_mix[0]["perm"]
    torch.testing.assert_close(out, model(lam * x + (1 - lam) * x[perm]))
    torch.testing.assert_close(t, lam * y + (1 - lam) * y[perm])
    assert ((t >= 0) & (t <= 1)).all()  # soft multi-hot targets, no one-hot encoding


class Eq3Mixing(torch.autograd.Function):
    """The paper's Mixing module written out: forward Eq. (2), backward Eq. (3) grad = (grad' + grad_m) / 2,
    where grad_m is the gradient reaching z through the mixing operation. ``keep=False``: z' = z_mixed and
    grad = grad_m (the last module with Op=False)."""

    @staticmethod
    def forward(ctx, z, lam, rows, keep):
        ctx.lam, ctx.keep = lam, keep
        ctx.save_for_backward(rows)
        mixed = lam * z + (1 - lam) * z[rows]
        return torch.cat([z, mixed]) if keep else mixed

    @staticmethod
    def backward(ctx, g):
        (rows,) = ctx.saved_tensors
        n = rows.shape[0]
        g_orig, g_mixed = (g[:n], g[n:]) if ctx.keep else (None, g)
        grad_m = ctx.lam * g_mixed
        grad_m = grad_m.index_add(0, rows, (1 - ctx.lam) * g_mixed)
        grad = (g_orig + grad_m) / 2 if ctx.keep else grad_m
        return grad, None, None, None


@pytest.mark.parametrize("keep", [True, False])
def test_mean_loss_is_equation_3_on_the_loss_summed_over_flows(keep):
    """Eq. (3) in the paper's form -- each Mixing module halving ``grad' + grad_m``, the loss SUMMED over flows
    (each flow's BCE averaged over its B rows) -- against the library (no halving, the loss averaged over all
    ``flows x B`` rows). They agree exactly at the input and before the first module; a layer that carries F flows
    gets F times the library's gradient under the summed form (Op=True: 1, 2, 4 flows; Op=False: 1, 2, 2)."""
    torch.manual_seed(0)
    x, y = torch.randn(B, 4), torch.randint(0, 2, (B, 3)).float()
    x.requires_grad_(True)
    model = small_mlp(1)
    reg = FlowMixup(model, ["1", "3"], alpha=3.0, keep_original=keep, generator=gen(7))
    out, targets = reg(x, y)
    nn.functional.binary_cross_entropy_with_logits(out, targets).backward()
    ours = [p.grad.clone() for p in model.parameters()]
    ours_x = x.grad.clone()
    draws = [(m["lam"], m["perm"]) for m in reg.last_mix]

    ref = small_mlp(1)
    x_ref = x.detach().clone().requires_grad_(True)
    h, t = ref[0](x_ref), y
    flows_per_segment = [1]
    for i, (layer_in, (lam, perm)) in enumerate(zip((1, 3), draws)):
        last = i == 1
        rows = (perm.unsqueeze(0) + B * torch.arange(h.shape[0] // B).unsqueeze(1)).reshape(-1)
        keep_here = keep or not last
        h = Eq3Mixing.apply(h, lam, rows, keep_here)
        t_mixed = lam * t + (1 - lam) * t[rows]
        t = torch.cat([t, t_mixed]) if keep_here else t_mixed
        flows_per_segment.append(h.shape[0] // B)
        h = ref[layer_in](h)
        h = ref[layer_in + 1](h)
    torch.testing.assert_close(h, out)
    flows = h.shape[0] // B
    per_flow = nn.functional.binary_cross_entropy_with_logits(h, t, reduction="none").mean(dim=1)
    per_flow.view(flows, B).mean(dim=1).sum().backward()  # summed over flows
    assert flows_per_segment == ([1, 2, 4] if keep else [1, 2, 2])
    torch.testing.assert_close(ours_x, x_ref.grad, rtol=1e-5, atol=1e-7)  # the input: exactly equal
    segments = [0, 0, 1, 1, 2, 2]  # (weight, bias) of Linear 0 | Linear 2 | Linear 4
    for a, b, seg in zip(ours, (p.grad for p in ref.parameters()), segments):
        torch.testing.assert_close(a * flows_per_segment[seg], b, rtol=1e-5, atol=1e-7)


def identical_batch(shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, *shape, generator=g).expand(B, *shape).contiguous()
    y = torch.randint(0, 2, (1, classes), generator=g).float().expand(B, classes).contiguous()
    return x, y


def mlp_10():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)
    )


def resnet_1d():
    """The project's 1-D ResNet, its BatchNorm layers on running statistics: with a batch of identical samples and a
    global average pool, batch statistics would make the gradient through every BatchNorm exactly zero (the
    upstream gradient is constant over the normalised axes), and the test would compare zeros with zeros."""
    from flowmixup.models import ResNet1d

    torch.manual_seed(3)
    model = ResNet1d(in_channels=2, num_classes=3, blocks=[2, 1, 1, 1], width=4)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.eval()
            nn.init.uniform_(m.weight, 0.5, 1.5)  # not the zero-initialised last gamma of each block: a real gradient
    return model


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("points", ["one", "two"])
@pytest.mark.parametrize("arch", ["mlp", "resnet1d"])
def test_identical_samples_give_every_parameter_erm_gradient(arch, points, keep):
    """When every sample of the batch is the same, every mix is the identity: Flow-Mixup with the project's own loss
    must then train exactly like ERM, for every parameter (the magnitude Eq. (3) is there to keep)."""
    from flowmixup.training.losses import BCE

    make, shape, mix_points = {
        "mlp": (mlp_10, (4,), {"one": ["2"], "two": ["2", "4"]}),
        "resnet1d": (resnet_1d, (2, 64), {"one": ["layer2.0"], "two": ["layer2.0", "layer3.0"]}),
    }[arch]
    x, y = identical_batch(shape, 3)
    grads = {}
    for name in ("erm", "flow"):
        model = make()
        reg = (
            ERM(model)
            if name == "erm"
            else FlowMixup(model, mix_points[points], alpha=3.0, keep_original=keep, generator=gen(1))
        )
        out, targets = reg(x, y)
        if name == "flow":
            assert out.shape[0] == B * reg.flows()
        BCE(y.numpy())(out, targets).backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert grads["erm"].keys() == grads["flow"].keys()
    for n, g in grads["erm"].items():
        assert g.abs().sum() > 0, n  # a real gradient, not zeros compared with zeros
        torch.testing.assert_close(grads["flow"][n], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("alpha", [0.4, 1.0, 3.0])
def test_lambda_follows_beta(alpha):
    reg = Mixup(small_mlp(), alpha=alpha, generator=gen(11))
    lams = np.array([reg.sample_lam(alpha) for _ in range(3000)])
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    reg2 = FlowMixup(identity_mlp(), ["1", "2"], alpha=alpha, generator=gen(12))
    flow_lams = []
    for _ in range(1000):
        reg2(torch.rand(4, D), torch.rand(4, D))
        flow_lams += [m["lam"] for m in reg2.last_mix]
    assert stats.kstest(flow_lams, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_manifold_mixup_draws_points_uniformly():
    reg = ManifoldMixup(identity_mlp(), ["input", "1", "2"], alpha=1.0, generator=gen(5))
    counts = {"input": 0, "1": 0, "2": 0}
    for _ in range(900):
        reg(torch.rand(4, D), torch.rand(4, D))
        assert len(reg.last_mix) == 1
        counts[reg.last_mix[0]["point"]] += 1
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


@pytest.mark.parametrize("name", ["mixup", "manifold", "flow_op_true"])
def test_same_generator_seed_same_result(name):
    x, y = torch.rand(B, D), torch.rand(B, D)
    a = ALL[name](small_mlp_d())(x, y)
    b = ALL[name](small_mlp_d())(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def small_mlp_d():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, D))


def test_unknown_mix_point_lists_valid_names():
    with pytest.raises(
        RegularizerError, match=r"regularizer.mix_points: unknown submodule 'layer9'; allowed: input, 0, 1, 2"
    ):
        FlowMixup(identity_mlp(), ["layer9"])


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(RegularizerError, match="alpha must be > 0"):
        Mixup(small_mlp(), alpha=alpha)


def test_batch_of_one_cannot_mix():
    reg = FlowMixup(small_mlp(), ["1"], generator=gen())
    with pytest.raises(RegularizerError, match="at least 2 samples"):
        reg(torch.randn(1, 4), torch.ones(1, 3))
    assert ERM(small_mlp())(torch.randn(1, 4), torch.ones(1, 3))[0].shape == (1, 3)


def test_module_called_twice_is_refused():
    model = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, D))
    model.forward = lambda x: model[2](model[1](model[1](model[0](x))))  # relu used twice
    reg = FlowMixup(model, ["1"], generator=gen())
    with pytest.raises(RegularizerError, match="called twice"):
        reg(torch.rand(B, D), torch.rand(B, D))


def test_hooks_are_inert_outside_the_regularizer_and_removable():
    model = small_mlp()
    reg = FlowMixup(model, ["1", "3"], keep_original=True, generator=gen())
    x = torch.randn(B, 4)
    assert model(x).shape == (B, 3)  # training mode, called directly: no mixing
    reg.remove()
    assert not model[1]._forward_pre_hooks


@pytest.mark.parametrize(
    "factory,points",
    [
        (lambda: torchvision.models.resnet18(num_classes=4), ["layer1.1", "layer2.1"]),
        (lambda: torchvision.models.densenet121(num_classes=4), ["features.denseblock2", "features.denseblock3"]),
    ],
)
def test_torchvision_models_work_unchanged(factory, points):
    torch.manual_seed(0)
    model = factory()
    reg = FlowMixup(model, points, keep_original=True, generator=gen())
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 4)).float()
    out, targets = reg(x, y)
    assert out.shape == (8, 4) and targets.shape == (8, 4)
    nn.functional.binary_cross_entropy_with_logits(out, targets).backward()
    model.eval()
    assert torch.equal(reg(x, y)[0], model(x))
