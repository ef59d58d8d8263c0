"""KL-weight and learning-rate schedules as small pure functions of the training position.

Pure functions of (step or epoch, settings) are trivially resumable: a run restarted from a
checkpoint recomputes exactly the value an uninterrupted run would have used. The one schedule
that depends on history, reduce-on-plateau, keeps its state in a small JSON-able dataclass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BETA_MODES = ("anneal", "fixed", "find")
LR_SCHEDULES = ("none", "step", "exponential", "plateau")


def kl_beta(step: int, mode: str, cap: float, anneal_steps: int) -> float:
    """The KL weight for update number `step` (0-based, counted over the whole run).

    - "anneal": the paper's code, beta = min(cap, step / anneal_steps): it grows by
      1 / anneal_steps per update and stays at `cap` once reached, never above it. With the
      notebook's cap 0.2 and 200,000 steps the cap is reached after 40,000 updates (Mult-VAE's
      default instead spans its epoch budget: see recvae.models.vae.resolve_anneal_steps).
    - "find": the paper's way of choosing the cap: anneal towards 1.0 at the same rate; the
      trainer records the beta of the epoch with the best validation metric.
    - "fixed": beta = cap from the first update.
    """
    if mode == "fixed":
        return float(cap)
    if mode not in ("anneal", "find"):
        raise ValueError(f"unknown beta mode {mode!r}: expected one of {', '.join(BETA_MODES)}")
    ceiling = 1.0 if mode == "find" else float(cap)
    if anneal_steps <= 0:
        return ceiling
    return min(ceiling, step / anneal_steps)


def step_decay_lr(base_lr: float, epoch: int, step_size: int, gamma: float) -> float:
    """Multiply the rate by `gamma` every `step_size` epochs (epoch is 0-based)."""
    return base_lr * gamma ** (epoch // max(1, step_size))


def exponential_lr(base_lr: float, epoch: int, gamma: float) -> float:
    """Multiply the rate by `gamma` after every epoch (epoch is 0-based)."""
    return base_lr * gamma**epoch


@dataclass
class PlateauState:
    """Reduce-on-plateau bookkeeping: best metric seen, epochs since it improved, current rate."""

    lr: float
    best: float = -math.inf
    bad_epochs: int = 0


def plateau_update(
    state: PlateauState, metric: float, patience: int, factor: float, min_lr: float = 0.0
) -> PlateauState:
    """New state after an epoch whose validation metric (higher is better) was `metric`.

    The rate is multiplied by `factor` once `patience` epochs in a row fail to improve on the
    best value; the counter then restarts.
    """
    if metric > state.best:
        return PlateauState(lr=state.lr, best=metric, bad_epochs=0)
    bad = state.bad_epochs + 1
    if bad > patience:
        return PlateauState(lr=max(min_lr, state.lr * factor), best=state.best, bad_epochs=0)
    return PlateauState(lr=state.lr, best=state.best, bad_epochs=bad)


def scheduled_lr(
    schedule: str, base_lr: float, epoch: int, step_size: int, gamma: float
) -> float | None:
    """The rate for `epoch` under a stateless schedule; None for "plateau" (the loop owns it)."""
    if schedule == "none":
        return base_lr
    if schedule == "step":
        return step_decay_lr(base_lr, epoch, step_size, gamma)
    if schedule == "exponential":
        return exponential_lr(base_lr, epoch, gamma)
    if schedule == "plateau":
        return None
    raise ValueError(f"unknown lr schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
