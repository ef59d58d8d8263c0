"""The one interface every model sits behind.

`score` takes users' histories (CSR rows over the model's items), not user indices: training
users, held-out users (strong generalization) and users who appeared after training are all scored
the same way, by fold-in. Masking of seen items, top-K and metrics live outside the models.

A saved model is a directory holding `model.json` ({"model": name, "config": {...}}) and the
model's own files (safetensors or .npy arrays); nothing is ever unpickled when loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Holdout
from recvae.errors import RecvaeError


@runtime_checkable
class Recommender(Protocol):
    """fit on a CSR matrix, score histories, save to and load from a directory."""

    name: ClassVar[str]

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None) -> Self: ...

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """(n_users, n_items) float32 scores, higher is better; seen items are not masked here."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


def model_config(
    config_class: type, config: Any = None, overrides: dict[str, Any] | None = None, name: str = ""
) -> Any:
    """A model's typed config: `config` (an instance, a dict of settings, or None for the
    defaults) updated by flat `overrides`; a bad key or value is a RecvaeError naming `name`."""
    from recvae.config import config_from_dict, update_config

    if config is None:
        config = config_from_dict(config_class, {}, source=name)
    elif isinstance(config, dict):
        config = config_from_dict(config_class, config, source=name)
    elif not isinstance(config, config_class):
        given = type(config).__name__
        raise RecvaeError(f"{name}: expected a {config_class.__name__}, got {given}")
    return update_config(config, overrides, source=name) if overrides else config


def write_model_json(path: Path, name: str, config: dict[str, Any], **extra: Any) -> None:
    """Write the `model.json` that names a saved model's class and config."""
    path.mkdir(parents=True, exist_ok=True)
    payload = {"model": name, "config": config, **extra}
    (path / "model.json").write_text(json.dumps(payload, indent=2, default=str))


def read_model_json(path: Path) -> dict[str, Any]:
    file = Path(path) / "model.json"
    if not file.is_file():
        raise RecvaeError(f"{path} is not a saved recvae model (no model.json)")
    return json.loads(file.read_text())


def check_history(history: sp.csr_matrix, n_items: int, model: str) -> sp.csr_matrix:
    """Validate a history matrix at the edge: CSR float32 over exactly the model's items."""
    if not sp.issparse(history):
        raise RecvaeError(f"{model}: history must be a scipy sparse matrix, got {type(history)}")
    if history.shape[1] != n_items:
        raise RecvaeError(
            f"{model}: history has {history.shape[1]} items but the model was trained on "
            f"{n_items}; map new logs through the model's item vocabulary first"
        )
    csr = sp.csr_matrix(history, dtype=np.float32)
    if csr.nnz and not np.isfinite(csr.data).all():
        raise RecvaeError(f"{model}: history contains NaN or infinite values")
    return csr
