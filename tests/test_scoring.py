import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.scoring import (
    ScoringOptions,
    UsersToScore,
    align_items,
    recommend_chunks,
    select_users,
    shard_users,
)


class FixedScores:
    """Every user scores items by a fixed preference vector (item 0 best)."""

    name = "fixed"

    def __init__(self, preferences):
        self.preferences = np.asarray(preferences, np.float32)
        self.calls = []

    def score(self, history):
        self.calls.append(history.shape[0])
        return np.tile(self.preferences, (history.shape[0], 1))


ITEMS = Vocabulary(["a", "b", "c", "d", "e"], name="item")
POPULARITY = np.array([1, 2, 3, 4, 5], np.float32)  # popularity prefers e, d, c, ...


def users(rows, ids=None):
    matrix = sp.csr_matrix(np.array(rows, np.float32))
    ids = ids if ids is not None else [f"u{i}" for i in range(len(rows))]
    return UsersToScore(pl.Series("user", ids), matrix)


def run(model, batch, **options):
    frames = list(
        recommend_chunks(model, batch, ITEMS, ScoringOptions(**options), "v0007", POPULARITY)
    )
    return pl.concat(frames)


def test_top_k_excludes_seen_items_and_uses_original_ids():
    model = FixedScores([5, 4, 3, 2, 1])
    out = run(model, users([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0]]), k=2)
    assert out["user_id"].to_list() == ["u0", "u0", "u1", "u1"]
    assert out["item_id"].to_list() == ["b", "c", "a", "d"]
    assert out["rank"].to_list() == [1, 2, 1, 2]
    assert out["score"].to_list() == [4.0, 3.0, 5.0, 2.0]
    assert set(out["model_version"]) == {"v0007"}
    assert not out["fallback"].any()


def test_include_seen_when_asked():
    out = run(FixedScores([5, 4, 3, 2, 1]), users([[1, 0, 0, 0, 0]]), k=2, exclude_seen=False)
    assert out["item_id"].to_list() == ["a", "b"]


def test_allow_and_deny_lists_restrict_candidates_and_never_emit_minus_inf():
    batch = users([[0, 1, 0, 0, 0]])
    model = FixedScores([5, 4, 3, 2, 1])
    allowed = run(model, batch, k=3, allow_items=np.array([1, 3, 4]))
    # b is allowed but seen: only d and e remain, so fewer than k rows
    assert allowed["item_id"].to_list() == ["d", "e"]
    denied = run(model, batch, k=3, deny_items=np.array([0]))
    assert denied["item_id"].to_list() == ["c", "d", "e"]
    assert np.isfinite(denied["score"].to_numpy()).all()


def test_users_without_history_get_popularity_fallback_flagged():
    model = FixedScores([5, 4, 3, 2, 1])
    out = run(model, users([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]), k=2)
    fallback = out.filter(pl.col("user_id") == "u0")
    assert fallback["item_id"].to_list() == ["e", "d"]
    assert fallback["fallback"].all()
    assert not out.filter(pl.col("user_id") == "u1")["fallback"].any()
    assert model.calls == [1]  # the model only scored the user with a history


def test_chunks_bound_the_scored_batch_and_do_not_change_results():
    rng = np.random.default_rng(0)
    rows = (rng.random((23, 5)) < 0.3).astype(np.float32)
    model = FixedScores([5, 4, 3, 2, 1])
    whole = run(model, users(rows), k=3, chunk_size=100)
    model_small = FixedScores([5, 4, 3, 2, 1])
    chunked = run(model_small, users(rows), k=3, chunk_size=4)
    assert max(model_small.calls) <= 4
    assert whole.equals(chunked)


def test_shards_are_disjoint_and_cover_every_user_in_order():
    for n_users, num_shards in [(10, 3), (7, 7), (3, 5), (0, 2)]:
        shards = [shard_users(n_users, i, num_shards) for i in range(num_shards)]
        assert np.concatenate(shards).tolist() == list(range(n_users))
    with pytest.raises(RecvaeError, match="--shard must be between 0 and 2"):
        shard_users(10, 3, 3)


