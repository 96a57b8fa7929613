"""The shared HDF5 cache: decode raw records once, in parallel, into one resumable HDF5 file, and the one contract
every cached dataset follows (:class:`CachedSource`).

A dataset module is a reader of its raw files plus a small :class:`CachedSource` subclass saying what differs: its
cache file and config, what identifies its raw data (:meth:`CachedSource.fingerprint`), the rows to decode
(:meth:`CachedSource.contents`) and how rows are read back and split (:meth:`CachedSource.arrays`). The sequence
root -> fingerprint -> the ready cache, or the prepare command -> open is :meth:`CachedSource.open`, the same for
all; :func:`prepare` builds the cache a ``dataset.loader`` config node reads, with that node's settings.

Layout of a finished cache ``<dir>/<name>.h5`` (the name encodes the config that matters, e.g.
``chestxray14_256.h5``):

- ``x``: (N, *row_shape) decoded inputs (uint8 images or float32 signals), contiguous and uncompressed;
- one 1-D or 2-D dataset per entry of ``row_data`` (labels ``y``, record ids, patient ids...), row-aligned with x.

Beside it, ``<name>.json`` is the manifest: the config the cache was built for, the :func:`fingerprint` of the
raw data it was built from, the row count, shape, dtype, the source (the absolute root is kept there as
information only) and the skipped records. A cache counts as complete only when both files exist, the manifest's
format is :data:`MANIFEST_FORMAT`, its config equals the config asked for, its fingerprint equals the one of the
data given (when one is given) and its row count equals the file's (:func:`cache_is_valid`).

Cache identity is the CONTENT of the raw data, not where it is mounted: the fingerprint hashes the label/split
files' bytes, the sorted record paths relative to the root with each record's size, and the preprocessing
settings; the same data under another root (another node, a symlink, a copy) has the same fingerprint.

Building writes into ``<name>.partial.h5`` with a per-row ``status`` (0 to do, 1 done, 2 bad): an interrupted
build (crash, Ctrl-C, a bad record in ``error`` mode) continues where it stopped on the next call with the same
config and the same fingerprint (a partial build of other data is started again). The partial file is renamed to
the final name only once every row is done (or compacted into it, without the skipped rows, under
``on_bad_record="skip"``), and the manifest is written last, atomically.

One builder per cache: a build holds the exclusive lock ``<name>.lock`` beside the cache (:class:`FileLock`,
holding the builder's PID and host). A second build of the same cache waits for the first (one log line says
whom it waits for) and then finds the cache ready, or with ``wait=False`` (``prepare_data.py --no-wait``) stops
at once with one line; a loader that finds the cache missing while it is being built waits likewise. Nobody
deletes or rewrites a partial file while its builder lives; a lock left by a dead builder is taken over (logged)
and its partial file resumed. Readers of a complete cache take no lock at all (HDF5 opens it read-only, so any
number of training jobs share one cache).

A build checks its folder is writable and that the disk has room for the rows still to decode before it decodes
anything; a full disk or an unwritable folder is one line (:class:`flowmixup.io.WriteError`) that says what is
kept (the rows already decoded stay in the partial file, and the next call continues from them).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing, contextmanager, suppress
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from flowmixup import faults
from flowmixup.data.base import DataError, LabeledArrays, plain
from flowmixup.io import (
    FileLock,
    LockBusy,
    WriteError,
    atomic_path,
    free_bytes,
    holder_text,
    is_write_failure,
    require_writable_folder,
    size_text,
    write_error,
    write_json,
)
from flowmixup.progress import progress

log = logging.getLogger(__name__)

# 2: the manifest holds the source fingerprint. A format-1 manifest does not say which data its cache holds, so
# such a cache is never trusted: prepare rebuilds it, a loader refuses it with the command that rebuilds it.
MANIFEST_FORMAT = 2
FINGERPRINT_VERSION = 1  # bump when what fingerprint() hashes changes (every cache is then rebuilt)
ON_BAD_RECORD = ("error", "skip")
TODO, DONE, BAD = 0, 1, 2
MISSING_SIZE = -1  # the size recorded for a record file that does not exist (or cannot be stat'ed)
WAIT_FOR_BUILDER = True  # a second builder of a cache waits for the first (False: stops at once, one line)


# ------------------------------------------------------------------------------------------- cache identity
@dataclass(frozen=True)
class Fingerprint:
    """The identity of the raw data a cache is built from (see :func:`fingerprint`).

    sha256: the hex digest that identifies the data; records: how many record paths it covers; files: each hashed
    label/split file (path relative to the root) -> the sha256 of its bytes (to say which one changed).
    """

    sha256: str
    records: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        """The first 12 hex digits, for messages."""
        return self.sha256[:12]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise DataError(
            f"{path}: unreadable ({err.strerror or err}); it is needed to identify the dataset's cache"
        ) from err
    return h.hexdigest()


def _relative(path: str | os.PathLike, root: str) -> tuple[str, str]:
    """(``path`` relative to ``root`` with forward slashes, a path to open it by): no symlink is resolved, and a
    path under ``root`` is cut by string (``os.path.relpath`` per record would dominate the cost)."""
    path = os.fspath(path)
    prefix = root.rstrip(os.sep) + os.sep
    if path.startswith(prefix):
        rel, where = path[len(prefix) :], path
    elif os.path.isabs(path):
        rel, where = os.path.relpath(path, root), path
    else:
        rel, where = path, os.path.join(root, path)
    return (rel if os.sep == "/" else rel.replace(os.sep, "/")), where


def fingerprint(
    root: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    records: Sequence[str | os.PathLike],
    settings: Mapping[str, Any],
) -> Fingerprint:
    """The content identity of a raw dataset under ``root``, wherever ``root`` is mounted.

    files: the label tables and split lists (paths relative to ``root``, or under it): their BYTES are hashed.
    records: the record files that feed the cache (relative to ``root``, or under it): their sorted RELATIVE paths
        and each one's size in bytes (one ``stat`` per record; a missing file counts with size -1) are hashed, not
        their content (reading 112,120 PNGs at every training start would cost minutes). So a record replaced by
        one of another size (e.g. a downsampled copy) is other data; one rewritten in place with exactly the same
        size is not detected: rebuild with ``overwrite=True`` after such an edit.
    settings: the preprocessing settings (the cache config: resolution, classes, selection rules...).

    The absolute ``root`` does not enter the digest: the same data copied, symlinked or mounted elsewhere has the
    same fingerprint. A file of ``files`` that cannot be read raises DataError naming it.
    """
    root_s = os.fspath(root)
    file_hashes = {}
    for f in files:
        rel, where = _relative(f, root_s)
        file_hashes[rel] = _file_sha256(Path(where))
    entries = []
    stat = os.stat
    for r in records:
        rel, where = _relative(r, root_s)
        try:
            size = stat(where).st_size
        except OSError:
            size = MISSING_SIZE
        entries.append((rel, size))
    entries.sort()
    h = hashlib.sha256()
    h.update(f"flowmixup source fingerprint {FINGERPRINT_VERSION}\n".encode())
    h.update(_canonical({"settings": dict(settings), "files": file_hashes}).encode("utf-8"))
    h.update(b"\n")
    # one "<relative path>\0<size>\n" per record: a path holds no NUL byte, so the encoding is unambiguous
    h.update(b"".join(os.fsencode(rel) + b"\0" + str(size).encode() + b"\n" for rel, size in entries))
    return Fingerprint(h.hexdigest(), len(entries), file_hashes)


def manifest_path(cache_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.json`` for ``<dir>/<name>.h5``."""
    return Path(cache_path).with_suffix(".json")


