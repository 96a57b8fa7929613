"""trainer.cuda_graph (flowmixup.training.graph): opt-in, refused in one line where it cannot capture, and leaving a
default run as it was. The captured step itself needs a GPU: those tests skip with a reason elsewhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from flowmixup.training import run
from flowmixup.training.checks import ConfigError, check_config

NO_GPU = "needs a CUDA device (the captured step is CUDA-only); its CPU parts are tested here and in test_static_mixing"


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["trainer.cuda_graph=true", "trainer.device=cpu"],
            r"^trainer.cuda_graph: true needs a CUDA device, got trainer.device=cpu; allowed: false, or "
            r"trainer.device=cuda$",
        ),
        (["trainer.cuda_graph=maybe"], r"^trainer.cuda_graph: got 'maybe'; allowed: true, false$"),
    ],
)
def test_impossible_settings_are_one_line(tiny_config, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        check_config(tiny_config(*overrides))
    one_line(err)


def test_with_compile_or_a_plugin_regularizer_it_is_refused(tiny_config):
    """The device is not looked at first: these are checked with local=False (a SLURM login node's view), so the
    test runs without a GPU."""
    cfg = tiny_config("trainer.cuda_graph=true", "trainer.compile=true", "trainer.device=cuda")
    with pytest.raises(ConfigError, match=r"^trainer.cuda_graph: true cannot be combined with trainer.compile=true"):
        check_config(cfg, local=False)
    cfg = tiny_config("trainer.cuda_graph=true", "trainer.device=cuda")
    OmegaConf.update(cfg, "regularizer.name", "my_plugin")
    with pytest.raises(ConfigError, match=r"cannot capture regularizer=my_plugin .*allowed: false, or regularizer="):
        check_config(cfg, local=False)
    check_config(tiny_config("trainer.cuda_graph=true", "trainer.device=cuda"), local=False)  # the rest is fine


def test_auto_on_a_machine_without_a_gpu_is_refused_when_built(tiny_config, tmp_path):
    from flowmixup.training.graph import check_capturable

    with pytest.raises(ConfigError, match=r"^trainer.cuda_graph: true needs a CUDA device, this run is on cpu"):
        check_capturable(object(), torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^trainer.cuda_graph: true needs a CUDA device"):
            run(tiny_config("trainer.cuda_graph=true", "trainer.device=auto"), tmp_path / "r")
        assert not (tmp_path / "r" / "metrics.csv").exists()


def test_default_runs_are_untouched(tiny_config, tmp_path):
    """The default is off; a default run builds no graph, no static buffers, the same Adam (a float learning rate,
    fused as before), the same loaders; its metrics equal those of a run that says trainer.cuda_graph=false."""
    from flowmixup.training.build import build

    cfg = tiny_config("regularizer=flowmixup", "trainer.epochs=1")
    assert cfg.trainer.cuda_graph is False
    b = build(cfg)
    assert b.graph_step is None and b.reg.static is None
    assert isinstance(b.optimizer.param_groups[0]["lr"], float)
    assert b.optimizer.defaults["capturable"] is False
    assert not any(loader.pin_memory for loader in b.loaders.values())  # CPU
    run(cfg, tmp_path / "default")
    run(tiny_config("regularizer=flowmixup", "trainer.epochs=1", "trainer.cuda_graph=false"), tmp_path / "off")
    a, c = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("default", "off"))
    cols = [k for k in a.columns if not k.endswith("_s")]
    pd.testing.assert_frame_equal(a[cols], c[cols], check_exact=True)


def test_pinned_memory_only_with_workers_on_cuda(tiny_config):
    from flowmixup.data.base import LabeledArrays
    from flowmixup.training.build import make_loaders

    data = LabeledArrays(
        np.zeros((8, 1, 4), np.float32),
        np.zeros((8, 2), np.uint8),
        ["a", "b"],
        {s: np.arange(8) for s in ("train", "val", "test")},
    )
    y = np.zeros((8, 2), np.float32)
    for device, workers, pinned in (("cpu", 0, False), ("cpu", 2, False), ("cuda", 0, False), ("cuda", 2, True)):
        cfg = tiny_config(f"trainer.num_workers={workers}", "trainer.batch_size=4")
        _, loaders = make_loaders(cfg, data, y, torch.device(device))
        assert {loader.pin_memory for loader in loaders.values()} == {pinned}, (device, workers)


def test_a_checkpoint_written_before_the_key_existed_resumes():
    from flowmixup.training.checkpoint import check_resumable

    now = {"trainer": {"epochs": 2, "cuda_graph": False}}
    check_resumable({"trainer": {"epochs": 2}}, now, "ckpt")  # absent = the default, false
    with pytest.raises(ConfigError, match="trainer.cuda_graph"):
        check_resumable({"trainer": {"epochs": 2, "cuda_graph": True}}, now, "ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize("reg", ["erm", "mixup", "manifold_mixup", "flowmixup"])
def test_the_captured_step_gives_the_eager_loss_curve(tiny_config, tmp_path, reg):
    """A short run on the GPU, eager and captured: the same draws, so the same losses and metrics to float
    tolerance (the graph's kernels are the eager ones, fused Adam capturable instead of fused)."""
    common = (f"regularizer={reg}", "trainer.device=cuda", "trainer.epochs=2", "trainer.deterministic=true")
    run(tiny_config(*common), tmp_path / "eager")
    run(tiny_config(*common, "trainer.cuda_graph=true"), tmp_path / "graph")
    a, b = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("eager", "graph"))
    cols = ["train_loss", "val_loss", "val_auc", "test_auc"]
    pd.testing.assert_frame_equal(b[cols], a[cols], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("resumed", [False, True])
def test_the_capture_warm_up_trains_nothing(resumed):
    """What GraphStep does around a capture, on CPU: warm-up steps, then the model's and Adam's state put back in
    place (state created by the warm-up zeroed: Adam's initial state), so the next step is the eager one."""
    from flowmixup import FlowMixup
    from flowmixup.training.graph import _restore, _snapshot
    from flowmixup.training.loop import train_step

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
        )
        reg = FlowMixup(model, ["1", "3"], generator=torch.Generator().manual_seed(0))
        return model, reg, torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)

    x, y = torch.randn(8, 4), (torch.rand(8, 3) < 0.3).float()
    crit = torch.nn.BCEWithLogitsLoss()
    results = []
    for warm in (False, True):
        model, reg, opt = setup()
        if resumed:  # a run resumed from a checkpoint: Adam has state before the capture
            train_step(reg, crit, opt, x, y)
        reg.use_static_buffers(8, torch.device("cpu"))
        reg.fill_static()
        if warm:
            saved = _snapshot(model, opt)
            for _ in range(3):
                reg.static.used = 0
                train_step(reg, crit, opt, x, y)
            _restore(model, opt, saved)
        reg.static.used = 0
        loss = train_step(reg, crit, opt, x, y)
        results.append((loss, {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()["state"]))
    (loss_a, model_a, opt_a), (loss_b, model_b, opt_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    for k in model_a:
        torch.testing.assert_close(model_b[k], model_a[k], rtol=0, atol=0)
    for i in opt_a:
        for k in opt_a[i]:
            torch.testing.assert_close(opt_b[i][k], opt_a[i][k], rtol=0, atol=0)
