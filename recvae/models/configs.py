"""Typed settings of the PyTorch autoencoders (Mult-VAE, Mult-DAE, RecVAE).

Plain frozen dataclasses of scalars and tuples, importable without torch: a config file can be
checked (`recvae.config.load_config`) before anything heavy is imported. Saved inside model.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Activation = Literal["tanh", "relu", "sigmoid"]
Likelihood = Literal["multinomial", "gaussian", "logistic"]
LRSchedule = Literal["none", "step", "exponential", "plateau"]


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
        check_autoencoder_config(self)


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
        check_autoencoder_config(self)


def check_autoencoder_config(config: MultVAEConfig | MultDAEConfig) -> None:
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


@dataclass(frozen=True)
class RecVAEConfig:
    """RecVAE settings: the reference implementation's (run.py), except the two defaults that
    validation on ml-1m changed (per_user_beta off with beta 0.2, one encoder pass per round)."""

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
    # optimisation and the loop
    lr: float = 5e-4
    batch_size: int = 500
    epochs: int = 50
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
        checks = [
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
            (self.n_enc_epochs > 0, f"n_enc_epochs must be positive, got {self.n_enc_epochs}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
            (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (self.validate_every > 0, f"validate_every must be positive: {self.validate_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