def lock_path(cache_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.lock`` for ``<dir>/<name>.h5``: held by the one process building that cache."""
    return Path(cache_path).with_suffix(".lock")


DATA_DIR_HINT = "set FLOWMIXUP_DATA_DIR (or paths.data_dir=) to a folder you can write to, with room for the cache"
ROOM_HINT = "free some space, or set FLOWMIXUP_DATA_DIR (or paths.data_dir=) to a disk with room for the cache, and"


def _say_waiting(cache_path: Path, why: str) -> Callable[[tuple[str, str]], None]:
    def on_wait(holder: tuple[str, str]) -> None:
        log.warning("%s is being built by %s: waiting for it to finish (%s)", cache_path, holder_text(holder), why)

    return on_wait


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


def _problem(
    cache_path: str | os.PathLike, config: Mapping[str, Any], fp: Fingerprint | None = None
) -> tuple[str, str] | None:
    """(kind, one-line message) saying why ``cache_path`` is not a complete cache for ``config`` (and, when ``fp``
    is given, for the data of that fingerprint); None when it is one. Kinds: missing, manifest, format, config,
    data (built from other data), rows."""
    import h5py

    cache_path = Path(cache_path)
    if not cache_path.is_file():
        return "missing", f"{cache_path} does not exist"
    manifest = read_manifest(cache_path)
    if manifest is None:
        return "manifest", f"{manifest_path(cache_path)} (the manifest) is missing or unreadable"
    if manifest.get("format") != MANIFEST_FORMAT:
        return "format", (
            f"{manifest_path(cache_path)} has manifest format {manifest.get('format')}, not {MANIFEST_FORMAT}: it was "
            f"written by an older version that did not record which data the cache holds"
        )
    if not manifest.get("complete"):
        return "manifest", f"{manifest_path(cache_path)} does not describe a complete cache"
    if _canonical(manifest.get("config", {})) != _canonical(config):
        return "config", (
            f"{manifest_path(cache_path)} was written for another config: {manifest.get('config')} != {dict(config)}"
        )
    if fp is not None and manifest.get("fingerprint") != fp.sha256:
        return "data", _other_data_message(cache_path, manifest, fp)
    try:
        with h5py.File(cache_path, "r") as fh:
            rows = fh["x"].shape[0] if "x" in fh else None
    except OSError as err:
        return "manifest", f"{cache_path} is not a readable HDF5 file ({err})"
    if rows is None or rows != manifest.get("rows"):
        return "rows", f"{cache_path} has {rows} rows but its manifest says {manifest.get('rows')}"
    return None


def _other_data_message(cache_path: Path, manifest: Mapping[str, Any], fp: Fingerprint) -> str:
    old = manifest.get("fingerprint") or "none"
    of = manifest.get("fingerprint_of") or {}
    old_files = of.get("files") or {}
    changed = sorted(k for k in set(old_files) | set(fp.files) if old_files.get(k) != fp.files.get(k))
    where = f"differs in {', '.join(changed)}" if changed else "differs in the record files (their list or sizes)"
    return (
        f"{cache_path} was built from other data (fingerprint {old[:12]}, {of.get('records', '?')} records) than the "
        f"data given (fingerprint {fp.short}, {fp.records} records; {where})"
    )


def cache_problem(
    cache_path: str | os.PathLike, config: Mapping[str, Any], fingerprint: Fingerprint | None = None
) -> str | None:
    """Why ``cache_path`` is not a complete cache for ``config`` and, when given, the data of ``fingerprint``
    (None when it is one). Without a fingerprint, any complete cache for ``config`` is accepted as it is."""
    found = _problem(cache_path, config, fingerprint)
    return None if found is None else found[1]


def cache_is_valid(
    cache_path: str | os.PathLike, config: Mapping[str, Any], fingerprint: Fingerprint | None = None
) -> bool:
    """True when ``cache_path`` is a complete cache built for exactly ``config`` (and, when given, from the data of
    ``fingerprint``)."""
    return _problem(cache_path, config, fingerprint) is None


def check_on_bad_record(on_bad_record: str) -> str:
    """``on_bad_record`` itself, or a one-line DataError when it is not one of :data:`ON_BAD_RECORD`."""
    if on_bad_record not in ON_BAD_RECORD:
        raise DataError(f"dataset.on_bad_record: {on_bad_record!r} is unknown; allowed: {', '.join(ON_BAD_RECORD)}")
    return on_bad_record


def usable_cores() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------- decoding
Decoded = tuple[list[tuple[int, np.ndarray]], dict[int, str]]  # ([(row, array)], {row: bad-record message})


def _read_chunk(reader: Callable[[Any], np.ndarray], rows: Sequence[int], items: Sequence[Any]) -> Decoded:
    """Worker task: decode ``items``; a DataError becomes a message for the parent, which decides."""
    out, errors = [], {}
    for row, item in zip(rows, items):
        try:
            out.append((row, reader(item)))
        except DataError as err:
            errors[row] = str(err)
    return out, errors


def decode(
    reader: Callable[[Any], np.ndarray], items: Sequence[Any], chunks: Sequence[np.ndarray], workers: int
) -> Iterator[Decoded]:
    """The decoded rows and the bad-record messages of each chunk of row numbers (``reader(items[row])``).

    In this process, chunk after chunk, when ``workers`` <= 1 or there is one chunk; otherwise by a pool of
    ``workers`` processes holding at most 2 x ``workers`` chunks in flight, each chunk as soon as it is done. Closing
    the generator (the consumer stopped: a bad record, Ctrl-C, a full disk) cancels the chunks not started yet and
    waits for the running ones, so no worker outlives the build."""
    if workers <= 1 or len(chunks) <= 1:
        for rows in chunks:
            yield _read_chunk(reader, rows, [items[r] for r in rows])
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: set = set()
        try:
            for rows in chunks:
                pending.add(pool.submit(_read_chunk, reader, rows, [items[r] for r in rows]))
                if len(pending) >= 2 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        yield fut.result()
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


# ------------------------------------------------------------------------------------------- building
@dataclass
class _Job:
    """One build of the cache ``path``: the checked arguments of :func:`build_cache`."""

    path: Path
    items: Sequence[Any]
    reader: Callable[[Any], np.ndarray]
    row_shape: tuple[int, ...]
    dtype: np.dtype
    row_data: dict[str, np.ndarray]
    config: dict[str, Any]
    names: list[str]
    source: Any
    fingerprint: Fingerprint | None
    on_bad_record: str
    workers: int
    chunk_rows: int
    desc: str

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape)) * self.dtype.itemsize

    @property
    def config_json(self) -> str:
        return _canonical(self.config)

    @property
    def fp_hex(self) -> str:
        return self.fingerprint.sha256 if self.fingerprint is not None else ""


def _job(
    cache_path,
    items,
    reader,
    row_shape,
    dtype,
    row_data,
    config,
    item_names,
    source,
    fingerprint,
    on_bad_record,
    prepare_workers,
    chunk_rows,
    desc,
) -> _Job:
    check_on_bad_record(on_bad_record)
    cache_path = Path(cache_path)
    if cache_path.suffix != ".h5":
        raise DataError(f"a cache file name must end in .h5, got {cache_path}")
    data = {k: _as_h5_array(v) for k, v in row_data.items()}
    for key, arr in data.items():
        if len(arr) != len(items):
            raise DataError(f"row_data['{key}'] has {len(arr)} rows, expected {len(items)} (one per item)")
        if key in ("x", "status", "errors"):
            raise DataError(f"row_data key '{key}' is reserved by the cache layout")
    return _Job(
        path=cache_path,
        items=items,
        reader=reader,
        row_shape=tuple(int(s) for s in row_shape),
        dtype=np.dtype(dtype),
        row_data=data,
        config=json.loads(_canonical(config)),  # plain JSON types, as they will be read back
        names=[str(i) for i in (item_names if item_names is not None else items)],
        source=source,
        fingerprint=fingerprint,
        on_bad_record=on_bad_record,
        workers=usable_cores() if prepare_workers is None else int(prepare_workers),
        chunk_rows=int(chunk_rows),
        desc=desc or cache_path.name,
    )


class PartialCache:
    """``<name>.partial.h5`` while a build fills it: the rows, their per-row status (to do, done, bad) and the
    messages of the bad ones. :meth:`resume` opens the one a previous build of the same config, data and rows left
    (or starts a new one), :meth:`store` and :meth:`mark_bad` write decoded rows, :meth:`finish` turns it into the
    cache. ``stored``: how many rows have their data and status in the file."""

    def __init__(self, job: _Job, fh):
        self.job, self.fh, self.path = job, fh, partial_path(job.path)
        status = fh["status"][...]
        status[status == BAD] = TODO  # bad rows are tried again: the file may have been fixed since
        fh["status"][...] = status
        self.todo = np.flatnonzero(status == TODO)
        self.stored = job.n - len(self.todo)
        self._flushed = time.monotonic()

    @classmethod
    def resume(cls, job: _Job) -> "PartialCache":
        """The partial file of ``job``: resumed where a build made for the same config, data and rows stopped, or
        started afresh. Stops before decoding anything when the disk cannot hold the rows still to write."""
        path = partial_path(job.path)
        fh = _open_partial(path, job)
        if fh is None:
            _check_room(path, job.n * job.row_bytes + sum(v.nbytes for v in job.row_data.values()), job.n, 0)
            fh = _create_partial(path, job)
        part = cls(job, fh)
        if part.stored:
            log.info("resuming %s: %d of %d rows already done", path, part.stored, job.n)
            _check_room(path, _unwritten_bytes(path, job.n * job.row_bytes), job.n, part.stored)
        return part

    def chunks(self) -> list[np.ndarray]:
        """The rows still to do, ``chunk_rows`` at a time."""
        step = self.job.chunk_rows
        return [self.todo[i : i + step] for i in range(0, len(self.todo), step)]

    def store(self, done: list[tuple[int, np.ndarray]]) -> None:
        """Write decoded rows, their data before their status: a row marked done has its data written."""
        faults.before_write(self.path)
        if not done:
            return
        job = self.job
        rows = np.array([r for r, _ in done])
        block = np.stack([np.asarray(a, dtype=job.dtype).reshape(job.row_shape) for _, a in done])
        if np.all(np.diff(rows) == 1):
            self.fh["x"][rows[0] : rows[-1] + 1] = block
            self.fh["status"][rows[0] : rows[-1] + 1] = DONE
        else:
            for r, a in zip(rows, block):
                self.fh["x"][r] = a
            for r in rows:
                self.fh["status"][r] = DONE
        self.stored += len(rows)

    def mark_bad(self, row: int, message: str) -> None:
        self.fh["errors"][row] = message
        self.fh["status"][row] = BAD

    def flush(self, every: float = 0.0) -> None:
        """Flush to disk, at most once per ``every`` seconds."""
        if time.monotonic() - self._flushed >= every:
            self.fh.flush()
            self._flushed = time.monotonic()

    def finish(self) -> tuple[np.ndarray, list[str]]:
        """Turn the filled partial file into the cache (renamed when no row is bad, else compacted without the bad
        rows); ``(bad rows, their messages)``."""
        import h5py

        self.fh.flush()
        status = self.fh["status"][...]
        if (status == TODO).any():  # cannot happen unless a reader returned nothing
            raise DataError(f"{self.path}: {int((status == TODO).sum())} rows were not decoded")
        good, bad = np.flatnonzero(status == DONE), np.flatnonzero(status == BAD)
        messages = [_text(self.fh["errors"][r]) for r in bad]
        job = self.job
        if len(bad) == 0:
            self.close()
            with h5py.File(self.path, "r+") as done_fh:  # the final file holds no build bookkeeping
                del done_fh["status"], done_fh["errors"]
            _fsync(self.path)
            os.replace(self.path, job.path)
        else:
            log.warning(
                "skipped %d of %d records (bad input); the cache holds the other %d", len(bad), job.n, len(good)
            )
            with atomic_path(job.path, suffix=".h5") as tmp:
                _compact(self.fh, tmp, good, job)
            self.close()
            self.path.unlink(missing_ok=True)
        return bad, messages

    def close(self) -> None:
        fh, self.fh = self.fh, None
        if fh is not None:
            fh.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _create_partial(path: Path, job: _Job):
    import h5py

    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = h5py.File(path, "w")
    fh.attrs["config_json"] = job.config_json
    fh.attrs["fingerprint"] = job.fp_hex
    # Contiguous, uncompressed: a sorted fancy-index batch read (what ArrayDataset issues) is ~50-250x faster than
    # with one HDF5 chunk per row (h5py's selection over many chunks is slow), measured in docs/datasets.md.
    fh.create_dataset("x", shape=(job.n, *job.row_shape), dtype=job.dtype, chunks=None)
    for key, arr in job.row_data.items():
        fh.create_dataset(key, data=arr)
    fh.create_dataset("status", shape=(job.n,), dtype=np.uint8, fillvalue=TODO)
    fh.create_dataset("errors", shape=(job.n,), dtype=h5py.string_dtype())
    fh.flush()
    return fh


def _open_partial(path: Path, job: _Job):
    """Reopen a partial build made for the same config, data and rows, or return None (it is then rebuilt)."""
    import h5py

    if not path.is_file():
        return None
    try:
        fh = h5py.File(path, "r+")
    except BlockingIOError as err:  # HDF5's own file lock: a writer that does not take our lock (never ours)
        raise DataError(
            f"{path}: held open by another process ({err.strerror or 'file locked'}); it is left as it "
            "is: wait for that process to end, then run the same command again"
        ) from None
    except OSError as err:
        if is_write_failure(err):
            raise
        log.warning("%s is unreadable (%s): starting the cache again", path, err)
        return None
    started_for = fh.attrs.get("fingerprint", "")
    if started_for != job.fp_hex:
        fh.close()
        log.warning(
            "%s was started from other data (fingerprint %s, this data: %s): starting the cache again",
            path,
            (started_for or "none")[:12],
            (job.fp_hex or "none")[:12],
        )
        return None
    if not _same_rows(fh, job):
        fh.close()
        log.warning("%s was started for another config or other rows: starting the cache again", path)
        return None
    return fh


def _same_rows(fh, job: _Job) -> bool:
    """Whether the open partial file ``fh`` was made for ``job``'s config, row shape, dtype and row data."""
    return (
        fh.attrs.get("config_json") == job.config_json
        and "x" in fh
        and fh["x"].shape == (job.n, *job.row_shape)
        and fh["x"].dtype == job.dtype
        and "status" in fh
        and all(
            k in fh and fh[k].shape == np.shape(v) and np.array_equal(fh[k][...], v) for k, v in job.row_data.items()
        )
    )


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
    fingerprint: Fingerprint | None = None,
    on_bad_record: str = "error",
    prepare_workers: int | None = None,
    chunk_rows: int = 32,
    desc: str | None = None,
    overwrite: bool = False,
    wait: bool | None = None,
) -> Path:
    """Build (or finish, or reuse) the cache ``cache_path`` holding ``reader(items[i])`` as row i.

    items: one picklable description per row (typically a file path); ``reader`` must be a picklable module-level
        function (or a ``functools.partial`` of one) returning an array of ``row_shape`` and raising
        :class:`DataError` for a bad record.
    row_data: per-row arrays stored beside ``x`` (labels ``y``, ids...), first axis of length ``len(items)``.
    config: what identifies the cache (written to the manifest, compared by :func:`cache_is_valid`).
    source: information on where the data came from (e.g. the absolute root), written to the manifest, never compared.
    fingerprint: the :func:`fingerprint` of the data ``items`` come from: a complete cache (or a partial build) made
        from other data is rebuilt, with one log line saying so.
    on_bad_record: ``"error"`` stops at the first bad record with a DataError naming it (the rows done so far are
        kept for the next call); ``"skip"`` logs each bad record and the total, and leaves those rows out.
    prepare_workers: processes decoding in parallel (default: all usable cores; 0 or 1: decode in this process).
    wait: when another process is building this cache, wait for it (True) or stop with a DataError (False);
        None: :data:`WAIT_FOR_BUILDER` (``prepare_data.py --no-wait`` sets it to False).
    Returns the complete cache's path; a complete cache for ``config`` (and ``fingerprint``) is reused as it is.
    """
    job = _job(
        cache_path,
        items,
        reader,
        row_shape,
        dtype,
        row_data,
        config,
        item_names,
        source,
        fingerprint,
        on_bad_record,
        prepare_workers,
        chunk_rows,
        desc,
    )
    if not overwrite and _problem(job.path, job.config, fingerprint) is None:  # a ready cache: no lock needed
        log.info("cache %s is complete for this config and data: reusing it", job.path)
        return job.path
    require_writable_folder(job.path.parent, "the cache folder", DATA_DIR_HINT)
    with _builder_lock(job.path, WAIT_FOR_BUILDER if wait is None else bool(wait)):
        if not overwrite and _ready_or_say_why(job, fingerprint):  # another builder finished it meanwhile
            return job.path
        return _build_locked(job, overwrite)


