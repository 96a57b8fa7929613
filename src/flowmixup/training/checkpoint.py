"""The checkpoint: a plain dict of tensors and primitives, loaded with ``torch.load(..., weights_only=True)``.

Keys: ``config`` (the resolved config dict), ``state`` (:meth:`RunState.to_dict`: progress, history, best values),
``model`` (``model.state_dict()``), ``optimizer``, ``scheduler`` (their state dicts) and ``rng`` (every random
state the run draws from, as tensors and lists). Saved as ``checkpoint.pt``, the one before kept as
``checkpoint.prev.pt``.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path
from .checks import ConfigError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the last one: the way back if the last one is damaged
CHECKPOINT_KEYS = ("config", "state", "model", "optimizer", "scheduler", "rng")
# keys that may differ between an interrupted run and its resumption (everything else must match)
RESUMABLE_CHANGES = (
    "trainer.epochs",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.num_threads",
    "trainer.resume",
    "trainer.skip_finished",
    "trainer.device",
    "logger",
    "paths",
)
# keys added to the config after checkpoints were written without them: an absent key is read as its default
ADDED_KEYS = {"trainer.cuda_graph": False}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, another format): one line with its path and the ways out."""


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """torch's, numpy's and Python's global states and the run's own generators, as tensors and lists."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        **{name: gen.get_state() for name, gen in generators.items()},
    }


def restore_rng(rng: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    for name, gen in generators.items():
        gen.set_state(rng[name])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_rotating(ckpt: dict, run_dir: Path) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the one before as ``checkpoint.prev.pt``.

    Order: the new file is complete on disk (temporary name) -> the current one becomes the previous one -> the new
    one takes its name. A crash between the two renames leaves ``checkpoint.prev.pt`` alone, which
    :func:`latest_checkpoint` then takes back."""
    path = run_dir / CHECKPOINT
    buf = io.BytesIO()
    torch.save(ckpt, buf)  # in memory first: the size it needs on disk is known before the write
    data = buf.getbuffer()
    kept = (
        f"the last good checkpoint {path} is kept as it was"
        if path.is_file()
        else "no checkpoint was written yet, so nothing of this run can be resumed"
    )
    with atomic_path(
        path,
        what="writing the checkpoint",
        needed=len(data),
        kept=kept,
        todo="free some space and run the same command again to resume from it"
        if path.is_file()
        else "free some space and run the same command again",
    ) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if path.is_file():
            os.replace(path, run_dir / PREVIOUS)


def latest_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoint.pt``, put back from ``checkpoint.prev.pt`` by a save cut between its two renames."""
    path = run_dir / CHECKPOINT
    if not path.is_file() and (run_dir / PREVIOUS).is_file():
        os.replace(run_dir / PREVIOUS, path)
    return path


def remove_stale_temps(run_dir: Path) -> None:
    """Temporary files of a write that a SIGKILL cut short (the caller holds the run directory's lock)."""
    for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path`` (on the CPU); a :class:`CheckpointError` in one line if it is damaged."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        problem = (
            None if isinstance(ckpt, dict) and all(k in ckpt for k in CHECKPOINT_KEYS) else "not a flowmixup checkpoint"
        )
    except Exception as err:  # truncated zip, a pickle of something else, a text file...
        problem = " ".join(f"{type(err).__name__}: {err}".split())[:160]
    if problem is None:
        return ckpt
    prev = path.with_name(PREVIOUS)
    way_back = f", or resume from the checkpoint before it: mv {prev} {path}" if prev.is_file() else ""
    raise CheckpointError(f"{path}: damaged checkpoint ({problem}); start over with trainer.resume=false{way_back}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_resumable(saved: dict, now: dict, path: Path) -> None:
    """Stop with one line if the checkpoint's config differs from this run's in anything but RESUMABLE_CHANGES."""
    a, b = {**ADDED_KEYS, **_flat(saved)}, {**ADDED_KEYS, **_flat(now)}
    differ = sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k) and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    )
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:4])
        raise ConfigError(
            f"{path}: written by a different configuration ({shown}); use another run directory "
            "or trainer.resume=false to start over"
        )
