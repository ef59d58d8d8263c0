"""The base class every PyTorch autoencoder here shares (Mult-VAE, Mult-DAE, RecVAE).

Fit through the shared training loop (recvae.train), batched fold-in scoring, safetensors
save/load, warm start and the training history. A model says what differs through a few hooks
(see `TorchAutoencoder`); what is the same is written here once.

Randomness: one seed; the initial weights come from a generator seeded by (seed, INIT), each
epoch's randomness from generators the model seeds by (seed, epoch, purpose). No global RNG is
touched, and a resumed run replays exactly the epochs an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

from recvae import distributed
from recvae.config import config_from_dict, config_to_dict
from recvae.data.split import Holdout, as_csr
from recvae.device import model_device, to_device
from recvae.errors import RecvaeError
from recvae.models.base import (
    check_history,
    check_tensor_shapes,
    item_blocks,
    load_tensors,
    model_config,
    model_size,
    read_model_json,
    write_model_json,
)
from recvae.models.memory import FLOAT, MemoryEstimate, check_fits
from recvae.models.precision import matmul_precision
from recvae.models.torch_sparse import normalised_values, row_norms, torch_csr
from recvae.train import EpochCallback, epoch_seed, run_loop

# `epoch_seed` purposes: separate streams for the user order, the dropout/latent noise and the
# initial weights.
SHUFFLE, NOISE, INIT = 0, 1, 2


def epoch_order(seed: int, epoch: int, n_users: int) -> np.ndarray:
    """The epoch's seeded user permutation: the same on every rank, so under torchrun each rank's
    part of a global batch means the same users as in one process."""
    return np.random.default_rng(epoch_seed(seed, epoch, SHUFFLE)).permutation(n_users)


def epoch_noise(seed: int, epoch: int) -> torch.Generator:
    """The epoch's seeded generator for dropout masks and reparameterisation noise."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, NOISE))
