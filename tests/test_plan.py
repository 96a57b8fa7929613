"""reproduce_tables.py --plan: runs, steps, GPU-hours and wall time from a profile, its sizes (or a prepared cache)
and a timing file (bench.json or gpu_check.json written here), checked against the arithmetic done independently in
each test. Nothing trains."""

from __future__ import annotations

import json
import math
import runpy

import pytest
from omegaconf import OmegaConf

from flowmixup.sweep.planner import pick_timing, plan_profile
from project_config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "reproduce_tables.py"
# experiment mini_synth_ecg: backbone resnet1d, 25 epochs; here with batch 50 (the timings are at batch 32)
EPOCHS, BATCH = 25, 50
SIZES = {"train": 1000, "val": 100, "test": 300}


def write_profile(path, sizes=SIZES, extra_entry=""):
    sizes_line = f"    sizes: {json.dumps(sizes)}\n" if sizes else ""
    path.write_text(
        "rows: [erm, flowmixup_a3_op_true]\n"
        "datasets:\n"
        "  - experiment: mini_synth_ecg\n"
        "    noise: [0.0, 0.4]\n"
        f"    overrides: [trainer.batch_size={BATCH}]\n" + sizes_line + extra_entry
    )
    return path


def write_bench(path, erm_s=0.2, flow_s=0.4, with_names=False):
    """bench.json as scripts/bench.py writes it (CPU; older files have no backbone_name)."""
    rows = [
        {"backbone": "resnet1d (mini, 1x500)", "regularizer": "erm", "batch": 32, "step_s": erm_s},
        {"backbone": "resnet1d (mini, 1x500)", "regularizer": "flowmixup_op_true", "batch": 32, "step_s": flow_s},
        {"backbone": "resnet1d (mini, 1x500)", "regularizer": "flowmixup_op_false", "batch": 32, "step_s": 9.9},
    ]
    if with_names:
        for r in rows:
            r["backbone_name"] = "resnet1d"
    path.write_text(json.dumps({"device": "cpu", "batch": 32, "regularizers": rows}))
    return path


def independent(erm_s, flow_s, timing_batch, sizes, gpus, runs_per_block=2 * 2):
    """The planner's numbers, computed here from the definitions (steps, eval at 1/3 cost, blocks in turn)."""
    steps = math.ceil(sizes["train"] / BATCH) * EPOCHS
    evals = (sizes["val"] + sizes["test"]) * EPOCHS
    run = {}
    for row, step_s in (("erm", erm_s), ("flowmixup_a3_op_true", flow_s)):
        per_sample = step_s / timing_batch
        run[row] = steps * per_sample * BATCH + evals * per_sample / 3
    gpu_h = sum(runs_per_block * t for t in run.values()) / 3600
    wall_h = sum(math.ceil(runs_per_block / gpus) * t for t in run.values()) / 3600
    packed_h = max(gpu_h / gpus, max(run.values()) / 3600)
    return steps, evals, run, gpu_h, wall_h, packed_h


@pytest.mark.parametrize("gpus", [1, 3, 8])
def test_numbers_from_a_bench_file(tmp_path, gpus):
    profile = write_profile(tmp_path / "p.yaml")
    bench = write_bench(tmp_path / "bench.json")
    text, est, problems = plan_profile(str(profile), [0, 1], gpus, bench)
    assert problems == []
    steps, evals, run, gpu_h, wall_h, packed_h = independent(0.2, 0.4, 32, SIZES, gpus)
    assert est.runs == 2 * 2 * 2  # rows x noise x seeds
    (d,) = est.datasets
    assert d.dataset == "synth_ecg" and d.sizes == SIZES and d.sizes_from == "the profile's sizes"
    assert [b.steps_per_run for b in d.blocks] == [steps, steps] == [math.ceil(1000 / 50) * 25] * 2
    assert [b.eval_samples_per_run for b in d.blocks] == [evals, evals]
    assert [b.run_s for b in d.blocks] == pytest.approx([run["erm"], run["flowmixup_a3_op_true"]])
    assert est.gpu_hours == pytest.approx(gpu_h)
    assert est.wall_hours == pytest.approx(wall_h)
    assert est.packed_wall_hours == pytest.approx(packed_h)
    # the printout names the file and the rows used, and states the evaluation assumption
    assert str(bench) in text and "regularizers[0]: resnet1d erm" in text
    assert "regularizers[1]: resnet1d flowmixup_op_true" in text
    assert "scaled to batch 50" in text and "1/3 of a training step" in text
    assert f"Total: 8 runs, {gpu_h:,.1f} h GPU-hours" in text


