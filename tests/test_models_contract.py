"""One behavioural contract every registered model must meet.

The data is two disjoint blocks: block-A users only touch block-A items, block-B users only
block-B items, and block A has more users (so its items are also the most popular). Whatever a
model learns, a new user whose history is in block A must be recommended block-A items.
Models are found through the registry, so a newly registered model is tested automatically.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.errors import RecvaeError
from recvae.models import MODEL_CLASSES, load_model, model_class

N_ITEMS_PER_BLOCK = 10
USERS_A, USERS_B = 40, 30
N_ITEMS = 2 * N_ITEMS_PER_BLOCK

# Small, fast settings for each model on this toy matrix; models not listed use their defaults.
FAST_SETTINGS: dict[str, dict] = {
    "als": {"factors": 4, "iterations": 10, "num_threads": 1},
    "bpr": {"factors": 4, "iterations": 200, "learning_rate": 0.05, "num_threads": 1},
    "ease": {"l2": 1.0},
    "sparse_ease": {"l2": 1.0, "neighbours": 5},
    "gfcf": {"rank": 4},
    "multvae": {"epochs": 30, "batch_size": 16},
    "multdae": {"epochs": 30, "batch_size": 16},
    "recvae": {"epochs": 30, "batch_size": 16},
    "joint": {"epochs": 30, "batch_size": 16, "neighbours": 5, "threads": 1},
    "blend": {
        "members": [
            {"model": "recvae", "epochs": 30, "batch_size": 16},
            {"model": "ease", "l2": 1.0},
        ],
        "weights": [0.5, 0.5],
    },
}
# Models that ignore the user's history by design: they must still rank the popular block first.
NOT_PERSONALISED = {"popularity"}


MODELS = list(MODEL_CLASSES)


def _block_rows(n_users: int, block: int) -> list[np.ndarray]:
    """User u of a block takes 6 consecutive items (cyclically) starting at u: every item of the
    block is taken by exactly 60% of its users, so block A's items are all more popular."""
    offset = block * N_ITEMS_PER_BLOCK
    return [offset + (u + np.arange(6)) % N_ITEMS_PER_BLOCK for u in range(n_users)]


def _new_block_rows(n_users: int, block: int, rng: np.random.Generator) -> list[np.ndarray]:
    offset = block * N_ITEMS_PER_BLOCK
    return [offset + rng.choice(N_ITEMS_PER_BLOCK, 3, replace=False) for _ in range(n_users)]


def _matrix(rows: list[np.ndarray]) -> sp.csr_matrix:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate(rows)
    data = np.ones(len(indices), dtype=np.float32)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(len(rows), N_ITEMS))
    matrix.sort_indices()
    return matrix


@pytest.fixture(scope="module")
def train() -> sp.csr_matrix:
    return _matrix(_block_rows(USERS_A, 0) + _block_rows(USERS_B, 1))


@pytest.fixture(scope="module")
def new_users() -> tuple[sp.csr_matrix, np.ndarray]:
    """Histories of users never seen in training (3 items each) and their block."""
    rng = np.random.default_rng(8)
    rows = _new_block_rows(5, 0, rng) + _new_block_rows(5, 1, rng)
    return _matrix(rows), np.array([0] * 5 + [1] * 5)


@pytest.fixture(scope="module")
def fitted(train):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = model_class(name)(**FAST_SETTINGS.get(name, {})).fit(train)
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_registered_name_matches_class(name):
    assert model_class(name).name == name


@pytest.mark.parametrize("name", MODELS)
def test_scores_are_float32_one_row_per_history(name, fitted, new_users):
    history, _ = new_users
    scores = fitted(name).score(history)
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (history.shape[0], N_ITEMS)
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", MODELS)
def test_new_users_are_recommended_items_of_their_own_block(name, fitted, new_users):
    history, blocks = new_users
    scores = fitted(name).score(history)
    scores[history.nonzero()] = -np.inf  # rank only unseen items
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    top_block = top // N_ITEMS_PER_BLOCK
    checked = blocks == 0 if name in NOT_PERSONALISED else np.ones(len(blocks), bool)
    assert (top_block[checked] == blocks[checked, None]).all(), top


@pytest.mark.parametrize("name", MODELS)
def test_empty_history_row_gets_finite_scores(name, fitted):
    scores = fitted(name).score(sp.csr_matrix((2, N_ITEMS), dtype=np.float32))
    assert scores.shape == (2, N_ITEMS)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_give_identical_scores(name, fitted, new_users, tmp_path):
    history, _ = new_users
    model = fitted(name)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(history), model.score(history))


@pytest.mark.parametrize("name", MODELS)
def test_history_with_wrong_item_count_is_refused(name, fitted):
    wrong = sp.csr_matrix(np.ones((2, N_ITEMS + 3), dtype=np.float32))
    with pytest.raises(RecvaeError, match=f"{N_ITEMS}"):
        fitted(name).score(wrong)


@pytest.mark.parametrize("name", MODELS)
def test_history_with_nan_or_dense_input_is_refused(name, fitted):
    bad = sp.csr_matrix(np.ones((1, N_ITEMS), dtype=np.float32))
    bad.data[0] = np.nan
    with pytest.raises(RecvaeError, match="NaN"):
        fitted(name).score(bad)
    with pytest.raises(RecvaeError, match="sparse"):
        fitted(name).score(np.ones((1, N_ITEMS), dtype=np.float32))


@pytest.mark.parametrize("name", MODELS)
def test_item_chunked_top_k_equals_full_top_k(name, fitted, new_users):
    """Scoring item block by item block (a block size that does not divide the 20 items) gives
    the full export's items exactly and its scores to float tolerance, with seen items masked,
    allow/deny lists applied and a user without history on the popularity fallback."""
    import polars as pl

    from recvae.data.vocab import Vocabulary
    from recvae.models.base import score_blocks
    from recvae.scoring import ScoringOptions, UsersToScore, recommend_chunks

    history, _ = new_users
    history = sp.vstack([history, sp.csr_matrix((1, N_ITEMS), dtype=np.float32)]).tocsr()
    model = fitted(name)
    blocks = list(score_blocks(model, history, 7))
    assert [start for start, _ in blocks] == [0, 7, 14]
    np.testing.assert_allclose(
        np.hstack([b for _, b in blocks]), model.score(history), rtol=1e-5, atol=1e-5
    )
    users = UsersToScore(pl.Series("user", np.arange(history.shape[0])), history)
    items = Vocabulary(np.arange(N_ITEMS), name="item")
    popularity = np.asarray(history.sum(axis=0)).ravel().astype(np.float32)
    for settings in (
        {"k": 5},
        {"k": 8, "allow_items": np.arange(3, 17), "deny_items": np.array([4, 12])},
        {"k": N_ITEMS, "exclude_seen": False},
    ):
        frames = {}
        for block in (None, 7):
            options = ScoringOptions(chunk_size=4, item_block=block, **settings)
            chunks = recommend_chunks(model, users, items, options, "v1", popularity)
            frames[block] = pl.concat(list(chunks))
        full, chunked = frames[None], frames[7]
        assert chunked["user_id"].to_list() == full["user_id"].to_list()
        assert chunked["item_id"].to_list() == full["item_id"].to_list()
        np.testing.assert_allclose(chunked["score"], full["score"], rtol=1e-5, atol=1e-5)
