"""Safe outputs: what recvae may replace, and atomic, durable writes.

Three ideas live here, once, for every command and job:

- The output policy (`check_output`): an existing output path is replaced only when it is an
  artifact of the same kind that recvae wrote (a dataset's manifest, a model's model.json, a
  store's versions/, a recommendations export's columns) and no input lies inside it. Anything
  else is refused with one line that says what is there, so `--out` never deletes a user's files.
- Atomic writes (`atomic_dir`, `atomic_file`): everything is written under a temporary name
  beside the destination and renamed into place only when complete, so a crash leaves the last
  good version where readers look. The file (or every file of the directory) and the parent
  directory are fsynced, so a power cut after the rename cannot leave an empty file behind.
- Stale temporaries: temporary names carry the writing process's id
  (`.NAME.tmp-<pid>-<random>`), so the next write to the same destination removes what a killed
  (SIGKILL, OOM, power cut) process left behind, and never touches a live writer's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from recvae.errors import RecvaeError

# ---- output policy ---------------------------------------------------------------------------

#: The columns of a recommendations export, in order (see recvae.scoring.empty_frame).
EXPORT_COLUMNS = ("user_id", "rank", "item_id", "score", "model_version", "fallback")
#: Parquet key-value metadata key that marks a file as a recvae export.
EXPORT_METADATA_KEY = "recvae"

#: Entries `recvae demo` writes in its work directory.
DEMO_ENTRIES = frozenset(
    {"logs", "dataset", "models", "candidate-model", "recommendations.parquet", "summary.json",
     "recs.duckdb"}
)  # fmt: skip


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_dataset_dir(path: Path) -> bool:
    """A dataset directory written by `recvae ingest` (manifest.json says recvae-dataset)."""
    manifest = _read_json(path / "manifest.json")
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(
        "recvae-dataset"
    )


def is_model_dir(path: Path) -> bool:
    """A model directory written by recvae (model.json names a model; items.parquet beside it)."""
    meta = _read_json(path / "model.json")
    return (
        isinstance(meta, dict)
        and isinstance(meta.get("model"), str)
        and (path / "items.parquet").is_file()
    )


def is_model_store(path: Path) -> bool:
    """A model store (recvae.registry): a versions/ directory or a `current` link."""
    return (path / "versions").is_dir() or (path / "current").is_symlink()


def is_study_dir(path: Path) -> bool:
    """A `recvae tune` study directory (its Optuna journal is there)."""
    return (path / "study.journal").is_file()


def is_bench_report(path: Path) -> bool:
    """A report directory written by `recvae bench` (results.json and report.md)."""
    return (path / "results.json").is_file() and (path / "report.md").is_file()


def is_demo_dir(path: Path) -> bool:
    """A `recvae demo` work directory: it holds only what the demo writes."""
    names = {p.name for p in path.iterdir() if not _TEMP.match(p.name)}
    return bool(names) and names <= DEMO_ENTRIES


def is_export_file(path: Path) -> bool:
    """A recommendations export recvae wrote: Parquet marked in its metadata or with exactly the
    export's columns, or a CSV whose header is exactly the export's columns.

    DuckDB files hold other tables too; their check is per table, in recvae.export.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            marked = EXPORT_METADATA_KEY.encode() in (schema.metadata or {})
            return marked or tuple(schema.names) == EXPORT_COLUMNS
        if suffix == ".csv":
            with open(path, "rb") as handle:
                first = handle.readline(4096).decode("utf-8", "replace").strip()
            return tuple(first.split(",")) == EXPORT_COLUMNS
        if suffix in (".duckdb", ".db"):
            return is_duckdb_file(path)
    except Exception:  # an unreadable file is simply not ours
        return False
    return False


