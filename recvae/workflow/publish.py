"""Publish a trained model: register, evaluate against the current model, gate, promote + export.

    artifact -> register (a new store version) -> evaluate new and current on the SAME
    validation users -> quality gate -> stage the export -> commit (promote + export) as one step

Seen from outside, promotion and export are one step: a reader of the store's `current` and of
the published export finds both belonging to the same model version (every export row carries
its `model_version`). Two renames cannot happen at once, so the commit is made recoverable:

1. the export is written in full under a staging name (`.NAME.publish-vNNNN` beside the
   destination, or the table `<table>__recvae_publish` in a DuckDB file) by the new version's
   model, while `current` and the published export still belong to the old version;
2. a journal, `STORE/publish.json`, records the decision (version, previous, where the export
   goes): from here on the publication is decided;
3. `current` is switched to the new version, the staged export is renamed over the published one
   (DuckDB: one transaction swaps the tables), and the journal is removed.

A run killed before step 2 changed nothing a reader sees (its staged export is discarded by the
next run). A run killed after step 2 is completed by the next run (`recover`), which is called
before any other work; the two renames of step 3 are microseconds apart. If someone promoted
another version by hand in between, the interrupted publication is abandoned instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import scipy.sparse as sp

from recvae.artifact import Artifact, save_artifact
from recvae.data.split import Holdout
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.io import atomic_file
from recvae.registry import GateDecision, ModelStore, quality_gate

JOURNAL = "publish.json"
STAGED_TABLE_SUFFIX = "__recvae_publish"


@dataclass(frozen=True)
class ExportTarget:
    """Where the published top-N export goes and how it is made."""

    dest: Path
    fmt: str  # parquet | csv | duckdb
    table: str = "recommendations"
    k: int = 100
    chunk_size: int = 1000
    item_block: int | None = None  # items per block for item-chunked top-K (recvae.scoring)

    def staged_path(self, version: str) -> Path:
        """Parquet/CSV: the staging file beside the destination (same file system: a rename)."""
        return self.dest.parent / f".{self.dest.name}.publish-{version}"

    @property
    def staged_table(self) -> str:
        return f"{self.table}{STAGED_TABLE_SUFFIX}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dest": str(self.dest)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportTarget:
        return cls(**{**data, "dest": Path(data["dest"])})


@dataclass
class PublishResult:
    """What happened, with the numbers a run report needs."""

    status: str  # "promoted" | "refused"
    version: str
    previous: str | None
    gate: GateDecision
    metrics_new: dict[str, float]
    metrics_current: dict[str, float] | None
    current_note: str
    validation_users: int
    export: dict[str, Any] = field(default_factory=dict)


# ---- evaluation on the same users ------------------------------------------------------------


def gate_ks(metric: str, n_items: int) -> list[int]:
    from recvae.metrics import parse_metric

    _, k = parse_metric(metric)
    if k > n_items:
        raise RecvaeError(
            f"the gate metric {metric} needs at least {k} items; the data has {n_items}: "
            "choose a smaller K"
        )
    return sorted({k, 20, 50, 100} & set(range(1, n_items + 1)))


def evaluate_current(
    store: ModelStore, valid: Holdout, items: Vocabulary, ks: list[int]
) -> tuple[Any, str]:
    """The current model's evaluation on the new validation users, or (None, why not).

    Histories are mapped onto the current model's items; items it never saw count as misses.
    """
    from recvae.artifact import load_artifact
    from recvae.evaluate import evaluate
    from recvae.scoring import scorer_over_items

    current = store.current_path()
    if current is None:
        return None, "no current model"
    try:
        artifact = load_artifact(current)
    except (RecvaeError, OSError, ValueError, KeyError) as error:
        return None, f"current model {current.name} cannot be loaded: {error}"
    scorer = scorer_over_items(artifact.model, artifact.items, items)
    return evaluate(scorer, valid, ks=ks), f"evaluated {current.name}"


# ---- the publish step ----------------------------------------------------------------------


def publish(
    store: ModelStore,
    artifact: Artifact,
    train: sp.csr_matrix,
    valid: Holdout,
    history: Path,
    target: ExportTarget,
    metric: str = "ndcg@100",
    tolerance: float = 0.0,
    scratch: Path | None = None,
) -> PublishResult:
    """Register `artifact`, gate it against `current` on `valid`, and when it passes, promote
    it and publish its top-N export for the users of `history` (a dataset directory).

    The caller holds the store's job lock. `scratch` is where the artifact is written before it
    is copied into the store (default: a temporary directory beside the store).
    """
    from recvae.evaluate import evaluate

    ks = gate_ks(metric, valid.n_items)
    new_eval = evaluate(artifact.model, valid, ks=ks)
    current_eval, current_note = evaluate_current(store, valid, artifact.items, ks)
    metadata = {
        **artifact.metadata,
        "metrics": new_eval.means,
        "validation_users": new_eval.users,
    }
    # Beside the store, not in it: the store holds only what it wrote (recvae.io.check_output).
    default = store.root.parent / f".{store.root.name}.candidate.tmp-{os.getpid()}"
    candidate = Path(scratch) if scratch is not None else default
    save_artifact(Artifact(artifact.model, artifact.items, metadata), candidate, train=train)
    try:
        version = store.add(candidate).name
    finally:
        shutil.rmtree(candidate, ignore_errors=True)
    previous = store.current_name()
    current_value = current_eval.means[metric] if current_eval is not None else None
    gate = quality_gate(metric, new_eval.means[metric], current_value, tolerance)
    result = PublishResult(
        status="refused",
        version=version,
        previous=previous,
        gate=gate,
        metrics_new=new_eval.means,
        metrics_current=current_eval.means if current_eval is not None else None,
        current_note=current_note,
        validation_users=new_eval.users,
    )
    if not gate.promote:
        return result
    result.export = stage_export(store, version, history, target)
    write_journal(store, {"version": version, "previous": previous, "target": target.to_json()})
    commit(store, version, target, reason=gate.reason)
    result.status = "promoted"
    return result


def stage_export(store: ModelStore, version: str, history: Path, target: ExportTarget) -> dict:
    """Write the version's full export under the staging name; nothing a reader sees changes."""
    from recvae.export import ExportRequest, export_top_n

    duckdb = target.fmt == "duckdb"
    if duckdb and target.dest.is_file():
        _refuse_foreign_table(target)  # the swap will drop it: only a recvae export may go
    request = ExportRequest(
        model=store.path_of(version),
        history=history,
        dest=target.dest if duckdb else target.staged_path(version),
        k=target.k,
        fmt=target.fmt,
        table=target.staged_table if duckdb else target.table,
        chunk_size=target.chunk_size,
        item_block=target.item_block,
    )
    result = export_top_n(request)
    if result.model_version != version:
        raise RecvaeError(f"staged export belongs to {result.model_version}, not {version}")
    return {
        "path": str(target.dest),
        "format": target.fmt,
        "rows": result.summary.rows,
        "users": result.users,
        "fallback_users": result.fallback_users,
        "users_per_second": round(result.users / max(result.seconds, 1e-9), 1),
        "model_version": version,
    }


