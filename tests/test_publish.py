"""The publish step: promotion and export are one step, whatever moment a run dies at.

A crash is simulated by making one step raise a BaseException that nothing in recvae catches
(like a kill, nothing after it runs); the next run's `recover` must leave `current` and the
published export belonging to the same version.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.artifact import Artifact
from recvae.data.dataset import Dataset
from recvae.data.split import strong_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.models.popularity import Popularity
from recvae.registry import ModelStore
from recvae.workflow import publish as publish_module
from recvae.workflow.publish import (
    ExportTarget,
    publish,
    published_version,
    read_journal,
    recover,
    volume_gate,
)


class Crash(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in recvae turns it into cleanup."""


def crash(*args, **kwargs):
    raise Crash


@pytest.fixture
def setting(tmp_path):
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((60, 30)) < 0.3).astype(np.float32))
    dataset = Dataset(matrix, Vocabulary([f"u{i}" for i in range(60)]), Vocabulary(list(range(30))))
    dataset.save(tmp_path / "dataset")
    split = strong_generalization(matrix, n_valid_users=15, n_test_users=0, seed=0)
    store = ModelStore(tmp_path / "store")
    target = ExportTarget(dest=tmp_path / "out" / "recs.parquet", fmt="parquet", k=5)

    def run(counts: dict | None = None) -> object:
        artifact = Artifact(Popularity().fit(split.train), dataset.items, {"dataset": counts})
        history = tmp_path / "dataset"
        return publish(store, artifact, split.train, split.valid, history, target, "ndcg@10")

    run()  # v0001 is current and published
    assert (store.current_name(), published_version(target)) == ("v0001", "v0001")
    return store, target, run


def state(store: ModelStore, target: ExportTarget) -> tuple[str | None, str | None]:
    return store.current_name(), published_version(target)


@pytest.mark.parametrize(
    ("step", "after_crash", "after_recovery"),
    [
        # killed while staging the export: nothing decided, nothing visible changed
        ("stage_export", ("v0001", "v0001"), ("v0001", "v0001")),
        # killed after staging, before the journal: the staged export is discarded
        ("write_journal", ("v0001", "v0001"), ("v0001", "v0001")),
        # killed after the journal, before promoting: the next run completes the publication
        ("promote", ("v0001", "v0001"), ("v0002", "v0002")),
        # killed between the two renames: the only moment they disagree, completed next run
        ("swap_in_staged_export", ("v0002", "v0001"), ("v0002", "v0002")),
    ],
)
def test_a_killed_publish_leaves_or_recovers_current_and_export_together(
    setting, monkeypatch, step, after_crash, after_recovery
):
    store, target, run = setting
    with monkeypatch.context() as patch:
        if step == "promote":
            patch.setattr(ModelStore, "promote", crash)
        elif step == "stage_export":
            patch.setattr("recvae.export.write_export", crash)
        else:
            patch.setattr(publish_module, step, crash)
        with pytest.raises(Crash):
            run()
    assert state(store, target) == after_crash
    note = recover(store, target)
    assert state(store, target) == after_recovery
    assert read_journal(store) is None
    assert not list(target.dest.parent.glob(".recs.parquet.publish-*"))
    if after_recovery[0] == "v0002":
        assert note == "completed the interrupted publication of v0002"
        assert store.promotions()["stack"][-1] == "v0002"
    # The next publication works normally from whatever state was left.
    run()
    assert state(store, target) == ("v0003", "v0003")


def test_recovery_abandons_a_publication_when_current_was_changed_by_hand(setting, monkeypatch):
    store, target, run = setting
    run()  # v0002 current
    with monkeypatch.context() as patch:
        patch.setattr(ModelStore, "promote", crash)
        with pytest.raises(Crash):
            run()  # v0003 decided, not promoted
    store.rollback()  # an operator puts v0001 back meanwhile
    note = recover(store, target)
    assert note.startswith("abandoned the interrupted publication of v0003: current is v0001")
    assert store.current_name() == "v0001" and read_journal(store) is None
    assert not list(target.dest.parent.glob(".recs.parquet.publish-*"))


def test_a_refused_model_is_registered_but_changes_nothing(setting, monkeypatch):
    store, target, run = setting
    before = target.dest.read_bytes()
    monkeypatch.setattr(publish_module, "quality_gate", _refuse)
    result = run()
    assert result.status == "refused" and result.version == "v0002"
    assert state(store, target) == ("v0001", "v0001") and target.dest.read_bytes() == before
    assert store.version_names() == ["v0001", "v0002"]


def _refuse(metric, new, current, tolerance):
    from recvae.registry import GateDecision

    return GateDecision(False, metric, new, current, tolerance, "refused for the test")


@pytest.mark.parametrize(
    ("users", "interactions", "accept"),
    [(100, 1000, True), (50, 500, True), (49, 1000, False), (100, 499, False), (300, 9000, True)],
)
def test_volume_gate_compares_with_the_current_models_data(setting, users, interactions, accept):
    store, _, run = setting
    run({"shape": [100, 30], "nnz": 1000})  # v0002, current, trained on 100 users / 1000
    decision = volume_gate(store, users, interactions, max_drop=0.5)
    assert decision.accept is accept
    assert (decision.last_users, decision.last_interactions) == (100, 1000)


def test_volume_gate_accepts_when_there_is_nothing_to_compare_with(tmp_path):
    decision = volume_gate(ModelStore(tmp_path / "store"), 10, 10, max_drop=0.5)
    assert decision.accept and decision.last_users is None


def test_csv_export_records_its_version(setting, tmp_path):
    store, _, _ = setting
    target = ExportTarget(dest=tmp_path / "recs.csv", fmt="csv", k=3)
    publish_module.stage_export(store, "v0001", tmp_path / "dataset", target)
    assert published_version(target) is None  # staged only: nothing published yet
    publish_module.commit(store, "v0001", target)
    assert published_version(target) == "v0001"


def test_a_duckdb_table_that_is_not_an_export_is_never_replaced(setting, tmp_path):
    import duckdb

    store, _, _ = setting
    database = tmp_path / "app.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE recommendations AS SELECT 42 AS answer")
    target = ExportTarget(dest=database, fmt="duckdb", k=3)
    with pytest.raises(RecvaeError, match="refusing to replace table recommendations"):
        publish_module.stage_export(store, "v0001", tmp_path / "dataset", target)
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT answer FROM recommendations").fetchall() == [(42,)]
