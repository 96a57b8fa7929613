"""File output that fails cleanly: atomic writes, one-line write errors, and the lock files of shared folders.

Every file a run or the prepare step writes goes through these helpers: the content goes to a temporary file
in the same folder, is flushed and fsync'ed, then renamed over the target (an atomic operation on POSIX), so a
file either has its complete new content or its old one, never half of it. The result gets the mode of any normal
file write (0666 masked by the umask, typically 0644), so shared sweep folders and caches stay readable by others.

A write that fails for a reason outside the program (a full disk, a quota, a read-only mount, a folder without
write permission) raises :class:`WriteError`, whose message is the whole one-line error the command prints::

    <path>: <what failed> (<why>; N MB needed, M MB free); <what is kept>; <what to do>

:class:`FileLock` is the exclusive lock of a run folder or of a cache being built (``flock``, dropped by the kernel
when its holder dies, however it dies; on NFS, Linux maps it to a POSIX lock that other nodes see too).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from . import faults

log = logging.getLogger("flowmixup")

# the errors of a write that the user, not the program, can fix: reported as one line (anything else is a bug)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class WriteError(OSError):
    """A write that failed for a reason outside the program; ``str()`` is the one-line message (see the module)."""

    def __init__(self, path: str | os.PathLike, what: str, why: str, kept: str, todo: str):
        super().__init__(f"{path}: {what} failed ({why}); {kept}; {todo}")
        self.path, self.what, self.why, self.kept, self.todo = Path(path), what, why, kept, todo

    def __str__(self) -> str:
        return self.args[0]


@contextmanager
def on_write_failure(kept: str, todo: str) -> Iterator[None]:
    """Inside, a :class:`WriteError` says ``kept`` and ``todo`` (what the caller knows is kept, and the way on)."""
    try:
        yield
    except WriteError as err:
        raise WriteError(err.path, err.what, err.why, kept, todo) from None


def is_write_failure(err: BaseException) -> bool:
    """Whether ``err`` is a full disk, a quota, a read-only or unwritable folder (HDF5 reports the errno in text)."""
    return isinstance(err, OSError) and not isinstance(err, WriteError) and _errno_of(err) in DISK_FULL + NOT_WRITABLE


def _errno_of(err: BaseException) -> int | None:
    """The write failure's errno: the exception's own, else the one HDF5 writes into its message."""
    code = getattr(err, "errno", None)
    if code in DISK_FULL + NOT_WRITABLE:
        return code
    return next((c for c in DISK_FULL + NOT_WRITABLE if f"errno = {c}," in str(err)), code)


def free_bytes(path: str | os.PathLike) -> int | None:
    """The free space of the file system holding ``path`` (or its nearest existing parent), or None."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def size_text(n: float) -> str:
    """``n`` bytes for a message: 12 kB, 1.5 MB, 830 MB, 2.4 GB (decimal units, as ``df -H`` shows them)."""
    if n < 1e6:
        return f"{max(1, round(n / 1e3))} kB"
    if n < 1e9:
        return f"{n / 1e6:.1f} MB" if n < 1e7 else f"{n / 1e6:.0f} MB"
    return f"{n / 1e9:.1f} GB"


def holder_text(holder: tuple[str, str]) -> str:
    """``PID 4242 on node17`` (or ``PID 4242`` where the lock file names no host)."""
    pid, host = holder
    return f"PID {pid}" + (f" on {host}" if host else "")


def write_error(
    path: str | os.PathLike,
    what: str,
    err: BaseException,
    *,
    needed: int | None = None,
    kept: str | None = None,
    todo: str | None = None,
) -> WriteError:
    """The :class:`WriteError` for ``err`` while ``what`` (e.g. "writing the checkpoint") at ``path``.

    needed: the bytes the write needs (said for a full disk, with the free space); kept: what is left as it was
    (default: the file's previous version, or that nothing was written); todo: what to do (default by the cause)."""
    code = _errno_of(err)
    why = os.strerror(code).lower() if code is not None else " ".join(str(err).split())[:120]
    full = code in DISK_FULL
    if full:
        free = free_bytes(path)
        if needed is not None:
            why += f"; {size_text(needed)} needed"
        if free is not None:
            why += f", {size_text(free)} free" if needed is not None else f"; {size_text(free)} free"
    if kept is None:
        kept = f"the previous {Path(path).name} is kept as it was" if Path(path).is_file() else "nothing was written"
    if todo is None:
        todo = (
            "free some space (or point the output elsewhere) and run the same command again"
            if full
            else "make the folder writable or choose another one, then run the same command again"
        )
    return WriteError(path, what, why, kept, todo)


