"""The paper's Fig. 4 analysis: R² = 1 - SSI/SST (Eq. 7) of k-means clusterings of hidden features, the hooks that
collect them, and scripts/feature_r2.py on runs (a hand-saved plain checkpoint; two trained tiny runs)."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowmixup.analysis import (
    AnalysisError,
    check_points,
    cluster_r2,
    collect_features,
    default_points,
    kmeans_assign,
    load_run,
    r2_table,
)
from project_config import PROJECT_ROOT, TINY, compose_config


def direct_r2(z, labels):
    """Eq. 7 term by term, with Python loops over clusters, samples and values."""
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    n, v = z.shape
    mean = [sum(z[j, u] for j in range(n)) / n for u in range(v)]
    sst = sum((z[j, u] - mean[u]) ** 2 for j in range(n) for u in range(v)) / v
    ssi = 0.0
    for c in set(labels.tolist()):
        members = [j for j in range(n) if labels[j] == c]
        mean_c = [sum(z[j, u] for j in members) / len(members) for u in range(v)]
        ssi += sum((z[j, u] - mean_c[u]) ** 2 for j in members for u in range(v)) / v
    return 1 - ssi / sst


# ---------------------------------------------------------------------------------------------------------------
# cluster_r2
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_r2_equals_eq7_on_random_data(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(37, 3, 4)) * rng.uniform(0.1, 5, size=(1, 3, 4)) + rng.normal(size=(1, 3, 4))
    labels = rng.integers(0, 5, size=37)
    assert cluster_r2(z, labels) == pytest.approx(direct_r2(z, labels), rel=1e-10)
    # the same on the (N, V) view, with string labels, and in float32
    assert cluster_r2(z.reshape(37, 12), labels.astype(str)) == pytest.approx(direct_r2(z, labels), rel=1e-10)
    assert cluster_r2(z.astype(np.float32), labels) == pytest.approx(direct_r2(z, labels), rel=1e-5)


def test_cluster_r2_sums_in_blocks_like_in_one(monkeypatch):
    from flowmixup.analysis import r2 as r2mod

    rng = np.random.default_rng(3)
    z, labels = rng.normal(size=(50, 7)), rng.integers(0, 4, size=50)
    whole = cluster_r2(z, labels)
    monkeypatch.setattr(r2mod, "_CHUNK", 8)  # one row per block
    assert cluster_r2(z, labels) == pytest.approx(whole, rel=1e-12)


def test_perfectly_separated_clusters_give_one():
    centres = np.array([[0.0, 0.0, 0.0], [5.0, -1.0, 2.0], [-3.0, 4.0, 1.0]])
    labels = np.repeat([0, 1, 2], [4, 6, 5])
    z = centres[labels]  # every sample sits on its cluster's centre: SSI = 0
    assert cluster_r2(z, labels) == pytest.approx(1.0)
    assert cluster_r2(z, kmeans_assign(z, k=3)) == pytest.approx(1.0)


def test_one_cluster_gives_zero():
    z = np.random.default_rng(0).normal(size=(20, 6))
    assert cluster_r2(z, np.zeros(20, dtype=int)) == pytest.approx(0.0, abs=1e-12)
    assert cluster_r2(z, kmeans_assign(z, k=1)) == pytest.approx(0.0, abs=1e-12)


def test_cluster_r2_of_identical_samples_is_nan_and_bad_shapes_fail():
    assert np.isnan(cluster_r2(np.ones((5, 3)), np.arange(5) % 2))
    with pytest.raises(ValueError, match="5 feature rows but 4 assignments"):
        cluster_r2(np.zeros((5, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"k=6 clusters but 5 samples; allowed: 1 <= k <= 5"):
        kmeans_assign(np.zeros((5, 3)), k=6)


def test_kmeans_is_seeded_and_minibatch_above_threshold():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(m, 0.1, size=(40, 5)) for m in (0, 3, 6)])
    a, b = kmeans_assign(z, k=3, seed=7), kmeans_assign(z, k=3, seed=7)
    assert np.array_equal(a, b)
    mb = kmeans_assign(z, k=3, seed=7, minibatch_above=10)  # mini-batch k-means finds the same three blobs
    assert cluster_r2(z, mb) == pytest.approx(cluster_r2(z, a), rel=1e-6)
    rows = r2_table({"p": z, "q": z[:, :2]}, k=3)
    assert [r["point"] for r in rows] == ["p", "q"] and rows[0]["n"] == 120 and rows[0]["v"] == 5
    assert rows[0]["r2"] > 0.99


# ---------------------------------------------------------------------------------------------------------------
# hidden-state names and collection
# ---------------------------------------------------------------------------------------------------------------
class ToyBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv(x))


class ToyNet(nn.Module):
    """A torchvision-style network: stem, stages of blocks, pooling, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage1 = nn.Sequential(ToyBlock(4), ToyBlock(4))
        self.stage2 = nn.Sequential(ToyBlock(4))
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_default_points_name_every_block_then_output():
    from flowmixup.models import ResNet1d

    assert default_points(ToyNet()) == ["stage1.0", "stage1.1", "stage2.0", "output"]
    net = ResNet1d(2, 3, blocks=[2, 1], width=4)
    assert default_points(net) == ["layer1.0", "layer1.1", "layer2.0", "output"]
    with pytest.raises(AnalysisError, match=r"no residual or dense blocks recognised in Linear.*allowed: output"):
        default_points(nn.Linear(2, 2))


