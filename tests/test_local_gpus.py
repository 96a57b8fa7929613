"""hydra/launcher=local_gpus: one job per GPU at a time, every GPU busy, on CPU with a faked device count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from hydra_plugins.flowmixup_local_gpus.local_gpus_launcher import GpuSlot, NoGpus, resolve_gpus, slot_order
from project_config import CONF_DIR, PROJECT_ROOT


def test_resolve_gpus_reads_null_count_and_ids():
    assert resolve_gpus(None, count=4) == [0, 1, 2, 3]
    assert resolve_gpus(2, count=4) == [0, 1]
    assert resolve_gpus([3, 1], count=4) == [3, 1]


@pytest.mark.parametrize(
    "gpus, count, words",
    [
        (None, 0, "no CUDA device is visible"),
        (5, 4, "got 5, this machine sees 4"),
        ([0, 4], 4, "unknown or repeated ids [4]"),
        ([1, 1], 4, "unknown or repeated"),
        ("two", 4, "hydra.launcher.gpus: got 'two'"),
    ],
)
def test_resolve_gpus_refuses_in_one_line(gpus, count, words):
    with pytest.raises(NoGpus) as err:
        resolve_gpus(gpus, count=count)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_slot_order_starts_at_job_number_mod_n():
    assert slot_order(0, 4) == [0, 1, 2, 3]
    assert slot_order(6, 4) == [2, 3, 0, 1]


def test_a_busy_slot_sends_the_job_to_the_next_gpu(tmp_path):
    with GpuSlot(tmp_path, [0, 1, 2], 1, job_idx=4) as first:  # 4 mod 3 = 1
        assert first.device == 1
        with GpuSlot(tmp_path, [0, 1, 2], 1, job_idx=1) as second:  # wants 1, busy: takes 2
            assert second.device == 2
    with GpuSlot(tmp_path, [0, 1, 2], 1, job_idx=1) as again:  # released: 1 is free again
        assert again.device == 1


def test_jobs_per_gpu_gives_each_gpu_that_many_slots(tmp_path):
    held = [GpuSlot(tmp_path, [0, 1], 2, job_idx=i).__enter__() for i in range(4)]
    assert sorted(s.device for s in held) == [0, 0, 1, 1]
    with pytest.raises(RuntimeError, match="no free GPU slot"):
        GpuSlot(tmp_path, [0, 1], 2, job_idx=0).__enter__()
    for s in held:
        s.__exit__()


def test_with_every_slot_taken_a_job_waits_for_the_first_to_free(tmp_path):
    """Several multiruns into one sweep (reproduce-tables --blocks-at-once) share the slots: a job queues."""
    import threading

    holder = GpuSlot(tmp_path, [0], 1, job_idx=0).__enter__()
    got = {}

    def second():
        with GpuSlot(tmp_path, [0], 1, job_idx=1, wait=True, poll_s=0.01) as slot:
            got["device"] = slot.device

    t = threading.Thread(target=second)
    t.start()
    assert "device" not in got  # cannot have a slot while the holder keeps it
    holder.__exit__()
    t.join(timeout=60)
    assert got == {"device": 0}


APP = textwrap.dedent('''
    """A stand-in for train.py: records its device, and checks no other job holds that device meanwhile."""
    import os, signal
    from pathlib import Path
    import hydra

    def timed_out(signum, frame):
        raise TimeoutError

    def meet(out, i, together):
        """A rendezvous of jobs 0..together-1 through named pipes (opening one blocks until its other end opens):
        job 0 meets each other job, then lets each go, so all of them are alive at once or none gets past it."""
        if i == 0:
            for k in range(1, together):
                with open(out / f"meet_{k}", "rb") as fifo:
                    fifo.read()
            for k in range(1, together):
                with open(out / f"go_{k}", "wb") as fifo:
                    fifo.write(b"go")
        else:
            with open(out / f"meet_{i}", "wb") as fifo:
                fifo.write(b"here")
            with open(out / f"go_{i}", "rb") as fifo:
                fifo.read()

    @hydra.main(config_path=".", config_name="cfg", version_base="1.3")
    def main(cfg):
        out = Path(cfg.out)
        dev = cfg.trainer.device
        try:  # exclusive marker: exists only while a job runs on this device
            fd = os.open(out / f"busy_{dev}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            (out / f"overlap_{cfg.i}").write_text(dev)
            return
        (out / f"job_{cfg.i}").write_text(f"{dev} {os.getpid()}")
        if cfg.i < cfg.together:  # only ends if the first `together` jobs run at the same time
            signal.signal(signal.SIGALRM, timed_out)
            signal.alarm(120)  # a launcher that runs them one by one fails the test instead of hanging it
            try:
                meet(out, cfg.i, cfg.together)
            except TimeoutError:
                (out / f"alone_{cfg.i}").write_text("never met the other jobs")
            finally:
                signal.alarm(0)
        os.close(fd)
        os.unlink(out / f"busy_{dev}")

    if __name__ == "__main__":
        main()
''')


@pytest.mark.slow
def test_a_multirun_keeps_every_gpu_busy_with_one_job_each(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for k in (1, 2):  # the rendezvous of the first three jobs (see APP)
        os.mkfifo(out / f"meet_{k}")
        os.mkfifo(out / f"go_{k}")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "cfg.yaml").write_text(
        textwrap.dedent(f"""
        defaults:
          - override hydra/launcher: local_gpus
          - _self_
        i: 0
        together: 3
        out: {out}
        trainer:
          device: auto
        hydra:
          searchpath: [file://{CONF_DIR}]
          sweep:
            dir: {tmp_path / "sweep"}
    """)
    )
    env = {**os.environ, "FLOWMIXUP_FAKE_GPU_COUNT": "4"}
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "i=0,1,2,3,4,5,6", "hydra.launcher.gpus=[0,2,3]"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(out.glob("overlap_*")), "two jobs ran on one GPU at once"
    assert not list(out.glob("alone_*")), "the first three jobs did not run in parallel"
    devices = {int(p.name.split("_")[1]): p.read_text().split()[0] for p in out.glob("job_*")}
    assert sorted(devices) == list(range(7))
    assert set(devices.values()) == {"cuda:0", "cuda:2", "cuda:3"}
    # the first three start on their own slot (job number mod 3 over the ids [0, 2, 3])
    assert [devices[i] for i in range(3)] == ["cuda:0", "cuda:2", "cuda:3"]
    # the device is an ordinary override: Hydra records it with the job
    overrides = (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "trainer.device=cuda:0" in overrides


@pytest.mark.slow
def test_no_gpu_is_one_line_before_any_job(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=local_gpus",
            "seed=0,1",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "FLOWMIXUP_FAKE_GPU_COUNT": "0"},
        timeout=300,
    )
    assert proc.returncode != 0
    assert "no CUDA device is visible" in proc.stderr
    assert not (tmp_path / "sweep" / "0" / "summary.json").exists()
