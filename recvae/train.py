"""The training loop shared by every PyTorch model: epochs, validation, early stopping,
learning-rate schedule, checkpoints, resume, JSONL log, progress bar and callbacks.

The loop's settings are one table shared by every model (`LoopConfig`, the `[loop]` of a
model's config). A model hands the loop an `EpochTrainer`: its torch module, its optimizer, a
`train_epoch` that makes one pass over the training users and returns that epoch's numbers, and
a `score` function for validation. Everything that is not "how this model learns" lives here, once.

Resuming gives the same result as an uninterrupted run because everything random is derived from
(seed, epoch) by the model (see `epoch_seed`), and the checkpoint holds the weights, the
optimizer's moments and step counts, and the loop's counters, all as safetensors + JSON.

    checkpoint_dir/
      last/   weights.safetensors (module + optimizer tensors), state.json (loop + optimizer)
      best/   the same, written whenever the validation metric improves
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recvae import distributed
from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate
from recvae.io import atomic_dir
from recvae.metrics import parse_metric
from recvae.models.configs import LoopConfig
from recvae.schedules import PlateauState, plateau_update, scheduled_lr

log = logging.getLogger(__name__)

# Called after every epoch with the 1-based epoch number and that epoch's record (loss, kl,
# beta, lr, validation metrics, timings). Return True to stop training after this epoch; raise
# (e.g. optuna.TrialPruned) to abort: the last checkpoint is already written when it is called.
EpochCallback = Callable[[int, dict[str, Any]], bool | None]

# Called by `train_epoch` after every batch with (examples in the batch, running numbers).
BatchProgress = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(RecvaeError):
    """The loss became NaN or infinite: training stops instead of corrupting the weights."""


class EpochTrainer(Protocol):
    """What a model gives the loop: its module and optimizer, one epoch, and scoring."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    examples_per_epoch: int  # for the progress bar

    def train_epoch(self, epoch: int, step: int, on_batch: BatchProgress) -> dict[str, float]:
        """One pass over the training users (epoch 0-based, `step` updates made before it).

        Returns at least {"loss": mean loss, "steps": updates made, "examples": users seen};
        raises NonFiniteLossError (see `check_finite`) before stepping on a NaN/inf loss.
        """
        ...

    def score(self, history: sp.csr_matrix) -> np.ndarray | torch.Tensor:
        """Validation scores; a tensor may stay on the training device (recvae.evaluate)."""
        ...


@dataclass
class LoopState:
    """Everything about the loop's progress that a checkpoint must restore."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer updates made
    best_value: float = -math.inf
    best_epoch: int = 0  # 1-based; 0 = none yet
    bad_epochs: int = 0
    plateau: PlateauState | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["best_value"] = _json_float(self.best_value)
        if self.plateau is not None:
            payload["plateau"]["best"] = _json_float(self.plateau.best)
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> LoopState:
        payload = dict(payload)
        payload["best_value"] = float(payload["best_value"])
        if payload.get("plateau") is not None:
            plateau = dict(payload["plateau"])
            plateau["best"] = float(plateau["best"])
            payload["plateau"] = PlateauState(**plateau)
        return cls(**payload)


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    best_epoch: int  # 1-based; 0 when there was no validation
    best_metrics: dict[str, Any]
    stopped: str  # "epochs" | "early_stopping" | "time_limit" | "callback"


def epoch_seed(seed: int, epoch: int, purpose: int) -> int:
    """A 63-bit seed for one epoch's generator: independent streams from one seed, no globals."""
    state = np.random.SeedSequence([seed, epoch, purpose]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def check_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the training loss became {value} in epoch {epoch + 1} at update {step}; "
            "training stopped. Try a lower learning rate (lr) or a smaller beta cap"
        )


