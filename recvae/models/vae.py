"""Mult-VAE and Mult-DAE (Liang et al., "Variational Autoencoders for Collaborative Filtering",
WWW 2018), trained the way the paper's code trains them.

Architecture (paper defaults): items -> 600 -> 200 (mean and log-variance) -> 600 -> items for
Mult-VAE, items -> 200 -> items for Mult-DAE; tanh between layers; the input row is L2-normalised
and then dropped out (keep probability 0.5, survivors scaled by 2), exactly the paper's order.

Speed: the first layer multiplies the sparse batch directly (MKL sparse x dense, forward and
weight gradient), so its cost grows with the interactions, not users x items; the multinomial
loss is a fused log-softmax + sparse gather whose gradient is softmax * row total - x. The only
dense users x items arrays are one batch of logits (and, for the Gaussian and logistic
likelihoods, one dense batch of the input).

Randomness: one seed; the initial weights come from a generator seeded by (seed, init), each
epoch's user order, dropout masks and latent noise from generators seeded by (seed, epoch). No
global RNG is touched, and a resumed run replays exactly the epochs an uninterrupted one would.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from recvae.config import config_from_dict, config_to_dict
from recvae.data.split import Holdout, as_csr
from recvae.errors import RecvaeError
from recvae.models.base import check_history, read_model_json, write_model_json
from recvae.models.torch_sparse import torch_csr
from recvae.schedules import kl_beta
from recvae.train import (
    BatchProgress,
    EpochCallback,
    LoopSettings,
    check_finite,
    epoch_seed,
    run_loop,
)

Activation = Literal["tanh", "relu", "sigmoid"]
Likelihood = Literal["multinomial", "gaussian", "logistic"]
LRSchedule = Literal["none", "step", "exponential", "plateau"]

# Purposes for `epoch_seed`: separate streams for the user order and the dropout/latent noise.
_SHUFFLE, _NOISE, _INIT = 0, 1, 2
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class MultVAEConfig:
    """Mult-VAE settings; the defaults are the paper's. Saved inside model.json."""

    hidden_dims: tuple[int, ...] = (600,)  # encoder hidden sizes; the decoder mirrors them
    latent_dim: int = 200
    dropout: float = 0.5  # on the normalised input; survivors scaled by 1 / (1 - dropout)
    activation: Activation = "tanh"
    likelihood: Likelihood = "multinomial"
    beta_mode: Literal["anneal", "fixed", "find"] = "anneal"
    beta_cap: float = 0.2
    # beta = min(cap, step / anneal_steps), as in the paper's code. None: the number of updates
    # in `epochs` epochs, so beta rises by 1 over the epoch budget whatever the data size and
    # reaches the 0.2 cap after a fifth of it. The notebook's literal 200,000 was sized for
    # ML-20M; on ml-1m (13 updates per epoch) it keeps beta under 0.02 for 200 epochs.
    anneal_steps: int | None = None
    l2: float = 0.0  # adds l2 * sum of squared weights (biases exempt) to the loss, like `lam`
    lr: float = 1e-3
    batch_size: int = 500
    epochs: int = 200
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    metric: str = "ndcg@100"  # validation metric that picks the best epoch
    validate_every: int = 1
    lr_schedule: LRSchedule = "none"
    lr_step_size: int = 50  # "step": multiply by lr_gamma every lr_step_size epochs
    lr_gamma: float = 0.5  # "step" / "exponential" factor; "plateau" reduction factor
    lr_patience: int = 10  # "plateau": validations without improvement before reducing
    seed: int = 0
    threads: int = 0  # torch threads while training and scoring; 0 = all cores
    eval_batch_size: int = 2000

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class MultDAEConfig:
    """Mult-DAE settings; the defaults are the paper's ([I -> 200 -> I]).

    The paper's notebook builds the DAE with `lam = 0.01 / batch_size` and adds `2 * reg_var`
    (TensorFlow's l2_regularizer halves the squared norm) to the batch-mean loss: an `l2` of
    0.01 / 500 = 2e-5 here. (Until 2026-11-28 this default was 0.01, 500 times the paper's.)"""

    hidden_dims: tuple[int, ...] = ()
    latent_dim: int = 200
    dropout: float = 0.5
    activation: Activation = "tanh"
    likelihood: Likelihood = "multinomial"
    l2: float = 2e-5
    lr: float = 1e-3
    batch_size: int = 500
    epochs: int = 200
    patience: int = 0
    metric: str = "ndcg@100"
    validate_every: int = 1
    lr_schedule: LRSchedule = "none"
    lr_step_size: int = 50
    lr_gamma: float = 0.5
    lr_patience: int = 10
    seed: int = 0
    threads: int = 0
    eval_batch_size: int = 2000

    def __post_init__(self) -> None:
        _check_common(self)


