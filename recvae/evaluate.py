"""Evaluation, written once and shared by every model, protocol, job and benchmark.

For each batch of evaluated users: score their histories, mask the history items, take the top
max(K) items over all items (no sampled negatives) and compute every metric at every K.
Masking and the top-K run where the scores are (recvae.topk): a model scoring on a GPU keeps
its (users x items) scores there and only the top max(K) item ids reach the host.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.metrics import METRIC_FUNCTIONS, mean_and_stderr
from recvae.models.base import score_tensor
from recvae.topk import Scores, as_tensor, mask_seen_tensor, top_k_tensor

DEFAULT_KS = (20, 50, 100)

# history -> scores; a torch tensor (on any device) is handed over: it is masked in place
Scorer = Callable[[sp.csr_matrix], Scores]


@dataclass
class Evaluation:
    """Mean, standard error and per-user values of every metric, keyed like 'ndcg@20'."""

    means: dict[str, float]
    stderrs: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    users: int

    def __getitem__(self, key: str) -> float:
        return self.means[key]

    def as_dict(self) -> dict[str, float | int]:
        return {**self.means, "users": self.users}


def evaluate(
    scorer: Scorer | object,
    holdout: Holdout,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 1000,
) -> Evaluation:
    """Score `holdout`'s histories with a model (or any history -> scores function) and rank.

    Only users with at least one held-out item count. Raises on a holdout with no such users or a
    K larger than the number of items, rather than returning a misleading number.
    """
    if callable(scorer):
        score = scorer
    else:  # a model: scored where it runs (recvae.models.base.score_tensor)
        def score(history: sp.csr_matrix) -> torch.Tensor:
            return score_tensor(scorer, history)  # type: ignore[arg-type]

    results = evaluate_candidates(lambda history: {None: score(history)}, holdout, ks, batch_size)
    return results[None]


def evaluate_candidates(
    score_candidates: Callable[[sp.csr_matrix], Mapping[Hashable, Scores]],
    holdout: Holdout,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 1000,
) -> dict[Hashable, Evaluation]:
    """`evaluate` for several candidates scored together: `score_candidates(history)` returns
    each candidate's scores for one batch of users (e.g. every weight vector of a blend, whose
    members score the batch once), and each candidate is ranked and measured like `evaluate`."""
    ks = sorted(set(int(k) for k in ks))
    holdout = holdout.with_heldout_users_only()
    if holdout.history.shape[0] == 0:
        raise RecvaeError("the evaluation split has no users with held-out items")
    if ks[0] < 1 or ks[-1] > holdout.n_items:
        raise RecvaeError(f"K must be between 1 and the number of items ({holdout.n_items})")
    per_user: dict[Hashable, dict[str, list[np.ndarray]]] = {}
    for start in range(0, holdout.history.shape[0], batch_size):
        history = holdout.history[start : start + batch_size]
        heldout = holdout.heldout[start : start + batch_size]
        for name, candidate in score_candidates(history).items():
            # NumPy scores are copied (the caller may keep them); tensors are handed over
            scores = (
                as_tensor(candidate)
                if isinstance(candidate, torch.Tensor)
                else torch.from_numpy(np.array(candidate, dtype=np.float32, copy=True))
            )
            if tuple(scores.shape) != history.shape:
                raise RecvaeError(
                    f"model returned scores {tuple(scores.shape)} for history {history.shape}"
                )
            lists = per_user.setdefault(name, {})
            for key, values in batch_metrics(scores, history, heldout, ks).items():
                lists.setdefault(key, []).append(values)
    return {name: _summary(lists, holdout.history.shape[0]) for name, lists in per_user.items()}


def _summary(per_user: dict[str, list[np.ndarray]], users: int) -> Evaluation:
    arrays = {key: np.concatenate(values) for key, values in per_user.items()}
    stats = {key: mean_and_stderr(values) for key, values in arrays.items()}
    return Evaluation(
        means={key: mean for key, (mean, _) in stats.items()},
        stderrs={key: err for key, (_, err) in stats.items()},
        per_user=arrays,
        users=int(users),
    )


def batch_metrics(
    scores: Scores, history: sp.csr_matrix, heldout: sp.csr_matrix, ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-user value of every metric at every K for one batch of users (sorted `ks`).

    `scores` (float32, a writable copy: history items are masked in place, on the scores'
    device) rank all items; only the top max(K) ids come back to the host. Exposed for callers
    that score once and rank several ways (e.g. a grid of blend weights)."""
    scores = as_tensor(scores)
    ranked = top_k_tensor(mask_seen_tensor(scores, history), ks[-1])[0].cpu().numpy()
    return {
        f"{metric}@{k}": METRIC_FUNCTIONS[metric](ranked, heldout, k)
        for metric in METRIC_FUNCTIONS
        for k in ks
    }
