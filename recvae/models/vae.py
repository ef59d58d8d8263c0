"""Mult-VAE and Mult-DAE (Liang et al., "Variational Autoencoders for Collaborative Filtering",
WWW 2018), trained the way the paper's code trains them.

Architecture (paper defaults): items -> 600 -> 200 (mean and log-variance) -> 600 -> items for
Mult-VAE, items -> 200 -> items for Mult-DAE; tanh between layers; the input row is L2-normalised
and then dropped out (keep probability 0.5, survivors scaled by 2), exactly the paper's order.

Speed: the first layer multiplies the sparse batch directly (MKL sparse x dense, forward and
weight gradient), so its cost grows with the interactions, not users x items; the multinomial
loss is a fused log-softmax + sparse gather whose gradient is softmax * row total - x. The only
dense users x items arrays are one batch of logits (and, for the Gaussian and logistic
likelihoods, one dense batch of the input). The two items x hidden weight-gradient tables (first and
output layer) are allocated once per fit and written in place every batch, not allocated and
page-faulted afresh (benchmarks/reports/cpu-scale-2026-12-02).

Layout: the settings are in recvae.models.configs, the sparse kernels in
recvae.models.torch_sparse, fitting/scoring/persistence in recvae.models.torch_autoencoder;
this module holds the paper's network, its epoch and the two models.

Randomness: each epoch's user order, dropout masks and latent noise come from generators seeded
by (seed, epoch, purpose); no global RNG is touched, so a resumed run replays exactly.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recvae import distributed
from recvae.device import to_device
from recvae.models.configs import MultDAEConfig, MultVAEConfig, resolved_optimizer
from recvae.models.lazy_adam import LazyAdam, RowGradients
from recvae.models.precision import autocast_dtype, dense_autocast, float32_autocast_off
from recvae.models.sampled_softmax import Candidates, NegativeSampler, sampled_multinomial_nll
from recvae.models.torch_autoencoder import TorchAutoencoder, epoch_noise, epoch_order
from recvae.models.torch_sparse import (
    DenseOutputLinear,
    MultinomialNLL,
    SparseInputLinear,
    SparseRowsLinear,
    item_transpose,
    normalised_values,
    row_norms,
    torch_csr,
    transpose_csr,
)
from recvae.schedules import kl_beta
from recvae.train import BatchProgress, BatchUpdates

__all__ = ["AutoencoderModule", "MultDAE", "MultDAEConfig", "MultVAE", "MultVAEConfig"]

# --- the module ---------------------------------------------------------------------------------


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
        # the first layer's weight-gradient table, reused every batch (set by the trainer)
        self.first_grad: torch.Tensor | None = None
        # the output layer's weight-gradient table, reused every batch (set by the trainer)
        self.output_grad: torch.Tensor | None = None
        # under the row-wise optimiser: where the first layer leaves its rows' gradients
        self.row_grads: RowGradients | None = None

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

    def encode(
        self, x: torch.Tensor, xt: torch.Tensor | None, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encoder output for a CSR batch (xt: its transpose, needed only when training; with
        `items`, the batch's items, xt is `item_transpose` over them and the first layer's
        gradient covers only their rows, left in `row_grads` for the row-wise optimiser).

        Under bf16 precision the trainer calls this inside torch.autocast: the dense layers
        after the first compute in bfloat16, the sparse first layer stays float32 (MKL's sparse
        kernel is float32)."""
        weight, bias = self.encoder[0], self.encoder[1]
        with float32_autocast_off(x.device):
            if xt is None:
                h = torch.addmm(bias, x, weight)
            elif items is not None:
                h = SparseRowsLinear.apply(weight, bias, x, xt, items, self.row_grads)
            else:
                h = SparseInputLinear.apply(weight, bias, x, xt, self.first_grad)
        for index in range(2, len(self.encoder), 2):
            h = torch.addmm(self.encoder[index + 1], self.activation(h), self.encoder[index])
        return h

    def decode(self, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over all items; `out` (a float32 buffer of the right shape) receives them
        without an extra users x items copy when scoring."""
        h = self.decode_hidden(z)
        weight, bias = self.output_layer()
        # training in float32: the weight gradient goes to the reused table (bf16 keeps
        # autocast's own addmm, whose gradient arrives through a cast anyway)
        reuse = self.output_grad is not None and torch.is_grad_enabled()
        if out is None and reuse and not torch.is_autocast_enabled(h.device.type):
            return DenseOutputLinear.apply(h, weight, bias, self.output_grad)
        if out is None:
            return torch.addmm(bias, h, weight)
        return torch.addmm(bias, h, weight, out=out)

    def decode_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The input of the decoder's last layer (z itself when the decoder has one layer)."""
        h = z
        for index in range(0, len(self.decoder) - 2, 2):
            h = self.activation(torch.addmm(self.decoder[index + 1], h, self.decoder[index]))
        return h

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (hidden x items), bias (items)) of the decoder's last layer."""
        last = len(self.decoder) - 2
        return self.decoder[last], self.decoder[last + 1]

    def split_latent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def item_axes(self) -> dict[str, int]:
        """State-dict tensors with one slice per item (for warm start by item id): the first
        layer's rows, the output layer's columns and its bias."""
        last = len(self.decoder) - 2
        return {"encoder.0": 0, f"decoder.{last}": 1, f"decoder.{last + 1}": 0}