def require_writable_folder(folder: str | os.PathLike, what: str, todo: str) -> Path:
    """Create ``folder`` if needed and check it can be written to; a :class:`WriteError` naming it otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if not is_write_failure(err) and not isinstance(err, (FileExistsError, NotADirectoryError)):
            raise
        raise write_error(folder, f"creating {what}", err, kept="nothing was written", todo=todo) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(folder) else errno.EACCES
        raise write_error(
            folder, f"writing to {what}", OSError(code, os.strerror(code)), kept="nothing was written", todo=todo
        )
    return folder


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    suffix: str = "",
    *,
    what: str | None = None,
    needed: int | None = None,
    kept: str | None = None,
    todo: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync'ed and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. A full disk or an unwritable
    folder becomes a :class:`WriteError` (``what``/``needed``/``kept``/``todo``: see :func:`write_error`).
    ``suffix`` keeps an extension on the temporary name for writers that insist on one (``np.savez`` adds ``.npz``).
    """
    path = Path(path)
    what = what or f"writing {path.name}"
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        faults.before_write(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:  # mkstemp makes 0600 files; the renamed file must get the mode any normal write would (0666 & ~umask)
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if is_write_failure(err):
            raise write_error(path, what, err, needed=needed, kept=kept, todo=todo) from None
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, **why: Any) -> None:
    """Write ``data`` to ``path`` atomically (``why``: the :func:`write_error` texts; the size is known here)."""
    with atomic_path(path, needed=len(data), **why) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, **why: Any) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), **why)


def write_json(path: str | os.PathLike, obj: Any, **why: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", **why)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class LockBusy(RuntimeError):
    """The lock is held by another live process: ``holder`` is (PID, host) as the holder wrote them."""

    def __init__(self, path: Path, holder: tuple[str, str]):
        super().__init__(f"{path} is held by {holder_text(holder)}")
        self.path, self.holder = path, holder


class FileLock:
    """An exclusive ``flock`` on ``path``, which holds "<PID> <host>" of its holder while it is held.

    ``acquire(wait=False)`` raises :class:`LockBusy` when another live process holds it; ``acquire(wait=True)``
    calls ``on_wait(holder)`` once (to say so in one line) and blocks in the kernel until the holder releases it or
    dies (no polling). A lock file that names a process which no longer holds it (killed, crashed) is taken over,
    and the log says so. A clean release empties the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None

    def holder(self) -> tuple[str, str]:
        """(PID, host) written in the lock file ("unknown" and "" where it says nothing)."""
        try:
            words = self.path.read_text(errors="replace").split()
        except OSError:
            words = []
        return (words[0] if words else "unknown", words[1] if len(words) > 1 else "")

    def acquire(self, wait: bool = False, on_wait: Callable[[tuple[str, str]], None] | None = None) -> "FileLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not wait:
                    raise LockBusy(self.path, holder) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        previous = os.pread(fd, 256, 0).decode(errors="replace").split()
        if previous and previous[0] != str(os.getpid()):
            left_by = holder_text((previous[0], previous[1] if len(previous) > 1 else ""))
            log.warning("%s: taking over the lock left by %s, which no longer holds it", self.path, left_by)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean end leaves no holder behind
            os.close(self.fd)  # releases the flock
            self.fd = None

    def is_held_by_another(self) -> bool:
        """Whether a live process (not this lock object) holds the lock now; never creates the file."""
        return self._probe(block=False)

    def wait_until_free(self, on_wait: Callable[[tuple[str, str]], None] | None = None) -> bool:
        """Block until no process holds the lock (True if it had to wait); never creates or writes the file, so a
        reader in a read-only folder can wait for a builder too."""
        return self._probe(block=True, on_wait=on_wait)

    def _probe(self, block: bool, on_wait: Callable[[tuple[str, str]], None] | None = None) -> bool:
        """Take a shared lock and drop it again: False when it was free; True when it was held (then, with
        ``block``, after waiting until it no longer is)."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file: nobody builds
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            if block:
                if on_wait is not None:
                    on_wait(self.holder())
                fcntl.flock(fd, fcntl.LOCK_SH)
            return True
        finally:
            os.close(fd)  # closing drops the shared lock, if it was taken

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
