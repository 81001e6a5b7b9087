"""Exclusive OS file locks on a job's output: one implementation for every llamavid writer.

``exclusive(target)`` serializes everything that writes ``target`` (a ``.vidtok``, a cache entry, an
answers file): across processes with a real OS lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows), and across threads of one process with a ``threading.Lock`` as well, because two ``flock``
calls on separately opened descriptors conflict even inside one process (a thread would wait on its own
process) while Windows byte-range locks do not conflict within a process at all. The OS drops the lock
when its holder dies, even by SIGKILL, so a crashed run never leaves a stale lock that needs cleaning up.

The lock file is ``<dir>/.<name>.lock`` (``lock_path_for``), created when needed. Deleting a lock file
naively is the classic lock-file race: a waiter that opened the old file would lock it after the holder
deleted it, while a newcomer creates and locks a fresh file of the same name, and both would believe
they hold the lock. So the file is deleted only by the holder, while it still holds the lock, and every
process that obtains the lock checks that the name still refers to the very file it locked (same device
and inode); if not, it was deleted or replaced under it, and it locks the current file instead. Only
the file that the name refers to can be "the" lock, so two holders are impossible; and no lock files
are left beside the user's outputs. Where a file cannot be deleted while others hold it open
(Windows), deleting is simply skipped and the empty file stays.

A thread that holds the lock may take it again (re-entrant): a caller may lock an output and then call
a function that locks it too (``llamavid.features.encode.encode_file`` does).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import LlamaVidError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

_POLL_FIRST, _POLL_MAX = 0.01, 0.2  # seconds between tries while waiting with a timeout (or on Windows)


class LockError(LlamaVidError):
    """The lock file beside an output cannot be created or locked."""


class LockTimeoutError(LockError):
    """Another process held the lock longer than the caller was willing to wait."""


def lock_path_for(target: str | os.PathLike) -> Path:
    """The lock file that guards ``target``: ``<dir>/.<name>.lock`` beside it."""
    p = Path(target)
    return p.with_name(f".{p.name}.lock")


class _Local:
    """This process's side of one lock file: a thread lock, its owner and re-entry depth, its users."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None
        self.depth = 0
        self.users = 0


_registry_guard = threading.Lock()
_registry: dict[str, _Local] = {}


def _local_for(key: str) -> _Local:
    with _registry_guard:
        entry = _registry.get(key)
        if entry is None:
            entry = _registry[key] = _Local()
        entry.users += 1
        return entry


def _forget(key: str, entry: _Local) -> None:
    with _registry_guard:
        entry.users -= 1
        if entry.users == 0 and _registry.get(key) is entry:
            del _registry[key]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _timeout_error(target: str | os.PathLike, timeout: float) -> LockTimeoutError:
    return LockTimeoutError(f"{os.fspath(target)}: another llamavid process has been writing it for over "
                            f"{timeout:g} s; try again when it has finished")


# ---------------------------------------------------------------------------------------------------------
# The OS lock on one open descriptor


def _try_lock(fd: int) -> bool:
    """Take the OS lock without waiting; False when another holder has it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _wait_lock(fd: int, deadline: float | None) -> bool:
    """Wait for the OS lock; False when the deadline passed first."""
    if deadline is None and fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # interruptible: Ctrl-C raises KeyboardInterrupt here (PEP 475)
        return True
    pause = _POLL_FIRST
    while True:
        if _try_lock(fd):
            return True
        left = _remaining(deadline)
        if left is not None and left <= 0:
            return False
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, _POLL_MAX)


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    except OSError:
        pass  # closing the descriptor releases it anyway


def _names_this_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still refers to the file open as ``fd`` (not deleted or replaced meanwhile)."""
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise LockError(f"{os.fspath(path.parent)}: cannot create the lock file {path.name} there "
                        f"({e.strerror or e})") from None


def _acquire_os(path: Path, target: str | os.PathLike, notify: Callable[[], None], deadline: float | None,
                timeout: float | None) -> int:
    while True:
        fd = _open_lock_file(path)
        try:
            if not _try_lock(fd):
                notify()
                if not _wait_lock(fd, deadline):
                    raise _timeout_error(target, timeout or 0.0)
            if _names_this_file(fd, path):
                return fd
            # The previous holder deleted this file on release (or someone replaced it): lock the current one.
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release_os(path: Path, fd: int) -> None:
    if fcntl is not None:
        try:
            path.unlink()  # while still holding the lock: see the module docstring
        except OSError:
            pass
        os.close(fd)  # releases the flock
    else:  # pragma: no cover - Windows: unlock first; the file cannot be deleted while others have it open
        _unlock(fd)
        os.close(fd)
        try:
            path.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------------
# The public lock


@contextmanager
def exclusive(target: str | os.PathLike, *, on_wait: Callable[[str], None] | None = None,
              timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock on ``target`` (a file that may not exist yet) for the ``with`` block.

    Tries first without waiting. If another process (or thread) holds the lock, calls
    ``on_wait("another llamavid process is writing <target>; waiting")`` once and waits: forever when
    ``timeout`` is None, else up to ``timeout`` seconds, then raises ``LockTimeoutError``. A lock file
    that cannot be created (a missing or read-only folder) raises ``LockError``. Both are
    ``LlamaVidError``s with one-line messages naming the file. Re-entrant within one thread.
    """
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or a non-negative number of seconds, got {timeout!r}")
    path = lock_path_for(target)
    key = os.path.normcase(os.path.abspath(path))
    me = threading.get_ident()
    deadline = None if timeout is None else time.monotonic() + timeout
    told = [False]

    def notify() -> None:
        if not told[0]:
            told[0] = True
            if on_wait is not None:
                on_wait(f"another llamavid process is writing {os.fspath(target)}; waiting")

    entry = _local_for(key)
    try:
        if entry.owner == me:  # re-entry by the holder: only the outermost block locks and unlocks
            entry.depth += 1
            try:
                yield
            finally:
                entry.depth -= 1
            return
        if not entry.lock.acquire(blocking=False):
            notify()
            left = _remaining(deadline)
            if not entry.lock.acquire(timeout=-1 if left is None else left):
                raise _timeout_error(target, timeout or 0.0)
        try:
            fd = _acquire_os(path, target, notify, deadline, timeout)
            entry.owner, entry.depth = me, 1
            try:
                yield
            finally:
                entry.owner, entry.depth = None, 0
                _release_os(path, fd)
        finally:
            entry.lock.release()
    finally:
        _forget(key, entry)


__all__ = ["LockError", "LockTimeoutError", "exclusive", "lock_path_for"]
