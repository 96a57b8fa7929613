"""``hydra/launcher=local_gpus``: every GPU of a workstation busy with one job of a multirun, without SLURM.

It is Hydra's joblib launcher with one worker process per GPU. Each job, when a worker starts it, takes the first
free GPU *slot* (an exclusive ``flock`` on ``<sweep dir>/.gpu_slots/<device>.<k>.lock``), trying
``job number mod N`` first, and runs with ``trainer.device=cuda:<device>``, so exactly one job runs on each GPU at a
time even when jobs take different times (a plain ``job number mod N`` would put two jobs on one GPU while another
idles). When every slot is taken (several multiruns into the same sweep folder at once, as
``reproduce_tables.py --blocks-at-once`` starts them) a job waits for the first one to free. A job that dies frees
its slot with its process. The device a job used is in its ``config.yaml`` and ``summary.json`` like any override.

    python train.py -m hydra/launcher=local_gpus regularizer=erm,mixup noise=0.0,0.1 seed=0,1
    python train.py -m hydra/launcher=local_gpus hydra.launcher.gpus=[0,2]      # only these two
    python train.py -m hydra/launcher=local_gpus hydra.launcher.jobs_per_gpu=2   # two small runs per GPU
"""

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher import _core as joblib_core
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)

SLOT_DIR = ".gpu_slots"


class NoGpus(ValueError):
    """``hydra.launcher.gpus`` names no usable device: raised before any job starts."""


FAKE_COUNT_ENV = "FLOWMIXUP_FAKE_GPU_COUNT"  # tests: pretend this many GPUs exist (the jobs must not use CUDA)


def visible_gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA). torch is imported only here, when a sweep launches."""
    if os.environ.get(FAKE_COUNT_ENV):
        return int(os.environ[FAKE_COUNT_ENV])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_gpus(gpus: Any, count: int | None = None) -> list[int]:
    """The device ids a sweep uses: ``null`` = every visible GPU, an int N = the first N, a list = those ids."""
    count = visible_gpu_count() if count is None else count
    allowed = f"null (all {count} visible), a count 1..{count}, or a list of ids from 0..{count - 1}"
    if gpus is None:
        ids = list(range(count))
    elif isinstance(gpus, bool):
        raise NoGpus(f"hydra.launcher.gpus: got {gpus!r}; allowed: {allowed}")
    elif isinstance(gpus, int):
        if not 1 <= gpus <= count:
            raise NoGpus(
                f"hydra.launcher.gpus: got {gpus}, this machine sees {count} CUDA device(s); allowed: {allowed}"
            )
        ids = list(range(gpus))
    else:
        try:
            ids = [int(g) for g in gpus]
        except (TypeError, ValueError):
            raise NoGpus(f"hydra.launcher.gpus: got {gpus!r}; allowed: {allowed}") from None
        bad = [g for g in ids if not 0 <= g < count]
        if bad or len(set(ids)) != len(ids) or not ids:
            raise NoGpus(
                f"hydra.launcher.gpus: got {list(ids)} (unknown or repeated ids {bad or ids}); allowed: {allowed}"
            )
    if not ids:
        raise NoGpus(
            "hydra.launcher=local_gpus: no CUDA device is visible to this process "
            "(check nvidia-smi and CUDA_VISIBLE_DEVICES); allowed: a machine with at least one GPU, "
            "or hydra/launcher=joblib to run on CPU"
        )
    return ids


def slot_order(job_idx: int, slots: int) -> list[int]:
    """The slots job ``job_idx`` tries, in order: its own (``job_idx mod slots``) first, then the next ones."""
    first = job_idx % slots
    return [(first + k) % slots for k in range(slots)]


class GpuSlot:
    """An exclusive hold on one of ``slots`` slots (each a GPU id, repeated ``jobs_per_gpu`` times) for one job."""

    def __init__(
        self,
        folder: Path,
        devices: Sequence[int],
        jobs_per_gpu: int,
        job_idx: int,
        wait: bool = False,
        poll_s: float = 0.5,
    ):
        self.folder, self.job_idx, self.wait, self.poll_s = Path(folder), job_idx, wait, poll_s
        self.slots = [(d, k) for k in range(jobs_per_gpu) for d in devices]
        self.fd: int | None = None
        self.device: int | None = None

    def __enter__(self) -> "GpuSlot":
        import time

        self.folder.mkdir(parents=True, exist_ok=True)
        waited = False
        while not self._take_free():
            if not self.wait:
                raise RuntimeError(
                    f"no free GPU slot in {self.folder} for job {self.job_idx}: more workers than "
                    f"slots ({len(self.slots)})"
                )
            if not waited:
                log.info("job %d: every GPU slot in %s is taken; waiting for one", self.job_idx, self.folder)
                waited = True
            time.sleep(self.poll_s)
        return self

    def _take_free(self) -> bool:
        for i in slot_order(self.job_idx, len(self.slots)):
            device, k = self.slots[i]
            fd = os.open(self.folder / f"cuda{device}.{k}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.device = fd, device
            return True
        return False

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def run_on_slot(
    idx: int,
    overrides: Sequence[str],
    devices: Sequence[int],
    jobs_per_gpu: int,
    slot_dir: str,
    device_key: str,
    *hydra_args: Any,
) -> JobReturn:
    """Runs in a worker process: take a free slot, then run the job as Hydra's joblib launcher does, on its GPU."""
    with GpuSlot(Path(slot_dir), devices, jobs_per_gpu, idx, wait=True) as slot:
        return joblib_core.execute_job(idx, [*overrides, f"{device_key}=cuda:{slot.device}"], *hydra_args)


