"""Deterministic fault injection for tests: deliver a signal to this process right after a chosen training step.

Tests must not guess when a subprocess is "probably mid-epoch" (a sleep that a loaded machine turns into a flaky
test). Instead they set ``FLOWMIXUP_FAULT_AT`` and the run signals itself at exactly that step:

    FLOWMIXUP_FAULT_AT="SIGTERM@2:3"              # after step 3 of epoch 2
    FLOWMIXUP_FAULT_AT="SIGINT@2:3,SIGINT@2:4"    # a second Ctrl-C one step later

Unset (every normal run), :func:`after_step` costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "FLOWMIXUP_FAULT_AT"


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


_PLAN = _parse(os.environ.get(ENV, ""))


def after_step(epoch: int, step: int) -> None:
    """Send the planned signals of (epoch, step) to this process (no-op unless ``FLOWMIXUP_FAULT_AT`` is set)."""
    if _PLAN:
        for signum in _PLAN.get((epoch, step), ()):
            os.kill(os.getpid(), signum)