def _check_common(config: MultVAEConfig | MultDAEConfig) -> None:
    checks = [
        (0.0 <= config.dropout < 1.0, f"dropout must be in [0, 1), got {config.dropout}"),
        (config.latent_dim > 0, f"latent_dim must be positive, got {config.latent_dim}"),
        (
            all(d > 0 for d in config.hidden_dims),
            f"hidden_dims must be positive: {config.hidden_dims}",
        ),
        (config.batch_size > 0, f"batch_size must be positive, got {config.batch_size}"),
        (config.epochs > 0, f"epochs must be positive, got {config.epochs}"),
        (config.lr > 0, f"lr must be positive, got {config.lr}"),
        (config.l2 >= 0, f"l2 must be >= 0, got {config.l2}"),
        (
            config.validate_every > 0,
            f"validate_every must be positive, got {config.validate_every}",
        ),
    ]
    if isinstance(config, MultVAEConfig):
        checks.append((config.beta_cap >= 0, f"beta_cap must be >= 0, got {config.beta_cap}"))
        checks.append(
            (
                config.anneal_steps is None or config.anneal_steps >= 0,
                f"anneal_steps must be >= 0 (or unset), got {config.anneal_steps}",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# --- the module ---------------------------------------------------------------------------------


class _SparseInputLinear(torch.autograd.Function):
    """x @ W + b for a sparse CSR batch x; the weight gradient is x^T @ grad (also sparse).

    torch.addmm on a CSR tensor runs MKL's sparse kernel; the transpose is passed in as its own
    CSR tensor (built from the batch's CSC form) so the backward pass is sparse too.
    """

    @staticmethod
    def forward(
        ctx: Any, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, xt: torch.Tensor
    ):
        ctx.save_for_backward(xt)
        return torch.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (xt,) = ctx.saved_tensors
        grad_weight = torch.empty(xt.shape[0], grad.shape[1], dtype=grad.dtype)
        torch.mm(xt, grad, out=grad_weight)
        return grad_weight, grad.sum(0), None, None


class _MultinomialNLL(torch.autograd.Function):
    """-sum_j x_j log softmax(logits)_j per row, averaged over rows, with x given sparsely.

    Forward is one fused log-softmax plus a gather at the nonzeros; the gradient,
    (softmax * row total - x) / rows, is built in place in one buffer: exp, scale, scatter.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor
    ):
        log_probs = torch.log_softmax(logits, dim=1)
        nll = -(values * log_probs[rows, cols]).sum() / logits.shape[0]
        ctx.save_for_backward(log_probs, rows, cols, values)
        return nll

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        log_probs, rows, cols, values = ctx.saved_tensors
        scale = grad / log_probs.shape[0]
        totals = torch.zeros(log_probs.shape[0], dtype=values.dtype).index_add_(0, rows, values)
        out = log_probs.exp().mul_((totals * scale)[:, None])
        out.index_put_((rows, cols), values * -scale, accumulate=True)
        return out, None, None, None


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class AutoencoderModule(torch.nn.Module):
    """The network: sparse first layer, dense hidden layers, dense output layer over all items.

    Weights are stored (in, out) so the first layer's weight is an item embedding table and the
    output layer is one addmm. With `variational`, the last encoder layer emits mean and
    log-variance (2 x latent) and training samples z = mean + eps * std.
    """

    def __init__(
        self,
        n_items: int,
        hidden_dims: tuple[int, ...],
        latent_dim: int,
        activation: str,
        variational: bool,
    ) -> None:
        super().__init__()
        self.variational = variational
        self.latent_dim = latent_dim
        self.activation = _ACTIVATIONS[activation]
        encoder = [n_items, *hidden_dims, latent_dim * (2 if variational else 1)]
        decoder = [latent_dim, *reversed(hidden_dims), n_items]
        self.encoder = torch.nn.ParameterList()
        self.decoder = torch.nn.ParameterList()
        for dims, params in ((encoder, self.encoder), (decoder, self.decoder)):
            for d_in, d_out in itertools.pairwise(dims):
                params.append(torch.nn.Parameter(torch.empty(d_in, d_out)))
                params.append(torch.nn.Parameter(torch.empty(d_out)))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """The paper's init: Xavier-uniform weights, biases ~ truncated normal(0, 0.001)."""
        for params in (self.encoder, self.decoder):
            for index, param in enumerate(params):
                if index % 2 == 0:
                    torch.nn.init.xavier_uniform_(param.data, generator=generator)
                else:
                    torch.nn.init.trunc_normal_(
                        param.data, std=0.001, a=-0.002, b=0.002, generator=generator
                    )

    def weights(self) -> list[torch.nn.Parameter]:
        return [p for params in (self.encoder, self.decoder) for p in params[0::2]]

    def biases(self) -> list[torch.nn.Parameter]:
        return [p for params in (self.encoder, self.decoder) for p in params[1::2]]

    def encode(self, x: torch.Tensor, xt: torch.Tensor | None) -> torch.Tensor:
        """Encoder output for a CSR batch (xt: its transpose, needed only when training)."""
        weight, bias = self.encoder[0], self.encoder[1]
        if xt is None:
            h = torch.addmm(bias, x, weight)
        else:
            h = _SparseInputLinear.apply(weight, bias, x, xt)
        for index in range(2, len(self.encoder), 2):
            h = torch.addmm(self.encoder[index + 1], self.activation(h), self.encoder[index])
        return h

    def decode(self, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items; `out` (a float32 buffer of the right shape) receives them
        without an extra users x items copy when scoring."""
        h = z
        last = len(self.decoder) - 2
        for index in range(0, last, 2):
            h = self.activation(torch.addmm(self.decoder[index + 1], h, self.decoder[index]))
        bias, weight = self.decoder[last + 1], self.decoder[last]
        if out is None:
            return torch.addmm(bias, h, weight)
        return torch.addmm(bias, h, weight, out=out)

    def split_latent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h[:, : self.latent_dim], h[:, self.latent_dim :]


# --- batches ------------------------------------------------------------------------------------


def _row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()).astype(np.float32)
    norms[norms == 0] = 1.0  # an empty row stays all zeros
    return norms


def _normalised_values(batch: sp.csr_matrix, norms: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr))
    return batch.data / norms[rows]


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    """Use `threads` torch threads inside the block (0 = all cores) and restore the old value."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- training -----------------------------------------------------------------------------------


class _AutoencoderTrainer:
    """One epoch of Mult-VAE / Mult-DAE training over shuffled users (see recvae.train)."""

    def __init__(self, model: _AutoencoderBase, train: sp.csr_matrix) -> None:
        config = model.config
        self.model = model
        self.module = model.module
        self.config = config
        active = np.flatnonzero(np.diff(train.indptr) > 0)  # empty rows carry no signal
        self.train = train[active]
        self.norms = _row_norms(self.train)
        self.examples_per_epoch = self.train.shape[0]
        self.anneal_steps = (
            resolve_anneal_steps(config, self.train.shape[0]) if self.module.variational else 0
        )
        groups = [
            {"params": self.module.weights(), "weight_decay": 2.0 * config.l2},
            {"params": self.module.biases(), "weight_decay": 0.0},
        ]
        # fused: one kernel per step for all parameters (~20x faster than the default on CPU)
        self.optimizer = torch.optim.Adam(groups, lr=config.lr, fused=True)

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        return self.model._score_batch(history)

    def train_epoch(self, epoch: int, step: int, on_batch: BatchProgress) -> dict[str, float]:
        config = self.config
        order = np.random.default_rng(epoch_seed(config.seed, epoch, _SHUFFLE)).permutation(
            self.train.shape[0]
        )
        noise = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, _NOISE))
        variational = self.module.variational
        totals = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
        batches = 0
        beta = 0.0
        for start in range(0, len(order), config.batch_size):
            users = np.sort(order[start : start + config.batch_size])
            batch = self.train[users]
            beta = self._beta(step) if variational else 0.0
            nll, kl = self._batch_loss(batch, self.norms[users], noise)
            loss = nll + beta * kl if variational else nll
            value = loss.item()
            check_finite(value, epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            step += 1
            batches += 1
            totals["loss"] += value
            totals["nll"] += nll.item()
            totals["kl"] += kl.item()
            on_batch(batch.shape[0], {"loss": totals["loss"] / batches, "beta": beta})
        numbers = {key: value / max(batches, 1) for key, value in totals.items()}
        if variational:
            numbers["beta"] = beta
        else:
            del numbers["kl"]
        numbers["steps"] = batches
        numbers["examples"] = len(order)
        return numbers

    def _beta(self, step: int) -> float:
        c = self.config
        return kl_beta(step, c.beta_mode, c.beta_cap, self.anneal_steps)

    def _batch_loss(
        self, batch: sp.csr_matrix, norms: np.ndarray, noise: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        values = torch.from_numpy(_normalised_values(batch, norms))
        if config.dropout > 0:
            keep = torch.rand(values.shape[0], generator=noise) >= config.dropout
            values = values * keep / (1.0 - config.dropout)
        x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
        xt = _transpose_csr(batch, values)
        h = self.module.encode(x, xt)
        kl = torch.zeros(())
        if self.module.variational:
            mu, logvar = self.module.split_latent(h)
            std = torch.exp(0.5 * logvar)
            z = mu + std * torch.randn(mu.shape, generator=noise)
            kl = 0.5 * torch.sum(-logvar + logvar.exp() + mu * mu - 1.0, dim=1).mean()
        else:
            z = self.module.activation(h)
        logits = self.module.decode(z)
        return _nll(config.likelihood, logits, batch), kl


def resolve_anneal_steps(config: MultVAEConfig, n_users: int) -> int:
    """The update count over which beta rises by 1: the configured one, or by default every
    update of the epoch budget (epochs x batches per epoch over `n_users` training users)."""
    if config.anneal_steps is not None:
        return config.anneal_steps
    return config.epochs * max(1, -(-n_users // config.batch_size))


def _transpose_csr(batch: sp.csr_matrix, values: torch.Tensor) -> torch.Tensor:
    """The batch's transpose as a torch CSR tensor carrying `values` (the batch's nonzeros)."""
    positions = sp.csr_matrix(
        (np.arange(batch.nnz, dtype=np.int64), batch.indices, batch.indptr), shape=batch.shape
    ).tocsc()  # column-major; rows stay sorted within each column
    order = torch.from_numpy(positions.data)
    return torch_csr(positions.indptr, positions.indices, values[order], batch.shape[::-1])


def _nll(likelihood: str, logits: torch.Tensor, batch: sp.csr_matrix) -> torch.Tensor:
    """Negative log-likelihood of the batch's raw rows under the decoder's logits, per user."""
    if likelihood == "multinomial":
        rows = torch.from_numpy(np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr)))
        cols = torch.from_numpy(batch.indices.astype(np.int64))
        return _MultinomialNLL.apply(logits, rows, cols, torch.from_numpy(batch.data))
    dense = torch.from_numpy(batch.toarray())
    if likelihood == "gaussian":  # log N(x; f, I) up to a constant
        return 0.5 * ((logits - dense) ** 2).sum(dim=1).mean()
    if likelihood == "logistic":
        return F.binary_cross_entropy_with_logits(logits, dense, reduction="none").sum(1).mean()
    raise ValueError(f"unknown likelihood {likelihood!r}")


# --- the models ---------------------------------------------------------------------------------


class TorchAutoencoder:
    """What every PyTorch autoencoder here shares (Mult-VAE, Mult-DAE, RecVAE): fit through the
    shared loop, batched fold-in scoring, safetensors save/load, warm start and the history.

    A subclass says what differs through four hooks: `_build_module`, `_make_trainer`,
    `_logits_into` (one scoring batch) and, when some weights are training state only,
    `_tensors_to_save` / `_load_weights`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        base = config if config is not None else self.config_class()
        if overrides:
            base = config_from_dict(self.config_class, {**config_to_dict(base), **overrides})
        self.config = base
        self.module: Any = None  # the torch module, built by `_build_module` in fit or load
        self.n_items = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_metrics: dict[str, Any] = {}
        self.stopped = ""

    # -- training --

    def fit(
        self,
        train: sp.csr_matrix,
        valid: Holdout | None = None,
        *,
        callback: EpochCallback | None = None,
        checkpoint_dir: Path | str | None = None,
        resume: bool = True,
        warm_start: TorchAutoencoder | Path | str | None = None,
        log_path: Path | str | None = None,
        progress: bool = False,
    ) -> Self:
        """Train on `train` (users x items CSR), validating on `valid` after every epoch.

        callback(epoch, record) runs after each epoch (1-based epoch, the JSONL record); return
        True to stop, or raise (e.g. optuna.TrialPruned) to abort. checkpoint_dir keeps `best`
        and `last` checkpoints and, with resume, continues from `last`. warm_start starts from
        another model's weights (same items and architecture). The best validated epoch's
        weights are kept; `history` holds every epoch's record.
        """
        train = check_history(train, train.shape[1], self.name)
        train = as_csr(train)
        if valid is not None and valid.n_items != train.shape[1]:
            raise RecvaeError(
                f"{self.name}: validation has {valid.n_items} items, train has {train.shape[1]}"
            )
        if train.nnz == 0:
            raise RecvaeError(f"{self.name}: the training matrix has no interactions")
        config = self.config
        with _threads(config.threads):
            self.n_items = train.shape[1]
            self.module = self._build_module(self.n_items)
            self.module.reset_parameters(
                torch.Generator().manual_seed(epoch_seed(config.seed, 0, _INIT))
            )
            if warm_start is not None:
                self._warm_start(warm_start)
            trainer = self._make_trainer(train)
            result = run_loop(
                trainer,
                self._loop_settings(),
                valid,
                callback=callback,
                checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
                resume=resume,
                log_path=Path(log_path) if log_path is not None else None,
                progress=progress,
                extra_state=self._run_key(train),
            )
        self.module.eval()
        self.history, self.best_epoch = result.history, result.best_epoch
        self.best_metrics, self.stopped = result.best_metrics, result.stopped
        return self

    def _run_key(self, train: sp.csr_matrix) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: model, data and the settings that shape
        the weights (the epoch budget, patience and thread count may change between runs)."""
        free = {"epochs", "patience", "threads", "eval_batch_size"}
        config = {k: v for k, v in config_to_dict(self.config).items() if k not in free}
        return {
            "model": self.name,
            "config": config,
            "n_items": self.n_items,
            "nnz": int(train.nnz),
        }

    def _loop_settings(self) -> LoopSettings:
        c = self.config
        return LoopSettings(
            epochs=c.epochs, patience=c.patience, metric=c.metric, validate_every=c.validate_every,
            lr=c.lr, lr_schedule=c.lr_schedule, lr_step_size=c.lr_step_size,
            lr_gamma=c.lr_gamma, lr_patience=c.lr_patience, eval_batch_size=c.eval_batch_size,
        )  # fmt: skip

    def _build_module(self, n_items: int) -> Any:
        raise NotImplementedError

    def _make_trainer(self, train: sp.csr_matrix) -> Any:
        """The model's `EpochTrainer` (see recvae.train): one epoch of its own updates."""
        raise NotImplementedError

    def _logits_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write the logits of one normalised CSR input batch `x` into `out` (inference)."""
        raise NotImplementedError

    def _tensors_to_save(self) -> dict[str, torch.Tensor]:
        assert self.module is not None
        return {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}

    def _load_weights(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        self.module.load_state_dict(tensors)

    def _warm_start(self, source: TorchAutoencoder | Path | str) -> None:
        other = type(self).load(Path(source)) if isinstance(source, Path | str) else source
        if other.module is None:
            raise RecvaeError(f"{self.name}: the warm-start model has not been trained")
        if other.n_items != self.n_items:
            raise RecvaeError(
                f"{self.name}: cannot warm start from a model over {other.n_items} items when "
                f"training on {self.n_items}; the item vocabularies must match"
            )
        mine, theirs = self.module.state_dict(), other.module.state_dict()
        shapes = {k: tuple(v.shape) for k, v in mine.items()}
        if shapes != {k: tuple(v.shape) for k, v in theirs.items()}:
            raise RecvaeError(
                f"{self.name}: the warm-start model has a different architecture "
                "(hidden_dims / latent_dim); it cannot seed these weights"
            )
        self.module.load_state_dict(theirs)

    @property
    def best_beta(self) -> float | None:
        """The KL weight of the best validated epoch (the paper's way of choosing beta)."""
        return self.best_metrics.get("beta")

    # -- scoring --

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """Logits over all items for each history row (fold-in); unmasked, float32."""
        if self.module is None:
            raise RecvaeError(f"{self.name}: call fit (or load a trained model) before score")
        history = check_history(history, self.n_items, self.name)
        with _threads(self.config.threads):
            return self._score_batch(history)

    def _score_batch(self, history: sp.csr_matrix) -> np.ndarray:
        assert self.module is not None
        out = np.empty(history.shape, dtype=np.float32)
        step = self.config.eval_batch_size
        norms = _row_norms(history)
        with torch.inference_mode():
            for start in range(0, history.shape[0], step):
                batch = as_csr(history[start : start + step])
                values = torch.from_numpy(_normalised_values(batch, norms[start : start + step]))
                x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
                self._logits_into(x, torch.from_numpy(out[start : start + batch.shape[0]]))
        return out

    # -- persistence --

    def save(self, path: Path) -> None:
        if self.module is None:
            raise RecvaeError(f"{self.name}: nothing to save, the model has not been trained")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self._tensors_to_save(), str(path / WEIGHTS_FILE))
        write_model_json(
            path, self.name, config_to_dict(self.config), n_items=self.n_items,
            best_epoch=self.best_epoch, best_metrics=self.best_metrics, stopped=self.stopped,
            history=self.history,
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = read_model_json(path)
        if meta.get("model") != cls.name:
            raise RecvaeError(f"{path} holds a {meta.get('model')!r} model, not {cls.name!r}")
        model = cls(
            config_from_dict(cls.config_class, meta["config"], source=str(path / "model.json"))
        )
        model.n_items = int(meta["n_items"])
        model.module = model._build_module(model.n_items)
        model._load_weights(load_file(str(path / WEIGHTS_FILE)), path)
        model.module.eval()
        model.history = meta.get("history", [])
        model.best_epoch = int(meta.get("best_epoch", 0))
        model.best_metrics = meta.get("best_metrics", {})
        model.stopped = meta.get("stopped", "")
        return model


class _AutoencoderBase(TorchAutoencoder):
    """Mult-VAE and Mult-DAE: the paper's network and epoch (`AutoencoderModule`)."""

    variational: ClassVar[bool]

    def _build_module(self, n_items: int) -> AutoencoderModule:
        c = self.config
        return AutoencoderModule(
            n_items, tuple(c.hidden_dims), c.latent_dim, c.activation, self.variational
        )

    def _make_trainer(self, train: sp.csr_matrix) -> _AutoencoderTrainer:
        return _AutoencoderTrainer(self, train)

    def _logits_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        h = self.module.encode(x, None)
        z = self.module.split_latent(h)[0] if self.variational else self.module.activation(h)
        self.module.decode(z, out=out)


class MultVAE(_AutoencoderBase):
    """Mult-VAE: variational autoencoder with a multinomial likelihood and annealed KL weight."""

    name: ClassVar[str] = "multvae"
    config_class: ClassVar[type] = MultVAEConfig
    variational: ClassVar[bool] = True
    config: MultVAEConfig


class MultDAE(_AutoencoderBase):
    """Mult-DAE: the denoising autoencoder of the same paper (no KL term, no sampling)."""

    name: ClassVar[str] = "multdae"
    config_class: ClassVar[type] = MultDAEConfig
    variational: ClassVar[bool] = False
    config: MultDAEConfig
