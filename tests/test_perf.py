"""flowmixup.perf, what bench.py and gpu_check.py measure with: the paper's rows and the backbones from conf/, the
trainer's own build and step, the round-robin timer, the table printer; and the two scripts taking their matrix from
it (the rows from paper_rows(), nothing of their own)."""

from __future__ import annotations

import ast
import sys

import pytest
import torch
import yaml

from flowmixup import perf
from flowmixup.models import ResNet1d, StemDenseNet
from project_config import CONF_DIR, PROJECT_ROOT
from test_bench import load_script

TINY_ECG = perf.Backbone(
    "resnet1d (tiny, 8x64)", ("backbone=resnet1d", "backbone.width=4", "backbone.blocks=[2,1,1,1]"), (8, 64), 3
)
SHORT_NAMES = ["erm", "mixup", "manifold_mixup", "flowmixup_op_false", "flowmixup_op_true"]


def expected_short_name(overrides: list[str]) -> str:
    """The timing files' name of a row, read from its overrides here (the planner's rule: the regularizer option,
    and for Flow-Mixup its Op; keep_original is false unless the row says otherwise)."""
    values = dict(o.split("=", 1) for o in overrides)
    name = values["regularizer"]
    return name + "_op_" + values.get("regularizer.keep_original", "false") if name == "flowmixup" else name


def test_paper_rows_are_the_rows_file_in_the_papers_order():
    rows = yaml.safe_load((CONF_DIR / "reproduce" / "rows.yaml").read_text())["rows"]  # the one definition
    assert list(perf.paper_rows().items()) == list(rows.items())
    assert perf.row_names() == {name: expected_short_name(overrides) for name, overrides in rows.items()}
    regs = perf.regularizers()
    assert list(regs) == SHORT_NAMES  # the names bench.json and gpu_check.json have always used
    assert regs["mixup"].row == "mixup_a1"  # mixup_a3 costs the same step: the first of the two is timed
    assert all(regs[n].overrides == tuple(perf.paper_rows()[regs[n].row]) for n in regs)


def test_backbones_are_the_configs_of_conf_backbone_built_by_the_trainer():
    """bench's presets are conf/backbone/*.yaml: the same networks bench built by hand before."""
    by_hand = {
        "resnet1d": ResNet1d(8, 15, blocks=(2, 2, 2, 2), width=16),
        "resnet34_1d": ResNet1d(8, 12),
        "densenet_small": StemDenseNet(
            1, 14, growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=24, stem_channels=8
        ),
    }
    erm = perf.regularizers()["erm"]
    for backbone in perf.backbones("bench"):
        cfg = perf.compose(perf.Variant(erm).overrides(backbone, torch.device("cpu"), 2, "inductor"))
        assert f"backbone={cfg.backbone.name}" in backbone.overrides
        probe = perf.Probe(cfg, backbone, batch=2)
        reference = by_hand[str(cfg.backbone.name)]
        assert type(probe.model) is type(reference)
        assert [p.shape for p in probe.model.parameters()] == [p.shape for p in reference.parameters()]
    assert [b.full_size for b in perf.backbones("bench", quick=True)] == [False, False]
    assert [b.label for b in perf.backbones("paper", quick=True)] == [b.label for b in perf.PRESETS["paper_toy"]]


def test_round_robin_interleaves_and_a_failing_probe_leaves_the_rotation():
    calls = []

    class Fake:
        device = torch.device("cpu")

        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.n = name, fail_at, 0

        def timed_step(self):
            calls.append(self.name)
            self.n += 1
            if self.n == self.fail_at:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
            return 0.1 * self.n, None

    probes = {"a": Fake("a"), "b": Fake("b", fail_at=2), "c": Fake("c")}
    timings = perf.time_round_robin(probes, rounds=3)
    assert list(probes) == ["a", "c"]  # the failed one is let go, so that its memory is freed
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "c"]
    assert timings["a"].seconds == pytest.approx([0.1, 0.2, 0.3]) and timings["a"].median == pytest.approx(0.2)
    assert timings["b"].median is None
    assert timings["b"].error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"  # one line


