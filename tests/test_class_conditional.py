"""corruption.kind=class_conditional: per-class fn/fp rates (numbers, lists or a measured profile) scaled by noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowmixup.data.chestxray14 import CLASSES
from flowmixup.data.corruption import class_rates, corrupt_labels, packaged_profile, read_profile
from flowmixup.training import run
from flowmixup.training.checks import ConfigError, check_config

FN = np.array([0.8, 0.5, 0.2, 0.0, 1.0, 0.3])
FP = np.array([0.05, 0.0, 0.1, 0.02, 0.0, 0.3])


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    return (rng.random((40000, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.4]).astype(np.uint8)


@pytest.mark.parametrize("noise", [1.0, 0.5])
def test_measured_rates_match_the_requested_ones(labels, noise):
    noisy = corrupt_labels(labels, noise, "class_conditional", seed=1, fn_rate=FN, fp_rate=FP)
    assert noisy.dtype == labels.dtype and set(np.unique(noisy)) <= {0, 1}
    for c in range(labels.shape[1]):
        pos, neg = labels[:, c] == 1, labels[:, c] == 0
        for mask, target, want in ((pos, 0, FN[c]), (neg, 1, FP[c])):
            p, n = min(1.0, noise * want), int(mask.sum())
            got = float((noisy[mask, c] == target).mean())
            sd = np.sqrt(p * (1 - p) / n)
            assert abs(got - p) <= 5 * sd + 1e-12, (c, target, got, p)


def test_deterministic_seeded_input_untouched(labels):
    before = labels.copy()
    a = corrupt_labels(labels, 1.0, "class_conditional", seed=5, fn_rate=FN, fp_rate=FP)
    assert np.array_equal(a, corrupt_labels(labels, 1.0, "class_conditional", seed=5, fn_rate=FN, fp_rate=FP))
    assert not np.array_equal(a, corrupt_labels(labels, 1.0, "class_conditional", seed=6, fn_rate=FN, fp_rate=FP))
    assert np.array_equal(labels, before)
    assert np.array_equal(corrupt_labels(labels, 0.0, "class_conditional", fn_rate=FN, fp_rate=FP), labels)
    with pytest.raises(ValueError, match=r"^corruption.fn_rate: expected 6 probabilities"):
        corrupt_labels(labels, 1.0, "class_conditional", fn_rate=[0.1, 0.2], fp_rate=FP)


def test_class_rates_numbers_lists_and_profiles(tmp_path):
    names = ["a", "b", "c"]
    fn, fp = class_rates({"fn_rate": 0.4, "fp_rate": [0.1, 0.0, 0.2]}, names)
    assert fn.tolist() == [0.4] * 3 and fp.tolist() == [0.1, 0.0, 0.2]
    fn, fp = class_rates({"fn_rate": 0.4}, names)
    assert fp.tolist() == [0.0] * 3
    with pytest.raises(ValueError, match=r"^corruption.fp_rate: got \[0.1\]; allowed: .* a list of 3"):
        class_rates({"fp_rate": [0.1]}, names)
    # a measured profile: rows in any order, classes must be the dataset's
    csv = tmp_path / "noise_profile.csv"
    pd.DataFrame({"class": ["c", "a", "b"], "fn_rate": [0.3, 0.1, 0.2], "fp_rate": [0.03, 0.01, 0.02]}).to_csv(
        csv, index=False
    )
    fn, fp = class_rates({"profile": str(csv)}, names)
    assert fn.tolist() == [0.1, 0.2, 0.3] and fp.tolist() == [0.01, 0.02, 0.03]
    with pytest.raises(ValueError) as err:
        read_profile(csv, ["a", "b", "x"])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"corruption.profile: {csv} has the classes")
    with pytest.raises(ValueError, match=r"^corruption.profile: .*nowhere.csv not found; allowed:"):
        read_profile(tmp_path / "nowhere.csv", names)


def test_packaged_chestxray14_profile():
    text = packaged_profile("chestxray14").read_text()
    assert "Nabulsi" in text and "Wang" in text
    fn, fp = read_profile("chestxray14", CLASSES)
    assert len(fn) == 14 and fn[CLASSES.index("Atelectasis")] == pytest.approx(235 / 303, abs=1e-5)
    assert 0.6 < fn.mean() < 0.9 and 0.02 < fp.mean() < 0.07
    with pytest.raises(ValueError, match="has the classes"):
        read_profile("chestxray14", CLASSES[:-1])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["corruption.kind=class_conditional"], r"^corruption.kind: class_conditional without rates; allowed:"),
        (["corruption.fn_rate=0.3"], r"^corruption.fn_rate: is set but corruption.kind=resample; allowed:"),
        (
            ["corruption.kind=class_conditional", "corruption.fn_rate=1.5"],
            r"^corruption.fn_rate: got 1.5; allowed: a probability in \[0, 1\]",
        ),
        (
            ["corruption.kind=class_conditional", "corruption.profile=/nowhere/p.csv"],
            r"^corruption.profile: /nowhere/p.csv is not a file; allowed: .*chestxray14$",
        ),
        (
            ["corruption.kind=class_conditional", "corruption.profile=chestxray14", "corruption.fp_rate=0.1"],
            r"^corruption.fp_rate: given together with corruption.profile",
        ),
    ],
)
def test_config_errors_are_one_line(tiny_config, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        check_config(tiny_config(*overrides))
    assert "\n" not in str(err.value)


def test_training_corrupts_train_only(tiny_config, tmp_path):
    rates = ["corruption.kind=class_conditional", "corruption.fn_rate=0.7", "corruption.fp_rate=0.05"]
    clean = run(tiny_config("regularizer=erm", "trainer.epochs=1"), tmp_path / "clean")
    assert clean["corrupted_fraction"] == 0.0
    noisy = run(tiny_config("regularizer=erm", "trainer.epochs=1", "noise=1.0", *rates), tmp_path / "noisy")
    assert noisy["corruption_kind"] == "class_conditional" and 0.3 < noisy["corrupted_fraction"] < 1.0
    for name in ("predictions_test_last.npz", "labels_train_clean.npz"):
        a, b = np.load(tmp_path / "clean" / name), np.load(tmp_path / "noisy" / name)
        key = "y_true" if "predictions" in name else "y"
        assert np.array_equal(a[key], b[key])
    per_class = pd.read_csv(tmp_path / "noisy" / "per_class.csv")
    train_clean = np.load(tmp_path / "noisy" / "labels_train_clean.npz")["y"]
    assert (per_class["train_count"].to_numpy() < train_clean.sum(axis=0)).sum() >= 10  # missed findings
    with pytest.raises(ConfigError, match=r"^corruption.profile: .* has the classes \['Atelectasis'"):
        run(
            tiny_config(
                "regularizer=erm", "noise=1.0", "corruption.kind=class_conditional", "corruption.profile=chestxray14"
            ),
            tmp_path / "bad",
        )


def test_mini_profile_block_sits_beside_the_uniform_cells(tmp_path):
    from flowmixup.sweep.cells import cell_dir
    from flowmixup.sweep.plan import plan
    from flowmixup.sweep.profile import load_profile

    prof = load_profile("mini")
    checked = plan(prof, [0], {}, need_data=False)
    assert checked.problems == [] or all("no step times" in p for p in checked.problems), checked.problems
    missed = [c for c in checked.grid if c["dataset"] == "synth_ecg_missed"]
    assert sorted(c["row"] for c in missed) == ["erm", "flowmixup_a3_op_false", "mixup_a3"]
    assert {c["noise"] for c in missed} == {1.0}
    folders = [cell_dir(tmp_path, c["dataset"], c, c["noise"], c["seed"]) for c in checked.grid]
    assert len(set(folders)) == len(folders)  # no two cells share a folder
    block = next(b for b in checked.blocks if b.dataset == "synth_ecg_missed")
    assert block.config.corruption.kind == "class_conditional" and block.config.corruption.fn_rate == 0.769
    # a block's rows must be rows of the profile
    bad = {**prof, "datasets": [{**prof["datasets"][2], "rows": ["nope"]}]}
    problems = plan(bad, [0], {}, need_data=False).problems
    assert any("rows ['nope'] are not rows of the profile" in p for p in problems), problems


def test_paper_profile_checks_expert_labels(tmp_path):
    from flowmixup.sweep.plan import plan
    from flowmixup.sweep.profile import load_profile

    prof = load_profile("paper")
    problems = plan(prof, [0], {"chestxray14": [f"dataset.expert_labels={tmp_path / 'nowhere'}"]}, need_data=False)
    lines = [p for p in problems.problems if "dataset.expert_labels" in p]
    assert len(lines) == 1 and "is not a folder with test_labels.csv" in lines[0], problems.problems
