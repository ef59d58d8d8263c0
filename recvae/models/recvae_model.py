"""RecVAE (Shenbin et al., "RecVAE: a New Variational Autoencoder for Top-N Recommendations
with Implicit Feedback", WSDM 2020), with each of its changes to Mult-VAE behind a switch.

What RecVAE adds to Mult-VAE, and the switch that turns each off (reference values in brackets):

- composite prior (`composite_prior`): the KL term is taken against a mixture of the standard
  normal, the posterior of a frozen copy of the encoder from the previous round (the "old
  encoder", refreshed after each round's encoder passes) and a wide Gaussian (log-variance 10),
  with weights `mixture_weights` [3/20, 3/4, 1/10]. Off: the standard normal alone.
- per-user KL weight (`per_user_beta`): beta' = gamma * |history| [gamma 0.005]. Off: a fixed
  `beta` for every user. Default off (beta 0.2): on ml-1m the per-user weight slowed learning.
- alternating updates (`alternating`): each epoch (one "round") runs `n_enc_epochs` passes
  updating only the encoder (dropout on the input), refreshes the old encoder, then one pass
  updating only the decoder (no dropout). Off: one pass updating both. Default 1 encoder pass
  [reference 3]: on ml-1m one pass per round reached a better NDCG@20 in less time, and keeps a
  round within 2x of a Mult-VAE epoch (the 5-layer encoder makes each encoder pass cost about as
  much as a Mult-VAE epoch on few items).
- encoder (`swish`, `layer_norm`, `dense_skips`): `n_layers` [5] hidden layers of `hidden_dim`
  [600], each swish then layer norm, each layer's input the sum of all earlier layers' outputs.
  Off: tanh, no normalisation, a plain chain.

The decoder is one linear layer latent -> items. Input dropout `dropout` [0.5] on the
L2-normalised history, as in Mult-VAE.

Speed: the first layer and the multinomial loss are Mult-VAE's (`SparseInputLinear`,
`MultinomialNLL`). An encoder pass does not compute the decoder's weight gradient (only the
gradient through the decoder to z), and the decoder pass runs the encoder without autograd: the
reference computes both and throws the unused half away, so this is the same update, cheaper.

Randomness: as Mult-VAE, everything is derived from (seed, epoch, purpose); a resumed run replays
exactly. The old encoder is part of the module, so checkpoints carry it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recvae import distributed
from recvae.device import to_device
from recvae.errors import RecvaeError
from recvae.models.configs import RecVAEConfig
from recvae.models.torch_autoencoder import TorchAutoencoder, epoch_noise
from recvae.models.torch_sparse import (
    MultinomialNLL,
    SparseInputLinear,
    normalised_values,
    row_norms,
    torch_csr,
    transpose_csr,
)
from recvae.train import BatchProgress, BatchUpdates, epoch_seed

__all__ = ["RecVAE", "RecVAEConfig"]

_PASS = 10  # user order of pass i of a round: purpose _PASS + i
_LOG_2PI = math.log(2.0 * math.pi)


# --- the module ---------------------------------------------------------------------------------


class RecVAEEncoder(torch.nn.Module):
    """Sparse first layer, then dense layers; outputs mean and log-variance of q(z | x).

    Weights are stored (in, out), like Mult-VAE's, so the first layer is one sparse addmm.
    """

    def __init__(self, n_items: int, config: RecVAEConfig) -> None:
        super().__init__()
        h, layers = config.hidden_dim, config.n_layers
        self.swish, self.dense_skips = config.swish, config.dense_skips
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.empty(n_items, h))]
            + [torch.nn.Parameter(torch.empty(h, h)) for _ in range(layers - 1)]
            + [torch.nn.Parameter(torch.empty(h, 2 * config.latent_dim))]
        )
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.empty(w.shape[1])) for w in self.weights]
        )
        self.norms = torch.nn.ModuleList(
            torch.nn.LayerNorm(h, eps=config.layer_norm_eps) if config.layer_norm else None
            for _ in range(layers)
        )
        self.latent_dim = config.latent_dim

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Xavier-uniform weights, zero biases, unit layer-norm scales."""
        for weight, bias in zip(self.weights, self.biases, strict=True):
            torch.nn.init.xavier_uniform_(weight.data, generator=generator)
            bias.data.zero_()
        for norm in self.norms:
            if norm is not None:
                norm.reset_parameters()

    def forward(
        self, x: torch.Tensor, xt: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) for a CSR batch x (xt: its transpose, needed only for gradients)."""
        first, bias = self.weights[0], self.biases[0]
        pre = (
            torch.addmm(bias, x, first)
            if xt is None
            else SparseInputLinear.apply(first, bias, x, xt)
        )
        outputs: list[torch.Tensor] = []
        for index in range(len(self.norms)):
            if index > 0:
                pre = torch.addmm(self.biases[index], outputs[-1], self.weights[index])
                if self.dense_skips:
                    pre = pre + sum(outputs)
            h = F.silu(pre) if self.swish else torch.tanh(pre)
            norm = self.norms[index]
            outputs.append(norm(h) if norm is not None else h)
        out = torch.addmm(self.biases[-1], outputs[-1], self.weights[-1])
        return out[:, : self.latent_dim], out[:, self.latent_dim :]


class RecVAEModule(torch.nn.Module):
    """Encoder, linear decoder, and the frozen old encoder used by the composite prior."""

    def __init__(self, n_items: int, config: RecVAEConfig) -> None:
        super().__init__()
        self.encoder = RecVAEEncoder(n_items, config)
        self.old_encoder = RecVAEEncoder(n_items, config).requires_grad_(False)
        self.decoder_weight = torch.nn.Parameter(torch.empty(config.latent_dim, n_items))
        self.decoder_bias = torch.nn.Parameter(torch.empty(n_items))

    def reset_parameters(self, generator: torch.Generator) -> None:
        self.encoder.reset_parameters(generator)
        torch.nn.init.xavier_uniform_(self.decoder_weight.data, generator=generator)
        self.decoder_bias.data.zero_()
        self.update_old_encoder()

    def update_old_encoder(self) -> None:
        """Freeze a copy of the current encoder as the prior's posterior component."""
        self.old_encoder.load_state_dict(self.encoder.state_dict())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.decoder_bias, z, self.decoder_weight)

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        return [self.decoder_weight, self.decoder_bias]

    def item_axes(self) -> dict[str, int]:
        """State-dict tensors with one slice per item (for warm start by item id)."""
        return {
            "encoder.weights.0": 0,
            "old_encoder.weights.0": 0,
            "decoder_weight": 1,
            "decoder_bias": 0,
        }


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    return -0.5 * (logvar + _LOG_2PI + (z - mu).pow(2) / logvar.exp())


