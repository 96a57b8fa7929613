"""The cells of a sweep folder: where each (dataset, row, noise, seed) runs, which of them failed.

A cell's folder comes from one template, ``paths.cell`` in ``conf/config.yaml``: three parts (dataset, regularizer,
noise and seed) that the sweep nests, ``<sweep>/<dataset>/<regularizer>/<noise_seed>``. Hydra resolves it for each
run (the sweep's ``hydra.sweep.subdir`` is :func:`sweep_subdir`, the parts' interpolations joined by ``/``) and
:func:`cell_dir` resolves the same node for a cell's fields, so a finished cell is found again on the next call.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..project import conf_dir as find_conf_dir

CELL_KEY = "paths.cell"
# what the template may use: a cell's fields (cell_dir() knows nothing else of a run)
CELL_FIELDS = ("dataset.name", "regularizer.name", "regularizer.alpha", "regularizer.keep_original", "noise", "seed")


def _conf(conf_dir: str | os.PathLike | None) -> Path:
    return Path(conf_dir) if conf_dir is not None else find_conf_dir()


@functools.lru_cache(maxsize=None)
def _template(config_yaml: Path) -> dict[str, str]:
    node = OmegaConf.select(OmegaConf.load(config_yaml), CELL_KEY)
    parts = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_dict(node) else None
    if not parts or not all(isinstance(v, str) for v in parts.values()):
        raise ValueError(
            f"{config_yaml}: {CELL_KEY} must map each part of a cell's folder to a template, e.g. "
            "noise_seed: noise${noise}_seed${seed}"
        )
    return {str(k): v for k, v in parts.items()}


def cell_template(conf_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """``paths.cell`` as ``conf/config.yaml`` writes it: part name -> its template (unresolved), outermost first."""
    return dict(_template((_conf(conf_dir) / "config.yaml").resolve()))


def sweep_subdir(conf_dir: str | os.PathLike | None = None) -> str:
    """The sweep's ``hydra.sweep.subdir`` override value: the template's parts, nested (quoted for Hydra)."""
    return "'" + "/".join(f"${{{CELL_KEY}.{part}}}" for part in cell_template(conf_dir)) + "'"


def cell_dir(
    sweep: Path, dataset: str, row: str | dict, noise: float, seed: int, conf_dir: str | os.PathLike | None = None
) -> Path:
    """The folder of a cell in ``sweep``: ``paths.cell`` resolved for the cell's fields. ``row``: its fields
    (``regularizer``, ``alpha``, ``keep_original``: :func:`flowmixup.sweep.rows.row_fields`, or a grid.json cell)
    or the name of a row ``conf/reproduce/rows.yaml`` defines."""
    if isinstance(row, dict):
        fields = row
    else:
        from .rows import table_rows

        fields = table_rows(conf_dir)[row].fields
    regularizer = {"name": fields["regularizer"]}
    regularizer.update({k: fields[k] for k in ("alpha", "keep_original") if fields.get(k) is not None})
    cfg = OmegaConf.create(
        {
            "dataset": {"name": dataset},
            "regularizer": regularizer,
            "noise": float(noise),
            "seed": int(seed),
            "paths": {"cell": cell_template(conf_dir)},
        }
    )
    try:
        parts = OmegaConf.to_container(cfg.paths.cell, resolve=True)
    except OmegaConfBaseException as exc:
        raise ValueError(
            f"conf/config.yaml: {CELL_KEY} may use only {', '.join(CELL_FIELDS)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    return Path(sweep).joinpath(*(str(p) for p in parts.values()))


def block_log(sweep: Path, dataset: str, row: str) -> Path:
    """Where a block's ``train.py -m`` output (stdout and stderr) goes."""
    return sweep / "logs" / f"{dataset}__{row}.log"


def count_done(sweep: Path) -> int:
    return sum(1 for _ in sweep.rglob("summary.json")) if sweep.exists() else 0


def _row_of(cell: dict, conf_dir: str | os.PathLike | None = None) -> str:
    """A grid cell's row name (grid.json names it; older grids: the defined row with the same fields)."""
    if "row" in cell:
        return str(cell["row"])
    from .rows import table_rows

    wanted = {k: cell.get(k) for k in ("regularizer", "alpha", "keep_original")}
    return next((name for name, row in table_rows(conf_dir).items() if row.fields == wanted), str(cell["regularizer"]))


def _why_failed(folder: Path) -> str | None:
    """Why a cell's folder holds no finished run, or None when its summary says ok."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return "no summary.json (the run did not end)"
    try:
        record = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable summary.json ({exc})"
    status = record.get("status") if isinstance(record, dict) else None
    if status == "ok":
        return None
    reason = record.get("reason") if isinstance(record, dict) else None
    return f"status {status}" + (f": {reason}" if reason else "")


def failed_cells(
    sweep: Path, grid: list[dict], conf_dir: str | os.PathLike | None = None
) -> list[tuple[Path, str, Path]]:
    """``(cell folder, why, log)`` for each cell of ``grid`` without ``summary.json`` or whose status is not ok.

    ``log`` is the cell's own Hydra log (``<cell>/train.log``) where there is one, else its block's log.
    """
    failed = []
    for cell in grid:
        folder = cell_dir(sweep, cell["dataset"], cell, cell["noise"], cell["seed"], conf_dir)
        why = _why_failed(folder)
        if why is not None:
            logs = sorted(folder.glob("*.log")) if folder.is_dir() else []
            failed.append(
                (folder, why, logs[0] if logs else block_log(sweep, cell["dataset"], _row_of(cell, conf_dir)))
            )
    return failed
