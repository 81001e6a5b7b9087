"""Writing files so that nothing is lost and nothing is clobbered: the one home of these rules.

* ``atomic_path`` / ``atomic_output`` / ``write_text_atomic``: a whole file or nothing (temp file beside it,
  fsync, rename, folder fsync), with the mode a plain ``open()`` would give (the umask's, or the replaced
  file's), never mkstemp's 0600.
* ``read_jsonl`` / ``JsonlLog``: JSON Lines that survive kills. Every record is appended, flushed and
  fsync'ed before the caller hears of it; a kill can only tear the last line, which reading drops (and
  ``repair`` cuts off) so that the next record starts on a line of its own.
* ``ResumableJsonl``: an answers file a rerun resumes from. It refuses to take over a file that is not
  an earlier run's output of the same job (its ids must be ours), unless forced, and at the end rewrites
  the file atomically in input order, one record per id.
* ``OrderedJsonlPrinter``: the same records printed to a stream (stdout) in input order as they finish.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Protocol

from .errors import InputError, Opt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode ``path`` should get: an existing file keeps its mode, a new one gets 0666 minus the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


class Closing:
    """``with`` support for anything with a ``close()``: the object itself is the context."""

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (by any means: a file object, a subprocess) that then
    appears under ``path`` whole, or not at all: the file is fsync'ed, renamed over ``path`` and the folder
    fsync'ed. A new file gets the umask's mode, a replaced one keeps its mode. The folder must exist.
    The one home of atomic file writes."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"no such directory (for {path})", where=path.parent)
    mode = new_file_mode(path) if mode is None else mode
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", where=path) from None
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder gone: nothing half-written stays, the old file is kept
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write ({exc.strerror or exc})", where=path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file to write that appears under ``path`` whole, or not at all (``atomic_path``)."""
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as f:
            yield f


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temp file beside it, fsync, rename; the folder must exist."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (hard links and symlinks included); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


# ---------------------------------------------------------------------------------------------------------
# JSON Lines


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: str | os.PathLike[str], *, repair: bool = False) -> list[dict[str, Any]]:
    """The objects of a JSONL file written by ``JsonlLog``, tolerating a torn last line.

    A kill can only tear the last line, so an unparseable LAST line that begins like a record (``{``) is
    dropped (and, with ``repair``, cut from the file so that appending continues on a clean line). An unparseable line
    anywhere else means
    the file is not ours or was edited: ``InputError`` naming the line. A missing file is empty.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise InputError("is a directory, not a JSONL file", where=p) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", where=p) from None
    records: list[dict[str, Any]] = []
    good_end = 0  # byte offset just after the last good line
    offset = 0
    lines = data.split(b"\n")
    last_nonblank = max((i for i, line in enumerate(lines) if line.strip(b" \t\r\x00")), default=-1)
    for index, line in enumerate(lines):
        end = offset + len(line)
        if line.strip(b" \t\r\x00"):
            value = _parse_line(line)
            if value is None:
                if index == last_nonblank and line.lstrip().startswith(b"{"):
                    break  # a record torn by a kill (every record starts with "{"): dropped
                raise InputError(f"line {index + 1}: not a JSON object (not a JSONL file written by llamavid)", where=p)
            records.append(value)
            good_end = end
        offset = end + 1
    if repair:
        _cut_after(p, data, good_end)
    return records


def _cut_after(path: Path, data: bytes, good_end: int) -> None:
    """Truncate to the last good line and make sure the file ends with a newline."""
    keep = data[:good_end]
    if keep and not keep.endswith(b"\n"):
        keep += b"\n"
    if keep != data:
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.seek(good_end)
            if len(keep) > good_end:
                handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())


_SURROGATE = re.compile("[\ud800-\udfff]")


def dump_record(record: dict[str, Any]) -> str:
    """One record as one JSONL line: valid UTF-8 whatever it holds (anything not JSON becomes its str).

    Text stays as it is, except lone surrogates, which are written as JSON escapes (``\\udcff``): they are
    what Python makes of the bytes of a file name that is not UTF-8 (``surrogateescape``), and a JSON
    reader gives them back, so ``os.fsencode(record["video"])`` is the file's name again."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