def composite_log_prior(
    z: torch.Tensor,
    old_mu: torch.Tensor,
    old_logvar: torch.Tensor,
    weights: tuple[float, ...],
    wide_logvar: float,
) -> torch.Tensor:
    """Elementwise log of w0 N(0, 1) + w1 q_old(z | x) + w2 N(0, e^wide_logvar)."""
    zero = torch.zeros(())
    parts = torch.stack(
        [
            log_normal(z, zero, zero) + math.log(weights[0]),
            log_normal(z, old_mu, old_logvar) + math.log(weights[1]),
            log_normal(z, zero, torch.tensor(wide_logvar)) + math.log(weights[2]),
        ],
        dim=-1,
    )
    return torch.logsumexp(parts, dim=-1)


# --- training -----------------------------------------------------------------------------------


class _Batch:
    """One batch of users as the tensors a pass needs (built once per batch)."""

    def __init__(self, batch: sp.csr_matrix, norms: np.ndarray, device: torch.device) -> None:
        self.size = batch.shape[0]
        self.csr = batch
        self.device = device
        self.values = to_device(normalised_values(batch, norms), device)
        rows = np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr))
        self.rows = to_device(rows, device)
        self.cols = to_device(batch.indices.astype(np.int64), device)
        self.raw = to_device(batch.data, device)
        counts = np.asarray(batch.sum(axis=1)).ravel().astype(np.float32)
        self.counts = to_device(counts, device)

    def input(self, values: torch.Tensor, with_transpose: bool):
        x = torch_csr(self.csr.indptr, self.csr.indices, values, self.csr.shape)
        return x, (transpose_csr(self.csr, values) if with_transpose else None)

    def nll(self, logits: torch.Tensor) -> torch.Tensor:
        return MultinomialNLL.apply(logits, self.rows, self.cols, self.raw)


