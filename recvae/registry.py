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
production before. `promote` refuses a version that does not know some of the current model's
items (the next export would drop every history interaction on them and send users to the
popularity fallback) unless `force=True` (`--force`); new items only are reported, not refused.
`prune(keep)` removes old versions but never the current one or the one a rollback would return
to. Reading commands (`list`, `prune`, `promote`) refuse a path that is not a store.

Writers (promote, rollback, add, prune) are meant to run under the nightly job's lock
(recvae.lock); readers need no lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recvae.errors import RecvaeError
from recvae.io import atomic_dir, atomic_file, check_output, is_model_store
from recvae.provenance import now_iso

_VERSION = re.compile(r"^v(\d{4,})$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    path: Path
    metadata: dict[str, Any]
    is_current: bool


@dataclass(frozen=True)
class ItemChange:
    """How a version's item vocabulary differs from the current model's."""

    version: str
    current: str
    added: int  # items the version knows and the current model does not
    removed: int  # items of the current model the version does not know
    examples: tuple[str, ...]  # a few removed (else added) item ids

    def describe(self) -> str:
        parts = []
        if self.removed:
            parts.append(
                f"does not know {self.removed:,} items of the current model {self.current}"
            )
        if self.added:
            parts.append(f"knows {self.added:,} items the current model {self.current} does not")
        example = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"{self.version} {' and '.join(parts)}{example}"


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
    def require_store(self) -> None:
        """Refuse a path that does not exist or is not a model store (a mistyped path, say)."""
        if not self.root.exists():
            raise RecvaeError(f"model store {self.root} does not exist")
        if not self.root.is_dir():
            raise RecvaeError(f"{self.root} is a file, not a model store")
        if not is_model_store(self.root) and any(self.root.iterdir()):
            raise RecvaeError(
                f"{self.root} is not a model store (no versions/ and no current); "
                "create one with `recvae models add STORE MODEL_DIR`"
            )

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
        return ModelVersion(
            name, path, _read_json_object(path / "metadata.json"), name == self.current_name()
        )

    def list(self) -> list[ModelVersion]:
        self.require_store()
        return [self.get(name) for name in self.version_names()]

    def item_change(self, name: str) -> ItemChange | None:
        """How `name`'s items differ from the current model's; None when they are the same set."""
        import polars as pl

        from recvae.data.vocab import Vocabulary

        current = self.current_name()
        if current is None or current == name:
            return None
        try:
            new = Vocabulary.load(self.path_of(name) / "items.parquet").ids.cast(pl.String)
            old = Vocabulary.load(self.path_of(current) / "items.parquet").ids.cast(pl.String)
        except Exception as error:  # a damaged vocabulary: say so rather than guess
            raise RecvaeError(
                f"cannot compare the items of {name} and {current}: {error}"
            ) from error
        removed = old.filter(~old.is_in(new.implode()))
        added = new.filter(~new.is_in(old.implode()))
        if removed.is_empty() and added.is_empty():
            return None
        examples = tuple((removed if not removed.is_empty() else added).head(3).to_list())
        return ItemChange(name, current, len(added), len(removed), examples)

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
        check_output(self.root, "model store")
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
        action, store = event["action"], str(self.root)
        log.info(
            "%s %s in %s (previous: %s)", action, event["version"], store, event.get("previous"),
            extra={**event, "event": action, "store": store},
        )

    def promote(self, name: str, reason: str = "", force: bool = False) -> ItemChange | None:
        """Make `name` the current model (atomic pointer switch), remembering the previous one.

        Refuses (RecvaeError) when `name` does not know some of the current model's items,
        unless `force`. Returns how the items changed (None: same items) so callers can say so.
        """
        self.require_store()
        change = self.item_change(name)
        if change is not None and change.removed and not force:
            raise RecvaeError(
                f"refusing to promote: {change.describe()}; the next export would drop every "
                "history interaction on them and send users to the popularity fallback. "
                "Pass --force to promote anyway"
            )
        previous = self.current_name()
        self._point_current_at(name)
        stack = [v for v in self.promotions()["stack"] if v != name] + [name]
        event = {"action": "promote", "version": name, "previous": previous, "reason": reason}
        if change is not None:
            event["items"] = {"added": change.added, "removed": change.removed, "forced": force}
        self._record(stack, event)
        return change

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
        self.require_store()
        names = self.version_names()
        protected = set(names[-keep:])
        stack = self.promotions()["stack"]
        protected.update(stack[-2:])
        if (current := self.current_name()) is not None:
            protected.add(current)
        removed = [name for name in names if name not in protected]
        for name in removed:
            shutil.rmtree(self.versions_dir / name)
        if removed:
            log.info(
                "pruned %d versions from %s: %s", len(removed), self.root, ", ".join(removed),
                extra={"event": "prune", "store": str(self.root), "removed": removed},
            )
        return removed


def _read_json_object(file: Path) -> dict[str, Any]:
    """A JSON object from `file`; {} when absent, and {"unreadable": reason} when damaged."""
    if not file.is_file():
        return {}
    try:
        value = json.loads(file.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        return {"unreadable": f"{file.name}: {error}"}
    return value if isinstance(value, dict) else {"unreadable": f"{file.name}: not an object"}


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
