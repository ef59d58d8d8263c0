"""The joint model: a Mult-VAE path and a sparse linear item-item path, trained together.

    logits(x) = deep(x) + linear(x),    linear(x)_j = sum_{i in N(j)} x_i W_ij

and one multinomial likelihood (plus Mult-VAE's annealed KL term) over the summed logits. Adding
logits multiplies the two paths' unnormalised probabilities item by item, the product of experts
VASP (Vancura & Kordik, ICANN 2021) joins its two paths with (a Hadamard product of sigmoids
there); here the likelihood is Mult-VAE's softmax and there is no focal loss.

Why this shape:
- The linear path is EASE restricted to each target's `neighbours` most similar items
  (recvae.models.neighbour_ease): items x m weights, so Gowalla's 41k items need 4M weights, not
  a dense 1.7B. It starts from that closed form (times one scale, fitted at the start so its
  softmax matches the training data best), so the model starts as good as the restricted EASE
  and the deep path only has to learn what the linear path misses.
- EASE's zero diagonal (no item predicts itself) keeps the linear path from learning the
  identity; the deep path sees the dropped-out input as in Mult-VAE.

Each path can be switched off (`deep = false`: a fine-tuned restricted EASE; `linear = false`:
Mult-VAE/Mult-DAE with the paper's network), and `train_linear = false` keeps the closed form
fixed, which is a blend whose weight is learnt.

Scoring builds the linear path's logits for a batch of users by expanding every history item
into its outgoing edges and adding them into the batch's (users x items) logits: the cost is
the history length x the mean out-degree (about 2m), on any device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recvae import distributed
from recvae.config import config_from_dict
from recvae.data.split import Holdout, as_csr
from recvae.device import to_device
from recvae.errors import RecvaeError
from recvae.models.base import (
    DAMAGED,
    check_tensor_shapes,
    item_blocks,
    load_tensors,
    model_size,
    read_model_json,
    slice_blocks,
)
from recvae.models.configs import JointConfig
from recvae.models.neighbour_ease import ItemGraph, default_l2, neighbour_ease
from recvae.models.precision import autocast_dtype, dense_autocast
from recvae.models.torch_autoencoder import (
    WEIGHTS_FILE,
    TorchAutoencoder,
    epoch_noise,
    epoch_order,
)
from recvae.models.torch_sparse import normalised_values, row_norms, torch_csr, transpose_csr
from recvae.models.vae import AutoencoderModule, likelihood_nll, resolve_anneal_steps
from recvae.schedules import kl_beta
from recvae.train import BatchProgress, BatchUpdates

__all__ = ["Joint", "JointConfig", "JointModule"]

# the scales tried for the closed-form start (logits = scale x EASE scores)
SCALES = np.geomspace(1.0, 3000.0, 36)
SCALE_USERS = 1000  # training users the start's scale and bias are fitted on
BIAS_STEPS = 15


class JointModule(torch.nn.Module):
    """The deep path (Mult-VAE's network, or None), the linear path's edge weights over a fixed
    item graph (buffers `indptr`, `targets`, or none) and one item bias."""

    def __init__(self, n_items: int, n_edges: int, config: JointConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.deep: AutoencoderModule | None = None
        if config.deep:
            self.deep = AutoencoderModule(
                n_items, tuple(config.hidden_dims), config.latent_dim, config.activation,
                config.variational,
            )  # fmt: skip
        # the model's one item bias (the deep path's output bias stays 0): the popularity the
        # likelihood wants; with item_bias = "train_only" it is left out of the scores
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        self.score_bias = config.item_bias == "scored"
        self.linear = config.linear
        if config.linear:
            self.edge_weight = torch.nn.Parameter(torch.zeros(n_edges))
            self.register_buffer("indptr", torch.zeros(n_items + 1, dtype=torch.int64))
            self.register_buffer("targets", torch.zeros(n_edges, dtype=torch.int64))
        self._indptr: np.ndarray | None = None  # a CPU copy of `indptr` for the expansion

    def reset_parameters(self, generator: torch.Generator) -> None:
        """The deep path's paper init; beside a linear path its output layer starts at zero,
        so the joint model starts exactly as the linear path's closed form (a random output
        layer would add noise logits that cost ranking quality at the start)."""
        if self.deep is not None:
            self.deep.reset_parameters(generator)
            with torch.no_grad():
                self.deep.output_layer()[1].zero_()  # item_bias stands in for it
                if self.linear:
                    self.deep.output_layer()[0].zero_()

    def set_bias(self, bias: np.ndarray) -> None:
        with torch.no_grad():
            self.item_bias.copy_(torch.from_numpy(bias))

    def set_graph(self, graph: ItemGraph, scale: float) -> None:
        """The linear path's structure and its starting weights (scale x the closed form)."""
        with torch.no_grad():
            self.indptr.copy_(torch.from_numpy(graph.indptr))
            self.targets.copy_(torch.from_numpy(graph.targets))
            self.edge_weight.copy_(torch.from_numpy(graph.weights) * scale)
        self._indptr = None

    def linear_logits(self, batch: sp.csr_matrix, values: torch.Tensor) -> torch.Tensor:
        """(rows x items) logits of the linear path for a CSR batch with these nonzeros."""
        if self._indptr is None:
            self._indptr = self.indptr.cpu().numpy()
        indptr = self._indptr
        starts = indptr[batch.indices]
        counts = indptr[batch.indices + 1] - starts
        total = int(counts.sum())
        ends = np.cumsum(counts)
        edges = np.repeat(starts - ends + counts, counts) + np.arange(total)
        rows = np.repeat(np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr)), counts)
        device = self.edge_weight.device
        edges_t = to_device(edges, device)
        flat = to_device(rows, device) * self.n_items + self.targets[edges_t]
        repeats = to_device(counts, device)
        contributions = torch.repeat_interleave(values, repeats, output_size=total)
        contributions = contributions * self.edge_weight[edges_t]
        out = torch.zeros(batch.shape[0] * self.n_items, device=device)
        return out.index_add(0, flat, contributions).view(batch.shape[0], self.n_items)

    def deep_logits(self, x: torch.Tensor, xt: torch.Tensor | None,
                    eps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(logits, latent mean and log-variance or None) of the deep path for a normalised
        CSR batch; `eps` (training only) samples the latent code."""
        assert self.deep is not None
        h = self.deep.encode(x, xt)
        if self.deep.variational:
            mu, logvar = self.deep.split_latent(h)
            z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
            return self.deep.decode(z), h
        return self.deep.decode(self.deep.activation(h)), h

    def combine(
        self, deep: torch.Tensor | None, linear: torch.Tensor | None, training: bool
    ) -> torch.Tensor:
        """The model's logits: the sum of the paths' logits (a product of the paths'
        unnormalised probabilities) and, in training or when scored, the item bias."""
        parts = [t for t in (deep, linear) if t is not None]
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return total + self.item_bias if training or self.score_bias else total

    def item_axes(self) -> dict[str, int]:
        raise RecvaeError("joint: warm start is not supported (the item graph is data-bound)")


class JointTrainer:
    """One epoch of joint training over shuffled users (see recvae.train)."""

    def __init__(self, model: Joint, train: sp.csr_matrix) -> None:
        if distributed.ranks().world > 1:  # each rank would train on every user: no speed-up
            raise RecvaeError(
                "joint: data-parallel training (torchrun) supports multvae and multdae; "
                "train the joint model in one process (--device cuda for a GPU)"
            )
        config = model.config
        self.model, self.module, self.config = model, model.module, config
        active = np.flatnonzero(np.diff(train.indptr) > 0)
        self.train = train[active]
        self.norms = row_norms(self.train)
        self.examples_per_epoch = self.train.shape[0]
        self.variational = config.deep and config.variational
        self.anneal_steps = resolve_anneal_steps(config, self.train.shape[0])  # type: ignore[arg-type]
        groups: list[dict[str, Any]] = []
        deep = self.module.deep
        if deep is not None:
            output, output_bias = deep.output_layer()
            output_bias.requires_grad_(False)  # item_bias stands in for it
            decay = 2.0 * config.l2
            groups += [
                {"params": [w for w in deep.weights() if w is not output], "weight_decay": decay},
                {"params": [output], "weight_decay": decay, "lr_scale": config.deep_output_lr},
                {"params": [b for b in deep.biases() if b is not output_bias]},
            ]
            deep.first_grad = torch.empty_like(deep.encoder[0])
            deep.output_grad = torch.empty_like(output)
        groups.append({"params": [self.module.item_bias], "weight_decay": 0.0})
        if config.linear:
            self.module.edge_weight.requires_grad_(config.train_linear)
            if config.train_linear:
                groups.append({"params": [self.module.edge_weight], "weight_decay": 0.0})
        self.optimizer = torch.optim.Adam(groups, lr=config.loop.lr, fused=True)

    def score(self, history: sp.csr_matrix) -> torch.Tensor:
        """Validation scores, left on the training device (ranked there by recvae.evaluate)."""
        return self.model._score_batch(history, on_device=True)

    def train_epoch(self, epoch: int, step: int, on_batch: BatchProgress) -> dict[str, float]:
        config = self.config
        order = epoch_order(config.loop.seed, epoch, self.train.shape[0])
        noise = epoch_noise(config.loop.seed, epoch)
        updates = BatchUpdates(self.optimizer, epoch, step)
        beta = 0.0
        for start in range(0, len(order), config.loop.batch_size):
            users = np.sort(order[start : start + config.loop.batch_size])
            if self.variational:
                beta = kl_beta(updates.step, "anneal", config.beta_cap, self.anneal_steps)
            nll, kl = self._batch_loss(users, noise)
            running = updates.update(nll + beta * kl, nll, kl)
            on_batch(len(users), {"loss": running, "beta": beta})
        numbers = updates.means()
        if self.variational:
            numbers["beta"] = beta
        else:
            del numbers["kl"]
        numbers["examples"] = len(order)
        return numbers

    def _batch_loss(
        self, users: np.ndarray, noise: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll, kl) of one batch. One dropout mask per batch: the deep path sees the kept
        items (normalised, Mult-VAE's way); with `split_input` the linear path sees them too and
        the targets are the dropped items only (VASP's input splitting: the model is trained
        to find items it was not shown, as it is used), else both see and predict it all."""
        config, module = self.config, self.module
        device = self.model.run_on
        batch = self.train[users]
        keep = torch.ones(batch.nnz, dtype=torch.bool)
        if config.dropout > 0:
            keep = torch.rand(batch.nnz, generator=noise) >= config.dropout
        inflate = keep / (1.0 - config.dropout)  # inverted dropout: expected input unchanged
        kl = torch.zeros((), device=device)
        deep = None
        if module.deep is not None:
            values = torch.from_numpy(normalised_values(batch, self.norms[users])) * inflate
            eps = None
            if module.deep.variational:
                eps = torch.randn((batch.shape[0], config.latent_dim), generator=noise)
                eps = to_device(eps, device)
            values = to_device(values, device)
            x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
            with dense_autocast(device, autocast_dtype(config.loop.precision)):
                deep, h = module.deep_logits(x, transpose_csr(batch, values), eps)
            deep, h = deep.float(), h.float()
            if eps is not None:
                mu, logvar = module.deep.split_latent(h)
                kl = 0.5 * torch.sum(-logvar + logvar.exp() + mu * mu - 1.0, dim=1).mean()
        raw = torch.from_numpy(np.asarray(batch.data, dtype=np.float32))
        linear = None
        if config.linear:
            shown = raw * inflate if config.split_input else raw
            linear = module.linear_logits(batch, to_device(shown, device))
        target = batch
        if config.split_input:
            target = sp.csr_matrix(
                ((raw * ~keep).numpy(), batch.indices, batch.indptr), shape=batch.shape
            )
        scores = module.combine(deep, linear, training=True)
        return likelihood_nll("multinomial", scores, target), kl


class Joint(TorchAutoencoder):
    """Mult-VAE + sparse EASE-started linear path, one likelihood (see the module docstring)."""

    name: ClassVar[str] = "joint"
    config_class: ClassVar[type] = JointConfig
    config: JointConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._graph: ItemGraph | None = None
        self._n_edges = 0
        self._bias: np.ndarray | None = None
        self.linear_scale = 0.0  # the start's fitted scale (recorded in model.json)
        self.linear_l2 = 0.0  # the l2 the start used

    def fit(self, train: sp.csr_matrix, valid: Holdout | None = None, **options: Any) -> Self:
        """Compute the linear path's closed-form start, then train both paths (see
        TorchAutoencoder.fit for the options: callback, checkpoint_dir, resume, log_path)."""
        if options.get("warm_start") is not None:
            raise RecvaeError("joint: warm start is not supported (the item graph is data-bound)")
        c = self.config
        if sp.issparse(train) and train.nnz and train.shape[1] > 0:
            x = as_csr(sp.csr_matrix(train, dtype=np.float32))
            graph = None
            if c.linear:
                self.linear_l2 = c.linear_l2 if c.linear_l2 is not None else default_l2(x)
                graph = neighbour_ease(x, c.neighbours, self.linear_l2)
                self._graph, self._n_edges = graph, graph.n_edges
            start = graph if c.linear_init == "ease" else None
            self.linear_scale, self._bias = fit_start(x, start, c.loop.seed)
        try:
            return super().fit(train, valid, **options)
        finally:
            self._graph, self._bias = None, None  # the module holds them now

    def _build_module(self, n_items: int) -> JointModule:
        module = JointModule(n_items, self._n_edges, self.config)
        if module.item_bias.is_meta:  # shapes only (the memory estimate): nothing to copy in
            return module
        if self._bias is not None:
            module.set_bias(self._bias)
        if self._graph is not None:
            module.set_graph(self._graph, self.linear_scale)
        return module

    def _make_trainer(self, train: sp.csr_matrix) -> JointTrainer:
        return JointTrainer(self, train)

    def _batch_scores_into(
        self, batch: sp.csr_matrix, norms: np.ndarray, target: torch.Tensor
    ) -> None:
        """One batch's summed logits (both paths) into `target` (see TorchAutoencoder)."""
        target.copy_(self._batch_logits(batch, norms))

    def _batch_logits(self, batch: sp.csr_matrix, norms: np.ndarray) -> torch.Tensor:
        module, device = self.module, self.run_on
        deep = linear = None
        if module.deep is not None:
            values = to_device(normalised_values(batch, norms), device)
            x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
            deep = module.deep_logits(x, None, None)[0]
        if module.linear:
            raw = to_device(torch.from_numpy(np.asarray(batch.data, dtype=np.float32)), device)
            linear = module.linear_logits(batch, raw)
        return module.combine(deep, linear, training=False)

    def score_blocks(self, history: sp.csr_matrix, block_size: int) -> Any:
        """Item blocks of the full scores (the linear path has no cheaper per-block form)."""
        yield from slice_blocks(self.score(history), block_size)

    def score_tensor_blocks(self, history: sp.csr_matrix, block_size: int) -> Any:
        """Item blocks of the full scores on the model's device (see `score_blocks`)."""
        scores = self.score_tensor(history)
        for block in item_blocks(self.n_items, block_size):
            yield block.start, scores[:, block]

    def _warm_start(self, source: Any, train: sp.csr_matrix | None = None) -> None:
        raise RecvaeError("joint: warm start is not supported (the item graph is data-bound)")

    # -- persistence: the edge count comes from the weights file --

    def save(self, path: Path) -> None:
        super().save(path)
        meta_file = Path(path) / "model.json"
        import json

        meta = json.loads(meta_file.read_text())
        meta.update(linear_scale=self.linear_scale, linear_l2=self.linear_l2)
        meta_file.write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = read_model_json(path, expect=cls.name)
        config = config_from_dict(cls.config_class, meta.get("config", {}),
                                  source=str(path / "model.json"))  # fmt: skip
        model = cls(config)
        model.n_items = model_size(meta, "n_items", path)
        tensors = load_tensors(path / WEIGHTS_FILE)
        if config.linear:
            if "edge_weight" not in tensors:
                raise RecvaeError(f"{path / WEIGHTS_FILE} has no edge_weight; {DAMAGED}")
            model._n_edges = int(tensors["edge_weight"].shape[0])
        model.module = JointModule(model.n_items, model._n_edges, config)
        expected = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
        check_tensor_shapes(expected, tensors, path / WEIGHTS_FILE)
        if config.linear:
            check_graph(tensors["indptr"], tensors["targets"], model.n_items, path / WEIGHTS_FILE)
        model.module.load_state_dict(tensors)
        model.module.eval()
        model.device = "auto"
        model.history = meta.get("history", [])
        model.best_epoch = int(meta.get("best_epoch", 0))
        model.best_metrics = meta.get("best_metrics", {})
        model.stopped = meta.get("stopped", "")
        model.linear_scale = float(meta.get("linear_scale", 0.0))
        model.linear_l2 = float(meta.get("linear_l2", 0.0))
        return model


def check_graph(indptr: torch.Tensor, targets: torch.Tensor, n_items: int, file: Path) -> None:
    """Refuse an item graph whose offsets or targets point outside the model's items."""
    ok = (
        indptr.shape[0] == n_items + 1
        and int(indptr[0]) == 0
        and int(indptr[-1]) == targets.shape[0]
        and bool((indptr[1:] >= indptr[:-1]).all())
        and (targets.numel() == 0 or (int(targets.min()) >= 0 and int(targets.max()) < n_items))
    )
    if not ok:
        raise RecvaeError(f"{file}: the linear path's item graph is inconsistent; {DAMAGED}")


def fit_start(train: sp.csr_matrix, graph: ItemGraph | None, seed: int) -> tuple[float, np.ndarray]:
    """The start's scale s and item bias b, fitted on a sample of training users so that
    softmax(s x closed-form scores + b) fits their histories best: s over the SCALES grid (EASE's
    scores are regression outputs near [0, 1], far too flat as logits over thousands of items),
    then b by matching expected to observed item counts (a few fixed-point steps). Without a
    graph only b (the popularity logits)."""
    rows = np.flatnonzero(np.diff(train.indptr) > 0)
    rng = np.random.default_rng(seed)
    if len(rows) > SCALE_USERS:
        rows = np.sort(rng.choice(rows, SCALE_USERS, replace=False))
    x = train[rows]
    r = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    values = torch.from_numpy(x.data.astype(np.float32))
    scores = torch.zeros(x.shape, dtype=torch.float32)
    best = 0.0
    if graph is not None:
        scores = torch.from_numpy((x @ graph.matrix()).toarray().astype(np.float32))
        best_nll = np.inf
        for scale in SCALES:
            log_probs = torch.log_softmax(scores * float(scale), dim=1)
            nll = float(-(values * log_probs[r, x.indices]).sum())
            if nll < best_nll:
                best, best_nll = float(scale), nll
    logits = scores * best
    totals = torch.from_numpy(np.asarray(x.sum(axis=1), dtype=np.float32).ravel())
    # observed counts from every training user, scaled to the sample (no zero for rare items)
    observed = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    observed = observed * float(totals.sum()) / max(observed.sum(), 1e-12)
    observed = torch.from_numpy(np.maximum(observed, 1e-3))
    bias = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(BIAS_STEPS):
        probs = torch.softmax(logits + bias.float(), dim=1)
        expected = (probs * totals[:, None]).sum(0).double()
        bias += torch.log(observed / expected.clamp_min(1e-12))
        bias -= bias.mean()
    return best, bias.float().numpy()
