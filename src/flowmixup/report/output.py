"""The formats of a report's text files, and writing a report all at once: every file is staged first, and only
then are they all put in place.

The tables and figures are computed in memory; :func:`write_files` writes each one to a temporary file beside its
target (flushed and fsync'ed) and, only once every one of them is on disk, renames them over their targets. A
failure while staging (a full disk, a permission error) removes the temporary files and leaves the old report as
it was, so a report folder never holds half of a new report beside half of an old one.

Every CSV of a report holds its floats at :data:`CSV_SIGNIFICANT_DIGITS` significant digits (:func:`csv_text`):
enough for any comparison a reader makes, and free of the last digits (the 16th and 17th) that differ between
processors computing the same sum in another order, so a report's CSVs read the same on every machine. Its
Markdown tables are tabulate's pipe tables (:func:`markdown_table`), padded so that they also read as tables in a
terminal; tabulate measures East Asian wide characters (the Tianchi class names) with wcwidth, so the padding is the
same wherever the package is installed with its dependencies.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Union

from ..io import current_umask

__all__ = ["CSV_SIGNIFICANT_DIGITS", "Content", "csv_text", "markdown_table", "write_files"]

Content = Union[str, bytes]
CSV_SIGNIFICANT_DIGITS = 10


def csv_text(frame) -> str:
    """``frame`` (a pandas DataFrame) as CSV text, without the index, floats at CSV_SIGNIFICANT_DIGITS digits."""
    return frame.to_csv(index=False, float_format=f"%.{CSV_SIGNIFICANT_DIGITS}g")


def markdown_table(frame, lead: int = 1) -> str:
    """``frame`` as a GitHub Markdown table (tabulate's pipe format), its first ``lead`` columns left-aligned and the
    others centred; the cells are text, printed as they are."""
    align = ["left"] * lead + ["center"] * (frame.shape[1] - lead)
    return frame.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)


def write_files(files: Mapping[Path, Content]) -> list[Path]:
    """Write ``{path: text or bytes}``; returns the paths written, in the mapping's order."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((Path(tmp_name), path))
            os.fchmod(fd, 0o666 & ~current_umask())  # a normal file's mode, not mkstemp's 0600
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return [path for _, path in staged]