def _ready_or_say_why(job: _Job, fingerprint: Fingerprint | None) -> bool:
    """Whether ``job``'s cache is complete for its config and data; if not, log why it is (re)built."""
    found = _problem(job.path, job.config, fingerprint)
    if found is None:
        log.info("cache %s is complete for this config and data: reusing it", job.path)
        return True
    kind, problem = found
    if kind == "data":
        log.warning("%s: rebuilding it", problem)
    elif kind != "missing":
        log.info("%s: building the cache again", problem)
    return False


@contextmanager
def _builder_lock(cache_path: Path, wait: bool) -> Iterator[FileLock]:
    """The cache's lock, held by its one builder (waiting for another builder when ``wait``): one line otherwise."""
    lock = FileLock(lock_path(cache_path))
    try:
        lock.acquire(wait=wait, on_wait=_say_waiting(cache_path, "one builder per cache"))
    except LockBusy as busy:
        raise DataError(
            f"{cache_path} is being built by {holder_text(busy.holder)} (lock "
            f"{lock.path}); wait for it to finish, or run again without --no-wait to wait"
        ) from None
    except OSError as err:
        if not is_write_failure(err):
            raise
        raise write_error(
            lock.path, "creating the cache's lock file", err, kept="nothing was written", todo=DATA_DIR_HINT
        ) from None
    try:
        yield lock
    finally:
        lock.release()


