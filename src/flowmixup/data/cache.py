"""The shared HDF5 cache builder: decode raw records once, in parallel, into one resumable HDF5 file.

Layout of a finished cache ``<dir>/<name>.h5`` (the name encodes the config that matters, e.g.
``chestxray14_256.h5``):

- ``x``: (N, *row_shape) decoded inputs (uint8 images or float32 signals), contiguous and uncompressed;
- one 1-D or 2-D dataset per entry of ``row_data`` (labels ``y``, record ids, patient ids...), row-aligned with x.

Beside it, ``<name>.json`` is the manifest: the config the cache was built for, the row count, shape, dtype,
the source and the skipped records. A cache counts as complete only when both files exist, the manifest's
config equals the config asked for and its row count equals the file's (:func:`cache_is_valid`).

Building writes into ``<name>.partial.h5`` with a per-row ``status`` (0 to do, 1 done, 2 bad): an interrupted
build (crash, Ctrl-C, a bad record in ``error`` mode) continues where it stopped on the next call with the same
config. The partial file is renamed to the final name only once every row is done (or compacted into it, without
the skipped rows, under ``on_bad_record="skip"``), and the manifest is written last, atomically.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from flowmixup.data.base import DataError
from flowmixup.io import atomic_path, write_json

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
ON_BAD_RECORD = ("error", "skip")
TODO, DONE, BAD = 0, 1, 2


def manifest_path(cache_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.json`` for ``<dir>/<name>.h5``."""
    return Path(cache_path).with_suffix(".json")