def test_unknown_hidden_state_lists_the_valid_ones():
    with pytest.raises(AnalysisError) as err:
        check_points(ToyNet(), ["stage1.0", "stage9"])
    msg = str(err.value)
    assert "unknown hidden state 'stage9'" in msg and "allowed: output, stem, stage1, stage1.0" in msg
    assert "\n" not in msg


def test_collect_features_returns_each_submodules_output_flattened():
    torch.manual_seed(0)
    model = ToyNet().train()
    x = torch.randn(10, 3, 5, 5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(10)), batch_size=4)
    feats = collect_features(model, loader, ["stage1.1", "output"])
    assert model.training  # mode restored
    assert not model.stage1[1]._forward_hooks and not model._forward_hooks  # hooks removed
    with torch.no_grad():
        h = model.stage1(model.stem(x))
        out = model(x)
    assert feats["stage1.1"].shape == (10, 4 * 5 * 5) and feats["stage1.1"].dtype == np.float32
    np.testing.assert_allclose(feats["stage1.1"], h.flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats["output"], out.numpy(), rtol=1e-5, atol=1e-6)
    assert collect_features(model, loader, ["output"], max_samples=6)["output"].shape == (6, 10)


# ---------------------------------------------------------------------------------------------------------------
# runs: a plain checkpoint saved here (as training saves its model), then the script in-process
# ---------------------------------------------------------------------------------------------------------------
def _script():
    spec = importlib.util.spec_from_file_location("feature_r2_script", PROJECT_ROOT / "scripts" / "feature_r2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_plain_run(tmp_path: Path, name: str, seed: int) -> Path:
    """A run folder as training leaves it (config.yaml + checkpoint.pt holding the model's state dict), with
    random weights, saved as a plain dict."""
    from omegaconf import OmegaConf

    from flowmixup.analysis.features import _build_function
    from flowmixup.training.build import load_data

    cfg = compose_config(tmp_path, ["regularizer=erm", "dataset.n_records=60"])
    data = load_data(cfg)
    torch.manual_seed(seed)
    model = _build_function()(cfg, in_channels=data.x.shape[1], num_classes=len(data.class_names))
    with torch.no_grad():  # random BatchNorm statistics, so that eval mode is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    torch.save({"config": resolved, "model": model.state_dict()}, run_dir / "checkpoint.pt")
    return run_dir


def test_load_run_rebuilds_the_model_with_its_weights(tmp_path):
    run_dir = make_plain_run(tmp_path, "a", seed=1)
    run = load_run(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    for key, value in run["model"].state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not run["model"].training
    assert len(run["data"].splits["train"]) > 0


def test_script_csv_equals_r2_recomputed_from_the_model(tmp_path, capsys):
    a, b = make_plain_run(tmp_path, "a", seed=1), make_plain_run(tmp_path, "b", seed=2)
    out = tmp_path / "fig"
    assert (
        _script().main(
            [
                str(a),
                str(b),
                "--out",
                str(out),
                "--k",
                "3",
                "--num-threads",
                "1",
                "--no-progress",
                "--labels",
                "first,second",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "feature_r2.csv")))
    assert (out / "feature_r2.png").stat().st_size > 1000
    points = ["layer1.0", "layer1.1", "layer2.0", "layer3.0", "layer4.0", "output"]  # TINY: blocks [2,1,1,1]
    assert [r["point"] for r in rows] == points * 2 and {r["run"] for r in rows} == {"first", "second"}
    # independently: the block's output by a manual forward of the rebuilt model, clustered with the same seed
    run = load_run(b)
    model, data = run["model"], run["data"]
    x = torch.from_numpy(np.asarray(data.x[data.splits["train"]]))
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer2[0](model.layer1(h)).flatten(1).numpy()
    expected = cluster_r2(h, kmeans_assign(h, k=3, seed=0))
    row = next(r for r in rows if r["run"] == "second" and r["point"] == "layer2.0")
    assert float(row["r2"]) == pytest.approx(expected, abs=1e-5)
    assert int(row["n"]) == len(data.splits["train"]) and int(row["v"]) == h.shape[1]
    first = next(r for r in rows if r["run"] == "first" and r["point"] == "layer2.0")
    assert float(row["ratio_to_first"]) == pytest.approx(float(first["r2"]) / float(row["r2"]), rel=1e-5)
    assert "layer2.0" in capsys.readouterr().out


def test_script_bad_input_is_one_line(tmp_path, capsys):
    main = _script().main
    a = make_plain_run(tmp_path, "a", seed=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    n_train = len(load_run(a)["data"].splits["train"])
    cases = [
        ([str(a), str(empty)], f"error: {empty}: no checkpoint.pt"),
        ([str(a), "--points", "layer1.0,layer9"], "error: --points: unknown hidden state 'layer9'"),
        (
            [str(a), "--k", str(n_train + 1)],
            f"error: --k {n_train + 1} is larger than the number of samples ({n_train} in the train split",
        ),
        ([str(a), "--k", "5", "--max-samples", "4"], "error: --k 5 is larger than the number of samples (4 "),
    ]
    for args, expected in cases:
        assert main([*args, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err
    assert main([str(a), "--points", "layer9"]) == 2
    assert "allowed: output, conv1, bn1, relu, maxpool, layer1, layer1.0" in capsys.readouterr().err
    # a checkpoint that needs more than weights_only=True allows (an arbitrary object) is refused, not executed
    torch.save({"model": {}, "extra": object.__new__(ToyBlock)}, a / "checkpoint.pt")
    assert main([str(a), "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "cannot be read as a plain checkpoint with weights_only=True" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------------------
# end to end: two tiny trained runs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_trained_runs_end_to_end(tmp_path):
    data = f"paths.data_dir={tmp_path / 'data'}"
    dirs = []
    for reg in ("erm", "manifold_mixup"):
        run_dir = tmp_path / reg
        res = subprocess.run(
            [
                sys.executable,
                "train.py",
                *TINY,
                data,
                f"regularizer={reg}",
                "trainer.epochs=1",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        dirs.append(run_dir)
    out = tmp_path / "fig4"
    cmd = [
        sys.executable,
        "scripts/feature_r2.py",
        *map(str, dirs),
        "--out",
        str(out),
        "--points",
        "layer1.1,layer3.0,output",
        "--k",
        "4",
        "--seed",
        "3",
        "--num-threads",
        "1",
    ]
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "feature_r2.csv")))
    assert [(r["run"], r["point"]) for r in rows] == [
        (reg, p) for reg in ("erm", "manifold_mixup") for p in ("layer1.1", "layer3.0", "output")
    ]
    assert (out / "feature_r2.png").is_file()
    # layer3.0 of the Manifold Mixup run, recomputed: weights read here, the block's output by hand
    run = load_run(dirs[1])
    model, d = run["model"], run["data"]
    feats = collect_features(model, [torch.from_numpy(np.asarray(d.x[d.splits["train"]]))], ["layer3.0"])
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(d.x[d.splits["train"]]))
        h = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))).flatten(1)
    np.testing.assert_allclose(feats["layer3.0"], h.numpy(), rtol=1e-5, atol=1e-6)
    row = next(r for r in rows if r["run"] == "manifold_mixup" and r["point"] == "layer3.0")
    z = h.numpy()
    assert float(row["r2"]) == pytest.approx(cluster_r2(z, kmeans_assign(z, k=4, seed=3)), abs=1e-5)
    # bad input through the real command line
    for args, expected, code in [
        ([str(tmp_path / "data")], "no checkpoint.pt", 2),
        ([str(dirs[0]), "--points", "layer1.7"], "unknown hidden state 'layer1.7'", 2),
        ([str(dirs[0]), "--k", "100000"], "is larger than the number of samples", 2),
    ]:
        res = subprocess.run(
            [sys.executable, "scripts/feature_r2.py", *args, "--out", str(tmp_path / "bad")],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == code and expected in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_load_run_reads_data_moved_elsewhere_with_data_dir(tmp_path):
    run_dir = make_plain_run(tmp_path, "a", seed=1)
    before = load_run(run_dir)["data"]
    (tmp_path / "data").rename(tmp_path / "moved")
    run = load_run(run_dir, data_dir=str(tmp_path / "moved"))
    assert run["cfg"].dataset.loader.cache_dir == str(tmp_path / "moved" / "synth_ecg")
    assert not (tmp_path / "data").exists()  # nothing generated at the old place
    np.testing.assert_array_equal(np.asarray(run["data"].x), np.asarray(before.x))
