"""Composing a run's config as ``train.py`` will (Hydra's compose API), and its errors as one line each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def compose(conf_dir: Path, overrides: list[str]):
    """The config ``train.py`` would get from ``overrides``, Hydra's own node included."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _missing_config(text: str) -> str:
    """Hydra's "config not found" message as one line, with the options it lists."""
    lines = text.splitlines()
    head = re.sub(r"^In '[^']*': ", "", lines[0].strip()) if lines else "config not found"
    options, inside = [], False
    for line in lines[1:]:
        if line.startswith("Available options"):
            inside = True
        elif line.startswith("Config search path"):
            break
        elif inside and line.strip():
            options.append(line.strip())
    return head + (f"; available: {', '.join(options)}" if options else "")


def one_line(exc: BaseException) -> str:
    """An exception of Hydra's compose API (or of OmegaConf) as one line."""
    from hydra.errors import MissingConfigException

    text = str(exc).strip()
    if isinstance(exc, MissingConfigException):
        return _missing_config(text)
    cause = exc.__cause__ or exc.__context__
    full_key = re.search(r"full_key: (\S+)", str(cause)) if cause is not None else None
    if full_key and re.search(r"not in struct|not in '|Key '[^']*' not", str(cause)):
        return f"{full_key.group(1)} is not a config key"
    head = first_line(text).rstrip(".") or type(exc).__name__
    if cause is not None and first_line(str(cause)):
        head += f" ({first_line(str(cause))})"
    return head


def describe(exc: BaseException, override: str | None, cfg0: Any) -> str:
    """A composition error as one line, with the override that caused it and the closest existing key."""
    message = one_line(exc)
    key = re.match(r"(\S+) is not a config key$", message)
    if key:
        message += _key_hint(cfg0, key.group(1))
    return message + (f" (from {override})" if override else "")


def _key_hint(cfg: Any, full_key: str) -> str:
    """``; did you mean X?`` for a key that is not in ``cfg`` (the closest sibling), or ``""``."""
    from ..cli import where_key_leaves

    gap = where_key_leaves(cfg, full_key)
    parts = full_key.split(".")
    if gap is None or gap[0] != ".".join(parts[:-1]) or gap[2] is None:  # only a misspelt last part gets a hint
        return ""
    return f"; did you mean {'.'.join(parts[:-1] + [gap[2]])}?"
