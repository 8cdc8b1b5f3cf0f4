"""Where versions go: ``<out>/<name>/<version>/``, claimed atomically under a lock.

A version is written to a hidden temporary folder and renamed into place, so a failure or a kill
never leaves a partial version (TF Serving ignores names that are not integers).

Concurrent exports of one name: a version is claimed under the exclusive lock of the name
folder's ``.lock`` (`zoo.files.FileLock`), so two exports never take one version (without
``--version`` the second takes the next number; with the same ``--version`` the second is
refused unless ``--overwrite``). Each export holds the lock of its temporary folder's ``.lock``
while it writes it; the next export of that name removes temporary folders whose lock is free,
which are those of killed exports. The kernel releases the locks of a killed process.

Light to import: no TensorFlow.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from zoo.export.errors import ExportError
from zoo.export.metadata import write_metadata
from zoo.files import FileLock, lock_is_free

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TEMP_PREFIX = ".tmp-"  # a version being written: ``.tmp-<pid>-<random>``
OLD_PREFIX = ".old-"  # a version being replaced (--overwrite): ``.old-<version>-<random>``
LOCK_NAME = ".lock"  # in a name folder (claims) and in a temporary folder (its export lives)


def check_name(name: str) -> str:
    """A model name that is one safe path component."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ValueError(
            f"Invalid export name {name!r}: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit, no path separators or '..'."
        )
    return name


def versions(folder: Path) -> list[int]:
    """The export versions in ``folder``, ascending (TF Serving reads integer names only)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit())


def next_version(folder: Path) -> int:
    """One more than the highest version in ``folder`` (1 for none)."""
    return max(versions(folder), default=0) + 1


def name_lock(folder: Path) -> FileLock:
    """The lock of the name folder ``folder`` (made if missing when taken): claims of versions,
    the removal of leftovers and of a failed export's folder run under it. A failed export may
    remove the folder (under this lock); `FileLock` then takes the lock of the new file."""
    return FileLock(folder / LOCK_NAME, make_folder=True)


def start_version(folder: Path) -> tuple[Path, FileLock]:
    """Under the name folder's lock: remove the leftovers of killed exports, make a new
    temporary folder and take its lock, to be held while the export writes there."""
    with name_lock(folder):
        _remove_leftovers(folder)
        tmp = folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        lock = FileLock(tmp / LOCK_NAME)
        try:
            lock.acquire()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp, lock


def _remove_leftovers(folder: Path) -> None:
    """Remove what killed exports of this name left (called under the folder's lock).

    A temporary folder is removed only when the lock of its ``.lock`` is free. Its export makes
    the folder and takes that lock under the folder's lock, holds it while it writes, and
    deletes the lock file under the folder's lock just before the folder is renamed into place;
    the kernel drops the lock when the export dies. A lock rather than a pid in the name or an
    age: a pid may be reused or belong to another machine sharing the disk, an age would remove
    a slow export, and a lock also tells the threads of one process apart.

    A ``.old-`` folder (a version being replaced by ``--overwrite``) exists outside the
    folder's lock only when its export was killed between its two renames: it is put back if
    no version took its place, else removed."""
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(TEMP_PREFIX) and lock_is_free(entry / LOCK_NAME):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(OLD_PREFIX):
            version = entry.name[len(OLD_PREFIX) :].split("-")[0]
            if version.isascii() and version.isdigit() and not (folder / version).exists():
                os.rename(entry, folder / version)
            else:
                shutil.rmtree(entry, ignore_errors=True)


def _taken(target: Path, version: int) -> str:
    return (
        f"{target} exists: another export took version {version} while this one ran; pass "
        "--overwrite to replace it, or --version to choose another; nothing was exported."
    )


def claim_version(
    tmp: Path,
    folder: Path,
    version: int | None = None,
    *,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Rename the finished export ``tmp`` to ``folder/<version>`` and return that path.

    Runs under the folder's lock, so two exports of one name never claim one version: with
    ``version`` None the next free integer is taken. ``metadata``, if given, gets the version
    and is written to ``tmp/metadata.json`` first. ``tmp/.lock`` is deleted just before the
    rename (the export keeps its lock on the deleted file until it lets go).

    The existence check and the rename are one step for every export (both under the lock);
    the rename would also fail onto a non-empty folder made meanwhile by anything else, and
    the check also catches an empty one (which a plain rename would silently replace).

    Raises:
        ExportError: ``version`` exists (another export took it) and ``overwrite`` is false.
    """
    with name_lock(folder):
        auto = version is None
        number = next_version(folder) if version is None else version
        for _ in range(1000):
            target = folder / str(number)
            taken = os.path.lexists(target)
            if taken and auto:  # (``overwrite`` concerns a version asked for)
                number += 1
                continue
            if taken and not overwrite:
                raise ExportError(_taken(target, number))
            if metadata is not None:
                metadata["version"] = number
                write_metadata(tmp, metadata)
            (tmp / LOCK_NAME).unlink(missing_ok=True)  # leftovers are only removed under our lock
            try:
                if taken:
                    _replace(tmp, target, folder / f"{OLD_PREFIX}{number}-{secrets.token_hex(4)}")
                else:
                    os.rename(tmp, target)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if not auto:
                    raise ExportError(_taken(target, number)) from None
                number += 1
                continue
            return target
    raise ExportError(f"no free version found in {folder}; pass --version.")


def _replace(tmp: Path, target: Path, old: Path) -> None:
    """Put ``tmp`` in place of the existing ``target`` (``old`` holds it meanwhile)."""
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_made(made: list[Path]) -> None:
    """Remove the folders a failed export made (``made``: deepest first), if still empty (the
    name folder under its lock, so that a concurrent export of that name does not lose the
    folder it works in)."""
    for i, path in enumerate(made):
        try:
            if i == 0:
                with name_lock(path):
                    if os.listdir(path) != [LOCK_NAME]:
                        return
                    os.unlink(path / LOCK_NAME)
                    os.rmdir(path)
            else:
                os.rmdir(path)
        except OSError:
            return
