"""Where the project is: the folder holding ``conf/config.yaml`` (and ``train.py``), for the command line, the sweep and
the scripts alike. It imports nothing of flowmixup, so any layer may use it."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ENV = "FLOWMIXUP_PROJECT_ROOT"


class ProjectNotFound(SystemExit):
    """No project folder where :func:`project_root` looks; its message is one line starting with ``error:``."""


def _holds_conf(path: Path) -> bool:
    return (path / "conf" / "config.yaml").is_file()


def _is_project_above(path: Path) -> bool:
    """A folder found by climbing from a start must hold train.py too, so that a parent folder that is some other
    Hydra project (its own conf/config.yaml) is never taken for this one."""
    return _holds_conf(path) and (path / "train.py").is_file()


def project_root(*starts: str | os.PathLike) -> Path:
    """The project folder, looked for in this order:

    1. ``$FLOWMIXUP_PROJECT_ROOT`` when set: it must hold ``conf/config.yaml``, else :class:`ProjectNotFound` (an
       explicit setting that is wrong is an error, never silently passed over);
    2. each of ``starts`` (the calling script's folder: ``train.py`` and ``scripts/*.py`` pass theirs), then the
       current folder, then the folder beside this package's ``src/`` (an editable install), in turn: the start itself
       if it holds ``conf/config.yaml``, else the nearest folder above it that holds ``conf/config.yaml`` and
       ``train.py`` (so ``scripts/`` finds the repository above it before the current folder is tried).

    Never only the installed module's location: a non-editable ``pip install .`` puts the module in site-packages,
    far from ``conf/`` (run from the repository, or set ``$FLOWMIXUP_PROJECT_ROOT``). Raises
    :class:`ProjectNotFound` when no folder qualifies.
    """
    env = os.environ.get(PROJECT_ENV)
    if env:
        if _holds_conf(Path(env)):
            return Path(env).resolve()
        raise ProjectNotFound(
            f"error: {PROJECT_ENV}={env} holds no conf/config.yaml; point it at the repository "
            "(the folder with train.py and conf/) or unset it"
        )
    for start in (*starts, Path.cwd(), Path(__file__).resolve().parents[2]):
        start = Path(start).resolve()
        if _holds_conf(start):
            return start
        for parent in start.parents:
            if _is_project_above(parent):
                return parent
    raise ProjectNotFound(
        "error: cannot find the project (a folder holding conf/config.yaml and train.py) at or "
        f"above the calling script, the current folder or this package; run from the repository "
        f"or set {PROJECT_ENV}"
    )


def conf_dir(*starts: str | os.PathLike) -> Path:
    """The project's ``conf/`` (:func:`project_root`'s rules)."""
    return project_root(*starts) / "conf"