def test_measure_builds_with_the_trainer_and_keeps_going_past_a_broken_variant():
    erm = perf.regularizers()["erm"]
    broken = perf.Variant(perf.Regularizer("broken", "broken", ("regularizer=no_such_option",)))
    rows = perf.measure(
        TINY_ECG,
        [perf.Variant(erm), broken, perf.Variant(erm, compile=True)],
        device=torch.device("cpu"),
        batch=4,
        rounds=2,
        warmup=1,
        flops=True,
        backend="eager",
        log=lambda line: None,
    )
    eager, bad, compiled = rows
    assert eager["ok"] and eager["backbone_name"] == "resnet1d" and eager["timed_steps"] == 2
    assert eager["samples_per_s"] == pytest.approx(4 / eager["step_s"]) and eager["flops"] > 0
    assert compiled["ok"] and compiled["compile"] and compiled["flops"] == eager["flops"]  # its eager twin's count
    assert not bad["ok"] and "no_such_option" in bad["error"] and "\n" not in bad["error"]


def test_bench_and_gpu_check_take_their_rows_from_paper_rows(monkeypatch, tmp_path):
    bench, gpu_check = load_script("bench"), load_script("gpu_check")
    cpu = torch.device("cpu")
    rows = bench.bench_regularizers(cpu, 4, quick=True, bf16=False, presets=[TINY_ECG], rounds=1)
    regs = perf.regularizers()
    assert [r["regularizer"] for r in rows] == list(regs) == SHORT_NAMES and all(r["ok"] for r in rows)
    assert [r["row"] for r in rows] == [reg.row for reg in regs.values()]
    # another set of rows (one with a name of its own): both scripts follow it, and nothing else
    mine = {"erm": ["regularizer=erm"], "flow_keep": ["regularizer=flowmixup", "regularizer.keep_original=true"]}
    monkeypatch.setattr(perf, "paper_rows", lambda: mine)
    rows = bench.bench_regularizers(cpu, 4, quick=True, bf16=False, presets=[TINY_ECG], rounds=1)
    assert [(r["row"], r["regularizer"]) for r in rows] == [("erm", "erm"), ("flow_keep", "flowmixup_op_true")]
    assert all(r["ok"] for r in rows)
    monkeypatch.setattr(perf, "backbones", lambda preset, quick=False: (TINY_ECG,))
    args = gpu_check.parse(
        [
            "--device",
            "cpu",
            "--quick",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--batch",
            "4",
            "--no-compile",
            "--out",
            str(tmp_path / "g.json"),
        ]
    )
    report = gpu_check.Report(tmp_path / "g.json", {})
    steps = gpu_check.section_steps(args, cpu, report)
    assert [(r["row"], r["regularizer"], r["precision"]) for r in steps] == [
        ("erm", "erm", "fp32"),
        ("erm", "erm", "bf16"),
        ("flow_keep", "flowmixup_op_true", "fp32"),
        ("flow_keep", "flowmixup_op_true", "bf16"),
    ]
    assert all(r["ok"] for r in steps) and report.data["steps"] == steps


def test_table_through_pandas_and_the_plain_fallback_agree_on_the_cells(monkeypatch):
    rows = [{"name": "erm", "ms": 12.345, "n": 3, "error": None}, {"name": "flowmixup_op_true", "ms": 1234.5}]
    cols = [("name", "regularizer", ""), ("ms", "step ms", ",.1f"), ("n", "n", ""), ("error", "error", "")]
    pytest.importorskip("tabulate")
    text = perf.table(rows, cols)
    monkeypatch.setitem(sys.modules, "tabulate", None)  # as if it were not installed
    plain = perf.table(rows, cols)
    for out in (text, plain):
        lines = out.strip().splitlines()
        assert len(lines) == 4 and lines[0].split("|")[1].strip() == "regularizer"
        assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["erm", "12.3", "3", "n/a"]
        assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["flowmixup_op_true", "1,234.5", "n/a", "n/a"]
        assert [c.strip().endswith(":") for c in lines[1].strip("|").split("|")] == [False, True, True, False]


