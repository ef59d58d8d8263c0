"""Typed settings of every model, in one shape: the model's own settings plus, for the models
trained by the epoch loop, one shared `[loop]` table.

    # multvae.toml (recvae train DATA --model multvae --config multvae.toml)
    latent_dim = 200
    [loop]
    epochs = 100
    patience = 10
    seed = 3

Plain frozen dataclasses of scalars, tuples and tables, importable without torch or implicit:
a config file is checked (`make_config`) before anything heavy is imported, saved inside
model.json and read back without unpickling. Loop keys may also be given flat (`epochs = 100`
at the top, or `MultVAE(epochs=100)`): they go into the loop table, so older files still load.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recvae.config import config_from_dict, merged_settings, update_config

Activation = Literal["tanh", "relu", "sigmoid"]
Likelihood = Literal["multinomial", "gaussian", "logistic"]
LRSchedule = Literal["none", "step", "exponential", "plateau"]
Normalise = Literal["zscore", "softmax"]
Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS = ("fp32", "tf32", "bf16")  # what each means: recvae.models.precision
Softmax = Literal["full", "sampled"]
Proposal = Literal["popularity", "uniform"]
Optimizer = Literal["auto", "adam", "lazy_adam"]
# Devices a run may name (recvae.device resolves them): auto = CUDA when present, else the CPU.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


@dataclass(frozen=True)
class LoopConfig:
    """The training-loop table every epoch-trained model shares (recvae.train.run_loop)."""

    epochs: int = 200  # the most epochs; early stopping (patience) usually ends far sooner
    # Stop after this many validations without improvement; 0 = never. None (the default) scales
    # with the data set: at least 10 epochs' worth and at least 500 updates' worth, in
    # validations (`recvae.train.effective_patience`): a small set with a few updates per epoch
    # gets more epochs of patience than an ML-20M-sized one.
    patience: int | None = None
    time_limit: float = 0.0  # seconds of training, after which the loop stops; 0 = no limit
    metric: str = "ndcg@100"  # validation metric that picks the best epoch
    validate_every: int = 1
    lr: float = 1e-3
    lr_schedule: LRSchedule = "none"
    lr_step_size: int = 50  # "step": multiply by lr_gamma every lr_step_size epochs
    lr_gamma: float = 0.5  # "step" / "exponential" factor; "plateau" reduction factor
    lr_patience: int = 10  # "plateau": validations without improvement before reducing
    batch_size: int = 500  # users per update
    eval_batch_size: int = 2000  # users per scoring batch (validation and inference)
    seed: int = 0  # one seed; every random stream is derived from it
    threads: int = 0  # torch threads while training and scoring; 0 = all cores
    device: str = "cpu"  # "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; recvae.device
    precision: Precision = "fp32"  # dense layers in fp32, tf32 (CUDA) or bf16 autocast

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, tf32 or bf16, got {self.precision!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ValueError(
                f"device must be auto, cpu, cuda or cuda:N (e.g. cuda:0), got {self.device!r}"
            )
        _check(
            [
                (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
                (
                    self.patience is None or self.patience >= 0,
                    f"patience must be >= 0 (or unset: scaled with the data), got {self.patience}",
                ),
                (self.time_limit >= 0, f"time_limit must be >= 0 seconds, got {self.time_limit}"),
                (self.lr > 0, f"lr must be positive, got {self.lr}"),
                (self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
                (self.eval_batch_size > 0, f"eval_batch_size must be > 0: {self.eval_batch_size}"),
                (self.validate_every > 0, f"validate_every must be > 0: {self.validate_every}"),
                (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            ]
        )


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
    # "sampled": each update's softmax runs over the batch's items plus `negatives` items drawn
    # from `proposal`, log-proposal corrected (recvae.models.sampled_softmax); scoring is exact
    softmax: Softmax = "full"
    negatives: int = 4096
    proposal: Proposal = "popularity"
    # "lazy_adam": Adam on only the item rows a batch touches (recvae.models.lazy_adam; untouched
    # rows keep their weights and moments); "auto": lazy_adam when softmax = "sampled", else adam
    optimizer: Optimizer = "auto"
    loop: LoopConfig = LoopConfig()

    def __post_init__(self) -> None:
        _check(
            [
                *autoencoder_checks(self),
                (self.beta_cap >= 0, f"beta_cap must be >= 0, got {self.beta_cap}"),
                (
                    self.anneal_steps is None or self.anneal_steps >= 0,
                    f"anneal_steps must be >= 0 (or unset), got {self.anneal_steps}",
                ),
            ]
        )


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
    softmax: Softmax = "full"  # as for Mult-VAE
    negatives: int = 4096
    proposal: Proposal = "popularity"
    optimizer: Optimizer = "auto"  # as for Mult-VAE
    loop: LoopConfig = LoopConfig()

    def __post_init__(self) -> None:
        _check(autoencoder_checks(self))


def autoencoder_checks(config: MultVAEConfig | MultDAEConfig) -> list[tuple[bool, str]]:
    return [
        (0.0 <= config.dropout < 1.0, f"dropout must be in [0, 1), got {config.dropout}"),
        (config.latent_dim > 0, f"latent_dim must be positive, got {config.latent_dim}"),
        (
            all(d > 0 for d in config.hidden_dims),
            f"hidden_dims must be positive: {config.hidden_dims}",
        ),
        (config.l2 >= 0, f"l2 must be >= 0, got {config.l2}"),
        *sampled_softmax_checks(config),
    ]


def resolved_optimizer(config: MultVAEConfig | MultDAEConfig) -> str:
    """Returns "adam" or "lazy_adam". "auto" is lazy_adam exactly when softmax = "sampled": sampled
    softmax is the large-catalogue mode, where dense Adam's items x hidden gradients and steps
    (two such matrices per update) dominate an update and its memory; with the full softmax
    the output layer's gradient covers every item anyway, and dense Adam stays the paper's
    update (results of existing full-softmax settings are unchanged)."""
    if config.optimizer == "auto":
        return "lazy_adam" if config.softmax == "sampled" else "adam"
    return config.optimizer


def sampled_softmax_checks(config: MultVAEConfig | MultDAEConfig) -> list[tuple[bool, str]]:
    """The sampled-softmax settings: known words, a positive count, a multinomial likelihood."""
    return [
        (
            config.softmax in ("full", "sampled"),
            f"softmax must be 'full' or 'sampled', got {config.softmax!r}",
        ),
        (
            config.proposal in ("popularity", "uniform"),
            f"proposal must be 'popularity' or 'uniform', got {config.proposal!r}",
        ),
        (
            isinstance(config.negatives, int) and config.negatives >= 1,
            f"negatives must be a positive number of sampled items, got {config.negatives!r}",
        ),
        (
            config.softmax == "full" or config.likelihood == "multinomial",
            f"softmax = 'sampled' needs likelihood = 'multinomial' (the softmax it samples), "
            f"got likelihood = {config.likelihood!r}",
        ),
        (
            config.optimizer in ("auto", "adam", "lazy_adam"),
            f"optimizer must be 'auto', 'adam' or 'lazy_adam', got {config.optimizer!r}",
        ),
    ]


@dataclass(frozen=True)
class RecVAEConfig:
    """RecVAE settings: the reference implementation's (run.py), except the two defaults that
    validation on ml-1m changed (per_user_beta off with beta 0.2, one encoder pass per round).
    An epoch of the loop is one RecVAE round; the reference's lr 5e-4 and 50 rounds."""

    hidden_dim: int = 600
    latent_dim: int = 200
    n_layers: int = 5  # encoder hidden layers
    dropout: float = 0.5  # on the normalised input during encoder passes
    # switches (all on = RecVAE; each off = the Mult-VAE choice for that component)
    composite_prior: bool = True
    mixture_weights: tuple[float, ...] = (0.15, 0.75, 0.1)  # standard, old posterior, wide
    wide_logvar: float = 10.0
    per_user_beta: bool = False  # reference: True
    gamma: float = 0.005  # per-user KL weight = gamma * number of items in the history
    beta: float = 0.2  # fixed KL weight when per_user_beta is off
    alternating: bool = True
    n_enc_epochs: int = 1  # reference: 3
    swish: bool = True
    layer_norm: bool = True
    layer_norm_eps: float = 0.1
    dense_skips: bool = True
    loop: LoopConfig = LoopConfig(lr=5e-4, epochs=50)

    def __post_init__(self) -> None:
        _check(
            [
                (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
                (self.hidden_dim > 0, f"hidden_dim must be positive, got {self.hidden_dim}"),
                (self.latent_dim > 0, f"latent_dim must be positive, got {self.latent_dim}"),
                (self.n_layers > 0, f"n_layers must be positive, got {self.n_layers}"),
                (
                    len(self.mixture_weights) == 3 and all(w > 0 for w in self.mixture_weights),
                    f"mixture_weights must be 3 positive numbers, got {self.mixture_weights}",
                ),
                (self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}"),
                (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
                (self.n_enc_epochs > 0, f"n_enc_epochs must be positive: {self.n_enc_epochs}"),
                (
                    self.loop.precision != "bf16",
                    "precision bf16 is for multvae and multdae; recvae trains in fp32 or tf32",
                ),
            ]
        )


@dataclass(frozen=True)
class JointConfig:
    """The joint model (recvae.models.joint): a Mult-VAE (or Mult-DAE) path and a sparse linear
    item-item path whose logits are added, trained together by the multinomial likelihood.
    The linear path starts from EASE's closed form restricted to each item's `neighbours`
    most similar items (items x neighbours weights, never items x items)."""

    deep: bool = True  # the Mult-VAE / Mult-DAE path; off = the linear path alone
    variational: bool = True  # Mult-VAE (KL term, sampled latent); False = Mult-DAE
    hidden_dims: tuple[int, ...] = (600,)
    latent_dim: int = 200
    dropout: float = 0.5  # on the deep path's normalised input
    activation: Activation = "tanh"
    beta_cap: float = 0.2
    anneal_steps: int | None = None  # as Mult-VAE's: None = over the epoch budget
    l2: float = 0.0  # deep path weights
    linear: bool = True  # the item-item path; off = the deep path alone
    neighbours: int = 100  # inputs per target item in the linear path
    linear_l2: float | None = None  # EASE l2 of the start; None = 6 x interactions per item
    linear_init: Literal["ease", "zero"] = "ease"
    train_linear: bool = True  # False: the closed form stays fixed, only the deep path learns
    # targets = the items dropped from the input (VASP's input splitting); False: the whole
    # history is the target and the linear path sees all of it (Mult-VAE's way)
    split_input: bool = True
    # the learnt item bias (the popularity the likelihood wants) is part of the scores, or with
    # "train_only" left out of them (logit adjustment): better for the linear path alone on
    # ml-1m, worse beside the deep path (benchmarks/reports/joint-2026-12-02)
    item_bias: Literal["train_only", "scored"] = "scored"
    # the deep path's output layer learns at lr x this: Adam moves every item's output weights
    # by about lr per update whatever their gradient, which adds noise logits for rare items
    deep_output_lr: float = 1.0
    loop: LoopConfig = LoopConfig(epochs=50, patience=5)

    def __post_init__(self) -> None:
        _check(
            [
                (self.deep or self.linear, "deep and linear are both off: turn one of them on"),
                (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
                (
                    self.dropout > 0 or not self.split_input,
                    "split_input needs dropout > 0 (the dropped items are the targets)",
                ),
                (self.latent_dim > 0, f"latent_dim must be positive, got {self.latent_dim}"),
                (
                    all(d > 0 for d in self.hidden_dims),
                    f"hidden_dims must be positive: {self.hidden_dims}",
                ),
                (self.beta_cap >= 0, f"beta_cap must be >= 0, got {self.beta_cap}"),
                (self.l2 >= 0, f"l2 must be >= 0, got {self.l2}"),
                (
                    isinstance(self.neighbours, int) and self.neighbours >= 1,
                    f"neighbours must be a positive number of items, got {self.neighbours!r}",
                ),
                (
                    self.linear_l2 is None or self.linear_l2 > 0,
                    f"linear_l2 must be positive (or unset), got {self.linear_l2}",
                ),
                (
                    self.item_bias in ("train_only", "scored"),
                    f"item_bias must be train_only or scored, got {self.item_bias!r}",
                ),
                (
                    self.linear_init in ("ease", "zero"),
                    f"linear_init must be 'ease' or 'zero', got {self.linear_init!r}",
                ),
                (self.deep_output_lr > 0, f"deep_output_lr must be > 0: {self.deep_output_lr}"),
            ]
        )


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 500.0  # L2 weight lambda; Steck tunes it in the hundreds to thousands
    # where scoring runs (fit is on the CPU): "auto", "cpu", "cuda" or "cuda:N"; the item x item
    # matrix moves to a GPU only when it fits there (recvae.models.ease)
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check([(self.l2 > 0, f"l2 must be positive, got {self.l2}")])
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ValueError(
                f"device must be auto, cpu, cuda or cuda:N (e.g. cuda:0), got {self.device!r}"
            )


@dataclass(frozen=True)
class SparseEASEConfig:
    """Sparse EASE (recvae.models.sparse_ease): each item regresses on its `neighbours` items of
    highest co-occurrence only, so memory grows with items x neighbours, not items^2."""

    l2: float = 500.0  # L2 weight lambda, as for EASE
    neighbours: int = 200  # regressors per item (m); >= n_items - 1 with min_cooccurrence 0: EASE
    # pairs co-occurring fewer times are never neighbours; 0: items that never co-occur fill the
    # free slots, most popular first
    min_cooccurrence: float = 1.0
    # co-occurrences among this many most popular items are kept exactly, in a dense float32
    # block (256 MiB at 8192); beyond it, pairs neither of whose lists holds the other count as 0
    dense_items: int = 8192

    def __post_init__(self) -> None:
        _check(
            [
                (self.l2 > 0, f"l2 must be positive, got {self.l2}"),
                (
                    isinstance(self.neighbours, int) and self.neighbours >= 1,
                    f"neighbours must be a positive number of items, got {self.neighbours!r}",
                ),
                (
                    self.min_cooccurrence >= 0,
                    f"min_cooccurrence must be >= 0, got {self.min_cooccurrence}",
                ),
                (
                    isinstance(self.dense_items, int) and self.dense_items >= 0,
                    f"dense_items must be a number of items >= 0, got {self.dense_items!r}",
                ),
            ]
        )


def factor_checks(factors: int, regularization: float, iterations: int) -> list[tuple[bool, str]]:
    return [
        (factors >= 1 and iterations >= 1, "factors and iterations must be >= 1"),
        (regularization >= 0, f"regularization must be >= 0, got {regularization}"),
    ]


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 128
    regularization: float = 0.1
    alpha: float = 10.0  # confidence of an observed interaction = alpha * value
    iterations: int = 15
    num_threads: int = 0  # 0 = one per CPU core
    seed: int = 0

    def __post_init__(self) -> None:
        _check(
            [
                *factor_checks(self.factors, self.regularization, self.iterations),
                (self.alpha > 0, f"alpha must be positive, got {self.alpha}"),
            ]
        )


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 128
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    fold_in_confidence: float = 10.0
    fold_in_regularization: float = 0.1
    num_threads: int = 0  # 0 = one per CPU core
    seed: int = 0

    def __post_init__(self) -> None:
        valid = (
            self.learning_rate > 0
            and self.fold_in_confidence >= 1
            and self.fold_in_regularization > 0
        )
        message = (
            "learning_rate and fold_in_regularization must be positive and fold_in_confidence >= 1"
        )
        _check(
            [*factor_checks(self.factors, self.regularization, self.iterations), (valid, message)]
        )


@dataclass(frozen=True)
class GFCFConfig:
    """GF-CF (recvae.models.gfcf): the normalised item-item filter plus `alpha` times the ideal
    low-pass filter on the top `rank` singular vectors. The defaults are the paper's (Shen et al.
    2021: 256 vectors, alpha 0.3), used unchanged on every data set there."""

    alpha: float = 0.3  # weight of the ideal low-pass (low-rank) filter; 0: the linear filter only
    rank: int = 256  # singular vectors of the normalised matrix kept by the ideal filter
    seed: int = 0  # of the randomised SVD's probe

    def __post_init__(self) -> None:
        _check(
            [
                (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
                (
                    isinstance(self.rank, int) and self.rank >= 0,
                    f"rank must be a number of singular vectors >= 0, got {self.rank!r}",
                ),
            ]
        )


@dataclass(frozen=True)
class PopularityConfig:
    """Popularity has nothing to tune; the config exists so every model saves the same way."""


@dataclass(frozen=True)
class BlendConfig:
    """A blend, configured like any model:

        # blend.toml (recvae train DATA --model blend --config blend.toml)
        normalise = "zscore"      # or "softmax"
        weights = "tune"          # or one weight per member, e.g. [0.9, 0.1]
        metric = "ndcg@100"       # what "tune" maximises on the validation users
        [[members]]
        model = "multdae"
        latent_dim = 200
        [members.loop]
        epochs = 50
        [[members]]
        model = "ease"
        l2 = 500.0

    Each member is a table: its model name under `model` and that model's own settings.
    """

    members: tuple[dict[str, Any], ...] = ({"model": "multdae"}, {"model": "ease"})
    weights: tuple[float, ...] | Literal["tune"] = "tune"
    normalise: Normalise = "zscore"
    metric: str = "ndcg@100"  # validation metric the weights are tuned on
    weight_step: float = 0.1  # "tune" tries every weight vector on this grid (summing to 1)

    def __post_init__(self) -> None:
        if len(self.members) < 1:
            raise ValueError("a blend needs at least one member")
        members = tuple(dict(m) for m in self.members)
        for index, member in enumerate(members):
            name = member.get("model")
            if name not in CONFIG_CLASSES or name == "blend":
                known = ", ".join(sorted(set(CONFIG_CLASSES) - {"blend"}))
                raise ValueError(f"members[{index}].model must be one of {known}, got {name!r}")
            settings = {k: v for k, v in member.items() if k != "model"}
            make_config(name, settings, f"members[{index}] ({name})")  # checked now, not later
        object.__setattr__(self, "members", members)
        if self.weights != "tune" and len(self.weights) != len(self.members):
            raise ValueError(
                f"members and weights must be of equal length, got {len(self.members)} members "
                f'and {len(self.weights)} weights (or weights = "tune")'
            )
        if not 0 < self.weight_step <= 0.5:
            raise ValueError(f"weight_step must be in (0, 0.5], got {self.weight_step}")

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m["model"] for m in self.members)

    def member_settings(self, index: int) -> dict[str, Any]:
        return {k: v for k, v in self.members[index].items() if k != "model"}


CONFIG_CLASSES: dict[str, type] = {
    "multvae": MultVAEConfig,
    "multdae": MultDAEConfig,
    "recvae": RecVAEConfig,
    "ease": EASEConfig,
    "sparse_ease": SparseEASEConfig,
    "gfcf": GFCFConfig,
    "als": ALSConfig,
    "bpr": BPRConfig,
    "popularity": PopularityConfig,
    "blend": BlendConfig,
    "joint": JointConfig,
}


def config_class(name: str) -> type:
    """The config dataclass of the model registered under `name`."""
    from recvae.errors import RecvaeError

    if name not in CONFIG_CLASSES:
        raise RecvaeError(f"unknown model {name!r}: expected one of {', '.join(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[name]


def make_config(name: str, settings: Mapping[str, Any] | Any = None, source: str = "") -> Any:
    """The typed config of model `name` from a dict of settings (nested `loop` table or flat
    loop keys), an existing config (returned as is) or None (the defaults)."""
    cls = config_class(name)
    if isinstance(settings, cls):
        return settings
    values = dict(settings or {})
    try:
        defaults = cls()
    except TypeError:  # a config with required keys (none today) has no defaults to start from
        return config_from_dict(cls, values, source=source or name)
    # laid over the model's own defaults, so a partial `loop` table keeps RecVAE's lr and epochs
    # instead of falling back to LoopConfig's
    return config_from_dict(cls, merged_settings(defaults, values), source=source or name)


def with_settings(config: Any, overrides: Mapping[str, Any], source: str = "") -> Any:
    """`config` with `overrides` applied (flat loop keys allowed); None values are skipped."""
    return update_config(config, overrides, source=source or type(config).__name__)


def setting_types(name: str) -> dict[str, Any]:
    """Every setting of model `name` as it may be given flat (`epochs`, not `loop.epochs`),
    with its annotated type: what `recvae train --set`, tuning spaces and suites accept."""
    cls = config_class(name)
    types: dict[str, Any] = {}
    for key, hint in typing.get_type_hints(cls).items():
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            types.update(typing.get_type_hints(hint))
        else:
            types[key] = hint
    return types


def uses_loop(name: str) -> bool:
    """Whether the model trains through the shared epoch loop (has a `[loop]` table)."""
    return "loop" in getattr(config_class(name), "__dataclass_fields__", {})


__all__ = [
    "CONFIG_CLASSES",
    "ALSConfig",
    "BPRConfig",
    "BlendConfig",
    "EASEConfig",
    "GFCFConfig",
    "JointConfig",
    "LoopConfig",
    "MultDAEConfig",
    "MultVAEConfig",
    "PopularityConfig",
    "RecVAEConfig",
    "SparseEASEConfig",
    "config_class",
    "make_config",
    "setting_types",
    "uses_loop",
    "with_settings",
]
