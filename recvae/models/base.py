"""The one interface every model sits behind.

`score` takes users' histories (CSR rows over the model's items), not user indices: training
users, held-out users (strong generalization) and users who appeared after training are all scored
the same way, by fold-in. Masking of seen items, top-K and metrics live outside the models.

A saved model is a directory holding `model.json` ({"model": name, "config": {...}}) and the
model's own files (safetensors or .npy arrays); nothing is ever unpickled when loading.

Loading a damaged directory (an empty or foreign model.json, a missing, truncated or random
weights file, shapes that do not match model.json) stops with one RecvaeError line naming the
file and what is wrong, never a traceback: the helpers below read every file a model loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Holdout
from recvae.errors import RecvaeError

if TYPE_CHECKING:  # torch is imported only by the functions that hand over tensors
    import torch


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


def score_blocks(
    model: Recommender, history: sp.csr_matrix, block_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, scores of items [start, start + width)) for each item block, in item order.

    Item-chunked top-K (recvae.scoring) asks for scores block by block so that a catalogue of a
    million items never needs a (users x items) array. A model that can score an item block on
    its own (a `score_blocks(history, block_size)` method: the autoencoders, EASE, ALS, BPR)
    does; any other model is scored in full once and sliced, which is exact but bounds nothing.
    """
    if block_size < 1:
        raise RecvaeError(f"item block must be at least 1, got {block_size}")
    own = getattr(model, "score_blocks", None)
    if own is not None:
        yield from own(history, block_size)
        return
    scores = np.asarray(model.score(history), dtype=np.float32)
    yield from slice_blocks(scores, block_size)


def score_tensor(model: Recommender, history: sp.csr_matrix) -> torch.Tensor:
    """The model's (users x items) float32 scores as a torch tensor on the device it scores on.

    A model that scores on a device (a `score_tensor(history)` method: the torch autoencoders,
    EASE) hands its scores over where they are, so masking and top-K (recvae.topk) run there
    and only k ids and scores per user come back to the host; any other model's NumPy scores are
    viewed as a CPU tensor (copied only when not writable C-contiguous float32).
    """
    own = getattr(model, "score_tensor", None)
    if own is not None:
        return own(history)
    return _host_tensor(model.score(history))


def score_tensor_blocks(
    model: Recommender, history: sp.csr_matrix, block_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """`score_blocks` with each block as a torch tensor on the model's scoring device (a
    `score_tensor_blocks` method), or the NumPy blocks of `score_blocks` viewed as tensors."""
    own = getattr(model, "score_tensor_blocks", None)
    if own is not None:
        if block_size < 1:
            raise RecvaeError(f"item block must be at least 1, got {block_size}")
        yield from own(history, block_size)
        return
    for start, block in score_blocks(model, history, block_size):
        yield start, _host_tensor(block)


def _host_tensor(scores: Any) -> torch.Tensor:
    import torch

    array = np.asarray(scores, dtype=np.float32)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return torch.from_numpy(array)


def slice_blocks(scores: np.ndarray, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """The column blocks of a full score matrix (the fallback of `score_blocks`)."""
    for start in range(0, scores.shape[1], block_size):
        yield start, scores[:, start : start + block_size]


def item_blocks(n_items: int, block_size: int) -> Iterator[slice]:
    """Consecutive item slices of at most `block_size` items covering [0, n_items)."""
    for start in range(0, n_items, block_size):
        yield slice(start, min(start + block_size, n_items))


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


DAMAGED = "the model directory is damaged or incomplete: retrain the model or restore a copy"


def read_model_json(path: Path, expect: str | None = None) -> dict[str, Any]:
    """model.json as a dict that names a model (and, with `expect`, that very model)."""
    file = Path(path) / "model.json"
    if not file.is_file():
        raise RecvaeError(f"{path} is not a saved recvae model (no model.json)")
    try:
        meta = json.loads(file.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        reason = "it is empty" if not file.read_bytes().strip() else f"not JSON: {error}"
        raise RecvaeError(f"{file} cannot be read ({reason}); {DAMAGED}") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise RecvaeError(
            f'{file} does not name a model (expected {{"model": NAME, "config": {{...}}}}); '
            f"{DAMAGED}"
        )
    if not isinstance(meta.get("config", {}), dict):
        raise RecvaeError(f"{file}: 'config' must be a table of settings; {DAMAGED}")
    if expect is not None and meta["model"] != expect:
        raise RecvaeError(f"{path} holds a {meta['model']!r} model, not {expect!r}")
    return meta


def model_size(meta: Mapping[str, Any], key: str, path: Path) -> int:
    """A positive integer recorded in model.json (e.g. n_items), checked."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RecvaeError(
            f"{Path(path) / 'model.json'}: {key} must be a positive integer, got {value!r}; "
            f"{DAMAGED}"
        )
    return value


def load_array(file: Path, ndim: int, rows: int | None = None) -> np.ndarray:
    """A numeric .npy array of `ndim` dimensions (and `rows` rows), or one RecvaeError line."""
    file = Path(file)
    if not file.is_file():
        raise RecvaeError(f"{file} is missing; {DAMAGED}")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecvaeError(f"{file} is not a readable array (truncated or corrupt: {first})") from (
            error
        )
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise RecvaeError(f"{file} does not hold a numeric array; {DAMAGED}")
    if array.ndim != ndim or (rows is not None and array.shape[0] != rows):
        want = f"{ndim}-d" + (f" with {rows} rows" if rows is not None else "")
        raise RecvaeError(f"{file} holds an array of shape {array.shape}, expected {want}")
    return array


def load_tensors(file: Path) -> dict[str, Any]:
    """The tensors of a safetensors file, or one RecvaeError line when missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise RecvaeError(f"{file} is missing; {DAMAGED}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecvaeError(f"{file} is not a readable safetensors file ({first}); {DAMAGED}") from (
            error
        )


def check_tensor_shapes(
    expected: Mapping[str, tuple[int, ...]],
    tensors: Mapping[str, Any],
    file: Path,
    not_saved: tuple[str, ...] = (),
) -> None:
    """Refuse weights whose names or shapes differ from what model.json's config builds.

    `not_saved`: name prefixes of parameters the model rebuilds on load (never in the file).
    """
    missing = [k for k in expected if k not in tensors and not k.startswith(not_saved)]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        detail = f"missing {', '.join(missing[:3])}" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"unexpected {', '.join(unexpected[:3])}"
        raise RecvaeError(
            f"{file} does not match model.json ({detail}); they come from different models"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key]):
            raise RecvaeError(
                f"{file} does not match model.json: {key} has shape {tuple(tensor.shape)} in the "
                f"file but {tuple(expected[key])} per model.json; they come from different models"
            )


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