def commit(store: ModelStore, version: str, target: ExportTarget, reason: str = "") -> None:
    """Step 3: point `current` at `version`, swap the staged export in, close the journal."""
    if store.current_name() != version:
        # Items that left today's data are gone from the new model on purpose: its export is
        # made from the same data, so promoting it loses no history (the store's item check
        # guards promotions of models trained elsewhere).
        store.promote(version, reason=reason, force=True)
    swap_in_staged_export(target, version)
    (store.root / JOURNAL).unlink(missing_ok=True)
    _fsync_dir(store.root)


def swap_in_staged_export(target: ExportTarget, version: str) -> bool:
    """Rename the staged export over the published one; False when there is none staged."""
    if target.fmt != "duckdb":
        staged = target.staged_path(version)
        if not staged.exists():
            return False
        os.replace(staged, target.dest)
        _fsync_dir(target.dest.parent)
        return True
    import duckdb

    with contextlib.closing(duckdb.connect(str(target.dest))) as con:
        if not _has_table(con, target.staged_table):
            return False
        con.execute("BEGIN TRANSACTION")
        con.execute(f'DROP TABLE IF EXISTS "{target.table}"')
        con.execute(f'ALTER TABLE "{target.staged_table}" RENAME TO "{target.table}"')
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    return True


# ---- journal and recovery --------------------------------------------------------------------


def write_journal(store: ModelStore, entry: dict[str, Any]) -> None:
    with atomic_file(store.root / JOURNAL) as tmp:
        tmp.write_text(json.dumps(entry, indent=2))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(store.root)


def read_journal(store: ModelStore) -> dict[str, Any] | None:
    path = store.root / JOURNAL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RecvaeError(f"{path} is damaged ({error}); remove it by hand") from error


