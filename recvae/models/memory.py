"""Memory: what this process can allocate now, and what a training run will need.

`available_memory_bytes` reads the machine's MemAvailable and the headroom under any cgroup
memory limit (a container's limit counts). `MemoryEstimate` is a run's expected new
allocations, part by part (weights, Adam state, gradients, one batch's activations, validation
scoring, the trainer's copy of the data); `check_fits` logs it as one line at run start and
refuses, with the numbers and what to change, a run that would not fit: better a clear error
before the first epoch than the kernel's OOM killer an hour in. EASE's own refusal
(recvae.models.ease) reads the same available memory.

The estimate counts what the run allocates on top of what the process already holds (the
Python/torch runtime and the loaded data are already counted by MemAvailable), so it is
compared with the memory available now. `RECVAE_SKIP_MEMORY_CHECK=1` logs the estimate but
does not refuse (for a machine with swap, or an estimate known to be pessimistic).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from recvae.errors import RecvaeError

log = logging.getLogger(__name__)

GIB = 2**30
FLOAT = 4  # bytes of a float32


def available_memory_bytes() -> int | None:
    """What this process can allocate now: the smaller of the machine's MemAvailable and the
    headroom under its cgroup memory limit (a container's limit), or None if neither is known."""
    known = [n for n in (meminfo_available(), cgroup_memory_headroom()) if n is not None]
    return min(known) if known else None


def meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable from /proc/meminfo (what the kernel can hand out now), or None if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# cgroup v1 reports "no limit" as a page-rounded 2^63 - 1
_NO_LIMIT = 2**60


def cgroup_memory_headroom(
    root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes the cgroups of this process still allow (limit - working set), tightest level first.

    cgroup v2: memory.max and memory.current; v1: memory.limit_in_bytes and
    memory.usage_in_bytes. Every level from the process's cgroup up to the root counts, since a
    parent's limit binds its children. Inactive file cache is reclaimable, so it is not counted
    as used (the "working set", as container runtimes report it). None when there is no limit.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    headrooms: list[int] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            base, files = root, ("memory.max", "memory.current", "inactive_file")
            if (root / "unified").is_dir() and not (root / "cgroup.controllers").exists():
                base = root / "unified"  # hybrid mount: v2 under unified/
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                             "total_inactive_file")  # fmt: skip
        else:
            continue
        directory = base / relative.strip("/")
        while True:
            headroom = _cgroup_level_headroom(directory, *files)
            if headroom is not None:
                headrooms.append(headroom)
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    return min(headrooms) if headrooms else None


def _cgroup_level_headroom(
    directory: Path, limit_file: str, usage_file: str, inactive: str
) -> int | None:
    try:
        limit_text = (directory / limit_file).read_text().strip()
    except OSError:
        return None
    if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
        return None
    try:
        usage = int((directory / usage_file).read_text().strip())
    except (OSError, ValueError):
        usage = 0
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive:
                usage -= int(value)
                break
    except (OSError, ValueError):
        pass
    return max(0, int(limit_text) - max(usage, 0))


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run of `model` will allocate, part by part (bytes), and what to change to need
    less (`advice`, said when the run does not fit)."""

    model: str
    parts: tuple[tuple[str, int], ...]
    advice: str = ""
    processes: int = 1  # processes on this machine that each allocate all of it (torchrun)

    @property
    def total(self) -> int:
        return self.processes * sum(size for _, size in self.parts)

    def line(self) -> str:
        """One line: total and parts in GiB."""
        parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts)
        each = f" x {self.processes} processes on this machine" if self.processes > 1 else ""
        return f"{self.model}: memory estimate {self.total / GIB:.2f} GiB ({parts} GiB{each})"


def check_fits(estimate: MemoryEstimate, available: int | None = None) -> None:
    """Log the estimate; raise a RecvaeError naming the numbers and what to change when it
    exceeds the memory available now (unless RECVAE_SKIP_MEMORY_CHECK=1)."""
    log.info(estimate.line(), extra={"event": "memory_estimate", "bytes": estimate.total})
    available = available_memory_bytes() if available is None else available
    if available is None or estimate.total <= available:
        return
    if os.environ.get("RECVAE_SKIP_MEMORY_CHECK", "") == "1":
        log.warning("%s exceeds the %.2f GiB available; RECVAE_SKIP_MEMORY_CHECK=1: running anyway",
                    estimate.line(), available / GIB)  # fmt: skip
        return
    raise RecvaeError(
        f"{estimate.line()}, but only {available / GIB:.2f} GiB is available (free memory, "
        f"within any container memory limit); {estimate.advice or 'use a smaller model'} "
        "(RECVAE_SKIP_MEMORY_CHECK=1 runs it anyway)"
    )
