"""A regularizer added from outside the project: its module and its YAML in a folder of their own, nothing else.

The YAML sits in ``<tmp>/conf/regularizer/`` and is found through ``hydra.searchpath``; the module is found on
PYTHONPATH. Training validates ``regularizer=noisy_erm`` from the config group itself, builds it with
``hydra.utils.instantiate`` and records its label in summary.json; the report names it by that label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from project_config import PROJECT_ROOT, TINY

MODULE = '''
import torch

from flowmixup.regularizers.base import Regularizer, RegularizerError


class NoisyERM(Regularizer):
    """ERM on inputs with Gaussian noise of standard deviation sigma (drawn from the regularizer's generator)."""

    mixes = False

    def __init__(self, model, sigma=0.01, generator=None):
        super().__init__(model, generator)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
            raise RegularizerError(f"regularizer.sigma: got {sigma!r}; allowed: a number >= 0")
        self.sigma = float(sigma)

    def train_forward(self, x, y):
        noise = torch.randn(x.shape, generator=self.generator).to(x.device, x.dtype)
        return self.model(x + self.sigma * noise), y

    def __repr__(self):
        return f"NoisyERM(sigma={self.sigma})"
'''

YAML = """
name: noisy_erm
label: Noisy ERM
shown: [sigma]
sigma: 0.05
module:
  _target_: noisy_erm.NoisyERM
  sigma: ${..sigma}
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    (tmp / "noisy_erm.py").write_text(textwrap.dedent(MODULE))
    (tmp / "conf" / "regularizer").mkdir(parents=True)
    (tmp / "conf" / "regularizer" / "noisy_erm.yaml").write_text(YAML.lstrip())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")])}
    return tmp, env


def train(tmp, env, *overrides):
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            "regularizer=noisy_erm",
            f"hydra.searchpath=[file://{tmp / 'conf'}]",
            *TINY,
            "trainer.epochs=1",
            f"paths.data_dir={tmp / 'data'}",
            *overrides,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_throwaway_regularizer_trains(plugin):
    tmp, env = plugin
    for seed in (0, 1):
        res = train(tmp, env, f"seed={seed}", f"hydra.run.dir={tmp / 'sweep' / f'noisy_seed{seed}'}")
        assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp / "sweep" / "noisy_seed0" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["regularizer"] == "noisy_erm"
    assert summary["config"]["regularizer"]["label"] == "Noisy ERM"
    assert summary["config"]["regularizer"]["sigma"] == 0.05


@pytest.mark.slow
def test_throwaway_regularizer_bad_value_is_its_own_one_line_error(plugin):
    tmp, env = plugin
    res = train(tmp, env, "regularizer.sigma=oops", f"hydra.run.dir={tmp / 'bad'}")
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "oops" in errors[0] and "Traceback" not in res.stderr


@pytest.mark.slow
def test_unknown_option_lists_the_searchpath_ones_too(plugin):
    tmp, env = plugin
    res = train(tmp, env, "regularizer=noisy_erk")
    assert res.returncode == 2
    assert "allowed: erm, flowmixup, manifold_mixup, mixup, noisy_erm" in res.stderr


@pytest.mark.slow
def test_throwaway_regularizer_reported_by_its_label(plugin):
    tmp, env = plugin
    if not (tmp / "sweep" / "noisy_seed0" / "summary.json").is_file():
        test_throwaway_regularizer_trains(plugin)
    res = subprocess.run(
        [sys.executable, "scripts/make_tables.py", str(tmp / "sweep"), "--no-figures"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Noisy ERM" in res.stdout + (tmp / "sweep" / "report" / "report.md").read_text()