class BatchUpdates:
    """One epoch's updates of a torch model: check the loss, step the optimizer, and keep the
    running means of the loss and its parts (what `train_epoch` reports).

    Under torchrun (recvae.distributed) each rank passes the loss of its part of the global
    batch and that part's `share` of the batch's users: the gradients are summed across ranks
    weighted by the shares, which is the gradient of the whole batch's mean loss, and the
    numbers reported are the whole batch's."""

    def __init__(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        self.optimizer, self.epoch, self.step = optimizer, epoch, step
        self.totals = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
        self.batches = 0
        self.world = distributed.ranks().world

    def update(
        self,
        loss: torch.Tensor | None,
        nll: torch.Tensor | None,
        kl: torch.Tensor | None,
        share: float = 1.0,
    ) -> float:
        """One update on `loss` (refused before stepping when it is NaN or infinite); returns
        the running mean loss of the epoch so far. `loss` is None on a rank whose part of the
        batch is empty (share 0): it still takes part in the gradient sum."""
        parts = [t.item() * share if t is not None else 0.0 for t in (loss, nll, kl)]
        if self.world > 1:
            parts = distributed.sum_across_ranks(parts)
        value = parts[0]
        check_finite(value, self.epoch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            (loss * share if self.world > 1 else loss).backward()
        if self.world > 1:  # row-wise gradients (LazyAdam) are summed by its own step
            row_wise = getattr(self.optimizer, "row_wise_params", set)()
            distributed.all_reduce_gradients(
                p
                for group in self.optimizer.param_groups
                for p in group["params"]
                if p not in row_wise
            )
        self.optimizer.step()
        self.step += 1
        self.batches += 1
        for key, part in zip(("loss", "nll", "kl"), parts, strict=True):
            self.totals[key] += part
        return self.totals["loss"] / self.batches

    def means(self) -> dict[str, float]:
        """Mean loss, nll and kl per batch, and the number of updates ("steps")."""
        numbers: dict[str, float] = {
            key: value / max(self.batches, 1) for key, value in self.totals.items()
        }
        numbers["steps"] = self.batches
        return numbers


def validation_ks(metric: str, n_items: int) -> list[int]:
    """The cut-offs computed at every validation: the stopping metric's plus 20, 50 and 100."""
    _, k = parse_metric(metric)
    if k > n_items:
        raise RecvaeError(f"early-stopping metric {metric} needs at least {k} items, got {n_items}")
    return sorted({k, *(cut for cut in (20, 50, 100) if cut <= n_items)})


# The data-scaled default patience: at least this many epochs and this many updates' worth.
PATIENCE_EPOCHS = 10
PATIENCE_UPDATES = 500


def effective_patience(settings: LoopConfig, examples_per_epoch: int) -> int:
    """`settings.patience`, or when unset (None) the data-scaled default in validations: enough
    for PATIENCE_EPOCHS epochs and for PATIENCE_UPDATES updates, whichever is longer. On ml-1m
    (13 updates per epoch) that is 39 epochs, on Gowalla (60) and larger sets 10: small sets,
    whose epochs are cheap and noisy, wait longer; no set pays the 200-epoch budget after it
    stopped improving."""
    if settings.patience is not None:
        return settings.patience
    updates = max(1, math.ceil(examples_per_epoch / settings.batch_size))
    epochs = max(PATIENCE_EPOCHS, math.ceil(PATIENCE_UPDATES / updates))
    return max(1, math.ceil(epochs / settings.validate_every))


def run_loop(
    trainer: EpochTrainer,
    settings: LoopConfig,
    valid: Holdout | None = None,
    *,
    callback: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    log_path: Path | None = None,
    progress: bool = False,
    extra_state: dict[str, Any] | None = None,
) -> LoopResult:
    """Train until the epoch budget, early stopping, the time limit or the callback says stop.

    On return the module holds the weights of the best validated epoch (or the last epoch when
    there is no validation). With `checkpoint_dir` and `resume`, an existing `last` checkpoint
    whose `extra_state` matches (same model config) is picked up where it stopped.
    """
    ks = validation_ks(settings.metric, valid.n_items) if valid is not None else []
    main = distributed.ranks().is_main  # under torchrun, rank 0 alone validates and writes
    log_path = log_path if main else None
    progress = progress and main
    state = LoopState()
    best_weights: dict[str, torch.Tensor] | None = None
    if checkpoint_dir is not None and resume and (Path(checkpoint_dir) / "last").is_dir():
        state = load_checkpoint(Path(checkpoint_dir) / "last", trainer, extra_state)
        if (Path(checkpoint_dir) / "best").is_dir():
            best_weights = _read_weights(Path(checkpoint_dir) / "best")[0]
        if log_path is not None:
            _rewrite_log(log_path, state.history)
    elif log_path is not None:
        _rewrite_log(log_path, [])
    if settings.lr_schedule == "plateau" and state.plateau is None:
        state.plateau = PlateauState(lr=settings.lr)

    patience = effective_patience(settings, trainer.examples_per_epoch)
    started = time.perf_counter()
    stopped = "epochs"
    with _progress_display(progress) as display:
        while state.epoch < settings.epochs:
            epoch = state.epoch
            lr = _set_lr(trainer.optimizer, settings, state)
            try:
                record = _train_one_epoch(trainer, settings, state, display)
            except NonFiniteLossError as error:
                kept = (
                    f"; the last good checkpoint (epoch {state.epoch}) is in "
                    f"{Path(checkpoint_dir) / 'last'}"
                    if checkpoint_dir is not None and state.epoch > 0
                    else ""
                )
                raise NonFiniteLossError(f"{error}{kept}") from error
            record["lr"] = lr
            validate = valid is not None and (
                (epoch + 1) % settings.validate_every == 0 or epoch + 1 == settings.epochs
            )
            improved = False
            if validate:
                assert valid is not None
                record.update(distributed.from_main(_validate(trainer, valid, ks, settings)))
                value = record[settings.metric]
                improved = value > state.best_value
                if improved:
                    state.best_value, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
                    best_weights = _copy_weights(trainer.module)
                else:
                    state.bad_epochs += 1
                if state.plateau is not None:
                    state.plateau = plateau_update(
                        state.plateau, value, settings.lr_patience, settings.lr_gamma
                    )
            state.epoch += 1
            state.history.append(record)
            if checkpoint_dir is not None and main:
                save_checkpoint(Path(checkpoint_dir) / "last", trainer, state, extra_state)
                if improved:
                    save_checkpoint(Path(checkpoint_dir) / "best", trainer, state, extra_state)
            if log_path is not None:
                _append_log(log_path, record)
            display.finish_epoch(record, settings)
            if main:
                _log_epoch(record, settings, shown=display.progress is not None)
            asked_to_stop = (
                callback is not None and main and bool(callback(epoch + 1, dict(record)))
            )
            if distributed.from_main(asked_to_stop):
                stopped = "callback"
                break
            if patience > 0 and state.bad_epochs >= patience:
                stopped = "early_stopping"
                break
            if settings.time_limit > 0 and time.perf_counter() - started >= settings.time_limit:
                stopped = "time_limit"
                break

    if best_weights is not None:
        trainer.module.load_state_dict(best_weights)
    best = state.history[state.best_epoch - 1] if state.best_epoch else {}
    return LoopResult(state.history, state.best_epoch, dict(best), stopped)


def _validate(
    trainer: EpochTrainer, valid: Holdout, ks: list[int], settings: LoopConfig
) -> dict[str, Any] | None:
    """The validation numbers of this epoch (rank 0 only under torchrun; None elsewhere)."""
    if not distributed.ranks().is_main:
        return None
    started = time.perf_counter()
    result = evaluate(trainer.score, valid, ks=ks, batch_size=settings.eval_batch_size)
    return {**result.means, "valid_seconds": time.perf_counter() - started}


def _train_one_epoch(
    trainer: EpochTrainer, settings: LoopConfig, state: LoopState, display: _Display
) -> dict[str, Any]:
    epoch = state.epoch
    display.start_epoch(epoch, settings.epochs, trainer.examples_per_epoch)
    trainer.module.train()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        numbers = trainer.train_epoch(epoch, state.step, display.advance)
    finally:
        trainer.module.eval()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    state.step += int(numbers["steps"])
    record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, **numbers}
    record["train_seconds"] = seconds
    record["train_cpu_seconds"] = cpu_seconds  # all threads; shows work done on a busy machine
    record["examples_per_second"] = numbers.get("examples", 0) / seconds if seconds else 0.0
    return record


def _set_lr(optimizer: torch.optim.Optimizer, settings: LoopConfig, state: LoopState) -> float:
    if state.plateau is not None:
        lr = state.plateau.lr
    else:
        lr = scheduled_lr(
            settings.lr_schedule, settings.lr, state.epoch, settings.lr_step_size, settings.lr_gamma
        )
    assert lr is not None
    for group in optimizer.param_groups:  # a group may learn at a fixed multiple ("lr_scale")
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


# --- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(
    directory: Path,
    trainer: EpochTrainer,
    state: LoopState,
    extra_state: dict[str, Any] | None = None,
) -> None:
    """Write weights, optimizer state and loop state atomically (safetensors + JSON)."""
    tensors = {
        f"module.{k}": v.detach().cpu().contiguous()
        for k, v in trainer.module.state_dict().items()
    }
    optimizer = trainer.optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in optimizer["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    payload = {
        "loop": state.to_json(),
        "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
        "extra": extra_state or {},
    }
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
        (tmp / "state.json").write_text(json.dumps(payload, indent=1))


