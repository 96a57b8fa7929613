"""The paper's table rows, defined once in ``conf/reproduce/rows.yaml`` (name -> overrides), as :class:`Row` objects.

The profiles name them (``rows: [erm, mixup_a1, ...]``), ``scripts/bench.py`` and ``scripts/gpu_check.py`` time them,
the sweep's cells are named by their fields. A row's fields (regularizer, alpha, keep_original) are read from the
config Hydra composes with its overrides, so a regularizer's own default (``conf/regularizer/*.yaml``) counts.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..project import conf_dir as find_conf_dir
from .compose import compose

ROWS_FILE = Path("reproduce") / "rows.yaml"  # under conf/


@dataclass(frozen=True)
class Row:
    """One table row: its name, the overrides that make it, and what its runs record about the regularizer."""

    name: str
    overrides: tuple[str, ...]
    regularizer: str
    alpha: float | None = None
    keep_original: bool | None = None
    config: Any = field(default=None, repr=False, compare=False)  # composed with the overrides alone

    @property
    def fields(self) -> dict:
        """What its runs write to summary.json and grid.json (and their cell folder is named by)."""
        return {"regularizer": self.regularizer, "alpha": self.alpha, "keep_original": self.keep_original}

    @property
    def timing_name(self) -> str:
        """Its name in bench.json and gpu_check.json: rows of one regularizer cost the same whatever their alpha."""
        return timing_name(self.regularizer, self.keep_original)


def timing_name(regularizer: str, keep_original: bool | None) -> str:
    """How the timing files name a regularizer: Flow-Mixup with its Op (twice the flows with Op=True)."""
    if regularizer == "flowmixup":
        return f"flowmixup_op_{str(bool(keep_original)).lower()}"
    return regularizer


def row_fields(cfg: Any) -> dict:
    """What a composed config's runs write to summary.json and grid.json about the regularizer (and their cell)."""
    return {
        "regularizer": str(OmegaConf.select(cfg, "regularizer.name", default=None)),
        "alpha": OmegaConf.select(cfg, "regularizer.alpha", default=None),
        "keep_original": OmegaConf.select(cfg, "regularizer.keep_original", default=None),
    }


def rows_file(conf_dir: str | os.PathLike | None = None) -> Path:
    return Path(conf_dir if conf_dir is not None else find_conf_dir()) / ROWS_FILE


def row_overrides(conf_dir: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """name -> overrides, as ``rows.yaml`` defines them, in its order (nothing composed)."""
    path = rows_file(conf_dir)
    try:
        rows = OmegaConf.to_container(OmegaConf.load(path)).get("rows")
    except (OSError, AttributeError) as exc:
        raise SystemExit(f"error: {path}: cannot read the table rows ({exc})") from None
    if not isinstance(rows, dict) or not all(isinstance(v, list) and v for v in rows.values()):
        raise SystemExit(
            f"error: {path}: 'rows' must map each row's name to its overrides, e.g. "
            "mixup_a1: [regularizer=mixup, regularizer.alpha=1.0]"
        )
    return {str(name): tuple(str(o) for o in overrides) for name, overrides in rows.items()}


def make_row(name: str, overrides: tuple[str, ...], conf_dir: str | os.PathLike | None = None) -> Row:
    """A row with its fields from the config Hydra composes with ``overrides`` (cached per config folder)."""
    return _make_row(name, tuple(overrides), str(Path(conf_dir if conf_dir is not None else find_conf_dir())))


@functools.lru_cache(maxsize=None)
def _make_row(name: str, overrides: tuple[str, ...], conf_dir: str) -> Row:
    cfg = compose(Path(conf_dir), list(overrides))
    return Row(name, overrides, **row_fields(cfg), config=cfg)


def table_rows(conf_dir: str | os.PathLike | None = None) -> dict[str, Row]:
    """Every row ``rows.yaml`` defines, by name, in the paper's order, with its fields."""
    return {name: make_row(name, overrides, conf_dir) for name, overrides in row_overrides(conf_dir).items()}


def timed_rows(conf_dir: str | os.PathLike | None = None) -> dict[str, Row]:
    """One row per timing name (what bench.py and gpu_check.py measure): the first of the rows sharing one, since
    rows that differ only in alpha cost the same (Mixup's is timed at alpha=1, as Table I's first Mixup row)."""
    out: dict[str, Row] = {}
    for row in table_rows(conf_dir).values():
        out.setdefault(row.timing_name, row)
    return out