@pytest.mark.parametrize("path", ["src/flowmixup/perf.py", "scripts/bench.py", "scripts/gpu_check.py"])
def test_short_functions_short_lines_and_no_sys_path_editing(path):
    source = (PROJECT_ROOT / path).read_text()
    assert "sys.path" not in source
    assert max(len(line) for line in source.splitlines()) <= 120
    tree = ast.parse(source)
    long = [
        (n.name, n.end_lineno - n.lineno + 1)
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert not long
    if path.startswith("scripts"):  # command lines over perf: no step timer, sync or row table of their own
        names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not names & {"sync", "backbones", "Probe", "time_steps", "matmul_peak", "table", "compose"}
        assert "REGULARIZERS" not in source and "paper_rows" not in source.replace("perf.paper_rows", "")


def tiny_probe(batch=4):
    """A Probe around a tiny Conv1d + Linear model with ERM (built by hand: its FLOPs can be counted by hand)."""
    from flowmixup import ERM

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 5, 3), torch.nn.Flatten(), torch.nn.Linear(5 * 14, 2))
    probe = perf.Probe.__new__(perf.Probe)
    probe.device, probe.model, probe.reg, probe.bf16, probe.graph = torch.device("cpu"), model, ERM(model), False, None
    probe.criterion = torch.nn.BCEWithLogitsLoss()
    probe.optimizer = torch.optim.Adam(model.parameters())
    probe.x, probe.y = torch.randn(batch, 3, 16), torch.ones(batch, 2)
    return probe


def test_counted_flops_equal_an_independent_count_of_the_step():
    """Forward: the convolution (2 B Cout Lout Cin K) and the linear layer (2 B in out); backward: the convolution's
    weight gradient only (its input needs none), the linear layer's input and weight gradients."""
    b = 4
    conv = 2 * b * 5 * 14 * 3 * 3
    linear = 2 * b * (5 * 14) * 2
    assert tiny_probe(b).count_flops() == 2 * conv + 3 * linear


def test_achieved_rate_fraction_of_peak_and_busy_share_fields():
    device = torch.device("cpu")
    ceiling = perf.device_ceiling(device, quick=True)
    assert set(ceiling["matmul"]) == {"fp32"} and ceiling["matmul"]["fp32"]["flop_per_s"] > 0
    assert ceiling["copy_bytes_per_s"] > 0 and "read + write" in ceiling["how"]
    rows = [
        {"ok": True, "precision": "fp32", "flops": 3e9, "step_s": 0.5},
        {"ok": True, "precision": "bf16", "flops": 3e9, "step_s": 0.25},  # on CPU against the float32 peak
        {"ok": False, "precision": "fp32", "error": "out of memory"},
    ]
    fake = {"matmul": {"fp32": {"tflop_per_s": 0.012, "flop_per_s": 1.2e10}}}
    perf.set_peak_fields(rows, fake, device)
    assert rows[0]["achieved_tflop_per_s"] == pytest.approx(0.006) and rows[0]["fraction_of_peak"] == pytest.approx(0.5)
    assert rows[1]["fraction_of_peak"] == pytest.approx(1.0) and rows[1]["peak_used"] == "fp32"
    assert "fraction_of_peak" not in rows[2]
    assert perf.precision_of_peak(device) == {"fp32": "fp32", "bf16": "fp32"}
    share, source = tiny_probe().busy_share(steps=3)
    assert 0 < share <= 1.5 and source.startswith("cpu stand-in")
    assert tiny_probe().count_syncs() is None  # CPU: no device to synchronise with


def test_measure_profiles_each_variant_when_asked():
    erm = perf.regularizers()["erm"]
    rows = perf.measure(
        TINY_ECG,
        [perf.Variant(erm)],
        device=torch.device("cpu"),
        batch=4,
        rounds=2,
        warmup=1,
        flops=True,
        profile_steps=2,
        log=lambda _: None,
    )
    (row,) = rows
    assert row["ok"] and row["flops"] > 0 and row["cuda_graph"] is False
    assert 0 < row["busy_share"] <= 1.5 and row["busy_source"].startswith("cpu stand-in")
    assert "syncs_in_step" not in row