def load_checkpoint(
    directory: Path, trainer: EpochTrainer, extra_state: dict[str, Any] | None = None
) -> LoopState:
    """Restore module, optimizer and loop state; refuse a checkpoint of a different run setup."""
    module_tensors, optimizer_tensors, payload = _read_checkpoint(directory)
    if (extra_state or {}) != payload.get("extra", {}):
        raise RecvaeError(
            f"checkpoint {directory} was written by a run with a different model config or data; "
            "use a fresh checkpoint directory or resume=False"
        )
    trainer.module.load_state_dict(module_tensors)
    states: dict[int, dict[str, Any]] = {}
    for key, tensor in optimizer_tensors.items():
        index, name = key.split(".", 1)
        states.setdefault(int(index), {})[name] = tensor
    for index, values in payload["optimizer"]["scalars"].items():
        states.setdefault(int(index), {}).update(values)
    trainer.optimizer.load_state_dict(
        {"state": states, "param_groups": payload["optimizer"]["param_groups"]}
    )
    return LoopState.from_json(payload["loop"])


def _read_checkpoint(
    directory: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    weights_file, state_file = directory / "weights.safetensors", directory / "state.json"
    if not weights_file.is_file() or not state_file.is_file():
        raise RecvaeError(f"{directory} is not a complete checkpoint (weights or state missing)")
    tensors = load_file(str(weights_file))
    module = {k.removeprefix("module."): v for k, v in tensors.items() if k.startswith("module.")}
    optimizer = {
        k.removeprefix("optimizer."): v for k, v in tensors.items() if k.startswith("optimizer.")
    }
    return module, optimizer, json.loads(state_file.read_text())


def _read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    module, _, payload = _read_checkpoint(directory)
    return module, payload


def _copy_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


# --- log and progress --------------------------------------------------------------------------


def _rewrite_log(path: Path, history: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for record in history:
            handle.write(json.dumps(record) + "\n")


def _log_epoch(record: dict[str, Any], settings: LoopConfig, shown: bool) -> None:
    """One INFO record per epoch (event "epoch", the record as `metrics`): JSON logs and MLflow
    read it; human logs skip it when the progress bar already shows the epoch."""
    summary = " ".join(
        f"{key} {record[key]:.4g}" for key in ("loss", "kl", "beta", settings.metric)
        if isinstance(record.get(key), int | float)
    )  # fmt: skip
    log.info(
        "epoch %d/%d %s", record["epoch"], settings.epochs, summary,
        extra={"event": "epoch", "epoch": record["epoch"], "metrics": record,
               "_on_progress_bar": shown},
    )  # fmt: skip


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


class _Display:
    """A rich progress bar per epoch; a no-op when progress is off."""

    def __init__(self, progress: Any | None) -> None:
        self.progress = progress
        self.task: Any = None
        self.started = 0.0
        self.examples = 0

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        self.started, self.examples = time.perf_counter(), 0
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=total, info="")

    def advance(self, examples: int, numbers: dict[str, float]) -> None:
        self.examples += examples
        if self.progress is None:
            return
        rate = self.examples / max(time.perf_counter() - self.started, 1e-9)
        info = " ".join(f"{k} {v:.4g}" for k, v in numbers.items()) + f" | {rate:,.0f} users/s"
        self.progress.update(self.task, completed=self.examples, info=info)

    def finish_epoch(self, record: dict[str, Any], settings: LoopConfig) -> None:
        if self.progress is None:
            return
        parts = [f"loss {record['loss']:.4g}"]
        for key in ("kl", "beta"):
            if key in record:
                parts.append(f"{key} {record[key]:.4g}")
        if settings.metric in record:
            parts.append(f"{settings.metric} {record[settings.metric]:.4f}")
        parts.append(f"{record['examples_per_second']:,.0f} users/s")
        self.progress.update(
            self.task, total=max(self.examples, 1), completed=self.examples, info=" ".join(parts)
        )


@contextmanager
def _progress_display(enabled: bool) -> Iterator[_Display]:
    from recvae.logs import progress_bars

    if not progress_bars(enabled):
        yield _Display(None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, transient=False) as progress:
        yield _Display(progress)
