"""Deterministic fault injection for tests: make a failure or a meeting happen at a known point of a run.

Tests must not guess when a subprocess is "probably mid-epoch" or "probably building its cache" (a sleep that a
loaded machine turns into a flaky test). Instead they set one of these variables and the process acts at exactly
that point. Unset (every normal run), each hook costs one dictionary lookup.

``FLOWMIXUP_FAULT_AT``: signal this process right after a training step::

    FLOWMIXUP_FAULT_AT="SIGTERM@2:3"              # after step 3 of epoch 2
    FLOWMIXUP_FAULT_AT="SIGINT@2:3,SIGINT@2:4"    # a second Ctrl-C one step later

``FLOWMIXUP_FAULT_WRITE``: the k-th write (default the first) of a file of that name fails with that errno, as a
full disk or a read-only mount would make it fail::

    FLOWMIXUP_FAULT_WRITE="ENOSPC@checkpoint.pt"        # the first checkpoint cannot be written
    FLOWMIXUP_FAULT_WRITE="ENOSPC@checkpoint.pt#2"      # the second one (the first is kept)
    FLOWMIXUP_FAULT_WRITE="EROFS@summary.json"

``FLOWMIXUP_PAUSE_AT="<point>=<folder>"``: at the named point the process meets the test through two named pipes
in ``<folder>``, the first time it gets there: it opens ``reached`` for writing (which blocks until the test opens
it for reading, so the test knows the process is there) and then ``go`` for reading (blocking until the test opens
it for writing). Points:
``cache-row-block`` (a cache builder, after storing its first block of rows, holding the build lock).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

ENV = "FLOWMIXUP_FAULT_AT"
WRITE_ENV = "FLOWMIXUP_FAULT_WRITE"
PAUSE_ENV = "FLOWMIXUP_PAUSE_AT"


def _parse(spec: str) -> dict[tuple[int, int], list[int]]:
    plan: dict[tuple[int, int], list[int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            name, at = part.split("@")
            epoch, step = (int(v) for v in at.split(":"))
            signum = int(getattr(signal, name))
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{ENV}={spec!r}: cannot read {part!r}; expected SIGNAME@EPOCH:STEP") from err
        plan.setdefault((epoch, step), []).append(signum)
    return plan


def _parse_writes(spec: str) -> dict[str, tuple[int, int]]:
    plan: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            name, at = part.split("@")
            target, _, nth = at.partition("#")
            plan[target] = (int(getattr(errno, name)), int(nth or 1))
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{WRITE_ENV}={spec!r}: cannot read {part!r}; expected ERRNO@FILENAME[#K]") from err
    return plan


_PLAN = _parse(os.environ.get(ENV, ""))
_WRITES = _parse_writes(os.environ.get(WRITE_ENV, ""))
_WRITTEN: dict[str, int] = {}
_POINT, _, _PAUSE_DIR = os.environ.get(PAUSE_ENV, "").partition("=")


def after_step(epoch: int, step: int) -> None:
    """Send the planned signals of (epoch, step) to this process (no-op unless ``FLOWMIXUP_FAULT_AT`` is set)."""
    if _PLAN:
        for signum in _PLAN.get((epoch, step), ()):
            os.kill(os.getpid(), signum)


def before_write(path: str | os.PathLike) -> None:
    """Raise the planned OSError for this write of ``path`` (no-op unless ``FLOWMIXUP_FAULT_WRITE`` names it)."""
    if _WRITES:
        name = Path(path).name
        if name in _WRITES:
            code, nth = _WRITES[name]
            _WRITTEN[name] = _WRITTEN.get(name, 0) + 1
            if _WRITTEN[name] == nth:
                raise OSError(code, os.strerror(code), str(path))


def pause(point: str) -> None:
    """Meet the test at ``point`` (no-op unless ``FLOWMIXUP_PAUSE_AT`` names it); see the module's docstring."""
    global _POINT
    if _POINT == point and _PAUSE_DIR:
        _POINT = ""  # once: the first time the point is reached
        with open(Path(_PAUSE_DIR) / "reached", "w"):
            pass
        with open(Path(_PAUSE_DIR) / "go"):
            pass
