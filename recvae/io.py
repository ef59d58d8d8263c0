"""Atomic writes: a reader never sees a half-written file or directory.

Everything is written under a temporary name beside the destination and renamed into place
only when complete, so a crash leaves the last good version where readers look.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(dest: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `dest` when the block succeeds.

    On an exception the temporary directory is removed and `dest` is left untouched. When `dest`
    exists it is swapped out (renamed aside, then deleted) so the window without a `dest` is two
    renames long.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; readers need the usual mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_tree(tmp)
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; it replaces `dest` when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; readers need the usual mode
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def remove_stale_temps(directory: Path, prefix: str = "", recursive: bool = False) -> list[Path]:
    """Remove what `atomic_file` / `atomic_dir` of a killed process left in `directory`.

    Matches hidden entries `.{prefix}*.tmp-*` and `.{prefix}*.old-*`. An entry tagged with the
    PID of a live process other than this one (`.old-PID`) is kept. The caller must hold the
    lock that keeps other writers out of `directory` (the nightly job's lock for its work
    directory and store), since an untagged temporary name does not say who is writing it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed: list[Path] = []
    entries = directory.rglob(f".{prefix}*") if recursive else directory.glob(f".{prefix}*")
    for path in sorted(entries, key=lambda p: len(p.parts)):
        name = path.name
        marker = ".tmp-" if ".tmp-" in name else ".old-" if ".old-" in name else None
        if marker is None or not path.exists():
            continue
        tag = name.rsplit(marker, 1)[1]
        if tag.isdigit() and int(tag) != os.getpid() and _pid_alive(int(tag)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