class JsonlLog(Closing):
    """Appends one JSON object per line, each flushed and fsync'ed before ``write`` returns.

    Why fsync per line: after a crash every line the caller was told about is on disk, so resuming never
    loses a paid-for answer. Call ``read_jsonl(path, repair=True)`` first so that a torn line from an
    earlier kill does not get glued to the first new line. A write that fails (a full disk) is cut off
    again, so the file never holds half a record, and is a one-line ``InputError``; a file this log made
    and never wrote to is removed again.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot write ({exc.strerror or exc})", where=self.path) from None
        self._made = not existed  # by this log: removed again if nothing was ever written to it
        self._handle: IO[bytes] | None = os.fdopen(fd, "ab")

    def write(self, record: dict[str, Any]) -> None:
        assert self._handle is not None, "JsonlLog is closed"
        data = dump_record(record).encode("utf-8")
        start = self._handle.seek(0, os.SEEK_END)
        try:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            self._cut(start)
            raise InputError(f"cannot write ({exc.strerror or exc})", where=self.path) from None
        self._made = False

    def _cut(self, size: int) -> None:
        """Back to ``size`` bytes after a failed write (what a full disk took of the record is dropped)."""
        try:
            os.ftruncate(self._handle.fileno(), size)
        except (OSError, ValueError):
            pass
        self._handle = self._reopened()

    def _reopened(self) -> IO[bytes] | None:
        """A fresh handle (a failed buffered write would retry its buffer on the next flush)."""
        try:
            self._handle.close()
        except OSError:
            pass
        try:
            return open(self.path, "ab")
        except OSError:
            return None

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None
        if self._made:
            self.path.unlink(missing_ok=True)
            self._made = False


class RecordSink(Protocol):
    """Where finished records go: a resumable file or a stream."""

    def done(self, record_id: str) -> bool: ...

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ResumableJsonl:
    """An output file of records with ids, durable as they finish, resumable, rewritten in order at the end.

    ``order`` lists every id of the job. An existing file is taken over only when it is an earlier run's
    output of the same job: JSONL objects whose ids are all in ``order``. Anything else (another program's
    file, another batch's answers, the questions file itself) is refused unless ``force``. ``done`` ids
    are skipped by a rerun; records that hold an ``"error"`` count as not done when ``retry_errors``. ``close`` rewrites
    the file
    atomically in input order, one record per id.
    """

    def __init__(self, path: str | os.PathLike[str], order: Iterable[str], *, force: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), retry_errors: bool = True):
        self.path = Path(path)
        self.order = [str(i) for i in order]
        known = set(self.order)
        for source in inputs:
            if same_file(source, self.path):
                raise InputError("is also an input of this job; write the answers to another file", where=self.path)
        if self.path.is_dir():
            raise InputError("is a directory; give a file name for the answers", where=self.path)
        if not self.path.parent.is_dir():
            raise InputError(f"no such directory (for {self.path})", where=self.path.parent)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            why = None
            try:
                old = read_jsonl(self.path)
            except InputError as exc:
                old, why = None, str(exc).removeprefix(f"{self.path}: ")
            stranger = next((r.get("id") for r in old or [] if str(r.get("id")) not in known), None)
            if old is not None and (stranger is not None or any("id" not in r for r in old)):
                why = f"it holds id {json.dumps(stranger)}, which is not in this job" if stranger is not None \
                    else "it holds records without an id"
            foreign = why is not None
            if foreign and not force:
                raise InputError(f"already exists and is not an earlier output of this job ({why}); choose another "
                                 "output file, or add ", Opt("force"), " to overwrite it", where=self.path)
            if foreign:
                write_text_atomic(self.path, "")  # the user asked for it; still never half a file
            else:
                read_jsonl(self.path, repair=True)
                self.records = {str(r["id"]): r for r in old or [] if not (retry_errors and "error" in r)}
        self._log = JsonlLog(self.path)

    def done(self, record_id: str) -> bool:
        return str(record_id) in self.records

    def write(self, record: dict[str, Any]) -> None:
        self._log.write(record)  # durable first: a record that could not be written is not "done"
        self.records[str(record["id"])] = record

    def close(self) -> None:
        """Rewrite the file in input order, one record per id (atomically); a job that wrote nothing
        leaves no file of its own."""
        if self._log is None:
            return
        self._log.close()
        self._log = None
        if not self.records and not self.path.exists():
            return
        write_text_atomic(self.path, "".join(dump_record(self.records[i]) for i in self.order if i in self.records))


class OrderedJsonlPrinter:
    """Records printed to a stream in input order, each as soon as every earlier one is done."""

    def __init__(self, stream: IO[str], order: Iterable[str]):
        self.stream = stream
        self.order = [str(i) for i in order]
        self.records: dict[str, dict[str, Any]] = {}
        self._next = 0

    def done(self, record_id: str) -> bool:
        return False

    def write(self, record: dict[str, Any]) -> None:
        self.records[str(record["id"])] = record
        while self._next < len(self.order) and self.order[self._next] in self.records:
            self.stream.write(dump_record(self.records[self.order[self._next]]))
            self.stream.flush()
            self._next += 1

    def close(self) -> None:
        pass
