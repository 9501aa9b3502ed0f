"""Writing files so that nothing is lost, and owning a folder while one writes into it.

Every file prismlab writes into a run folder goes through atomic_write: a temporary file in the
same folder, fsynced, renamed over the old one. A failure on the way (a full disk, an I/O error,
Ctrl-C, kill -9) leaves the previous file whole; a failure it sees removes the temporary file and
is one line naming the file and the cause.

FolderLock is an OS lock (flock) on a folder: held by one process at a time and released however
that process ends, kill -9 included. It writes nothing into the folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

from prismlab.errors import PrismError, first_line


class WriteError(PrismError):
    """A file could not be written (a full disk, an I/O error); the old file is intact."""

    exit_code = 1  # a file-system error, as the CLI reports OSError


class FolderBusy(PrismError):
    """Another process holds the folder's lock."""


def _cause(e: BaseException, path: Path) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the disk"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    try:  # torch.save reports a failed write as a RuntimeError without an errno
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return first_line(e)
    return "no space left on the disk" if free < 1 << 20 else first_line(e)


def _write_failure(e: BaseException) -> bool:
    """An error of the write itself, as opposed to a bug in what was being written. torch.save's zip
    writer reports one as a RuntimeError ("file write failed", or an "unexpected pos" once a write
    came up short)."""
    return isinstance(e, OSError) or (
        isinstance(e, RuntimeError) and any(w in str(e).lower() for w in ("writ", "inline_container", "unexpected pos"))
    )


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], what: str = "file") -> None:
    """write(f) into a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash before this line leaves the previous file intact
    except BaseException as e:
        failed = _write_failure(e)
        cause = _cause(e, path) if failed else ""  # while the temp file still holds its space
        tmp.unlink(missing_ok=True)
        if failed:
            raise WriteError(f"{path}: cannot write {what} ({cause}); the previous file is unchanged") from None
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # makes the rename itself survive a power cut
    finally:
        os.close(dir_fd)


def write_text(path: str | Path, text: str, what: str = "file") -> None:
    atomic_write(path, lambda f: f.write(text.encode()), what)


def remove_stale_temp(folder: str | Path) -> None:
    """Temporary files of atomic_write left by a process killed mid-write (kill -9 runs no cleanup)."""
    for p in Path(folder).glob(".*.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive flock on a folder, taken at once or refused. Re-entrant within one process."""

    _held: dict[str, list] = {}  # resolved path -> [fd, count]

    def __init__(self, folder: str | Path, purpose: str = ""):
        self.folder, self.purpose = Path(folder), purpose  # purpose: what else the refused command could do
        self.key = ""

    def acquire(self) -> "FolderLock":
        self.key = str(self.folder.resolve())
        held = self._held.get(self.key)
        if held:
            held[1] += 1
            return self
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(
                f"{self.folder}: in use by another prismlab command; wait for it to end"
                + (f", or {self.purpose}" if self.purpose else "")
            ) from None
        self._held[self.key] = [fd, 1]
        return self

    def release(self) -> None:
        held = self._held.get(self.key)
        if not held:
            return
        held[1] -= 1
        if held[1] == 0:
            del self._held[self.key]
            os.close(held[0])  # closing the last descriptor drops the flock

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
