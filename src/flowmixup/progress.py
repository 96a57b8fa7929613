"""Progress of long work that reads well on a terminal and in a log file.

On a terminal (stderr is a TTY) a tqdm bar redraws itself in place. In a file (SLURM's ``.out``/``.err``,
``nohup``, ``> log 2>&1``) a bar would write every refresh into the file, so there the same object writes no bar at
all: at most one log line every ``FLOWMIXUP_PROGRESS_SECONDS`` (default 60) seconds, such as::

    epoch 3/200: 512/1084 (47%), 8.1 steps/s, about 1 min left, loss=0.2345

and nothing for work that ends sooner; the epoch lines are logged as before. ``FLOWMIXUP_PROGRESS=bar|log|off``
overrides the choice (``auto``, the default, decides by the terminal).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

log = logging.getLogger("flowmixup")
MODES = ("auto", "bar", "log", "off")


def mode() -> str:
    """The progress display in use: ``bar``, ``log`` or ``off`` (see the module's docstring)."""
    chosen = os.environ.get("FLOWMIXUP_PROGRESS", "auto").strip().lower() or "auto"
    if chosen not in MODES:
        log.warning("FLOWMIXUP_PROGRESS=%s is not a known value (allowed: %s): using auto", chosen, ", ".join(MODES))
        chosen = "auto"
    if chosen != "auto":
        return chosen
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):  # stderr replaced or closed
        return "log"


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    initial: int = 0,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    **bar_options: Any,
):
    """A progress display over ``iterable`` (or updated by hand with ``update(n)``): a tqdm bar on a terminal, a
    :class:`LogLines` in a file, nothing when ``enabled`` is False or ``FLOWMIXUP_PROGRESS=off``."""
    how = mode() if enabled else "off"
    if how == "bar":
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=leave, **bar_options)
    return LogLines(iterable, total=total, desc=desc, initial=initial, unit=unit, quiet=how == "off")


class LogLines:
    """The file-friendly stand-in of a tqdm bar: the same calls (iterate, ``update``, ``set_postfix``, ``close``),
    and at most one log line per interval."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        initial: int = 0,
        unit: str = "it",
        quiet: bool = False,
        every_s: float | None = None,
    ):
        self.iterable, self.total, self.desc, self.unit, self.quiet = iterable, total, desc, unit, quiet
        self.n = self.start_n = initial
        self.every_s = float(os.environ.get("FLOWMIXUP_PROGRESS_SECONDS", 60)) if every_s is None else every_s
        self.started = self.last = time.monotonic()
        self.postfix = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = False) -> None:
        self.postfix = str(text)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.quiet and now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as it is logged."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0:
            left = (self.total - self.n) / rate
            text += f", about {left / 60:.0f} min left" if left >= 60 else f", about {left:.0f} s left"
        return text + (f", {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        pass