class _RecVAETrainer:
    """One RecVAE epoch = one round: encoder passes, old-encoder refresh, decoder pass.

    The old encoder is frozen for a whole round and sees the history without dropout, so its
    posterior for every user is computed once per round (`posterior`) instead of once per batch
    of every encoder pass. Right after the refresh the encoder equals the old encoder and the
    decoder pass does not change it, so the same table also gives the decoder pass its z. This
    is the reference's computation, done once instead of four times.
    """

    def __init__(self, model: RecVAE, train: sp.csr_matrix) -> None:
        if distributed.ranks().world > 1:
            raise RecvaeError(
                "recvae: data-parallel training (torchrun) supports multvae and multdae; "
                "train RecVAE in one process (--device cuda for a GPU)"
            )
        self.model = model
        self.config = model.config
        self.module = model.module
        active = np.flatnonzero(np.diff(train.indptr) > 0)
        self.train = train[active]
        self.norms = row_norms(self.train)
        passes = self.config.n_enc_epochs + 1 if self.config.alternating else 1
        self.examples_per_epoch = self.train.shape[0] * passes
        # One Adam over both parts: Adam keeps per-parameter state and skips parameters without
        # a gradient, so stepping it after an encoder-only pass is the reference's two optimisers.
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=self.config.loop.lr, fused=True
        )
        self.posterior: tuple[torch.Tensor, torch.Tensor] | None = None

    def score(self, history: sp.csr_matrix) -> torch.Tensor:
        """Validation scores, left on the training device (ranked there by recvae.evaluate)."""
        return self.model._score_batch(history, on_device=True)

    def old_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the old encoder for every training user, in fixed chunks so that a
        resumed run recomputes exactly the same table."""
        if self.posterior is None:
            mus, logvars = [], []
            chunk = self.config.loop.eval_batch_size
            with torch.no_grad():
                for start in range(0, self.train.shape[0], chunk):
                    users = np.arange(start, min(start + chunk, self.train.shape[0]))
                    batch = _Batch(self.train[users], self.norms[users], self.model.run_on)
                    mu, logvar = self.module.old_encoder(*batch.input(batch.values, False))
                    mus.append(mu)
                    logvars.append(logvar)
            self.posterior = (torch.cat(mus), torch.cat(logvars))
        return self.posterior

    def refresh_old_encoder(self) -> None:
        self.module.update_old_encoder()
        self.posterior = None

    def train_epoch(self, epoch: int, step: int, on_batch: BatchProgress) -> dict[str, float]:
        c = self.config
        noise = epoch_noise(c.loop.seed, epoch)
        if c.alternating:
            for index in range(c.n_enc_epochs):
                order = self._order(epoch, index)
                step, enc = self._pass(order, "encoder", noise, epoch, step, on_batch)
            self.refresh_old_encoder()
            order = self._order(epoch, c.n_enc_epochs)
            step, dec = self._pass(order, "decoder", noise, epoch, step, on_batch)
            numbers = {"loss": enc["loss"], "nll": enc["nll"], "kl": enc["kl"],
                       "decoder_nll": dec["nll"]}  # fmt: skip
            steps = enc["steps"] * c.n_enc_epochs + dec["steps"]
        else:
            step, joint = self._pass(self._order(epoch, 0), "joint", noise, epoch, step, on_batch)
            self.refresh_old_encoder()
            numbers = {"loss": joint["loss"], "nll": joint["nll"], "kl": joint["kl"]}
            steps = joint["steps"]
        numbers["steps"] = steps
        numbers["examples"] = self.train.shape[0]
        return numbers

    def _order(self, epoch: int, pass_index: int) -> np.ndarray:
        rng = np.random.default_rng(epoch_seed(self.config.loop.seed, epoch, _PASS + pass_index))
        return rng.permutation(self.train.shape[0])

    def _pass(
        self,
        order: np.ndarray,
        part: str,
        noise: torch.Generator,
        epoch: int,
        step: int,
        on_batch: BatchProgress,
    ) -> tuple[int, dict[str, float]]:
        """One pass over the users updating `part` (encoder, decoder or joint)."""
        c = self.config
        module = self.module
        train_decoder = part in ("decoder", "joint")
        for param in module.decoder_parameters():
            param.requires_grad_(train_decoder)
        need_posterior = part == "decoder" or c.composite_prior
        posterior = self.old_posterior() if need_posterior else None
        updates = BatchUpdates(self.optimizer, epoch, step)
        for start in range(0, len(order), c.loop.batch_size):
            users = np.sort(order[start : start + c.loop.batch_size])
            batch = _Batch(self.train[users], self.norms[users], self.model.run_on)
            rows = to_device(users, self.model.run_on)
            old = (posterior[0][rows], posterior[1][rows]) if posterior is not None else None
            if part == "decoder":
                assert old is not None
                nll, kl = self._decoder_loss(batch, old, noise)
            else:
                nll, kl = self._encoder_loss(batch, old, noise)
            on_batch(batch.size, {"loss": updates.update(nll + kl, nll, kl)})
        for param in module.decoder_parameters():
            param.requires_grad_(True)
        return updates.step, updates.means()

    def _encoder_loss(
        self,
        batch: _Batch,
        old: tuple[torch.Tensor, torch.Tensor] | None,
        noise: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL + weighted KL with gradients for the encoder (and the decoder when joint)."""
        c = self.config
        values = batch.values
        if c.dropout > 0:
            keep = torch.rand(values.shape[0], generator=noise) >= c.dropout
            values = values * to_device(keep, batch.device) / (1.0 - c.dropout)
        mu, logvar = self.module.encoder(*batch.input(values, with_transpose=True))
        eps = torch.randn(mu.shape, generator=noise)  # drawn on the CPU: the same on any device
        z = mu + torch.exp(0.5 * logvar) * to_device(eps, batch.device)
        nll = batch.nll(self.module.decode(z))
        if c.composite_prior:
            assert old is not None
            log_prior = composite_log_prior(z, old[0], old[1], c.mixture_weights, c.wide_logvar)
        else:
            zero = torch.zeros(())
            log_prior = log_normal(z, zero, zero)
        # single-sample KL(q(z|x) || prior) per user, times the (per-user) KL weight
        kl = (log_normal(z, mu, logvar) - log_prior).sum(dim=1)
        weight = c.gamma * batch.counts if c.per_user_beta else torch.tensor(c.beta)
        return nll, (kl * weight).mean()

    def _decoder_loss(
        self, batch: _Batch, old: tuple[torch.Tensor, torch.Tensor], noise: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL for the decoder; z from the (just refreshed, frozen) encoder's posterior."""
        mu, logvar = old
        eps = torch.randn(mu.shape, generator=noise)
        z = mu + torch.exp(0.5 * logvar) * to_device(eps, batch.device)
        return batch.nll(self.module.decode(z)), torch.zeros(())


# --- the model ----------------------------------------------------------------------------------


class RecVAE(TorchAutoencoder):
    """RecVAE behind the Recommender interface: fit, score (fold-in), save, load.

    Fitting, scoring, checkpoints, warm start and persistence are Mult-VAE's
    (`TorchAutoencoder`); what differs is the module, the alternating epoch, scoring at the
    posterior mean, and that the old encoder is training state, not part of a saved model.
    """

    name: ClassVar[str] = "recvae"
    config_class: ClassVar[type] = RecVAEConfig
    config: RecVAEConfig
    module: RecVAEModule | None

    def _build_module(self, n_items: int) -> RecVAEModule:
        return RecVAEModule(n_items, self.config)

    def _make_trainer(self, train: sp.csr_matrix) -> _RecVAETrainer:
        return _RecVAETrainer(self, train)

    def _logits_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        mu, _ = self.module.encoder(x, None)
        torch.addmm(self.module.decoder_bias, mu, self.module.decoder_weight, out=out)

    def _output_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.encoder(x, None)[0]

    def _output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.decoder_weight, self.module.decoder_bias

    def _tensors_to_save(self) -> dict[str, torch.Tensor]:
        """Encoder and decoder only: the old encoder is restored as a copy of the encoder."""
        return {
            k: v for k, v in super()._tensors_to_save().items() if not k.startswith("old_encoder.")
        }

    _weights_not_saved: ClassVar[tuple[str, ...]] = ("old_encoder.",)

    def _load_weights(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        # names and shapes were checked by TorchAutoencoder.load (check_tensor_shapes)
        self.module.load_state_dict(tensors, strict=False)
        self.module.update_old_encoder()