def test_align_items_maps_columns_and_drops_unknown_items():
    source = Vocabulary(["z", "c", "a"], name="item")
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]], np.float32))
    aligned = align_items(matrix, source, ITEMS)
    assert aligned.shape == (2, 5)
    assert aligned.toarray().tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]


def test_select_users_keeps_requested_order_and_empty_rows_for_unknown_users():
    ids = pl.Series("user", [10, 20, 30])
    history = sp.csr_matrix(np.eye(3, 5, dtype=np.float32))
    picked = select_users(ids, history, pl.Series(["30", "99", "10"]))
    assert picked.ids.to_list() == [30, 99, 10]
    assert picked.history.toarray()[:, :3].tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    with pytest.raises(RecvaeError, match="cannot be read as the history's user id type"):
        select_users(ids, history, pl.Series(["x"]))


def test_model_with_nan_scores_is_refused():
    with pytest.raises(RecvaeError, match="NaN"):
        run(FixedScores([np.nan, 1, 1, 1, 1]), users([[1, 0, 0, 0, 0]]), k=2)


def test_scorer_over_other_items_maps_columns_and_scores_unknown_items_minus_inf():
    from recvae.scoring import scorer_over_items

    model = FixedScores([5, 4, 3, 2, 1])  # over ITEMS a..e
    today = Vocabulary(["c", "new", "a"], name="item")
    score = scorer_over_items(model, ITEMS, today)
    out = score(sp.csr_matrix(np.array([[0, 1, 1]], np.float32)))
    assert out.tolist() == [[3.0, -np.inf, 5.0]]


def test_read_ids_keeps_leading_zeros_and_select_users_casts_to_history_type(tmp_path):
    from recvae.scoring import read_ids

    (tmp_path / "users.txt").write_text("00123\n7\n")
    ids = read_ids(tmp_path / "users.txt", "user list")
    assert ids.to_list() == ["00123", "7"]
    history = sp.csr_matrix(np.eye(2, 5, dtype=np.float32))
    picked = select_users(pl.Series("user", [7, 123]), history, ids)
    assert picked.ids.to_list() == [123, 7]
    with pytest.raises(RecvaeError, match="does not exist"):
        read_ids(tmp_path / "missing.txt", "user list")


# ---- item-chunked top-K (ScoringOptions.item_block) --------------------------------------------


class TiedScores(FixedScores):
    """Integer scores with many ties per row, and its own item-block scorer."""

    def __init__(self, n_items):
        super().__init__(np.zeros(n_items))
        self.block_widths = []

    def score(self, history):
        rows = np.arange(history.shape[0])[:, None]
        return ((rows + np.arange(history.shape[1])) % 3).astype(np.float32)

    def score_blocks(self, history, block_size):
        full = self.score(history)
        for start in range(0, full.shape[1], block_size):
            self.block_widths.append(full[:, start : start + block_size].shape[1])
            yield start, full[:, start : start + block_size]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("with_own_blocks", [True, False])
def test_item_blocks_give_exactly_the_unblocked_export(block, with_own_blocks):
    rng = np.random.default_rng(block)
    rows = (rng.random((17, 5)) < 0.3).astype(np.float32)
    rows[3] = 0  # a popularity fallback user
    model = TiedScores(5) if with_own_blocks else FixedScores([1, 2, 2, 1, 0])
    for options in (
        {"k": 3},
        {"k": 5, "exclude_seen": False},
        {"k": 4, "allow_items": np.array([0, 2, 3, 4])},
        {"k": 2, "deny_items": np.array([1])},
    ):
        whole = run(model, users(rows), chunk_size=6, **options)
        blocked = run(model, users(rows), chunk_size=6, item_block=block, **options)
        assert whole.equals(blocked), (options, whole, blocked)
    if with_own_blocks:
        assert max(model.block_widths) <= block


def test_item_block_must_be_positive():
    with pytest.raises(RecvaeError, match="item block must be at least 1, got 0"):
        ScoringOptions(item_block=0)