def partial_path(cache_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.partial.h5`` for ``<dir>/<name>.h5``: where an unfinished build lives."""
    p = Path(cache_path)
    return p.with_name(p.stem + ".partial.h5")


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def read_manifest(cache_path: str | os.PathLike) -> dict | None:
    """The manifest of ``cache_path``, or None where it is absent or unreadable."""
    mp = manifest_path(cache_path)
    try:
        return json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cache_problem(cache_path: str | os.PathLike, config: Mapping[str, Any]) -> str | None:
    """Why ``cache_path`` is not a complete cache for ``config`` (None when it is one)."""
    import h5py

    cache_path = Path(cache_path)
    if not cache_path.is_file():
        return f"{cache_path} does not exist"
    manifest = read_manifest(cache_path)
    if manifest is None:
        return f"{manifest_path(cache_path)} (the manifest) is missing or unreadable"
    if manifest.get("format") != MANIFEST_FORMAT or not manifest.get("complete"):
        return f"{manifest_path(cache_path)} does not describe a complete cache (format {MANIFEST_FORMAT})"
    if _canonical(manifest.get("config", {})) != _canonical(config):
        return f"{manifest_path(cache_path)} was written for another config: {manifest.get('config')} != {dict(config)}"
    try:
        with h5py.File(cache_path, "r") as fh:
            rows = fh["x"].shape[0] if "x" in fh else None
    except OSError as err:
        return f"{cache_path} is not a readable HDF5 file ({err})"
    if rows is None or rows != manifest.get("rows"):
        return f"{cache_path} has {rows} rows but its manifest says {manifest.get('rows')}"
    return None


def cache_is_valid(cache_path: str | os.PathLike, config: Mapping[str, Any]) -> bool:
    """True when ``cache_path`` is a complete cache built for exactly ``config``."""
    return cache_problem(cache_path, config) is None


def default_num_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _read_chunk(reader: Callable[[Any], np.ndarray], rows: Sequence[int], items: Sequence[Any]):
    """Worker task: decode ``items``; a DataError becomes a message for the parent, which decides."""
    out, errors = [], {}
    for row, item in zip(rows, items):
        try:
            out.append((row, reader(item)))
        except DataError as err:
            errors[row] = str(err)
    return out, errors


def _create_partial(path: Path, n: int, row_shape, dtype, row_data: Mapping[str, np.ndarray], config_json: str):
    import h5py

    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = h5py.File(path, "w")
    fh.attrs["config_json"] = config_json
    # Contiguous, uncompressed: a sorted fancy-index batch read (what ArrayDataset issues) is ~50-250x faster than
    # with one HDF5 chunk per row (h5py's selection over many chunks is slow), measured in docs/datasets.md.
    fh.create_dataset("x", shape=(n, *row_shape), dtype=dtype, chunks=None)
    for key, arr in row_data.items():
        fh.create_dataset(key, data=arr)
    fh.create_dataset("status", shape=(n,), dtype=np.uint8, fillvalue=TODO)
    fh.create_dataset("errors", shape=(n,), dtype=h5py.string_dtype())
    fh.flush()
    return fh


def _open_partial(path: Path, n: int, row_shape, dtype, row_data, config_json: str):
    """Reopen a partial build made for the same config and rows, or return None (it is then rebuilt)."""
    import h5py

    if not path.is_file():
        return None
    try:
        fh = h5py.File(path, "r+")
    except OSError as err:
        log.warning("%s is unreadable (%s): starting the cache again", path, err)
        return None
    ok = (
        fh.attrs.get("config_json") == config_json
        and "x" in fh
        and fh["x"].shape == (n, *row_shape)
        and fh["x"].dtype == np.dtype(dtype)
        and "status" in fh
        and all(k in fh and fh[k].shape == np.shape(v) and np.array_equal(fh[k][...], v) for k, v in row_data.items())
    )
    if not ok:
        fh.close()
        log.warning("%s was started for another config or other rows: starting the cache again", path)
        return None
    return fh


def _as_h5_array(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "U":  # h5py stores bytes, not numpy unicode
        return np.char.encode(arr, "utf-8")
    return arr


def build_cache(
    cache_path: str | os.PathLike,
    *,
    items: Sequence[Any],
    reader: Callable[[Any], np.ndarray],
    row_shape: Sequence[int],
    dtype: Any,
    row_data: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    item_names: Sequence[str] | None = None,
    source: Any = None,
    on_bad_record: str = "error",
    num_workers: int | None = None,
    chunk_rows: int = 32,
    desc: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Build (or finish, or reuse) the cache ``cache_path`` holding ``reader(items[i])`` as row i.

    items: one picklable description per row (typically a file path); ``reader`` must be a picklable module-level
        function (or a ``functools.partial`` of one) returning an array of ``row_shape`` and raising
        :class:`DataError` for a bad record.
    row_data: per-row arrays stored beside ``x`` (labels ``y``, ids...), first axis of length ``len(items)``.
    config: what identifies the cache (written to the manifest, compared by :func:`cache_is_valid`).
    on_bad_record: ``"error"`` stops at the first bad record with a DataError naming it (the rows done so far are
        kept for the next call); ``"skip"`` logs each bad record and the total, and leaves those rows out.
    num_workers: processes decoding in parallel (default: all usable cores; 0 or 1: decode in this process).
    Returns the path of the complete cache; an existing complete cache for ``config`` is reused as it is.
    """
    import h5py
    from tqdm.auto import tqdm

    if on_bad_record not in ON_BAD_RECORD:
        raise DataError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
    cache_path = Path(cache_path)
    if cache_path.suffix != ".h5":
        raise DataError(f"a cache file name must end in .h5, got {cache_path}")
    n = len(items)
    row_shape = tuple(int(s) for s in row_shape)
    dtype = np.dtype(dtype)
    names = [str(i) for i in (item_names if item_names is not None else items)]
    row_data = {k: _as_h5_array(v) for k, v in row_data.items()}
    for key, arr in row_data.items():
        if len(arr) != n:
            raise DataError(f"row_data['{key}'] has {len(arr)} rows, expected {n} (one per item)")
        if key in ("x", "status", "errors"):
            raise DataError(f"row_data key '{key}' is reserved by the cache layout")
    config = json.loads(_canonical(config))  # plain JSON types, as they will be read back
    config_json = _canonical(config)

    if not overwrite and cache_is_valid(cache_path, config):
        log.info("cache %s is complete for this config: reusing it", cache_path)
        return cache_path
    # From here on the old final cache (if any) must not look complete: its manifest goes first.
    manifest_path(cache_path).unlink(missing_ok=True)
    part = partial_path(cache_path)
    if overwrite:
        part.unlink(missing_ok=True)

    fh = _open_partial(part, n, row_shape, dtype, row_data, config_json)
    if fh is None:
        fh = _create_partial(part, n, row_shape, dtype, row_data, config_json)
    try:
        status = fh["status"][...]
        status[status == BAD] = TODO  # bad rows are tried again: the file may have been fixed since
        fh["status"][...] = status
        todo = np.flatnonzero(status == TODO)
        if len(todo) < n:
            log.info("resuming %s: %d of %d rows already done", part, n - len(todo), n)
        chunks = [todo[i : i + chunk_rows] for i in range(0, len(todo), chunk_rows)]
        workers = default_num_workers() if num_workers is None else int(num_workers)
        bar = tqdm(total=n, initial=n - len(todo), desc=desc or cache_path.name, unit="rec", mininterval=1.0)
        skipped: list[str] = []

        def store(done_rows, errors) -> None:
            if done_rows:
                rows = np.array([r for r, _ in done_rows])
                block = np.stack([np.asarray(a, dtype=dtype).reshape(row_shape) for _, a in done_rows])
                # status after the data: a row marked done has its data written
                if np.all(np.diff(rows) == 1):
                    fh["x"][rows[0] : rows[-1] + 1] = block
                    fh["status"][rows[0] : rows[-1] + 1] = DONE
                else:
                    for r, a in zip(rows, block):
                        fh["x"][r] = a
                    for r in rows:
                        fh["status"][r] = DONE
            for r, msg in sorted(errors.items()):
                if on_bad_record == "error":
                    fh.flush()
                    raise DataError(msg)
                log.warning("skipping bad record %s: %s", names[r], msg)
                skipped.append(msg)
                fh["errors"][r] = msg
                fh["status"][r] = BAD
            bar.update(len(done_rows) + len(errors))

        last_flush = time.monotonic()
        if workers <= 1 or len(chunks) <= 1:
            for rows in chunks:
                store(*_read_chunk(reader, rows, [items[r] for r in rows]))
                if time.monotonic() - last_flush > 10:
                    fh.flush()
                    last_flush = time.monotonic()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pending = set()
                queue = iter(chunks)
                try:
                    for rows in queue:
                        pending.add(pool.submit(_read_chunk, reader, rows, [items[r] for r in rows]))
                        if len(pending) >= 2 * workers:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in finished:
                                store(*fut.result())
                            if time.monotonic() - last_flush > 10:
                                fh.flush()
                                last_flush = time.monotonic()
                    for fut in list(pending):
                        store(*fut.result())
                        pending.discard(fut)
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
        bar.close()
        fh.flush()
        status = fh["status"][...]
        if (status == TODO).any():  # cannot happen unless a reader returned nothing
            raise DataError(f"{part}: {int((status == TODO).sum())} rows were not decoded")
        good = np.flatnonzero(status == DONE)
        bad = np.flatnonzero(status == BAD)
        bad_messages = [fh["errors"][r].decode() if isinstance(fh["errors"][r], bytes) else str(fh["errors"][r]) for r in bad]
        if len(bad) == 0:
            fh.close()
            fh = None
            with h5py.File(part, "r+") as done_fh:  # the final file holds no build bookkeeping
                del done_fh["status"], done_fh["errors"]
            _fsync(part)
            os.replace(part, cache_path)
        else:
            log.warning("skipped %d of %d records (bad input); the cache holds the other %d", len(bad), n, len(good))
            with atomic_path(cache_path, suffix=".h5") as tmp:
                _compact(fh, tmp, good, row_shape, dtype, list(row_data), config_json)
            fh.close()
            fh = None
            part.unlink(missing_ok=True)
    finally:
        if fh is not None:
            fh.close()

    write_json(
        manifest_path(cache_path),
        {
            "format": MANIFEST_FORMAT,
            "complete": True,
            "config": config,
            "rows": int(len(good)),
            "rows_requested": int(n),
            "row_shape": list(row_shape),
            "dtype": dtype.name,
            "source": source,
            "skipped": [{"record": names[r], "error": m} for r, m in zip(bad, bad_messages)],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    log.info("cache %s complete: %d rows", cache_path, len(good))
    return cache_path


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _compact(src, dst: Path, good: np.ndarray, row_shape, dtype, keys: list[str], config_json: str) -> None:
    """Copy the ``good`` rows of the partial file ``src`` into a new file ``dst``."""
    import h5py

    with h5py.File(dst, "w") as out:
        out.attrs["config_json"] = config_json
        x = out.create_dataset("x", shape=(len(good), *row_shape), dtype=dtype, chunks=None)
        step = 256
        for i in range(0, len(good), step):
            x[i : i + step] = src["x"][good[i : i + step]]
        for key in keys:
            out.create_dataset(key, data=src[key][...][good])


def open_cache(cache_path: str | os.PathLike, config: Mapping[str, Any], *, build_hint: str) -> dict:
    """The manifest of the complete cache ``cache_path`` for ``config``; otherwise a DataError that says why and
    how to build it (``build_hint``: the command)."""
    problem = cache_problem(cache_path, config)
    if problem is not None:
        raise DataError(f"no complete cache at {cache_path} ({problem}). Build it with: {build_hint}")
    return read_manifest(cache_path)  # type: ignore[return-value]


def read_row_data(cache_path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The small per-row arrays ``keys`` of a cache (strings come back as ``str``)."""
    import h5py

    out = {}
    with h5py.File(cache_path, "r") as fh:
        for key in keys:
            if key not in fh:
                raise DataError(f"{cache_path}: no dataset '{key}' in the cache (found: {sorted(fh.keys())})")
            arr = fh[key][...]
            if arr.dtype.kind in ("S", "O"):
                arr = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr])
            out[key] = arr
    return out