# --- training -----------------------------------------------------------------------------------


class AutoencoderTrainer:
    """One epoch of Mult-VAE / Mult-DAE training over shuffled users (see recvae.train)."""

    def __init__(self, model: AutoencoderBase, train: sp.csr_matrix) -> None:
        config = model.config
        self.model = model
        self.module = model.module
        self.config = config
        active = np.flatnonzero(np.diff(train.indptr) > 0)  # empty rows carry no signal
        self.train = train[active]
        self.norms = row_norms(self.train)
        self.examples_per_epoch = self.train.shape[0]
        self.anneal_steps = (
            resolve_anneal_steps(config, self.train.shape[0]) if self.module.variational else 0
        )
        groups = [
            {"params": self.module.weights(), "weight_decay": 2.0 * config.l2},
            {"params": self.module.biases(), "weight_decay": 0.0},
        ]
        sampled = config.softmax == "sampled"
        self.row_grads: RowGradients | None = None
        if resolved_optimizer(config) == "lazy_adam":
            # the item-sized matrices get gradients for the touched item slices only, and
            # only those slices are stepped (recvae.models.lazy_adam)
            self.row_grads = RowGradients()
            self.optimizer: torch.optim.Optimizer = LazyAdam(
                groups, self.row_grads, lr=config.loop.lr, fused=True
            )
        else:
            # one items x hidden table for the first layer's weight gradient, for the whole
            # fit (SparseInputLinear): no fresh allocation and page faults per batch
            self.module.first_grad = torch.empty_like(self.module.encoder[0])
            # fused: one kernel per step for all parameters (~20x faster than the default)
            self.optimizer = torch.optim.Adam(groups, lr=config.loop.lr, fused=True)
        self.module.row_grads = self.row_grads
        if not sampled:  # the full softmax's output gradient covers every item: a dense table
            self.module.output_grad = torch.empty_like(self.module.output_layer()[0])
        self.sampler = (
            NegativeSampler(self.train, config.negatives, config.proposal)
            if config.softmax == "sampled"
            else None
        )

    def score(self, history: sp.csr_matrix) -> torch.Tensor:
        """Validation scores, left on the training device (ranked there by recvae.evaluate)."""
        return self.model._score_batch(history, on_device=True)

    def train_epoch(self, epoch: int, step: int, on_batch: BatchProgress) -> dict[str, float]:
        config = self.config
        order = epoch_order(config.loop.seed, epoch, self.train.shape[0])
        noise = epoch_noise(config.loop.seed, epoch)
        variational = self.module.variational
        updates = BatchUpdates(self.optimizer, epoch, step)
        group = distributed.ranks()  # one process: rank 0 of 1, whose part is the whole batch
        beta = 0.0
        for start in range(0, len(order), config.loop.batch_size):
            users = np.sort(order[start : start + config.loop.batch_size])
            part = group.part(len(users))
            beta = self._beta(updates.step) if variational else 0.0
            losses = self._batch_loss(users, part, noise)
            if losses is None:  # this rank's part of a small batch is empty
                running = updates.update(None, None, None, share=0.0)
            else:
                nll, kl = losses
                share = (part.stop - part.start) / len(users)
                running = updates.update(nll + beta * kl if variational else nll, nll, kl, share)
            on_batch(len(users), {"loss": running, "beta": beta})
        numbers = updates.means()
        if variational:
            numbers["beta"] = beta
        else:
            del numbers["kl"]
        numbers["examples"] = len(order)
        return numbers

    def _beta(self, step: int) -> float:
        c = self.config
        return kl_beta(step, c.beta_mode, c.beta_cap, self.anneal_steps)

    def _batch_loss(
        self, users: np.ndarray, part: slice, noise: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(nll, kl) of rows `part` of the batch of `users` (all of it in a one-process run).

        The dropout mask and latent noise are drawn for the whole batch, in the same order as
        one process would, and this rank keeps its part: every rank's generator stays in step
        and the run's randomness does not depend on the number of ranks."""
        config = self.config
        device = self.model.run_on
        batch = self.train[users]
        values = torch.from_numpy(normalised_values(batch, self.norms[users]))
        if config.dropout > 0:
            keep = torch.rand(values.shape[0], generator=noise) >= config.dropout
            values = values * keep / (1.0 - config.dropout)
        eps = None
        if self.module.variational:
            eps = torch.randn((batch.shape[0], self.module.latent_dim), generator=noise)[part]
        # drawn for the whole batch (every rank the same), like the noise above
        candidates = None if self.sampler is None else self.sampler.draw(batch.indices, noise)
        # the whole batch's items (every rank the same): the first layer's rows to update
        items = None if self.row_grads is None else np.unique(batch.indices).astype(np.int64)
        if self.row_grads is not None and distributed.ranks().world > 1:
            self._declare_row_gradients(items, candidates)
        if part.stop == part.start:
            return None
        if (part.start, part.stop) != (0, batch.shape[0]):
            values = values[batch.indptr[part.start] : batch.indptr[part.stop]]
            batch = batch[part]
        values = to_device(values, device)
        x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
        if items is None:
            xt, item_rows = transpose_csr(batch, values), None
        else:
            xt, item_rows = item_transpose(batch, values, items), to_device(items, device)
        # bf16: the dense layers under autocast; the latent code, the KL term and the loss
        # (with the softmax normaliser) are float32 whatever the precision
        dense = autocast_dtype(config.loop.precision)
        with dense_autocast(device, dense):
            if item_rows is None:
                h = self.module.encode(x, xt)
            else:
                h = self.module.encode(x, xt, item_rows)
        h = h.float()
        kl = torch.zeros((), device=device)
        if eps is not None:
            mu, logvar = self.module.split_latent(h)
            std = torch.exp(0.5 * logvar)
            z = mu + std * to_device(eps, device)
            kl = 0.5 * torch.sum(-logvar + logvar.exp() + mu * mu - 1.0, dim=1).mean()
        else:
            z = self.module.activation(h)
        if candidates is not None:  # the sampled output layer and its loss stay float32
            weight, bias = self.module.output_layer()
            with dense_autocast(device, dense):
                hidden = self.module.decode_hidden(z)
            hidden = hidden.float()
            nll = sampled_multinomial_nll(hidden, weight, bias, batch, candidates, self.row_grads)
            return nll, kl
        with dense_autocast(device, dense):
            logits = self.module.decode(z)
        logits = logits.float()
        return likelihood_nll(config.likelihood, logits, batch), kl

    def _declare_row_gradients(self, items: np.ndarray, candidates: Candidates | None) -> None:
        """Under torchrun: zero row gradients over the whole batch's item slices, which every
        rank then adds its part to, so that every rank holds the same slices (also a rank with
        an empty part) and LazyAdam can sum them across ranks."""
        assert self.row_grads is not None
        device = self.model.run_on
        first = self.module.encoder[0]
        index = to_device(items, device)
        self.row_grads.add(first, 0, index, first.new_zeros(len(items), first.shape[1]))
        if candidates is not None:
            weight, bias = self.module.output_layer()
            columns = to_device(candidates.items, device)
            count = len(candidates.items)
            self.row_grads.add(weight, 1, columns, weight.new_zeros(weight.shape[0], count))
            self.row_grads.add(bias, 0, columns, bias.new_zeros(count))


def resolve_anneal_steps(config: MultVAEConfig, n_users: int) -> int:
    """The update count over which beta rises by 1: the configured one, or by default every
    update of the epoch budget (epochs x batches per epoch over `n_users` training users)."""
    if config.anneal_steps is not None:
        return config.anneal_steps
    return config.loop.epochs * max(1, -(-n_users // config.loop.batch_size))


def likelihood_nll(likelihood: str, logits: torch.Tensor, batch: sp.csr_matrix) -> torch.Tensor:
    """Negative log-likelihood of the batch's raw rows under the decoder's logits, per user."""
    device = logits.device
    if likelihood == "multinomial":
        rows = to_device(np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr)), device)
        cols = to_device(batch.indices.astype(np.int64), device)
        return MultinomialNLL.apply(logits, rows, cols, to_device(batch.data, device))
    dense = to_device(batch.toarray(), device)
    if likelihood == "gaussian":  # log N(x; f, I) up to a constant
        return 0.5 * ((logits - dense) ** 2).sum(dim=1).mean()
    if likelihood == "logistic":
        return F.binary_cross_entropy_with_logits(logits, dense, reduction="none").sum(1).mean()
    raise ValueError(f"unknown likelihood {likelihood!r}")


# --- the models ---------------------------------------------------------------------------------


class AutoencoderBase(TorchAutoencoder):
    """Mult-VAE and Mult-DAE: the paper's network and epoch (`AutoencoderModule`)."""

    variational: ClassVar[bool]

    def _build_module(self, n_items: int) -> AutoencoderModule:
        c = self.config
        return AutoencoderModule(
            n_items, tuple(c.hidden_dims), c.latent_dim, c.activation, self.variational
        )

    def _make_trainer(self, train: sp.csr_matrix) -> AutoencoderTrainer:
        return AutoencoderTrainer(self, train)

    def _gradient_floats(self, module: AutoencoderModule, batch_items: int) -> int:
        """Dense Adam: every parameter's gradient (the sampled output layer's too: indexing
        sends back an items-sized table). Lazy Adam: the first layer's rows of the batch's
        items and, sampled, the candidates' output columns; full softmax keeps its dense
        output table."""
        total = sum(p.numel() for p in module.parameters())
        if resolved_optimizer(self.config) == "adam":
            return total
        first = module.encoder[0]
        weight, bias = module.output_layer()
        rows = batch_items * first.shape[1]
        if self.config.softmax == "sampled":
            columns = self._candidates(weight.shape[1], batch_items)
            output = columns * (weight.shape[0] + 1)
        else:
            output = weight.numel() + bias.numel()
        return total - first.numel() - weight.numel() - bias.numel() + rows + output

    def _batch_floats(
        self, module: AutoencoderModule, n_items: int, batch: int, batch_items: int
    ) -> int:
        """Full softmax: logits and log-softmax, batch x items each (a third table, the dense
        input, for the gaussian and logistic likelihoods). Sampled: logits, corrected logits
        and log-softmax over the candidates, and the gathered output columns."""
        if self.config.softmax == "sampled":
            columns = self._candidates(n_items, batch_items)
            return 3 * batch * columns + module.output_layer()[0].shape[0] * columns
        tables = 2 if self.config.likelihood == "multinomial" else 3
        return tables * batch * n_items

    def _candidates(self, n_items: int, batch_items: int) -> int:
        """Most items a sampled batch scores: its own items plus the negatives."""
        return min(n_items, batch_items + self.config.negatives)

    def _memory_advice(self) -> str:
        c = self.config
        steps = ["smaller hidden_dims or latent_dim"]
        if c.softmax == "full":
            steps.append('softmax = "sampled" (its default optimizer is lazy_adam)')
        elif resolved_optimizer(c) == "adam":
            steps.append('optimizer = "lazy_adam" (row-wise updates)')
        steps += [
            "a smaller batch_size or eval_batch_size (or no validation: no best-weights copy)",
            "fewer items (filter rare items at ingest, e.g. a minimum item count)",
        ]
        return "to need less: " + ", ".join(steps)

    def _logits_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        h = self.module.encode(x, None)
        z = self.module.split_latent(h)[0] if self.variational else self.module.activation(h)
        self.module.decode(z, out=out)

    def _output_input(self, x: torch.Tensor) -> torch.Tensor:
        h = self.module.encode(x, None)
        z = self.module.split_latent(h)[0] if self.variational else self.module.activation(h)
        return self.module.decode_hidden(z)

    def _output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.output_layer()


class MultVAE(AutoencoderBase):
    """Mult-VAE: variational autoencoder with a multinomial likelihood and annealed KL weight."""

    name: ClassVar[str] = "multvae"
    config_class: ClassVar[type] = MultVAEConfig
    variational: ClassVar[bool] = True
    config: MultVAEConfig


class MultDAE(AutoencoderBase):
    """Mult-DAE: the denoising autoencoder of the same paper (no KL term, no sampling)."""

    name: ClassVar[str] = "multdae"
    config_class: ClassVar[type] = MultDAEConfig
    variational: ClassVar[bool] = False
    config: MultDAEConfig