def _build_locked(job: _Job, overwrite: bool) -> Path:
    """The build itself, under the cache's lock (see :func:`build_cache`)."""
    # From here on the old final cache (if any) must not look complete: its manifest goes first.
    manifest_path(job.path).unlink(missing_ok=True)
    if overwrite:
        partial_path(job.path).unlink(missing_ok=True)
    part = None
    try:
        part = PartialCache.resume(job)
        _fill(part)
        bad, messages = part.finish()
    except OSError as err:
        if not is_write_failure(err):
            raise
        done, part_file = (part.stored if part is not None else 0), partial_path(job.path)
        raise write_error(
            part_file,
            "writing the cache",
            err,
            needed=(job.n - done) * job.row_bytes,
            kept=(
                f"the {done} of {job.n} rows decoded so far are kept in {part_file}"
                if done
                else "no row was decoded yet"
            ),
            todo=f"{ROOM_HINT} run the same command again to continue from them",
        ) from None
    finally:
        if part is not None:
            with suppress(OSError):  # a full disk can make even the close fail; the error above says what to do
                part.close()
    _write_manifest(job, bad, messages)
    log.info("cache %s complete: %d rows", job.path, job.n - len(bad))
    return job.path


def _fill(part: PartialCache) -> None:
    """Decode the rows ``part`` still lacks into it; a bad record stops the build (``on_bad_record="error"``,
    after flushing the rows done) or is logged and marked bad (``"skip"``)."""
    job = part.job
    bar = progress(total=job.n, initial=part.stored, desc=job.desc, unit="rec")
    with closing(decode(job.reader, job.items, part.chunks(), job.workers)) as decoded:
        for done, errors in decoded:
            part.store(done)
            for row, message in sorted(errors.items()):
                if job.on_bad_record == "error":
                    part.flush()
                    raise DataError(message)
                log.warning("skipping bad record %s: %s", job.names[row], message)
                part.mark_bad(row, message)
            bar.update(len(done) + len(errors))
            faults.pause("cache-row-block")
            part.flush(every=10.0)
    bar.close()