# ---- scores handed over as tensors (masking and top-K where the model scores) ----------------


class TensorScores(FixedScores):
    """FixedScores handing its scores over as torch tensors, as a device-scoring model does."""

    def __init__(self, preferences):
        super().__init__(preferences)
        self.tensor_calls = 0

    def score_tensor(self, history):
        import torch

        self.tensor_calls += 1
        return torch.from_numpy(self.score(history))

    def score_tensor_blocks(self, history, block_size):
        scores = self.score_tensor(history)
        for start in range(0, scores.shape[1], block_size):
            yield start, scores[:, start : start + block_size]


@pytest.mark.parametrize("block", [None, 2])
def test_tensor_scores_rank_exactly_like_numpy_scores(block):
    """A model that hands over tensors (score_tensor) gets the export its NumPy scores give:
    same masking of seen, allowed and denied items, ties by index, popularity fallback."""
    preferences = [3, 5, 5, 1, 5]
    batch = users([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0]])
    options = {"k": 3, "deny_items": np.array([2]), "item_block": block}
    expected = run(FixedScores(preferences), batch, **options)
    model = TensorScores(preferences)
    got = run(model, batch, **options)
    assert model.tensor_calls == 1
    assert got.equals(expected)
    # hand-checked: u0 saw a, c denied -> b, e (tie at 5 broken by index) then d
    assert got.filter(pl.col("user_id") == "u0")["item_id"].to_list() == ["b", "e", "d"]
    assert got.filter(pl.col("user_id") == "u1")["fallback"].all()


def test_tensor_scores_are_checked_like_numpy_scores():
    import torch

    class Broken(TensorScores):
        def score_tensor(self, history):
            scores = torch.from_numpy(self.score(history))
            scores[0, 1] = torch.nan
            return scores

    with pytest.raises(RecvaeError, match="NaN or infinite"):
        run(Broken([1, 2, 3, 4, 5]), users([[1, 0, 0, 0, 0]]), k=2)


def _reference_top_k(scores, history, k):
    """Brute force: dense mask of seen items, stable sort by score (ties by lower index)."""
    scores = np.array(scores, dtype=np.float32)
    scores[history.toarray() > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("name", ["multvae", "ease"])
@pytest.mark.parametrize("block", [None, 7])
def test_trained_model_export_equals_brute_force_top_k_on_cpu(name, block):
    """The device path on the CPU (score_tensor -> torch mask -> torch top-K) gives exactly the
    brute-force top-K of the model's own NumPy scores, scores and ties included."""
    from recvae.models import build_model

    rng = np.random.default_rng(3)
    train = sp.random(60, 25, density=0.2, format="csr", random_state=3, dtype=np.float32)
    train.data[:] = 1.0
    settings = {"epochs": 2, "threads": 1, "seed": 0} if name == "multvae" else {}
    model = build_model(name, settings).fit(train)
    history = train[rng.permutation(60)[:40]]
    items = Vocabulary([f"i{j}" for j in range(25)], name="item")
    batch = UsersToScore(pl.Series("user", [f"u{i}" for i in range(40)]), history)
    frames = recommend_chunks(
        model, batch, items, ScoringOptions(k=10, chunk_size=16, item_block=block), "v1",
        np.zeros(25, np.float32),
    )  # fmt: skip
    out = pl.concat(list(frames))
    if block is None:
        scores = model.score(history)
    else:  # a block's product may round differently from the full one (MKL): same blocks here
        scores = np.hstack([part for _, part in model.score_blocks(history, block)])
    order, values = _reference_top_k(scores, history, 10)
    has_history = np.diff(history.indptr) > 0
    for row in np.flatnonzero(has_history):
        mine = out.filter(pl.col("user_id") == f"u{row}")
        finite = np.isfinite(values[row])
        assert mine["item_id"].to_list() == [f"i{j}" for j in order[row][finite]]
        assert mine["score"].to_list() == values[row][finite].tolist()
