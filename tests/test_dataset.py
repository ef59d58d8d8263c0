import json

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.data.dataset import Dataset
from recvae.data.split import weak_generalization
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.io import atomic_dir


def test_vocabulary_refuses_unknown_ids_instead_of_minus_one():
    # Regression (#12 item 8): index_of used to return -1, and matrix[-1] is the last row.
    vocab = Vocabulary(["b", "a", "c"], name="item_id")
    assert vocab.index_of(["a", "c", "b"]).tolist() == [1, 2, 0]
    with pytest.raises(RecvaeError, match=r"1 item_id id\(s\) not in the item_id vocabulary.*'zz'"):
        vocab.index_of(["a", "zz", "c", "b"])
    assert vocab.original(np.array([2, 0])).to_list() == ["c", "b"]


def test_vocabulary_lookup_returns_known_indices_and_a_mask():
    vocab = Vocabulary(["b", "a", "c"], name="item_id")
    known = vocab.lookup(["a", "zz", "c", "b"])
    assert known.found.tolist() == [True, False, True, True]
    assert known.indices.tolist() == [1, 2, 0]  # no sentinel: only the known ids
    assert known.unknown.to_list() == ["zz"]


def test_vocabulary_with_integer_ids_accepts_string_queries():
    vocab = Vocabulary(np.array([10, 20, 30]), name="item_id")
    assert vocab.lookup([30, 11]).indices.tolist() == [2]
    assert vocab.lookup([30, 11]).unknown.to_list() == [11]
    assert vocab.index_of(["20"]).tolist() == [1]


def test_vocabulary_rejects_duplicates():
    with pytest.raises(RecvaeError, match="duplicate"):
        Vocabulary([1, 1])


def test_dataset_round_trip_with_split(tmp_path):
    matrix = sp.random(20, 8, density=0.4, format="csr", random_state=0, dtype=np.float32)
    matrix.data[:] = 1
    dataset = Dataset(
        matrix,
        Vocabulary([f"u{i}" for i in range(20)], "user_id"),
        Vocabulary(np.arange(100, 108), "item_id"),
        manifest={"source": "test"},
        split=weak_generalization(matrix, seed=0),
    )
    dataset.save(tmp_path / "ds")
    loaded = Dataset.load(tmp_path / "ds")
    assert (loaded.matrix != dataset.matrix).nnz == 0
    assert loaded.users == dataset.users and loaded.items == dataset.items
    assert loaded.split is not None
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["fingerprint"] == dataset.fingerprint() and manifest["nnz"] == matrix.nnz


def test_loading_a_non_dataset_says_what_to_do(tmp_path):
    with pytest.raises(RecvaeError, match="recvae ingest"):
        Dataset.load(tmp_path)


def test_atomic_dir_leaves_destination_untouched_on_failure(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (dest / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from recvae.io import atomic_file

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
