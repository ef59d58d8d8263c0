"""Sampled softmax for the multinomial autoencoders (Mult-VAE, Mult-DAE): `softmax = "sampled"`.

The full multinomial loss needs a softmax over every item for every user of a batch, so an
update's cost and memory grow with the catalogue. Sampled, each update scores only a candidate
set shared by the batch: every item some user of the batch interacted with (its positives,
scored exactly) plus `negatives` items drawn with replacement from a proposal q (item
popularity in the training matrix, or uniform). A drawn item j that is not a positive of the
batch stands for the items that were not drawn: its logit gets the importance-sampling
correction

    logit_j + log(count_j) - log(negatives * q_j)

(count_j: how often it was drawn; negatives * q_j: how often it is expected to be drawn), so
that the sum of exp(corrected logits) over the drawn items estimates, without bias, the sum of
exp(logits) over all non-positive items, i.e. the rest of the softmax's denominator (the
"log-proposal correction" of sampled softmax; Jean et al. 2015, FastVAE, Chen et al. 2021).
The multinomial NLL is then taken over the candidates. With `negatives` >= the number of items
nothing is sampled: the candidates are all items, uncorrected, and the loss is the full one.

Only the candidates' output-layer columns get a gradient. Scoring is unchanged (exact, every
item). With the row-wise optimiser (`optimizer = "lazy_adam"`, the default under sampled
softmax; recvae.models.lazy_adam) that gradient is kept as the candidates' columns alone and
only they are stepped; with dense Adam it is an items-sized table of zeros around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.device import to_device
from recvae.models.torch_sparse import GatheredOutputLinear, MultinomialNLL


@dataclass(frozen=True)
class Candidates:
    """The items one update scores: the batch's positives first (sorted), then the drawn
    negatives, with each candidate's additive logit correction (0 for the positives)."""

    items: np.ndarray  # (C,) int64 item indices, no repeats
    correction: np.ndarray  # (C,) float32
    n_positives: int

    def positions(self, item_indices: np.ndarray) -> np.ndarray:
        """Where each of the batch's positive items sits among the candidates."""
        return np.searchsorted(self.items[: self.n_positives], item_indices)


class NegativeSampler:
    """Draws the shared negatives of each batch from a fixed proposal over the items."""

    def __init__(self, train: sp.csr_matrix, negatives: int, proposal: str) -> None:
        n_items = train.shape[1]
        if proposal == "popularity":
            counts = np.bincount(train.indices, minlength=n_items).astype(np.float64)
        elif proposal == "uniform":
            counts = np.ones(n_items, dtype=np.float64)
        else:
            raise ValueError(f"proposal must be 'popularity' or 'uniform', got {proposal!r}")
        self.n_items = n_items
        self.negatives = negatives
        self.probabilities = counts / counts.sum()
        self._weights = torch.from_numpy(self.probabilities)

    @property
    def samples_everything(self) -> bool:
        """True when every item is a candidate anyway: the loss is the exact full one."""
        return self.negatives >= self.n_items

    def draw(self, positive_items: np.ndarray, generator: torch.Generator) -> Candidates:
        """The candidates of a batch whose interactions are on `positive_items`."""
        if self.samples_everything:
            items = np.arange(self.n_items, dtype=np.int64)
            return Candidates(items, np.zeros(self.n_items, np.float32), self.n_items)
        positives = np.unique(positive_items).astype(np.int64)
        draws = torch.multinomial(
            self._weights, self.negatives, replacement=True, generator=generator
        ).numpy()
        drawn, counts = np.unique(draws, return_counts=True)
        keep = ~np.isin(drawn, positives, assume_unique=True)  # positives are scored exactly
        drawn, counts = drawn[keep], counts[keep]
        expected = self.negatives * self.probabilities[drawn]
        correction = (np.log(counts) - np.log(expected)).astype(np.float32)
        items = np.concatenate([positives, drawn])
        corrections = np.concatenate([np.zeros(len(positives), np.float32), correction])
        return Candidates(items, corrections, len(positives))


def sampled_multinomial_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    batch: sp.csr_matrix,
    candidates: Candidates,
    row_grads: Any = None,
) -> torch.Tensor:
    """Multinomial NLL of the batch's rows over the candidate items only (mean over rows).

    hidden: the output layer's input (users x hidden); weight (hidden x items) and bias (items):
    the output layer, of which only the candidates' columns are used (and get a gradient).
    row_grads (a recvae.models.lazy_adam.RowGradients): receives the weight's and bias's
    gradient as the candidates' columns only, instead of autograd's items-sized `.grad`.
    """
    device = hidden.device
    columns = to_device(candidates.items, device)
    if row_grads is None:
        logits = torch.addmm(bias[columns], hidden, weight[:, columns])
    else:
        logits = GatheredOutputLinear.apply(hidden, weight, bias, columns, row_grads)
    logits = logits + to_device(candidates.correction, device)
    rows = np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr))
    positions = candidates.positions(batch.indices).astype(np.int64)
    return MultinomialNLL.apply(
        logits, to_device(rows, device), to_device(positions, device), to_device(batch.data, device)
    )
