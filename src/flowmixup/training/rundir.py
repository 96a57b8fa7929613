"""The run directory: one training process at a time (``.lock``)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("flowmixup")


class RunDirBusy(RuntimeError):
    """Another live process is training in this run directory."""


class RunDirLock:
    """An exclusive lock on ``<run_dir>/.lock`` for the whole run (``flock``: the kernel drops it when its process
    dies, however it dies). A second run in the same folder stops at once naming the holder's PID; a lock file left
    by a dead process is taken over, and the log says so. The file holds the holder's PID while it runs."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunDirLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            raise RunDirBusy(f"{self.path.parent} is in use by another training run (PID "
                             f"{holder[0] if holder else 'unknown'}); wait for it to end, or give this run its own "
                             "folder (hydra.run.dir=...)") from None
        previous = os.pread(fd, 64, 0).decode(errors="replace").split()
        if previous and previous[0] != str(os.getpid()):
            log.warning("%s: taking over the lock left by PID %s, which is no longer running", self.path.parent,
                        previous[0])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean end leaves no holder behind
            os.close(self.fd)  # releases the flock
            self.fd = None
