import pytest

from recvae.schedules import (
    PlateauState,
    exponential_lr,
    kl_beta,
    plateau_update,
    scheduled_lr,
    step_decay_lr,
)


def test_anneal_grows_by_one_over_total_steps_and_stops_at_the_cap():
    # the paper's code: beta = min(cap, step / total)
    assert kl_beta(0, "anneal", 0.2, 200_000) == 0.0
    assert kl_beta(20_000, "anneal", 0.2, 200_000) == pytest.approx(0.1)
    assert kl_beta(40_000, "anneal", 0.2, 200_000) == pytest.approx(0.2)
    assert kl_beta(10_000_000, "anneal", 0.2, 200_000) == 0.2  # never past the cap
    values = [kl_beta(step, "anneal", 0.3, 10) for step in range(20)]
    assert values == sorted(values) and max(values) == 0.3


def test_fixed_and_find_modes():
    assert kl_beta(0, "fixed", 0.5, 100) == 0.5
    assert kl_beta(50, "find", 0.2, 100) == pytest.approx(0.5)  # find anneals towards 1.0
    assert kl_beta(500, "find", 0.2, 100) == 1.0
    assert kl_beta(3, "anneal", 0.2, 0) == 0.2  # no annealing period: the cap at once
    with pytest.raises(ValueError, match="unknown beta mode"):
        kl_beta(0, "cyclic", 0.2, 10)


def test_step_and_exponential_decay():
    assert step_decay_lr(1.0, 0, 10, 0.5) == 1.0
    assert step_decay_lr(1.0, 9, 10, 0.5) == 1.0
    assert step_decay_lr(1.0, 10, 10, 0.5) == 0.5
    assert step_decay_lr(1.0, 25, 10, 0.5) == 0.25
    assert exponential_lr(2.0, 3, 0.5) == 0.25
    assert scheduled_lr("none", 0.1, 99, 10, 0.5) == 0.1
    assert scheduled_lr("plateau", 0.1, 3, 10, 0.5) is None
    with pytest.raises(ValueError, match="unknown lr schedule"):
        scheduled_lr("cosine", 0.1, 0, 1, 0.5)


def test_plateau_reduces_after_patience_bad_epochs_then_restarts_counting():
    state = PlateauState(lr=1.0)
    state = plateau_update(state, 0.5, patience=2, factor=0.1)  # improves
    assert (state.lr, state.best, state.bad_epochs) == (1.0, 0.5, 0)
    state = plateau_update(state, 0.4, patience=2, factor=0.1)
    state = plateau_update(state, 0.5, patience=2, factor=0.1)  # equal is not better
    assert (state.lr, state.bad_epochs) == (1.0, 2)
    state = plateau_update(state, 0.3, patience=2, factor=0.1)  # third bad epoch: reduce
    assert state.lr == pytest.approx(0.1) and state.bad_epochs == 0
    state = plateau_update(state, 0.6, patience=2, factor=0.1)
    assert state.best == 0.6 and state.lr == pytest.approx(0.1)