def test_gpu_check_rows_precision_compile_and_batch(tmp_path):
    steps = []
    for reg, ms in (("erm", 100.0), ("flowmixup_op_true", 300.0)):
        for precision, compiled, factor in (("fp32", False, 1.0), ("bf16", False, 0.5), ("bf16", True, 0.25)):
            steps.append(
                {
                    "backbone": "1-D ResNet (mini)",
                    "backbone_name": "resnet1d",
                    "input": [1, 500],
                    "regularizer": reg,
                    "precision": precision,
                    "compile": compiled,
                    "batch": 64,
                    "step_ms": ms * factor,
                    "samples_per_s": 1.0,
                    "ok": True,
                }
            )
    steps.append(
        {
            "backbone_name": "resnet1d",
            "regularizer": "erm",
            "precision": "fp32",
            "compile": False,
            "batch": 64,
            "step_ms": 1.0,
            "ok": False,
        }
    )  # a failed measurement is never used
    timings = tmp_path / "gpu_check.json"
    timings.write_text(json.dumps({"device": {"name": "Test GPU", "device": "cuda"}, "steps": steps}))
    text, est, problems = plan_profile(str(write_profile(tmp_path / "p.yaml")), [0], 2, timings)
    assert problems == []
    _, _, run, gpu_h, wall_h, _ = independent(0.1, 0.3, 64, SIZES, 2, runs_per_block=2)
    assert est.gpu_hours == pytest.approx(gpu_h) and est.wall_hours == pytest.approx(wall_h)
    assert "Test GPU (cuda)" in text and "steps[0]: resnet1d on 1x500 erm fp32 batch 64: 100.0 ms/step" in text
    # the config's precision and compile pick the row; a missing precision falls back to fp32, said so
    from flowmixup.sweep.planner import load_timings

    loaded = load_timings(timings)

    def cfg(precision, compiled, reg="erm", keep=None):
        return OmegaConf.create(
            {
                "backbone": {"name": "resnet1d"},
                "regularizer": {"name": reg, "keep_original": keep},
                "trainer": {"precision": precision, "compile": compiled},
            }
        )

    assert pick_timing(loaded, cfg("bf16", True))[0]["step_s"] == pytest.approx(0.025)
    assert pick_timing(loaded, cfg("bf16", False))[0]["step_s"] == pytest.approx(0.05)
    row, note = pick_timing(loaded, cfg("fp16", False, "flowmixup", True))
    assert row["step_s"] == pytest.approx(0.3) and "no fp16 row: fp32's" in note
    assert pick_timing(loaded, cfg("fp32", False, "mixup"))[0] is None


def test_a_missing_backbone_is_one_line_naming_how_to_measure(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "device": "cpu",
                "batch": 32,
                "regularizers": [
                    {
                        "backbone": "resnet34_1d (paper, 8x5000)",
                        "backbone_name": "resnet34_1d",
                        "regularizer": "erm",
                        "batch": 32,
                        "step_s": 1.0,
                    }
                ],
            }
        )
    )
    _, est, problems = plan_profile(str(write_profile(tmp_path / "p.yaml")), [0], 1, bench)
    assert len(problems) == 1 and est.gpu_hours is None
    assert problems[0].startswith("synth_ecg: no step time for backbone resnet1d with erm, flowmixup_op_true in ")
    assert "make gpu-check" in problems[0] and "make bench" in problems[0]


def test_sizes_from_a_prepared_cache(tmp_path, monkeypatch):
    """A complete cache's manifest gives the record count (less the skipped ones), split as the profile's sizes."""
    monkeypatch.setenv("FLOWMIXUP_DATA_DIR", str(tmp_path / "data"))
    cache = tmp_path / "data" / "synth_ecg"
    cache.mkdir(parents=True)
    (cache / "synth.json").write_text(
        json.dumps(
            {
                "complete": True,
                "config": {"dataset": "synth_ecg"},
                "rows": 2010,
                "skipped": [
                    "r1: bad",
                    "r2: bad",
                    "r3: bad",
                    "r4: bad",
                    "r5: bad",
                    "r6: bad",
                    "r7: bad",
                    "r8: bad",
                    "r9: bad",
                    "r10: bad",
                ],
            }
        )
    )
    _, est, problems = plan_profile(str(write_profile(tmp_path / "p.yaml")), [0], 1, write_bench(tmp_path / "b.json"))
    assert problems == []
    (d,) = est.datasets
    # 2,000 records in the proportions 1000:100:300
    assert d.sizes == {
        "train": round(2000 * 1000 / 1400),
        "val": round(2000 * 100 / 1400),
        "test": 2000 - round(2000 * 1000 / 1400) - round(2000 * 100 / 1400),
    }
    assert "synth.json (2000 records" in d.sizes_from
    assert d.blocks[0].steps_per_run == math.ceil(1429 / BATCH) * EPOCHS


