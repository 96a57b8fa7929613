"""The run directory: one training process at a time (``.lock``)."""

from __future__ import annotations

from pathlib import Path

from ..io import FileLock, LockBusy, holder_text


class RunDirBusy(RuntimeError):
    """Another live process is training in this run directory."""


class RunDirLock:
    """An exclusive lock on ``<run_dir>/.lock`` for the whole run (:class:`flowmixup.io.FileLock`: the kernel drops
    it when its process dies, however it dies). A second run in the same folder stops at once naming the holder's
    PID and host; a lock file left by a dead process is taken over, and the log says so. The file holds the
    holder's PID and host while it runs."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.lock = FileLock(self.path)

    def __enter__(self) -> "RunDirLock":
        try:
            self.lock.acquire(wait=False)
        except LockBusy as busy:
            raise RunDirBusy(
                f"{self.path.parent} is in use by another training run ({holder_text(busy.holder)}); "
                "wait for it to end, or give this run its own folder (hydra.run.dir=...)"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()