def _write_manifest(job: _Job, bad: np.ndarray, messages: list[str]) -> None:
    fp = job.fingerprint
    write_json(
        manifest_path(job.path),
        {
            "format": MANIFEST_FORMAT,
            "complete": True,
            "config": job.config,
            "fingerprint": fp.sha256 if fp is not None else None,
            "fingerprint_of": (
                {"version": FINGERPRINT_VERSION, "records": fp.records, "files": fp.files} if fp is not None else None
            ),
            "rows": int(job.n - len(bad)),
            "rows_requested": int(job.n),
            "row_shape": list(job.row_shape),
            "dtype": job.dtype.name,
            "source": job.source,
            "skipped": [{"record": job.names[r], "error": m} for r, m in zip(bad, messages)],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def _unwritten_bytes(part: Path, data_bytes: int) -> int:
    """How much the partial file still has to grow to hold every row (HDF5 allocates ``x`` at its first write)."""
    try:
        return max(0, data_bytes - os.stat(part).st_blocks * 512)
    except (OSError, AttributeError):
        return data_bytes


def _check_room(part: Path, needed: int, n: int, done: int) -> None:
    """Stop before decoding anything when the disk cannot hold the rows still to write."""
    free = free_bytes(part.parent)
    if free is not None and free < needed:
        kept = f"the {done} of {n} rows decoded so far are kept in {part}" if done else "nothing was written"
        raise WriteError(
            part,
            "building the cache",
            f"not enough space: {size_text(needed)} needed, {size_text(free)} free",
            kept,
            f"{ROOM_HINT} run the same command again",
        )


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _compact(src, dst: Path, good: np.ndarray, job: _Job) -> None:
    """Copy the ``good`` rows of the partial file ``src`` into a new file ``dst``."""
    import h5py

    with h5py.File(dst, "w") as out:
        out.attrs["config_json"] = job.config_json
        x = out.create_dataset("x", shape=(len(good), *job.row_shape), dtype=job.dtype, chunks=None)
        step = 256
        for i in range(0, len(good), step):
            x[i : i + step] = src["x"][good[i : i + step]]
        for key in job.row_data:
            out.create_dataset(key, data=src[key][...][good])


def open_cache(
    cache_path: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    build_hint: str,
    fingerprint: Fingerprint | None = None,
    on_bad_record: str = "skip",
    what: str = "records",
) -> dict:
    """The manifest of the complete cache ``cache_path`` for ``config`` (and, when given, for the data of
    ``fingerprint``); otherwise a one-line DataError that says why and how to build it (``build_hint``: the
    command). Without a fingerprint (no raw data at hand) a complete cache for ``config`` is accepted as it is.
    Under ``on_bad_record="error"`` a cache built with skipped ``what`` (records, images) is refused too."""
    found = _problem(cache_path, config, fingerprint)
    if found is not None and FileLock(lock_path(cache_path)).wait_until_free(
        _say_waiting(Path(cache_path), "this run starts once the cache is ready")
    ):
        found = _problem(cache_path, config, fingerprint)
    if found is not None:
        kind, problem = found
        if kind == "data":
            raise DataError(f"{problem}. Rebuild it for this data with: {build_hint}")
        raise DataError(f"no complete cache at {cache_path} ({problem}). Build it with: {build_hint}")
    manifest = read_manifest(cache_path)
    if manifest.get("skipped") and on_bad_record == "error":
        raise DataError(
            f"{cache_path} was built with on_bad_record=skip and leaves out {len(manifest['skipped'])} {what} "
            f"(listed in {Path(cache_path).with_suffix('.json')}); pass dataset.on_bad_record=skip to use it, "
            "or rebuild it"
        )
    return manifest  # type: ignore[return-value]


def root_missing_message(root: Any, cache_path: str | os.PathLike) -> str:
    """The one-line error for a ``dataset.root`` that is not a folder while a complete cache exists."""
    return (
        f"dataset.root={root} is not a folder, so the cache {cache_path} cannot be checked against the raw data: "
        f"give the folder holding the raw data, or dataset.root=null to train from this cache as it is"
    )


def unverifiable_error(err: DataError, cache_path: str | os.PathLike) -> DataError:
    """``err`` (the raw data under the root could not be fingerprinted) with, in the same line, how to train from
    the complete cache ``cache_path`` anyway."""
    return DataError(
        f"{err} (so the cache {cache_path} cannot be checked against this root: fix the root, or pass "
        f"dataset.root=null to train from the cache as it is)"
    )


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


# ------------------------------------------------------------------------------------------- the contract
@dataclass
class CacheContents:
    """What a cache is built from (the arguments of :func:`build_cache` that a dataset supplies): row i is
    ``reader(items[i])``, of ``row_shape`` and ``dtype``; ``row_data`` the per-row arrays beside it; ``config`` and
    ``fingerprint`` its identity; ``item_names`` name the rows in messages; ``source`` is written to the manifest."""

    items: Sequence[Any]
    reader: Callable[[Any], np.ndarray]
    row_shape: Sequence[int]
    dtype: Any
    row_data: Mapping[str, np.ndarray]
    config: Mapping[str, Any]
    fingerprint: Fingerprint | None
    item_names: Sequence[str] | None = None
    source: Any = None


NO_ROOT = (None, "", "???")  # dataset.root values meaning "no raw data here: use the cache as it is"


@dataclass
class CachedSource(ABC):
    """A dataset read from its prepared cache: root -> fingerprint -> the ready cache, or the prepare command -> open.

    Each dataset is a dataclass subclass whose fields are its settings (after ``root`` and ``cache_dir``; the three
    keyword-only settings below are common to all), with:

    - ``NAME``: the ``dataset=`` option that prepares it (the command in messages; or :attr:`dataset_option`),
      ``WHAT``: what a row is, in messages;
    - :meth:`cache_path`, :meth:`cache_config`: the cache file and the config that identifies it;
    - :meth:`fingerprint`: the identity of the raw data under ``root`` (reads labels and lists, decodes nothing);
      or :meth:`identify` where the config itself comes from the raw data;
    - :meth:`contents`: the rows to decode (prepare); :meth:`arrays`: the rows read back and the splits (load);
    - :meth:`prepare_overrides`: what the prepare command needs beyond ``dataset=`` and ``dataset.root=``.

    :meth:`open` and :meth:`build` are the contract; :meth:`load` and :meth:`prepare` (``cls(...).open()`` and
    ``cls(...).build()``) are what a dataset module exports and its ``conf/dataset`` file names as ``_target_``.
    """

    NAME: ClassVar[str] = ""
    WHAT: ClassVar[str] = "records"

    root: Any
    cache_dir: str | os.PathLike
    _: KW_ONLY
    prepare_if_missing: bool = False
    on_bad_record: str = "error"
    prepare_workers: int | None = None

    def __post_init__(self) -> None:
        check_on_bad_record(self.on_bad_record)

    # ---- what a dataset supplies
    @abstractmethod
    def cache_path(self) -> Path:
        """The cache file (``<cache_dir>/<name>.h5``, the name encoding the config)."""

    @abstractmethod
    def cache_config(self) -> dict[str, Any]:
        """The config that identifies the cache, as far as it is known without reading the raw data."""

    def fingerprint(self) -> Fingerprint:
        """The :func:`fingerprint` of the raw data under ``root`` (needed unless :meth:`identify` is given)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither fingerprint() nor identify()")

    def identify(self) -> tuple[dict[str, Any], Fingerprint]:
        """``(config, fingerprint)`` of the raw data under ``root``; a DataError when it cannot be read."""
        return self.cache_config(), self.fingerprint()

    @abstractmethod
    def contents(self) -> CacheContents:
        """What the cache is built from: the raw data under ``root`` read, checked and described row by row."""

    @abstractmethod
    def arrays(self, path: Path, manifest: dict) -> LabeledArrays:
        """The dataset read from the complete cache ``path`` (with its ``manifest``): rows, labels, splits, info."""

    def prepare_overrides(self) -> list[str]:
        """The overrides the prepare command needs beyond ``dataset=`` and ``dataset.root=``."""
        return []

    # ---- the contract
    @property
    def dataset_option(self) -> str:
        """The ``dataset=`` option that prepares this cache: :data:`NAME` unless a dataset says otherwise."""
        return self.NAME

    @property
    def has_root(self) -> bool:
        return self.root not in NO_ROOT

    def prepare_command(self) -> str:
        """The command that builds this cache (its root, or ``<root>`` where none is given)."""
        root = self.root if self.has_root else "<root>"
        return " ".join(
            [
                "python scripts/prepare_data.py",
                f"dataset={self.dataset_option}",
                f"dataset.root={root}",
                *self.prepare_overrides(),
            ]
        )

    def open(self) -> LabeledArrays:
        """The dataset from its complete cache. With a ``root``, the cache must hold the data found there (wherever
        it was mounted when the cache was built): a cache of other data is a one-line DataError giving the command
        that rebuilds it. Without one (``dataset.root=null``), a complete cache is used as it is. A missing cache is
        built when ``prepare_if_missing``, else a DataError that gives the command; a cache being built is waited
        for; under ``on_bad_record="error"`` a cache that skipped records is refused."""
        path = self.cache_path()
        config, fp = self._identity(path)
        if self.prepare_if_missing and not cache_is_valid(path, config, fp):
            if not self.has_root:
                raise DataError(f"no complete cache at {path} and no dataset.root to build it from")
            self.build()
        manifest = open_cache(
            path,
            config,
            build_hint=self.prepare_command(),
            fingerprint=fp,
            on_bad_record=self.on_bad_record,
            what=self.WHAT,
        )
        return self.arrays(path, manifest)

    def _identity(self, path: Path) -> tuple[dict[str, Any], Fingerprint | None]:
        """``(config, fingerprint)`` a cache at ``path`` must match: the fingerprint is None without raw data."""
        config = self.cache_config()
        if not self.has_root:
            return config, None
        if not Path(self.root).is_dir():
            if cache_is_valid(path, config):
                raise DataError(root_missing_message(self.root, path))
            return config, None
        try:
            return self.identify()
        except DataError as err:
            if not cache_is_valid(path, config):
                raise
            raise unverifiable_error(err, path) from err

    def build(self, overwrite: bool = False) -> Path:
        """Build (or finish, or reuse) the cache from the raw data under ``root`` (see :func:`build_cache`)."""
        path = self.cache_path()
        contents = self.contents()
        return build_cache(
            path,
            **vars(contents),
            on_bad_record=self.on_bad_record,
            prepare_workers=self.prepare_workers,
            desc=path.name,
            overwrite=overwrite,
        )

    @classmethod
    def load(cls, *args: Any, **settings: Any) -> LabeledArrays:
        """``cls(*args, **settings).open()``: a dataset module's ``load``, the target of its ``dataset.loader``."""
        return cls(*args, **settings).open()

    @classmethod
    def prepare(cls, *args: Any, overwrite: bool = False, **settings: Any) -> Path:
        """``cls(*args, **settings).build(overwrite)``: a dataset module's ``prepare``."""
        return cls(*args, **settings).build(overwrite=overwrite)


def prepare(loader: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Build the cache that the ``dataset.loader`` node ``loader`` reads, with that node's settings: what
    ``dataset.prepare`` instantiates (``scripts/prepare_data.py``). Its ``_target_`` is a :class:`CachedSource`'s
    ``load`` (a dataset module's ``load``)."""
    node = plain(loader)
    settings = {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    target = node.get("_target_")
    source = getattr(_locate(target), "__self__", None)
    if not (isinstance(source, type) and issubclass(source, CachedSource)):
        raise DataError(
            f"dataset.loader._target_: {target} does not read a prepared cache, so there is nothing to "
            "prepare; allowed: the load of a cached dataset, e.g. flowmixup.data.chestxray14.load"
        )
    return source.prepare(overwrite=overwrite, **settings)


def _locate(target: Any) -> Any:
    """The object a dotted ``_target_`` names (``module.function`` or ``module.Class.method``), or None."""
    parts = str(target).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        return obj
    return None
