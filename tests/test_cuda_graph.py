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