@dataclass
class LocalGpusLauncherConf(JobLibLauncherConf):
    """The joblib launcher's settings plus the GPUs (conf/hydra/launcher/local_gpus.yaml sets the defaults)."""

    _target_: str = "hydra_plugins.flowmixup_local_gpus.local_gpus_launcher.LocalGpusLauncher"
    gpus: Optional[Any] = None
    jobs_per_gpu: int = 1
    device_key: str = "trainer.device"


ConfigStore.instance().store(
    group="hydra/launcher", name="local_gpus_schema", node=LocalGpusLauncherConf, provider="flowmixup"
)


class LocalGpusLauncher(JoblibLauncher):
    def __init__(
        self, gpus: Any = None, jobs_per_gpu: int = 1, device_key: str = "trainer.device", **joblib_kwargs: Any
    ) -> None:
        super().__init__(**joblib_kwargs)
        if not isinstance(jobs_per_gpu, int) or isinstance(jobs_per_gpu, bool) or jobs_per_gpu < 1:
            raise NoGpus(f"hydra.launcher.jobs_per_gpu: got {jobs_per_gpu!r}; allowed: an integer >= 1")
        self.gpus, self.jobs_per_gpu, self.device_key = gpus, jobs_per_gpu, device_key

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, filter_overrides, setup_globals
        from joblib import Parallel, delayed
        from omegaconf import OmegaConf

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        gpus = OmegaConf.to_container(self.gpus) if OmegaConf.is_config(self.gpus) else self.gpus
        devices = resolve_gpus(gpus)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        options = {**self.joblib, "backend": "loky", "n_jobs": len(devices) * self.jobs_per_gpu}
        joblib_core.process_joblib_cfg(options)
        log.info(
            "local_gpus: %d job(s) on GPU(s) %s, %d at a time per GPU; sweep output dir: %s",
            len(job_overrides),
            devices,
            self.jobs_per_gpu,
            sweep_dir,
        )
        for i, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        runs = Parallel(**options)(
            delayed(run_on_slot)(
                initial_job_idx + i,
                overrides,
                devices,
                self.jobs_per_gpu,
                str(sweep_dir / SLOT_DIR),
                self.device_key,
                self.hydra_context,
                self.config,
                self.task_function,
                state,
            )
            for i, overrides in enumerate(job_overrides)
        )
        return list(runs)
