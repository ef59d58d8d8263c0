"""A job lock: one nightly run at a time, and a lock left by a dead process does not block forever.

The lock is a small JSON file {pid, hostname, process start time, started_at}. It is created
atomically with its content (written to a temporary file, then hard-linked to the lock path,
which fails if the lock exists), so there is never an empty or half-written lock file.

When the lock exists, it is stale if it was taken on this host by a process that no longer runs
(or whose PID now belongs to a process started at another time: PID reuse). A stale lock is
replaced; a live one, or one taken on another host (whose processes we cannot see), is refused
with a message naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from recvae.errors import RecvaeError
from recvae.provenance import now_iso


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of process `pid` (clock ticks since boot), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class JobLock:
    """`with JobLock(path):` runs the block holding the lock; raises RecvaeError if it is held."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.acquired = False

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content, or None when there is no lock."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"unreadable": True}

    def is_stale(self, holder: dict[str, Any]) -> bool:
        """True when the holder is certainly gone: same host, and its process is not running."""
        if holder.get("unreadable"):
            return False
        if holder.get("hostname") != socket.gethostname():
            return False
        pid = int(holder.get("pid", -1))
        if pid <= 0 or not pid_alive(pid):
            return True
        recorded = holder.get("process_start")
        return recorded is not None and recorded != process_start_time(pid)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "process_start": process_start_time(os.getpid()),
            "started_at": now_iso(),
        }
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(content, handle)
            for _attempt in range(2):
                try:
                    os.link(tmp_name, self.path)
                    self.acquired = True
                    return
                except FileExistsError:
                    holder = self.holder()
                    if holder is None:
                        continue  # released between our link and read: try again
                    if not self.is_stale(holder):
                        raise RecvaeError(self._held_message(holder)) from None
                    self._break_stale(holder)
            raise RecvaeError(f"could not take the lock {self.path}: another run raced for it")
        finally:
            os.unlink(tmp_name)

    def _break_stale(self, holder: dict[str, Any]) -> None:
        """Remove a stale lock, unless someone replaced it meanwhile (then the link fails again)."""
        if self.holder() == holder:
            self.path.unlink(missing_ok=True)

    def _held_message(self, holder: dict[str, Any]) -> str:
        if holder.get("unreadable"):
            return f"lock {self.path} exists but cannot be read; remove it if no job is running"
        where = holder.get("hostname")
        if where != socket.gethostname():
            return (
                f"another run holds the lock {self.path} on host {where} (pid {holder.get('pid')},"
                f" since {holder.get('started_at')}); remove the file if that run is dead"
            )
        return (
            f"another run is in progress: pid {holder.get('pid')} holds {self.path} "
            f"since {holder.get('started_at')}"
        )

    def release(self) -> None:
        if self.acquired:
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.acquired = False

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
