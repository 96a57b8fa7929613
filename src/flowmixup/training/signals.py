"""Stopping on a signal: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 become a flag the loop checks after each step, so the
run saves a checkpoint and exits (``StopRequested``) instead of dying mid-write."""

from __future__ import annotations

import signal
import sys
import threading


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGUSR1 arrived: a checkpoint was saved; the run exits and resumes from it later."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalWatch:
    """Turns Ctrl-C (SIGINT), SIGTERM and SIGUSR1 (SLURM preemption, submitit's timeout signal) into a flag the loop
    checks after each step. A second Ctrl-C aborts at once (KeyboardInterrupt). On exit, the previous handlers come
    back; for SIGTERM / SIGUSR1 a Python handler that was there (submitit's requeue) is then called with the
    signal, after our checkpoint is safely on disk."""

    SIGNALS = tuple(
        s
        for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
        if s
    )

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._flag)
        return self

    def _flag(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.signum is not None:
                raise KeyboardInterrupt
            sys.stderr.write("\nCtrl-C: finishing this step and saving a checkpoint (Ctrl-C again aborts at once)\n")
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        handler = self.previous.get(self.signum)
        if self.signum != signal.SIGINT and callable(handler):
            handler(self.signum, None)


def ignore_sigint_in_worker(_worker_id: int) -> None:
    """DataLoader workers share the terminal's process group: leave Ctrl-C to the main process, which saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
