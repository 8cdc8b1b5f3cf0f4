"""How the zoo writes files that others may read at any moment, and locks what one process at a
time may change: the one owner of atomic writes and ``flock`` for run directories and exports.

- `atomic_write_bytes` / `atomic_write_text`: a temporary file in the same folder, flushed to
  disk and renamed into place: a reader sees the old file or the new one, never a part.
- `link_new_text`: the same, but the file is put in place only if absent (``os.link`` is
  atomic and refuses an existing name): how a run directory is claimed.
- `FileLock`: an exclusive advisory ``flock`` on one file, released by the kernel when its
  holder dies, so a killed process never blocks the next one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    """The process's umask, read from /proc where it can be (setting it to read it would race
    with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open() would give; mkstemp's 0600 would hide a run's files


def _temporary(path: Path) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename:
    readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode())


def link_new_text(path: str | os.PathLike[str], text: str) -> bool:
    """Put a complete file holding ``text`` at ``path`` unless one exists (atomic on POSIX);
    False when ``path`` was taken."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


class FileLock:
    """An exclusive ``flock`` on the file ``path`` (made if missing; its folder too with
    ``make_folder``, else a missing folder is an error).

    ``acquire()`` waits; ``acquire(blocking=False)`` returns False at once when another holds
    it. ``note`` is written into the file while held (e.g. ``pid 12 on host``), for the error
    of whoever finds it taken (`holder`). A holder may remove the file and its folder (a failed
    export removes what it made): the lock taken must be that of the file the path names now,
    so a lock on a removed file is dropped and taken again. As a context manager it waits."""

    def __init__(self, path: str | os.PathLike[str], *, make_folder: bool = False) -> None:
        self.path = Path(path)
        self.make_folder = make_folder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, blocking: bool = True, note: str | None = None) -> bool:
        if self._fd is not None:
            return True
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        while True:
            if self.make_folder:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, flags)
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            except OSError as err:
                os.close(fd)
                if not blocking and err.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        if note is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (note + "\n").encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        """The note of whoever holds the lock, or ``another process``."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        """Let go (the note is cleared)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_is_free(path: str | os.PathLike[str]) -> bool:
    """Whether no live process holds the ``flock`` of ``path`` (a missing file counts as free;
    one that cannot be opened, as held). A lock it takes to find out is dropped at once."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
