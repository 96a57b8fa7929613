"""Profiles (``conf/reproduce/<name>.yaml``): the rows a sweep runs and, per dataset, an experiment and its noise
levels; and the ``--set DATASET:KEY=VALUE`` items that reach one dataset's runs.

A profile names its rows (``rows: [erm, mixup_a1, ...]``: rows ``conf/reproduce/rows.yaml`` defines); a profile of
your own may also write a row inline, ``{name: ..., overrides: [...]}``, under a name not defined there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from ..project import conf_dir as find_conf_dir
from .compose import first_line
from .rows import ROWS_FILE, row_overrides


def profile_names(conf_dir: str | os.PathLike | None = None) -> list[str]:
    """The profiles under ``conf/reproduce`` (every file there but the rows)."""
    folder = Path(conf_dir if conf_dir is not None else find_conf_dir()) / "reproduce"
    return sorted(p.stem for p in folder.glob("*.yaml") if p.name != ROWS_FILE.name)


def _profile_path(profile: str, conf_dir: Path) -> Path:
    path = Path(profile) if profile.endswith(".yaml") else conf_dir / "reproduce" / f"{profile}.yaml"
    if path.resolve() == (conf_dir / ROWS_FILE).resolve():
        raise SystemExit(
            f"error: {path} defines the table rows, it is not a profile; known profiles: "
            f"{', '.join(profile_names(conf_dir))} (or a .yaml path)"
        )
    if not path.is_file():
        raise SystemExit(
            f"error: profile '{profile}' not found; known profiles: {', '.join(profile_names(conf_dir))} "
            "(or a .yaml path)"
        )
    return path


def _resolve_rows(path: Path, entries: list, conf_dir: Path) -> list[dict]:
    """A profile's rows as ``[{"name": ..., "overrides": [...]}, ...]``: names looked up in rows.yaml."""
    defined = row_overrides(conf_dir)
    rows = []
    for row in entries:
        if isinstance(row, str) and row in defined:
            rows.append({"name": row, "overrides": list(defined[row])})
        elif isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("overrides", []), list):
            if row["name"] in defined:
                raise SystemExit(
                    f"error: {path}: row {row['name']!r} is defined in {conf_dir / ROWS_FILE}; list it "
                    "by its name alone, or give yours another name"
                )
            rows.append({"name": row["name"], "overrides": [str(o) for o in row.get("overrides", [])]})
        else:
            raise SystemExit(
                f"error: {path}: row {row!r} is neither a row {conf_dir / ROWS_FILE} defines "
                f"({', '.join(defined)}) nor {{name: ..., overrides: [...]}}"
            )
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {path}: rows named twice: {sorted({n for n in names if names.count(n) > 1})}")
    return rows


def load_profile(profile: str, conf_dir: str | os.PathLike | None = None) -> dict:
    """A profile (a name under ``conf/reproduce`` or a .yaml path) with its ``rows`` as
    ``[{"name": ..., "overrides": [...]}, ...]``. A profile that cannot be used is one line (SystemExit)."""
    conf_dir = Path(conf_dir) if conf_dir is not None else find_conf_dir()
    path = _profile_path(profile, conf_dir)
    prof = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if (
        not isinstance(prof, dict)
        or not isinstance(prof.get("rows"), list)
        or not isinstance(prof.get("datasets"), list)
    ):
        raise SystemExit(f"error: {path}: a profile needs 'rows' (a list) and 'datasets' (a list)")
    prof["rows"] = _resolve_rows(path, prof["rows"], conf_dir)
    return prof


def parse_sets(items: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--set DATASET:KEY=VALUE`` items as ``{dataset: [override, ...]}``, and one problem line per bad item."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    extra: dict[str, list[str]] = {}
    problems = []
    for item in items:
        name, sep, override = item.partition(":")
        if not sep or not name or "=" not in override or override.startswith("="):
            problems.append(f"--set {item}: expected DATASET:KEY=VALUE, e.g. --set chestxray14:dataset.root=/data/nih")
            continue
        try:
            parser.parse_overrides([override])
        except OverrideParseException as exc:
            problems.append(f"--set {item}: not a valid override ({first_line(str(exc))})")
            continue
        extra.setdefault(name, []).append(override)
    return extra, problems