WEIGHTS_FILE = "weights.safetensors"


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Use `threads` torch threads inside the block (0 = all cores) and restore the old value."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchAutoencoder:
    """What every PyTorch autoencoder here shares (Mult-VAE, Mult-DAE, RecVAE): fit through the
    shared loop, batched fold-in scoring, safetensors save/load, warm start and the history.

    A subclass says what differs through four hooks: `_build_module`, `_make_trainer`,
    `_logits_into` (one scoring batch) and, when some weights are training state only,
    `_tensors_to_save` / `_load_weights`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: parameter name prefixes rebuilt on load, never saved (RecVAE's old encoder)
    _weights_not_saved: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        """`MultVAE()`, `MultVAE(config)`, `MultVAE(latent_dim=100, epochs=50)`: settings of the
        model and of its `loop` table may be given flat (see recvae.models.configs)."""
        self.config = model_config(self.config_class, config, overrides, self.name)
        self.module: Any = None  # the torch module, built by `_build_module` in fit or load
        # where this model trains and scores (recvae.device); a loaded model says "auto"
        self.device: str = self.config.loop.device
        self.run_on = torch.device("cpu")  # the resolved device of the current fit / scoring
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
        warm_start: Any = None,
        log_path: Path | str | None = None,
        progress: bool = False,
    ) -> Self:
        """Train on `train` (users x items CSR), validating on `valid` after every epoch.

        callback(epoch, record) runs after each epoch (1-based epoch, the JSONL record); return
        True to stop, or raise (e.g. optuna.TrialPruned) to abort. checkpoint_dir keeps `best`
        and `last` checkpoints and, with resume, continues from `last`. warm_start starts from
        another model's weights (a model, its directory, or a `WarmStart` that matches items by
        id so that a grown catalogue still starts warm). The best validated epoch's
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
        loop = self.config.loop
        self.run_on = model_device(self.device)
        if self.run_on.type == "cpu":  # a GPU run's weights live in device memory instead
            # under torchrun every rank on this machine holds a whole model
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if distributed.launched() else 1
            check_fits(replace(self.memory_estimate(train, valid), processes=local))
        distributed.init_from_env(self.run_on)  # joins torchrun's process group, if launched
        with torch_threads(loop.threads), matmul_precision(loop.precision, self.run_on):
            self.n_items = train.shape[1]
            self.module = self._build_module(self.n_items)
            # initialised on the CPU from the seed (the same weights on every device and rank)
            self.module.reset_parameters(
                torch.Generator().manual_seed(epoch_seed(loop.seed, 0, INIT))
            )
            if warm_start is not None:
                self._warm_start(warm_start, train)
            self.module.to(self.run_on)
            trainer = self._make_trainer(train)
            result = run_loop(
                trainer,
                loop,
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

    def memory_estimate(
        self, train: sp.csr_matrix, valid: Holdout | None = None
    ) -> MemoryEstimate:
        """What fitting on `train` (validating on `valid`) will allocate (recvae.models.memory):
        the weights, Adam's two moments, the gradients, one batch's activations, validation
        scoring (eval_batch_size users x items, scores and their copy), the copy of the best
        validated weights the loop keeps, and the trainer's copy of the data. The parameter
        counts come from the module built on torch's meta device (shapes only, nothing
        allocated)."""
        n_users, n_items = train.shape
        with torch.device("meta"):
            module = self._build_module(n_items)
        params = list(module.parameters())
        trained = sum(p.numel() for p in params if p.requires_grad)
        loop = self.config.loop
        batch = max(1, min(loop.batch_size, n_users))
        # a batch's distinct items: at most the batch's interactions, at most every item
        batch_items = min(n_items, -(-train.nnz * batch // max(1, n_users)))
        scored = 0 if valid is None else min(loop.eval_batch_size, valid.history.shape[0])
        data = train.nnz * (train.data.itemsize + 8) + (n_users + 1) * 8  # values, int64 indices
        weights = sum(p.numel() for p in params) * FLOAT
        parts = (
            ("weights", weights),
            ("Adam state", 2 * trained * FLOAT),
            ("gradients", self._gradient_floats(module, batch_items) * FLOAT),
            ("batch", self._batch_floats(module, n_items, batch, batch_items) * FLOAT),
            ("validation", 2 * scored * n_items * FLOAT),
            ("best weights", 0 if valid is None else weights),  # the loop's copy (run_loop)
            ("data", data),
        )
        return MemoryEstimate(self.name, parts, self._memory_advice())

    def _gradient_floats(self, module: Any, batch_items: int) -> int:
        """Floats of the gradients of one update: by default every trained parameter's."""
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    def _batch_floats(self, module: Any, n_items: int, batch: int, batch_items: int) -> int:
        """Floats of one batch's activations: by default the full softmax's logits and its
        log-softmax table (batch x items each)."""
        return 2 * batch * n_items

    def _memory_advice(self) -> str:
        return (
            "to need less: smaller hidden and latent sizes, a smaller batch_size or "
            "eval_batch_size (or no validation: no best-weights copy), or fewer items (filter "
            "rare items at ingest, e.g. a minimum item count)"
        )

    def _run_key(self, train: sp.csr_matrix) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: model, data and the settings that shape
        the weights (the epoch budget, patience, threads and device may change between runs)."""
        free = {"epochs", "patience", "time_limit", "threads", "eval_batch_size", "device"}
        config = config_to_dict(self.config)
        config["loop"] = {k: v for k, v in config["loop"].items() if k not in free}
        return {
            "model": self.name,
            "config": config,
            "n_items": self.n_items,
            "nnz": int(train.nnz),
        }

    def _build_module(self, n_items: int) -> Any:
        raise NotImplementedError

    def _make_trainer(self, train: sp.csr_matrix) -> Any:
        """The model's `EpochTrainer` (see recvae.train): one epoch of its own updates."""
        raise NotImplementedError

    def _logits_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write the logits of one normalised CSR input batch `x` into `out` (inference)."""
        raise NotImplementedError

    def _output_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the output layer (users x hidden) for a normalised CSR batch `x`."""
        raise NotImplementedError

    def _output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (hidden x items), bias (items)) of the output layer: logits = h @ W + b."""
        raise NotImplementedError

    def _tensors_to_save(self) -> dict[str, torch.Tensor]:
        assert self.module is not None
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def _load_weights(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        # assign: the module keeps the loaded tensors instead of copying them into its own
        # (never written, so never resident) ones: one copy of the weights at load, not two
        # (4.5 GiB instead of 9 at a million items). safetensors maps the file privately
        # (copy-on-write), so the weights are clean page cache until written; recvae and
        # safetensors replace a weights file by rename, which leaves a loaded model intact
        # (a tool that truncates the file in place under a running process would not).
        self.module.load_state_dict(tensors, assign=True)

    def _warm_start(self, source: Any, train: sp.csr_matrix | None = None) -> None:
        """Seed the freshly initialised module with a trained model's weights (a `WarmStart`,
        a model, or its directory). With a `WarmStart` carrying item rows, items are matched
        by id; new items start from their neighbours in `train` (recvae.models.warm_start)."""
        from recvae.models.warm_start import (
            WarmStart,
            WarmStartError,
            load_source,
            new_item_neighbours,
            warm_state,
        )

        spec = source if isinstance(source, WarmStart) else WarmStart(source)
        other = load_source(spec.source, type(self))
        rows = spec.item_rows
        if rows is None:
            if other.n_items != self.n_items:
                raise WarmStartError(
                    f"{self.name}: cannot warm start from a model over {other.n_items} items "
                    f"when training on {self.n_items}; give the item rows (WarmStart.by_item_ids)"
                )
            rows = np.arange(self.n_items)
        elif len(rows) != self.n_items:
            raise WarmStartError(f"{self.name}: {len(rows)} item rows for {self.n_items} items")
        neighbours = None if train is None else new_item_neighbours(train, rows, other.n_items)
        trained = {k: v.detach().cpu() for k, v in other.module.state_dict().items()}
        state = warm_state(  # on the CPU: this module moves to the run's device afterwards
            self.module.state_dict(),
            trained,
            self.module.item_axes(),
            rows,
            neighbours,
        )
        self.module.load_state_dict(state)

    @property
    def best_beta(self) -> float | None:
        """The KL weight of the best validated epoch (the paper's way of choosing beta)."""
        return self.best_metrics.get("beta")

    # -- scoring --

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """Logits over all items for each history row (fold-in); unmasked, float32."""
        return self._scoring(history, on_device=False).numpy()

    def score_tensor(self, history: sp.csr_matrix) -> torch.Tensor:
        """`score` as a tensor on the model's device (recvae.models.base.score_tensor): top-K
        and masking then run there and only k ids and scores per user reach the host."""
        return self._scoring(history, on_device=True)

    def _scoring(self, history: sp.csr_matrix, on_device: bool) -> torch.Tensor:
        if self.module is None:
            raise RecvaeError(f"{self.name}: call fit (or load a trained model) before score")
        history = check_history(history, self.n_items, self.name)
        self.run_on = model_device(self.device)
        self.module.to(self.run_on)
        with torch_threads(self.config.loop.threads):
            return self._score_batch(history, on_device)

    def score_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Logits item block by item block (recvae.models.base.score_blocks), on the host."""
        for start, block in self.score_tensor_blocks(history, block_size):
            yield start, block.cpu().numpy()

    def score_tensor_blocks(
        self, history: sp.csr_matrix, block_size: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Logits item block by item block, on the model's device: the hidden layer once per
        call, then the output layer restricted to each block's columns, so no (users x items)
        array is ever built."""
        if self.module is None:
            raise RecvaeError(f"{self.name}: call fit (or load a trained model) before score")
        history = check_history(history, self.n_items, self.name)
        self.run_on = model_device(self.device)
        self.module.to(self.run_on)
        step = self.config.loop.eval_batch_size
        norms = row_norms(history)
        with torch_threads(self.config.loop.threads), torch.inference_mode():
            parts = []
            for start in range(0, history.shape[0], step):
                batch = as_csr(history[start : start + step])
                values = to_device(normalised_values(batch, norms[start : start + step]),
                                   self.run_on)  # fmt: skip
                parts.append(
                    self._output_input(torch_csr(batch.indptr, batch.indices, values, batch.shape))
                )
            hidden = torch.cat(parts) if parts else None
            weight, bias = self._output_layer()
        for block in item_blocks(self.n_items, block_size):
            # no_grad, not inference_mode: the caller masks the block in place
            with torch_threads(self.config.loop.threads), torch.no_grad():
                if hidden is None:
                    scores = torch.empty((0, block.stop - block.start), device=self.run_on)
                else:
                    scores = torch.addmm(bias[block], hidden, weight[:, block])
            yield block.start, scores

    def _score_batch(self, history: sp.csr_matrix, on_device: bool = False) -> torch.Tensor:
        """Logits of every history row, batch by batch on the model's device. On the CPU they
        are written straight into one host tensor (sharing memory with a NumPy array); on a GPU
        into one device tensor when `on_device` (the caller ranks them there), else copied back
        batch by batch."""
        assert self.module is not None
        if on_device and self.run_on.type != "cpu":
            out = torch.empty(history.shape, dtype=torch.float32, device=self.run_on)
        else:
            out = torch.from_numpy(np.empty(history.shape, dtype=np.float32))
        step = self.config.loop.eval_batch_size
        norms = row_norms(history)
        with torch.inference_mode():
            for start in range(0, history.shape[0], step):
                batch = as_csr(history[start : start + step])
                target = out[start : start + batch.shape[0]]
                self._batch_scores_into(batch, norms[start : start + step], target)
        return out

    def _batch_scores_into(
        self, batch: sp.csr_matrix, norms: np.ndarray, target: torch.Tensor
    ) -> None:
        """Write one batch's logits into `target` (straight in when it is on the model's
        device, else through one device buffer). A model whose scores are not one network's
        output (the joint model) overrides this."""
        values = to_device(normalised_values(batch, norms), self.run_on)
        x = torch_csr(batch.indptr, batch.indices, values, batch.shape)
        if target.device == self.run_on:
            self._logits_into(x, target)
        else:
            logits = torch.empty(target.shape, device=self.run_on)
            self._logits_into(x, logits)
            target.copy_(logits)

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
        meta = read_model_json(path, expect=cls.name)
        model = cls(
            config_from_dict(
                cls.config_class, meta.get("config", {}), source=str(path / "model.json")
            )
        )
        model.n_items = model_size(meta, "n_items", path)
        model.module = model._build_module(model.n_items)
        tensors = load_tensors(path / WEIGHTS_FILE)
        expected = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
        check_tensor_shapes(expected, tensors, path / WEIGHTS_FILE, cls._weights_not_saved)
        model._load_weights(tensors, path)  # on the CPU; scoring moves it to the run's device
        model.module.eval()
        model.device = "auto"  # a saved model runs wherever the loading run is: GPU if present
        model.history = meta.get("history", [])
        model.best_epoch = int(meta.get("best_epoch", 0))
        model.best_metrics = meta.get("best_metrics", {})
        model.stopped = meta.get("stopped", "")
        return model
