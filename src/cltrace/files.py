"""Writing and reading the files cltrace produces: atomic writes, checked reads, run locks.

Every JSON or HTML file a run writes goes through :func:`atomic_write_text`: the text lands in a
temporary file beside the target and is renamed over it, so an interrupted or failed write leaves
the earlier file intact, never a half-written one. :class:`RunLock` gives one process at a time a
run directory.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cltrace.errors import CltraceError, RunInUseError

LOCK_NAME = ".lock"
"""The lock file inside a run directory (holds the holder's pid, host, start time, command)."""


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(data)`` (NaN and infinities refused)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False))


def read_json(path: str | os.PathLike, hint: str) -> Any:
    """The JSON content of ``path``; a missing, unreadable or invalid file is a
    :class:`CltraceError` naming the file and ending with ``hint`` (what to do)."""
    path = Path(path)
    if not path.exists():
        raise CltraceError(f"{path} is missing; {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CltraceError(f"{path} is not UTF-8 text; {hint}") from None
    except OSError as exc:
        raise CltraceError(f"cannot read {path} ({exc.strerror}); {hint}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CltraceError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {hint}"
        ) from None


def read_text_lines(path: str | os.PathLike, what: str = "corpus file") -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file (one document per line); a missing,
    unreadable, binary or empty file is a :class:`CltraceError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CltraceError(
            f"the {what} {path} is not UTF-8 text; pass a text file with one document per line."
        ) from None
    except OSError as exc:
        raise CltraceError(
            f"cannot read the {what} {path} ({exc.strerror}); check the path."
        ) from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise CltraceError(f"the {what} {path} has no non-empty lines; add one document per line.")
    return lines


def check_out_path(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Fail with one sentence when directory ``path`` could not be created or written, without
    creating anything (so a command can check its output before it does any work)."""
    path = Path(path)
    for parent in (path, *path.parents):
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise CltraceError(
                f"cannot create the {what} {path}: {parent} is a file, not a directory; pass "
                "another path."
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CltraceError(
                f"cannot write the {what} {path}: {parent} is not writable; pass a path you "
                "can write to."
            )
        break
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (and its parents) or fail with one sentence, before any work is done."""
    path = check_out_path(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CltraceError(
            f"cannot create the {what} {path} ({exc.strerror}); pass a path you can write to."
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CltraceError(f"the {what} {path} is not writable; pass a path you can write to.")
    return path


def require_run_dir(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a directory; else one sentence. Stages II and III check this
    before taking the :class:`RunLock`, which would otherwise create the directory, since a
    mistyped run directory is the user's mistake, not one to paper over."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CltraceError(f"run directory {path} is a file; pass the --out of cltrace pie.")
    if not path.is_dir():
        raise CltraceError(f"run directory {path} does not exist; pass the --out of cltrace pie.")
    return path


class RunLock:
    """An exclusive lock on a run directory, held while a command works in it.

    A second process that asks for the same directory fails at once with a
    :class:`RunInUseError` that names the holder. The lock is an OS file lock (``flock``), so a
    killed process releases it; the lock file stays behind with the last holder's details.
    Within one process the lock is re-entrant: ``cltrace pie`` holds it for the whole job while
    the stages it calls take it again.
    """

    _held: dict[Path, list] = {}  # resolved run dir -> [fd, depth], this process's locks

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command or " ".join(["cltrace", *sys.argv[1:]])
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        check_writable_dir(self.run_dir, "run directory")
        key = self.run_dir.resolve()
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self._fd = -1
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUseError(
                f"run directory {self.run_dir} is in use by another cltrace process ({holder}); "
                "wait for it to finish, or use another run directory."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        RunLock._held[key] = [fd, 1]
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = self.run_dir.resolve()
        entry = RunLock._held.get(key)
        self._fd = None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del RunLock._held[key]
            _unlock(entry[0])
            os.close(entry[0])

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        info = {}
    if not info:
        return "holder unknown"
    return (
        f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
        f"{info.get('command')}"
    )


if sys.platform == "win32":  # pragma: no cover - cltrace's CI runs on Linux
    import msvcrt

    def _try_lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError from None

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, 0)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