def is_duckdb_file(path: Path) -> bool:
    """A DuckDB database file (its header carries the magic bytes DUCK at offset 8)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


# kind -> (what it is, in words; how to recognise it; is it a directory?)
OUTPUT_KINDS: dict[str, tuple[str, Callable[[Path], bool], bool]] = {
    "dataset": ("a recvae dataset directory", is_dataset_dir, True),
    "model": ("a recvae model directory", is_model_dir, True),
    "model store": ("a recvae model store", is_model_store, True),
    "study": ("a recvae tuning study directory", is_study_dir, True),
    "bench report": ("a recvae bench report directory", is_bench_report, True),
    "demo": ("a recvae demo directory", is_demo_dir, True),
    "export": ("a recvae recommendations export", is_export_file, False),
    # a log file: recvae cannot prove it wrote one, so an existing file needs overwrite=True
    "synthetic log": ("a file recvae may replace", lambda _path: False, False),
}


def describe_path(path: Path) -> str:
    """What is at `path`, in a few words, for a refusal message."""
    if path.is_dir():
        for description, recognise, is_dir in OUTPUT_KINDS.values():
            if is_dir and description != OUTPUT_KINDS["demo"][0] and recognise(path):
                return description
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"a directory recvae did not write, holding {len(names)} entries ({shown})"
    if path.is_file():
        if is_export_file(path) and path.suffix.lower() not in (".duckdb", ".db"):
            return OUTPUT_KINDS["export"][0]
        return f"a file recvae cannot tell it wrote ({path.stat().st_size:,} bytes)"
    return "something that is neither a file nor a directory"


def check_output(
    dest: Path, kind: str, inputs: Sequence[Path] = (), *, overwrite: bool = False
) -> bool:
    """Refuse to write `kind` to `dest` unless that cannot destroy anything recvae did not write.

    Allowed: `dest` does not exist; it is an empty directory (directory kinds); or it is an
    artifact of this same kind that recvae wrote — then it will be replaced and this returns True
    so the caller can say so. `overwrite=True` (export files' `--overwrite`) allows replacing any
    file, never a directory. In every case no input may be `dest` or lie inside it: writing there
    would destroy the input while reading it.

    Raises RecvaeError with one line naming what is there; returns whether `dest` exists and will
    be replaced.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {sorted(OUTPUT_KINDS)}")
    description, recognise, is_dir_kind = OUTPUT_KINDS[kind]
    dest = Path(dest)
    target = dest.resolve()
    for source in inputs:
        source_path = Path(source).resolve()
        if source_path == target:
            raise RecvaeError(
                f"refusing to write the {kind} to {dest}: it is the input {source}; "
                "choose another output path"
            )
        if source_path.is_relative_to(target):
            raise RecvaeError(
                f"refusing to write the {kind} to {dest}: the input {source} lies inside it; "
                "choose another output path"
            )
    if not dest.exists() and not dest.is_symlink():
        return False
    if dest.is_symlink() and not dest.exists():
        raise RecvaeError(f"refusing to write the {kind} to {dest}: it is a broken symbolic link")
    if is_dir_kind:
        if dest.is_dir() and not any(dest.iterdir()):
            return False
        if dest.is_dir() and recognise(dest):
            return True
    elif dest.is_file() and (overwrite or recognise(dest)):
        return True
    hint = "; pass --overwrite to replace it" if not is_dir_kind and dest.is_file() else ""
    raise RecvaeError(
        f"refusing to write the {kind} to {dest}: it is {describe_path(dest)}, not "
        f"{description}; choose another output path or remove it yourself{hint}"
    )


# ---- temporary names and stale temporaries ----------------------------------------------------

# `.NAME.tmp-<pid>-<random>` and `.NAME.old-<pid>`: the pid says which process owns it.
_TEMP = re.compile(r"^\..+\.(?:tmp|old)-(\d+)(?:-[0-9a-z_]+)?$")


def temp_name(dest: Path, tag: str = "tmp") -> Path:
    """A fresh temporary path beside `dest` that names this process: `.NAME.tmp-<pid>-<hex>`."""
    return dest.parent / f".{dest.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OverflowError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_stale_temps(dest: Path) -> list[Path]:
    """Remove temporaries beside `dest` (`.NAME.tmp-<pid>-*`, `.NAME.old-<pid>`) of dead processes.

    Called before every atomic write, so a run killed mid-write costs disk only until the next
    write to the same destination. Temporaries of live processes are left alone.
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        return []
    prefix = f".{dest.name}."
    removed = []
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _TEMP.match(entry.name)
        if match is None or entry.name[len(prefix) :].split("-")[0] not in ("tmp", "old"):
            continue
        if pid_alive(int(match.group(1))):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def owned_temp_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory in the system temp dir, named `PREFIX<pid>-<hex>`, removed afterwards.

    Scratch directories of dead processes with the same prefix are removed first, so spill
    files of a killed run (DuckDB can spill gigabytes) do not pile up.
    """
    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-[0-9a-f]+$")
    for entry in root.iterdir():
        match = pattern.match(entry.name)
        if match and not pid_alive(int(match.group(1))):
            _remove(entry)
    path = root / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- atomic, durable writes -------------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(dest: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `dest` when the block succeeds.

    On an exception the temporary directory is removed and `dest` is left untouched. When `dest`
    exists it is swapped out (renamed aside, then deleted) so the window without a `dest` is two
    renames long. Every file and directory written is fsynced before the rename, and the parent
    directory after it. Whether `dest` may be replaced at all is `check_output`'s question,
    asked by the command before it does any work.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = temp_name(dest)
    tmp.mkdir()  # the usual mode (umask applies), unlike mkdtemp's 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_tree(tmp)
    old = None
    if dest.exists() or dest.is_symlink():
        old = temp_name(dest, "old")
        os.replace(dest, old)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; it replaces `dest` when the block succeeds.

    The file is fsynced before the rename and its directory after it, so the new content is on
    disk under the final name once the block returns.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = temp_name(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_file(tmp)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def fsync_file(path: Path) -> None:
    """Flush a file's content to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; nothing more can be done
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(root)