def recover(store: ModelStore, target: ExportTarget) -> str | None:
    """Finish or abandon a publication a killed run left behind, and drop stale staged exports.

    Returns a sentence for the run report, or None when there was nothing to do. Call it under
    the job lock, before any other work.
    """
    entry = read_journal(store)
    notes = []
    if entry is not None:
        version, previous = entry["version"], entry.get("previous")
        journal_target = ExportTarget.from_json(entry["target"])
        current = store.current_name()
        if current in (version, previous) and (store.versions_dir / version).is_dir():
            commit(store, version, journal_target, reason="completing an interrupted publish")
            notes.append(f"completed the interrupted publication of {version}")
        else:
            (store.root / JOURNAL).unlink(missing_ok=True)
            notes.append(
                f"abandoned the interrupted publication of {version}: current is {current}"
            )
    removed = discard_staged_exports(target)
    if removed:
        notes.append(f"removed staged exports of a dead run: {', '.join(removed)}")
    return "; ".join(notes) or None


def discard_staged_exports(target: ExportTarget) -> list[str]:
    """Remove staged exports that no journal refers to (a run killed before deciding)."""
    removed: list[str] = []
    if target.fmt != "duckdb":
        if target.dest.parent.is_dir():
            # The staged files, and the temporaries a killed writer left while writing one
            # (`atomic_file` names them `.` + the staged name + `.tmp-...`).
            staged = f".{target.dest.name}.publish-"
            for pattern in (f"{staged}*", f".{staged}*"):
                for path in target.dest.parent.glob(pattern):
                    if path.is_file():
                        path.unlink()
                        removed.append(path.name)
        return removed
    if not target.dest.is_file():
        return removed
    import duckdb

    with contextlib.closing(duckdb.connect(str(target.dest))) as con:
        for table in (target.staged_table, f"{target.staged_table}__recvae_tmp"):
            if _has_table(con, table):
                con.execute(f'DROP TABLE "{table}"')
                removed.append(f"{target.dest.name}:{table}")
    return removed


def published_version(target: ExportTarget) -> str | None:
    """The model version recorded in the published export (its `model_version` column)."""
    if target.fmt == "duckdb":
        import duckdb

        if not target.dest.is_file():
            return None
        with contextlib.closing(duckdb.connect(str(target.dest), read_only=True)) as con:
            if not _has_table(con, target.table):
                return None
            row = con.execute(f'SELECT model_version FROM "{target.table}" LIMIT 1').fetchone()
            return None if row is None else str(row[0])
    if not target.dest.is_file():
        return None
    if target.fmt == "parquet":
        frame = pl.scan_parquet(target.dest).select("model_version").head(1).collect()
    else:
        frame = pl.read_csv(target.dest, columns=["model_version"], n_rows=1)
    return None if frame.height == 0 else str(frame["model_version"][0])


def _refuse_foreign_table(target: ExportTarget) -> None:
    import duckdb

    from recvae.export import _check_table_replaceable

    with contextlib.closing(duckdb.connect(str(target.dest))) as con:
        _check_table_replaceable(con, target.dest, target.table, overwrite=False)


def _has_table(con: Any, name: str) -> bool:
    query = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
    return bool(con.execute(query, [name]).fetchone()[0])


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a power cut after it keeps the new name)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- the data-volume gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeDecision:
    """Whether today's data is plausible next to the data the current model was trained on."""

    accept: bool
    users: int
    interactions: int
    last_users: int | None
    last_interactions: int | None
    max_drop: float
    reason: str


def volume_gate(
    store: ModelStore, users: int, interactions: int, max_drop: float
) -> VolumeDecision:
    """Refuse when users or interactions fell by more than `max_drop` (a fraction) against the
    last good run: the dataset the current model was trained on (its metadata's counts).

    A broken upstream export (half a day of logs, one shard missing) then stops the job before
    it trains on too little and publishes recommendations for a fraction of the users.
    """
    last: dict[str, Any] = {}
    if (current := store.current_name()) is not None:
        last = store.get(current).metadata.get("dataset") or {}
    shape = last.get("shape") or [None, None]  # the fit's metadata layout: shape and nnz
    last_users, last_interactions = shape[0], last.get("nnz")
    if last_users is None or last_interactions is None:
        reason = "no last good run with recorded counts to compare with"
        return VolumeDecision(True, users, interactions, None, None, max_drop, reason)
    drops = {
        "users": 1 - users / max(last_users, 1),
        "interactions": 1 - interactions / max(last_interactions, 1),
    }
    worst = max(drops, key=lambda name: drops[name])
    accept = drops[worst] <= max_drop
    reason = (
        f"users {users:,} (last good {last_users:,}), interactions {interactions:,} (last good "
        f"{last_interactions:,}): {worst} {'fell' if drops[worst] > 0 else 'changed'} by "
        f"{drops[worst]:.1%}, {'within' if accept else 'more than'} the allowed {max_drop:.0%}"
    )
    return VolumeDecision(
        accept, users, interactions, last_users, last_interactions, max_drop, reason
    )
