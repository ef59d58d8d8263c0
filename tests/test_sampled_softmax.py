"""Sampled softmax for Mult-VAE / Mult-DAE (recvae.models.sampled_softmax)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.errors import RecvaeError
from recvae.models.sampled_softmax import NegativeSampler, sampled_multinomial_nll
from recvae.models.torch_sparse import MultinomialNLL
from recvae.models.vae import MultDAE, MultVAE

N_ITEMS, HIDDEN = 12, 5


def _batch(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((6, N_ITEMS)) < 0.25).astype(np.float32)
    dense[:, 0] = 1.0  # no empty rows
    return sp.csr_matrix(dense)


def _layer(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(6, HIDDEN, generator=generator)
    weight = torch.randn(HIDDEN, N_ITEMS, generator=generator, requires_grad=True)
    bias = torch.randn(N_ITEMS, generator=generator, requires_grad=True)
    return hidden, weight, bias


def _full_nll(hidden, weight, bias, batch) -> torch.Tensor:
    rows = torch.from_numpy(np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr)))
    cols = torch.from_numpy(batch.indices.astype(np.int64))
    logits = torch.addmm(bias, hidden, weight)
    return MultinomialNLL.apply(logits, rows, cols, torch.from_numpy(batch.data))


@pytest.mark.parametrize("proposal", ["popularity", "uniform"])
@pytest.mark.parametrize("negatives", [N_ITEMS, 10 * N_ITEMS])
def test_sampled_loss_equals_full_loss_when_every_item_is_sampled(proposal, negatives):
    batch = _batch()
    hidden, weight, bias = _layer()
    sampler = NegativeSampler(batch, negatives, proposal)
    candidates = sampler.draw(batch.indices, torch.Generator().manual_seed(1))
    assert sampler.samples_everything and len(candidates.items) == N_ITEMS
    sampled = sampled_multinomial_nll(hidden, weight, bias, batch, candidates)
    full = _full_nll(hidden, weight, bias, batch)
    assert sampled.item() == pytest.approx(full.item(), rel=1e-6)
    sampled.backward()
    sampled_grad = weight.grad.clone()
    weight.grad = None
    full.backward()
    torch.testing.assert_close(sampled_grad, weight.grad)


def test_negatives_get_the_log_proposal_correction_and_positives_none():
    # popularity: item 0 in 3 rows, item 1 in 1 row, the rest never; a batch whose only
    # positive is item 2 (never in the training matrix, so never drawn)
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], np.float32))
    sampler = NegativeSampler(train, negatives=3, proposal="popularity")
    np.testing.assert_allclose(sampler.probabilities, [0.75, 0.25, 0, 0])
    candidates = sampler.draw(np.array([2, 2]), torch.Generator().manual_seed(0))
    assert candidates.items[0] == 2 and candidates.correction[0] == 0.0
    drawn = candidates.items[1:]
    assert set(drawn) <= {0, 1}  # items the proposal gives no mass are never drawn
    draws = torch.multinomial(
        torch.tensor([0.75, 0.25, 0, 0], dtype=torch.float64),
        3,
        replacement=True,
        generator=torch.Generator().manual_seed(0),
    ).numpy()
    for item, correction in zip(drawn, candidates.correction[1:], strict=True):
        count = int((draws == item).sum())
        expected = 3 * [0.75, 0.25][item]
        assert correction == pytest.approx(np.log(count) - np.log(expected), rel=1e-6)


def test_corrected_negatives_estimate_the_rest_of_the_softmax_denominator():
    """Averaged over draws, sum(exp(corrected logit)) over the drawn negatives is the sum of
    exp(logit) over all items that are not positives (the correction's purpose)."""
    rng = np.random.default_rng(0)
    dense = (rng.random((50, 30)) < 0.2 + 0.6 * rng.random(30)).astype(np.float32)
    dense[0] = 1.0  # every item has some popularity, so the proposal covers them all
    train = sp.csr_matrix(dense)
    logits = rng.normal(size=30)
    positives = np.array([0, 3])
    sampler = NegativeSampler(train, negatives=8, proposal="popularity")
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(3000):
        c = sampler.draw(positives, generator)
        negatives = slice(c.n_positives, None)
        estimates.append(np.exp(logits[c.items[negatives]] + c.correction[negatives]).sum())
    rest = np.exp(np.delete(logits, positives)).sum()
    standard_error = np.std(estimates) / np.sqrt(len(estimates))
    assert standard_error < 0.1 * rest
    assert abs(np.mean(estimates) - rest) < 4 * standard_error


def test_gradient_reaches_only_the_sampled_columns():
    batch = _batch()
    hidden, weight, bias = _layer()
    sampler = NegativeSampler(batch, negatives=2, proposal="uniform")
    candidates = sampler.draw(batch.indices, torch.Generator().manual_seed(3))
    assert len(candidates.items) < N_ITEMS
    sampled_multinomial_nll(hidden, weight, bias, batch, candidates).backward()
    touched = np.zeros(N_ITEMS, bool)
    touched[candidates.items] = True
    assert (weight.grad[:, ~touched] == 0).all() and (bias.grad[~touched] == 0).all()
    assert (weight.grad[:, touched].abs().sum(0) > 0).all()


def test_sampled_training_with_every_item_sampled_matches_full_training():
    train = sp.csr_matrix((np.random.default_rng(2).random((30, N_ITEMS)) < 0.3).astype("f4"))
    settings = {"epochs": 2, "batch_size": 8, "hidden_dims": (8,), "latent_dim": 4}
    full = MultVAE(**settings).fit(train)
    # dense Adam on both (lazy Adam, sampled's default, differs when a batch misses an item:
    # tests/test_lazy_adam.py)
    sampled = MultVAE(softmax="sampled", negatives=N_ITEMS, optimizer="adam", **settings)
    sampled.fit(train)
    np.testing.assert_allclose(sampled.score(train), full.score(train), rtol=1e-4, atol=1e-5)


def _two_blocks() -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """40 items in two blocks of 20: users of a block only touch its items."""
    rng = np.random.default_rng(5)
    rows, blocks = [], []
    for user in range(120):
        block = user % 2
        rows.append(block * 20 + rng.choice(20, 6, replace=False))
        blocks.append(block)
    dense = np.zeros((120, 40), np.float32)
    for user, items in enumerate(rows):
        dense[user, items] = 1.0
    return sp.csr_matrix(dense[:100]), sp.csr_matrix(dense[100:]), np.array(blocks[100:])


@pytest.mark.parametrize(
    ("model_class", "proposal"), [(MultVAE, "popularity"), (MultDAE, "uniform")]
)
def test_sampled_softmax_model_learns_the_block_structure(model_class, proposal):
    """Untrained (lr 1e-9), about a third of the top 5 is in the user's block; trained with 6
    sampled negatives out of 40 items, all of it."""
    train, new_users, blocks = _two_blocks()
    model = model_class(
        softmax="sampled", negatives=6, proposal=proposal, epochs=25, batch_size=20, seed=1
    ).fit(train)
    scores = model.score(new_users)
    assert scores.shape == (20, 40)  # scoring stays exact: every item
    scores[new_users.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5] // 20
    assert (top == blocks[:, None]).all()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"softmax": "partial"}, "softmax: expected one of 'full', 'sampled', got 'partial'"),
        ({"negatives": 0}, "negatives must be a positive number of sampled items, got 0"),
        ({"proposal": "zipf"}, "proposal: expected one of 'popularity', 'uniform', got 'zipf'"),
        (
            {"softmax": "sampled", "likelihood": "gaussian"},
            "softmax = 'sampled' needs likelihood = 'multinomial'",
        ),
    ],
)
def test_bad_sampled_softmax_settings_are_one_clear_error(settings, words):
    for model_class in (MultVAE, MultDAE):
        with pytest.raises(RecvaeError, match=words.replace("(", r"\(").replace(")", r"\)")):
            model_class(**settings)
