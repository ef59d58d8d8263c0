"""A model store: versioned model directories and an atomically switched `current` pointer.

    STORE/
      versions/v0001/ ...     one model artifact per version (see recvae.artifact), never edited
      versions/v0002/ ...
      current -> versions/v0002    a relative symlink: the model in production
      promotions.json          the production history, for rollback and for `models list`

`current` is switched by creating a new symlink under a temporary name and renaming it over the
old one (`os.replace`, atomic on POSIX): a reader resolving `current` gets the old or the new
model, never nothing. Versions are written with `atomic_dir`, so a half-copied model never
appears under `versions/`.

Promotion history is a stack: `promote` pushes, `rollback` pops back to the version that was in
production before. `prune(keep)` removes old versions but never the current one or the one a
rollback would return to.

Writers (promote, rollback, add, prune) are meant to run under the nightly job's lock
(recvae.lock); readers need no lock.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recvae.errors import RecvaeError
from recvae.io import atomic_dir, atomic_file
from recvae.provenance import now_iso

_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    path: Path
    metadata: dict[str, Any]
    is_current: bool


@dataclass(frozen=True)
class GateDecision:
    """Whether a new model may replace the current one, and why, in words for the run report."""

    promote: bool
    metric: str
    new: float
    current: float | None
    tolerance: float
    reason: str


def quality_gate(metric: str, new: float, current: float | None, tolerance: float) -> GateDecision:
    """Promote when there is no current model, or when new >= current - tolerance.

    A NaN metric is never promoted. A negative tolerance demands a strict improvement.
    """
    if new is None or math.isnan(new):
        reason = f"new model's {metric} is not a number"
        return GateDecision(False, metric, new, current, tolerance, reason)
    if current is None or math.isnan(current):
        reason = f"no usable current model; new {metric} = {new:.4f}"
        return GateDecision(True, metric, new, current, tolerance, reason)
    threshold = current - tolerance
    promote = new >= threshold
    verdict = "not worse than" if promote else "worse than"
    reason = (
        f"new {metric} {new:.4f} is {verdict} current {current:.4f} - tolerance {tolerance:g}"
        f" = {threshold:.4f}"
    )
    return GateDecision(promote, metric, new, current, tolerance, reason)


class ModelStore:
    """A directory of model versions with a `current` pointer. Created on first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.current_link = self.root / "current"
        self.promotions_file = self.root / "promotions.json"

    # ---- reading -------------------------------------------------------------------------
    def version_names(self) -> list[str]:
        """Existing versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if _VERSION.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def current_name(self) -> str | None:
        if not self.current_link.is_symlink():
            return None
        return Path(os.readlink(self.current_link)).name

    def path_of(self, name: str) -> Path:
        path = self.versions_dir / name
        if not _VERSION.match(name) or not path.is_dir():
            known = ", ".join(self.version_names()) or "none"
            raise RecvaeError(f"no model version {name!r} in {self.root} (versions: {known})")
        return path

    def current_path(self) -> Path | None:
        name = self.current_name()
        return None if name is None else self.path_of(name)

    def get(self, name: str) -> ModelVersion:
        path = self.path_of(name)
        metadata_file = path / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        return ModelVersion(name, path, metadata, name == self.current_name())

    def list(self) -> list[ModelVersion]:
        return [self.get(name) for name in self.version_names()]

    def promotions(self) -> dict[str, Any]:
        """{"stack": [versions in production order], "events": [...]}."""
        if not self.promotions_file.is_file():
            return {"stack": [], "events": []}
        return json.loads(self.promotions_file.read_text())

    # ---- writing -------------------------------------------------------------------------
    def _next_name(self) -> str:
        names = self.version_names()
        number = int(names[-1][1:]) + 1 if names else 1
        return f"v{number:04d}"

    def add(self, source: Path, metadata: dict[str, Any] | None = None) -> ModelVersion:
        """Copy a model directory into the store as the next version (not promoted)."""
        source = Path(source)
        if not (source / "items.parquet").is_file():
            raise RecvaeError(f"{source} is not a recvae model directory (no items.parquet)")
        name = self._next_name()
        with atomic_dir(self.versions_dir / name, overwrite=False) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            self._stamp(tmp, name, metadata)
        return self.get(name)

    @staticmethod
    def _stamp(directory: Path, name: str, extra: dict[str, Any] | None) -> None:
        metadata_file = directory / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        metadata.update(extra or {})
        metadata["version"] = name
        metadata["registered_at"] = now_iso()
        metadata_file.write_text(json.dumps(metadata, indent=2, default=str))

    def _point_current_at(self, name: str) -> None:
        self.path_of(name)
        tmp = self.root / f".current.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("versions") / name, tmp)
        os.replace(tmp, self.current_link)

    def _record(self, stack: list[str], event: dict[str, Any]) -> None:
        promotions = self.promotions()
        promotions["stack"] = stack
        promotions["events"].append({"at": now_iso(), **event})
        with atomic_file(self.promotions_file) as tmp:
            tmp.write_text(json.dumps(promotions, indent=2))

    def promote(self, name: str, reason: str = "") -> None:
        """Make `name` the current model (atomic pointer switch), remembering the previous one."""
        previous = self.current_name()
        self._point_current_at(name)
        stack = [v for v in self.promotions()["stack"] if v != name] + [name]
        self._record(
            stack, {"action": "promote", "version": name, "previous": previous, "reason": reason}
        )

    def rollback(self) -> str:
        """Switch `current` back to the version in production before it; return that version."""
        current = self.current_name()
        stack = self.promotions()["stack"]
        if current is not None and stack and stack[-1] == current:
            stack = stack[:-1]
        while stack and not (self.versions_dir / stack[-1]).is_dir():
            stack = stack[:-1]  # pruned by hand: skip it
        if not stack:
            raise RecvaeError(
                f"nothing to roll back to in {self.root}: no earlier promoted version"
            )
        target = stack[-1]
        self._point_current_at(target)
        self._record(stack, {"action": "rollback", "version": target, "previous": current})
        return target

    def revert_promotion(self, previous: str | None) -> None:
        """Undo this job's promote when a later step failed: `current` goes back to `previous`."""
        stack = self.promotions()["stack"]
        undone = self.current_name()
        if stack and stack[-1] == undone:
            stack = stack[:-1]
        if previous is None:
            self.current_link.unlink(missing_ok=True)
        else:
            self._point_current_at(previous)
        self._record(stack, {"action": "revert", "version": previous, "previous": undone})

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` versions, sparing current and the rollback target."""
        if keep < 1:
            raise RecvaeError(f"keep must be at least 1, got {keep}")
        names = self.version_names()
        protected = set(names[-keep:])
        stack = self.promotions()["stack"]
        protected.update(stack[-2:])
        if (current := self.current_name()) is not None:
            protected.add(current)
        removed = [name for name in names if name not in protected]
        for name in removed:
            shutil.rmtree(self.versions_dir / name)
        return removed


def resolve_model_dir(path: Path) -> tuple[Path, str]:
    """A model directory and its version name, from a model directory or a model store.

    A store resolves to its `current` version; a plain model directory's version is the
    `version` in its metadata, else the directory name.
    """
    path = Path(path)
    store = ModelStore(path)
    if store.current_link.is_symlink() or store.versions_dir.is_dir():
        current = store.current_name()
        if current is None:
            raise RecvaeError(f"model store {path} has no current model; promote one first")
        return store.path_of(current), current
    if not (path / "items.parquet").is_file():
        raise RecvaeError(
            f"{path} is neither a recvae model directory nor a model store (no items.parquet, "
            "no current)"
        )
    metadata_file = path / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    return path, str(metadata.get("version") or path.resolve().name)
