"""Caches and folders that several jobs share, and writes that fail: one builder per cache, readers that need no
lock, one line for a full disk or an unwritable folder with nothing finished lost, logs that read well in a file,
and a quoting hint for an override Hydra cannot read.

Every meeting of two processes happens at a known point (``FLOWMIXUP_PAUSE_AT``: the builder stops after its
first block of rows and meets the test through named pipes), every failed write at a known write
(``FLOWMIXUP_FAULT_WRITE``, or a tmpfs too small for the file): no sleep decides what a test sees.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import shlex
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from flowmixup import io as fio
from flowmixup.data import cache
from flowmixup.data import chestxray14 as cx
from project_config import PROJECT_ROOT, TINY

N_IMAGES, RES = 200, 8  # 200 images: 7 blocks of 32 rows, so a builder paused after its first block is mid-build


def make_nih_root(root: Path, n: int = N_IMAGES) -> Path:
    """A ChestX-ray14 root in the NIH layout: generated 32x32 PNGs, the label table, the two split lists."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    findings = [*cx.CLASSES, "No Finding"]
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"]
    for i in range(n):
        name = f"{i:08d}_000.png"
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(root / "images" / name)
        lines.append(f"{name},{findings[i % len(findings)]},0,{i // 2 + 1},50,M,PA")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    names = [line.split(",")[0] for line in lines[1:]]
    (root / "train_val_list.txt").write_text("".join(x + "\n" for x in names[: n * 3 // 4]))
    (root / "test_list.txt").write_text("".join(x + "\n" for x in names[n * 3 // 4 :]))
    return root


def prepare_cmd(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "scripts/prepare_data.py",
        "dataset=chestxray14",
        f"dataset.root={root}",
        f"dataset.resolution={RES}",
        "dataset.prepare_workers=0",
        *extra,
    ]


def env_with(**values: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWMIXUP_FAULT", "FLOWMIXUP_PAUSE"))}
    env.update(values)
    return env


def one_line(res) -> str:
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    return res.stderr.strip()


@contextmanager
def paused_builder(root: Path, data_dir: Path, pipes: Path):
    """A prepare of ``root`` stopped after its first block of rows, holding the cache's lock; it goes on when the
    context ends. Yields the Popen."""
    pipes.mkdir()
    os.mkfifo(pipes / "reached")
    os.mkfifo(pipes / "go")
    env = env_with(FLOWMIXUP_DATA_DIR=str(data_dir), FLOWMIXUP_PAUSE_AT=f"cache-row-block={pipes}")
    proc = subprocess.Popen(
        prepare_cmd(root, f"hydra.run.dir={pipes / 'run'}"),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open(pipes / "reached"):  # returns once the builder is at the pause point
            pass
        yield proc
    finally:
        with open(pipes / "go", "w"):  # lets it go on
            pass


def read_until(stream, needle: str) -> list[str]:
    """Lines of ``stream`` up to the first one holding ``needle`` (a blocking read: no timing)."""
    seen = []
    for line in stream:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never printed; got: {''.join(seen)[-3000:]}")


def assert_whole_cache(data_dir: Path, root: Path) -> None:
    path = data_dir / "chestxray14" / f"chestxray14_{RES}.h5"
    manifest = cache.read_manifest(path)
    assert manifest["complete"] and manifest["rows"] == N_IMAGES
    assert cache.cache_problem(path, cx.cache_config(RES), cx.source_fingerprint(root, RES)) is None
    assert not cache.partial_path(path).exists()
    with h5py.File(path, "r") as fh:
        names = [n.decode() for n in fh["name"][...]]
        for i in (0, 1, 99, N_IMAGES - 1):  # rows decoded by either process equal a fresh decode of the PNG
            assert np.array_equal(fh["x"][i, 0], cx.load_image(root / "images" / names[i], RES))


def _row(i):
    return np.full(2, i, np.float32)


def build_toy(path: Path, n: int, reader=_row, **options) -> Path:
    """A toy cache of ``n`` rows (row i holds i twice), decoded in this process."""
    return cache.build_cache(
        path,
        items=list(range(n)),
        reader=reader,
        row_shape=(2,),
        dtype=np.float32,
        row_data={"y": np.arange(n)},
        config={"toy": 1},
        prepare_workers=0,
        **options,
    )


# ----------------------------------------------------------------------------------- one builder per cache
@pytest.mark.slow
def test_two_prepares_build_one_cache_and_no_wait_stops_at_once(tmp_path):
    root, data = make_nih_root(tmp_path / "nih"), tmp_path / "data"
    with paused_builder(root, data, tmp_path / "pipes") as first:
        # with --no-wait, a second prepare stops at once, naming the builder
        res = subprocess.run(
            prepare_cmd(root, "--no-wait", f"hydra.run.dir={tmp_path / 'r0'}"),
            cwd=PROJECT_ROOT,
            env=env_with(FLOWMIXUP_DATA_DIR=str(data)),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 1
        line = one_line(res)
        assert f"chestxray14_{RES}.h5 is being built by PID {first.pid} on " in line
        assert "wait for it to finish, or run again without --no-wait to wait" in line
        # without it, the second one waits (saying so in one line) while the first holds the lock
        second = subprocess.Popen(
            prepare_cmd(root, f"hydra.run.dir={tmp_path / 'r1'}"),
            cwd=PROJECT_ROOT,
            env=env_with(FLOWMIXUP_DATA_DIR=str(data)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        waited = read_until(second.stdout, "waiting for it to finish")
        assert f"is being built by PID {first.pid} on" in waited[-1]
    out1, err1 = first.communicate(timeout=600)
    out2 = "".join(waited) + second.communicate(timeout=600)[0]
    assert first.returncode == 0 and second.returncode == 0, err1[-3000:] + out2[-3000:]
    assert "Traceback" not in out1 + err1 + out2
    assert "starting the cache again" not in out1 + err1 + out2  # nobody restarted the other's partial file
    assert "complete for this config and data: reusing it" in out2  # the second found it ready
    assert out2.count("waiting for it to finish") == 1
    assert_whole_cache(data, root)
    assert (data / "chestxray14" / f"chestxray14_{RES}.lock").read_text() == ""  # released cleanly


def test_a_lock_left_by_a_dead_builder_is_taken_over_and_its_rows_resumed(tmp_path, caplog):
    path = tmp_path / "c" / "toy.h5"

    def build(reader):
        return build_toy(path, 100, reader, chunk_rows=10)

    def dies_at_50(i):
        if i == 50:
            raise KeyboardInterrupt  # the builder is killed mid-build
        return np.full(2, i, np.float32)

    with pytest.raises(KeyboardInterrupt):
        build(dies_at_50)
    cache.lock_path(path).write_text("424242 deadhost\n")  # what a SIGKILLed builder leaves in the lock file
    decoded = []
    with caplog.at_level("INFO"):
        build(lambda i: decoded.append(i) or np.full(2, i, np.float32))
    assert "taking over the lock left by PID 424242 on deadhost, which no longer holds it" in caplog.text
    assert "resuming" in caplog.text and "50 of 100 rows already done" in caplog.text
    assert sorted(decoded) == list(range(50, 100))  # the dead builder's 50 rows were kept, not rebuilt
    with h5py.File(path, "r") as fh:
        assert np.array_equal(fh["x"][:, 0], np.arange(100))


def test_a_loader_waits_for_the_builder_of_its_cache(tmp_path, monkeypatch):
    """A training job started while its cache is being built waits (one log line) and then opens it."""
    path = tmp_path / "toy.h5"
    build_toy(path, 10)
    path.rename(tmp_path / "aside.h5")  # as if the builder had not finished yet
    builder = fio.FileLock(cache.lock_path(path)).acquire()
    waiting, result = threading.Event(), {}
    monkeypatch.setattr(cache, "_say_waiting", lambda *a: lambda holder: (result.update(holder=holder), waiting.set()))

    def load():
        result["manifest"] = cache.open_cache(path, {"toy": 1}, build_hint="prepare it")

    reader = threading.Thread(target=load)
    reader.start()
    assert waiting.wait(timeout=600)  # it reached the wait: the builder is named, nothing was refused
    assert result["holder"] == (str(os.getpid()), os.uname().nodename)
    (tmp_path / "aside.h5").rename(path)  # the builder finishes...
    builder.release()  # ...and lets go of the lock
    reader.join(timeout=600)
    assert result["manifest"]["rows"] == 10


def _read_all(path, barrier, out):
    barrier.wait()  # every reader opens the cache at the same moment
    manifest = cache.open_cache(path, {"toy": 1}, build_hint="prepare it")
    with h5py.File(path, "r") as fh:
        out.put((manifest["rows"], float(fh["x"][...].sum())))


@pytest.mark.slow
def test_many_readers_open_one_ready_cache_at_once_without_a_lock(tmp_path):
    path = tmp_path / "toy.h5"
    build_toy(path, 300)
    holder = h5py.File(path, "r")  # one reader already has it open while the others arrive
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_read_all, args=(path, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=600)
    holder.close()
    assert all(p.exitcode == 0 for p in procs)
    assert results == [(300, 2.0 * sum(range(300)))] * 4
    assert cache.lock_path(path).read_text() == ""  # the build released it; no reader took it
    assert not fio.FileLock(cache.lock_path(path)).is_held_by_another()


def test_file_lock_names_its_holder_and_a_waiter_creates_nothing(tmp_path):
    lock = fio.FileLock(tmp_path / "x.lock")
    assert not lock.wait_until_free() and not (tmp_path / "x.lock").exists()  # nothing to wait for, nothing made
    lock.acquire()
    with pytest.raises(fio.LockBusy) as busy:
        fio.FileLock(tmp_path / "x.lock").acquire(wait=False)
    assert busy.value.holder == (str(os.getpid()), os.uname().nodename)
    assert fio.FileLock(tmp_path / "x.lock").is_held_by_another()
    lock.release()
    assert (tmp_path / "x.lock").read_text() == "" and not fio.FileLock(tmp_path / "x.lock").is_held_by_another()


# ------------------------------------------------------------------------------ writes that fail: one line
def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({res.stderr.strip() or 'mount failed'}): the test needs root and "
            "a kernel that allows it"
        )


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a folder on a tmpfs of that size (root only; skipped with a reason elsewhere)."""
    mounted = []

    def make(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        _mount_tmpfs(where, f"size={size}" + (",ro" if read_only else ""))
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def train_cmd(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *TINY, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]


def run_train(run_dir, data_dir, *extra, **env):
    return subprocess.run(
        train_cmd(run_dir, data_dir, *extra),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with(**env),
    )


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_last_good_one_and_resumes(tmp_path):
    run_dir, data = tmp_path / "run", tmp_path / "data"
    res = run_train(run_dir, data, FLOWMIXUP_FAULT_WRITE="ENOSPC@checkpoint.pt#2")  # epoch 2's checkpoint
    assert res.returncode == 1
    line = one_line(res)
    assert line.startswith(
        f"error: {run_dir / 'checkpoint.pt'}: writing the checkpoint failed (no space left on device; "
    )
    assert re.search(r"; \d+(\.\d)? (kB|MB) needed, \d+(\.\d)? (kB|MB|GB) free\); ", line), line
    assert (
        f"the last good checkpoint {run_dir / 'checkpoint.pt'} is kept as it was; free some space and run the "
        "same command again to resume from it" in line
    )
    from flowmixup.training.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir / "checkpoint.pt")["state"]["epoch"] == 1  # the good one, whole
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp")) and not (run_dir / "summary.json").exists()
    res = run_train(run_dir, data)  # space freed: the same command resumes and finishes
    assert res.returncode == 0, res.stderr[-3000:]
    with open(run_dir / "metrics.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_full_disk_at_the_final_files_keeps_the_training(tmp_path):
    run_dir, data = tmp_path / "run", tmp_path / "data"
    res = run_train(run_dir, data, FLOWMIXUP_FAULT_WRITE="ENOSPC@summary.json")
    assert res.returncode == 1
    line = one_line(res)
    assert line.startswith(f"error: {run_dir / 'summary.json'}: writing summary.json failed (no space left on device")
    assert f"the training itself is done and kept in {run_dir / 'checkpoint.pt'}" in line
    res = run_train(run_dir, data)
    assert res.returncode == 0 and "resuming" in res.stdout + res.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_real_full_disk_at_the_first_checkpoint_is_one_line(tmp_path, small_disk):
    disk = small_disk("512k")  # room for the run's small files, not for its 1.5 MB checkpoint
    run_dir = disk / "run"
    res = run_train(run_dir, tmp_path / "data", "backbone.width=16")
    assert res.returncode == 1
    line = one_line(res)
    assert line.startswith(
        f"error: {run_dir / 'checkpoint.pt'}: writing the checkpoint failed (no space left on device; 1.5 MB needed, "
    )
    assert "no checkpoint was written yet, so nothing of this run can be resumed; free some space" in line
    assert not (run_dir / "checkpoint.pt").exists() and not list(run_dir.glob(".checkpoint.pt.*"))


@pytest.mark.slow
def test_a_full_disk_while_building_a_cache_keeps_its_rows(tmp_path):
    root, data = make_nih_root(tmp_path / "nih"), tmp_path / "data"
    part = data / "chestxray14" / f"chestxray14_{RES}.partial.h5"
    res = subprocess.run(
        prepare_cmd(root, f"hydra.run.dir={tmp_path / 'r'}"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with(FLOWMIXUP_DATA_DIR=str(data), FLOWMIXUP_FAULT_WRITE=f"ENOSPC@{part.name}#3"),
    )
    assert res.returncode == 1
    line = one_line(res)
    assert line.startswith(f"error: {part}: writing the cache failed (no space left on device; ")
    assert f"the 64 of {N_IMAGES} rows decoded so far are kept in {part}" in line
    assert "run the same command again to continue from them" in line
    res = subprocess.run(
        prepare_cmd(root, f"hydra.run.dir={tmp_path / 'r'}"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with(FLOWMIXUP_DATA_DIR=str(data)),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"64 of {N_IMAGES} rows already done" in res.stdout + res.stderr
    assert_whole_cache(data, root)


@pytest.mark.slow
def test_a_disk_too_small_for_a_cache_stops_before_decoding(tmp_path, small_disk):
    root, disk = make_nih_root(tmp_path / "nih"), small_disk("64k")
    res = subprocess.run(
        prepare_cmd(root, "dataset.resolution=64", f"hydra.run.dir={tmp_path / 'r'}"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with(FLOWMIXUP_DATA_DIR=str(disk / "data")),
    )
    assert res.returncode == 1
    line = one_line(res)
    part = disk / "data" / "chestxray14" / "chestxray14_64.partial.h5"
    assert line.startswith(f"error: {part}: building the cache failed (not enough space: ")
    needed = int(re.search(r"not enough space: (\d+) kB needed, \d+ kB free\)", line).group(1))
    assert 819 <= needed < 840  # 200 images of 64 x 64 bytes, and their labels, names and ids
    assert "nothing was written; free some space, or set FLOWMIXUP_DATA_DIR (or paths.data_dir=) to a disk" in line
    assert not part.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["prepare", "train"])
def test_an_unwritable_data_folder_is_one_line(tmp_path, small_disk, command):
    shared = small_disk("1m", read_only=True)  # a read-only dataset mount
    data = shared / "data"
    if command == "prepare":
        root = make_nih_root(tmp_path / "nih", n=20)
        res = subprocess.run(
            prepare_cmd(root, f"hydra.run.dir={tmp_path / 'r'}"),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env_with(FLOWMIXUP_DATA_DIR=str(data)),
        )
        folder, what = data / "chestxray14", "creating the cache folder"
    else:  # the embedded dataset is generated into the data folder on first use
        res = subprocess.run(
            [sys.executable, "train.py", *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env_with(FLOWMIXUP_DATA_DIR=str(data)),
        )
        folder, what = None, "writing the generated dataset failed (read-only file system)"
    assert res.returncode == 1
    line = one_line(res)
    assert "read-only file system" in line and "nothing was written" in line
    if folder is not None:
        assert line.startswith(
            f"error: {folder}: {what} failed (read-only file system); nothing was written; set "
            "FLOWMIXUP_DATA_DIR (or paths.data_dir=) to a folder you can write to"
        )
    else:
        assert line.startswith(f"error: {data}") and what in line


def test_write_error_names_file_cause_room_and_what_is_kept(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("{}")
    err = fio.write_error(target, "writing summary.json", OSError(28, "No space left on device"), needed=3_500_000)
    text = str(err)
    assert text.startswith(f"{target}: writing summary.json failed (no space left on device; 3.5 MB needed, ")
    assert re.search(r"\d (kB|MB|GB) free\); the previous summary.json is kept as it was; free some space", text)
    assert [fio.size_text(n) for n in (300, 12_345, 1_486_263, 830e6, 2.4e9)] == [
        "1 kB",
        "12 kB",
        "1.5 MB",
        "830 MB",
        "2.4 GB",
    ]
    # HDF5 reports the errno inside its message only
    assert fio.is_write_failure(OSError("Can't write data (file write failed: errno = 28, error message = 'No space"))
    assert not fio.is_write_failure(OSError("Can't open file (file signature not found)"))
    with pytest.raises(fio.WriteError, match="the previous summary.json is kept as it was"):
        with fio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "{}" and list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------------- logs that read well
@pytest.mark.slow
def test_a_run_logging_to_a_file_writes_no_bar_refreshes(tmp_path):
    """stderr and stdout redirected to a file (SLURM, nohup): no tqdm refresh, only log lines. With the interval
    at 0 s every step gets its progress line, so the lines' presence is checked without timing."""
    log_file = tmp_path / "job.out"
    cmd = [*train_cmd(tmp_path / "run", tmp_path / "data", "trainer.progress=true")]
    with open(log_file, "w") as fh:
        res = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
            env=env_with(FLOWMIXUP_PROGRESS_SECONDS="0"),
        )
    text = log_file.read_text()
    assert res.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s]" not in text and "steps/s]" not in text
    lines = text.splitlines()
    assert all(line.startswith("[") for line in lines), lines[:5]  # every line is a log record
    steps = [line for line in lines if "epoch 1/2: " in line]
    n = len(steps)  # one line per training step of the epoch, the last one at 100%
    assert n > 1 and f"epoch 1/2: {n}/{n} (100%)" in steps[-1] and f"epoch 1/2: 1/{n} (" in steps[0]
    assert "steps/s" in steps[0] and ", loss=" in steps[-1]
    assert sum("epoch 2/2  train_loss" in line for line in lines) == 1


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_file(monkeypatch):
    from tqdm.auto import tqdm

    from flowmixup import progress

    monkeypatch.delenv("FLOWMIXUP_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.mode() == "bar" and isinstance(progress.progress(range(3), total=3), tqdm)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    lines = progress.progress(range(3), total=3, desc="x")
    assert progress.mode() == "log" and isinstance(lines, progress.LogLines) and list(lines) == [0, 1, 2]
    monkeypatch.setenv("FLOWMIXUP_PROGRESS", "off")
    assert progress.progress(range(2)).quiet
    monkeypatch.setenv("FLOWMIXUP_PROGRESS", "sometimes")
    assert progress.mode() == "log"  # an unknown value: a warning, and the automatic choice
    lines = progress.LogLines(total=200, desc="epoch 3/200", unit="steps", initial=100, every_s=3600)
    lines.update(50)
    lines.set_postfix(loss="0.2345")
    assert lines.line(now=lines.started + 10).startswith("epoch 3/200: 150/200 (75%), 5.0 steps/s, about 10 s left")
    assert lines.line(now=lines.started + 10).endswith(", loss=0.2345")
    lines.set_postfix_str("run0: layer3.0")  # the rest of tqdm's calls the project makes
    assert lines.line().endswith(", run0: layer3.0") and len(lines) == 200
    lines.close()


# ------------------------------------------------------------------------------------ quoting an override
@pytest.mark.parametrize("value", ["/data/my runs (2)/x", "/data/it's here", '/data/a"b (c)', "/data/#1 x"])
def test_an_override_hydra_cannot_read_shows_how_to_quote_it(capsys, value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from flowmixup.cli import preflight

    with pytest.raises(SystemExit) as info:
        preflight([f"hydra.run.dir={value}", "trainer.epochs=1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: hydra.run.dir={value}: Hydra cannot read this value (")
    shown = err.split("quote it for Hydra inside the shell's quotes: ", 1)[1].strip()
    (typed,) = shlex.split(shown)  # what the shell hands over when the user pastes it...
    assert OverridesParser.create().parse_overrides([typed])[0].value() == value  # ...is read as the value