def test_no_sizes_and_no_timings_are_one_line_each(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWMIXUP_DATA_DIR", str(tmp_path / "data"))
    _, _, problems = plan_profile(
        str(write_profile(tmp_path / "p.yaml", sizes=None)), [0], 1, write_bench(tmp_path / "b.json")
    )
    assert problems == [
        "synth_ecg: no size: add sizes: {train: N, val: N, test: N} to its entry in the profile, or "
        "prepare its cache (scripts/prepare_data.py)"
    ]
    (tmp_path / "bad.json").write_text(json.dumps({"something": []}))
    _, _, problems = plan_profile(str(write_profile(tmp_path / "p.yaml")), [0], 1, tmp_path / "bad.json")
    assert len(problems) == 1 and "neither a gpu_check.json" in problems[0]


@pytest.mark.slow
def test_the_script_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT), run_name="reproduce_tables")["main"]
    bench = write_bench(tmp_path / "bench.json", with_names=True)
    sweep = tmp_path / "sweep"
    assert (
        main(["--profile", "paper", "--plan", "--gpus", "8", "--timings", str(bench), "--sweep-dir", str(sweep)]) == 2
    )  # the paper's backbones are not in this bench file
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["chestxray14", "ecg12, ecg55"]
    assert "densenet121" in lines[0] and "resnet34_1d" in lines[1]
    assert "Total: 72 runs" in captured.out  # 3 datasets x 6 rows x 4 noise levels x 1 seed, no dataset root needed
    assert not sweep.exists()
    assert main(["--profile", str(write_profile(tmp_path / "p.yaml")), "--plan", "--timings", str(bench)]) == 0
    assert "Total: 4 runs" in capsys.readouterr().out


def test_without_a_measurement_of_ones_own_the_shipped_h100_file_prices_the_plan(tmp_path):
    """A fresh clone (no outputs/gpu_check/gpu_check.json, no outputs/bench/bench.json): the planner takes the
    shipped reference measurement from docs/gpu/ and says which card it comes from, instead of "? GPU-hours"."""
    import shutil

    from flowmixup.sweep.planner import REFERENCE_TIMINGS, load_timings

    assert (PROJECT_ROOT / REFERENCE_TIMINGS).is_file()  # tracked in the repository: a fresh clone has it
    root = tmp_path / "clone"  # a project folder without outputs/, as a fresh clone has
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf")
    (root / REFERENCE_TIMINGS).parent.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / REFERENCE_TIMINGS, root / REFERENCE_TIMINGS)
    (root / "train.py").write_text("")
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "rows: [erm, flowmixup_a3_op_false]\ndatasets:\n  - experiment: paper_ecg12\n    noise: [0.0]\n"
        "    sizes: {train: 640, val: 64, test: 64}\n"
    )
    text, est, problems = plan_profile(str(profile), [0], 1, project_root=root)
    assert problems == [] and est.timings.reference and est.gpu_hours is not None
    assert "shipped reference measurement docs/gpu/gpu_check_h100.json, made on an NVIDIA H100" in text
    assert "? GPU-hours" not in text
    # the figures are the H100 rows' (resnet34_1d, fp32, eager), by the planner's own arithmetic
    ref = load_timings(PROJECT_ROOT / REFERENCE_TIMINGS)
    erm = next(
        r
        for r in ref.rows
        if (r["backbone"], r["regularizer"], r["precision"], r["compile"]) == ("resnet34_1d", "erm", "fp32", False)
    )
    cfg = est.datasets[0]
    assert cfg.blocks[0].step_s == pytest.approx(erm["step_s"] * cfg.batch / erm["batch"])
    # a measurement of one's own wins over the reference, and is not called one
    (root / "outputs" / "bench").mkdir(parents=True)
    write_bench(root / "outputs" / "bench" / "bench.json", with_names=True)
    text, est, _ = plan_profile(str(profile), [0], 1, project_root=root)
    assert not est.timings.reference and "shipped reference" not in text
    assert est.timings.path == root / "outputs" / "bench" / "bench.json"


def test_a_cuda_graph_row_prices_only_a_run_with_trainer_cuda_graph(tmp_path):
    from flowmixup.sweep.planner import load_timings

    def row(ms, graph):
        return {"backbone_name": "resnet1d", "regularizer": "erm", "precision": "fp32", "compile": False}, {
            "cuda_graph": graph,
            "batch": 32,
            "step_ms": ms,
            "ok": True,
        }

    steps = [{**a, **b} for a, b in (row(4.0, True), row(12.0, False))]  # the graphed row first: never taken by default
    timings = tmp_path / "gpu_check.json"
    timings.write_text(json.dumps({"device": {"name": "Test GPU", "device": "cuda"}, "steps": steps}))
    loaded = load_timings(timings)

    def cfg(graph=None):
        trainer = {"precision": "fp32", "compile": False, **({"cuda_graph": graph} if graph is not None else {})}
        return OmegaConf.create({"backbone": {"name": "resnet1d"}, "regularizer": {"name": "erm"}, "trainer": trainer})

    assert pick_timing(loaded, cfg())[0]["step_s"] == pytest.approx(0.012)
    assert pick_timing(loaded, cfg(False))[0]["step_s"] == pytest.approx(0.012)
    assert pick_timing(loaded, cfg(True))[0]["step_s"] == pytest.approx(0.004)
    only_eager = load_timings(timings)
    only_eager.rows = [r for r in only_eager.rows if not r["cuda_graph"]]
    found, note = pick_timing(only_eager, cfg(True))
    assert found["step_s"] == pytest.approx(0.012) and "no cuda_graph=True row: cuda_graph=False's" in note
