"""The generic loop, driven by a fake trainer whose validation quality follows a script."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.models.configs import LoopConfig
from recvae.train import (
    NonFiniteLossError,
    check_finite,
    epoch_seed,
    load_checkpoint,
    run_loop,
    validation_ks,
)

N_ITEMS = 6


def holdout() -> Holdout:
    history = sp.csr_matrix(np.eye(4, N_ITEMS, dtype=np.float32))
    heldout = sp.csr_matrix(np.eye(4, N_ITEMS, k=1, dtype=np.float32))  # user u wants item u+1
    return Holdout(history, heldout, np.arange(4))


class ScriptedTrainer:
    """Each epoch moves one weight; validation is perfect in epochs listed in `good_epochs`."""

    examples_per_epoch = 4

    def __init__(self, good_epochs: set[int]) -> None:
        self.module = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.module.weight)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=1.0)
        self.good_epochs = good_epochs
        self.epochs_run: list[int] = []

    def train_epoch(self, epoch, step, on_batch):
        self.epochs_run.append(epoch)
        with torch.no_grad():
            self.module.weight += 1.0  # weight == number of epochs trained
        on_batch(4, {"loss": 1.0})
        return {"loss": 1.0 / (epoch + 1), "steps": 2, "examples": 4}

    def score(self, history):
        epoch = int(self.module.weight.item())
        wanted = np.roll(np.eye(history.shape[0], N_ITEMS, dtype=np.float32), 1, axis=1)
        return wanted if epoch in self.good_epochs else -wanted


def test_keeps_best_epoch_weights_and_stops_after_patience(tmp_path):
    trainer = ScriptedTrainer(good_epochs={2})
    settings = LoopConfig(epochs=10, patience=3, metric="ndcg@1")
    result = run_loop(trainer, settings, holdout(), log_path=tmp_path / "log.jsonl")
    assert result.best_epoch == 2 and result.best_metrics["ndcg@1"] == 1.0
    assert result.stopped == "early_stopping"
    assert len(result.history) == 5  # epochs 3, 4, 5 did not improve on epoch 2
    assert trainer.module.weight.item() == 2.0  # the best epoch's weights are restored
    assert [r["step"] for r in result.history] == [2, 4, 6, 8, 10]
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert {"loss", "lr", "ndcg@1", "recall@1", "train_seconds"} <= set(lines[0])


def test_callback_sees_each_epoch_and_can_stop():
    seen = []

    def callback(epoch, record):
        seen.append((epoch, record["loss"]))
        return epoch == 3

    result = run_loop(ScriptedTrainer(set()), LoopConfig(epochs=10, metric="ndcg@1"), holdout(),
                      callback=callback)  # fmt: skip
    assert seen == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert result.stopped == "callback" and len(result.history) == 3


def test_without_validation_trains_every_epoch_and_keeps_the_last():
    trainer = ScriptedTrainer(set())
    result = run_loop(trainer, LoopConfig(epochs=4), None)
    assert result.best_epoch == 0 and result.stopped == "epochs"
    assert trainer.module.weight.item() == 4.0


def test_plateau_schedule_lowers_the_rate_when_validation_stalls():
    settings = LoopConfig(
        epochs=6, metric="ndcg@1", lr=1.0, lr_schedule="plateau", lr_patience=1, lr_gamma=0.5
    )
    result = run_loop(ScriptedTrainer(good_epochs={1}), settings, holdout())
    # epoch 1 best; epochs 2 and 3 bad -> after epoch 3 the rate halves
    assert [r["lr"] for r in result.history] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_step_schedule_sets_the_rate_each_epoch():
    settings = LoopConfig(epochs=5, lr=1.0, lr_schedule="step", lr_step_size=2, lr_gamma=0.1)
    result = run_loop(ScriptedTrainer(set()), settings, None)
    assert [r["lr"] for r in result.history] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_resume_continues_from_last_checkpoint(tmp_path):
    settings = LoopConfig(epochs=6, metric="ndcg@1")

    def crash(epoch, record):
        if epoch == 3:
            raise KeyboardInterrupt

    first = ScriptedTrainer(good_epochs={2, 5})
    with pytest.raises(KeyboardInterrupt):
        run_loop(first, settings, holdout(), callback=crash, checkpoint_dir=tmp_path)
    second = ScriptedTrainer(good_epochs={2, 5})
    with torch.no_grad():
        second.module.weight.fill_(123.0)  # the checkpoint must overwrite this
    result = run_loop(second, settings, holdout(), checkpoint_dir=tmp_path)
    assert second.epochs_run == [3, 4, 5]  # 0-based epochs after the three done
    assert len(result.history) == 6 and result.best_epoch == 2  # first good epoch wins ties
    assert second.module.weight.item() == 2.0


def test_checkpoint_of_another_setup_is_refused(tmp_path):
    settings = LoopConfig(epochs=1)
    run_loop(ScriptedTrainer(set()), settings, None, checkpoint_dir=tmp_path,
             extra_state={"config": {"a": 1}})  # fmt: skip
    with pytest.raises(RecvaeError, match="different model config"):
        load_checkpoint(tmp_path / "last", ScriptedTrainer(set()), {"config": {"a": 2}})


def test_non_finite_loss_message_and_helpers():
    check_finite(1.0, 0, 0)
    with pytest.raises(NonFiniteLossError, match="became nan in epoch 3 at update 7"):
        check_finite(math.nan, 2, 7)
    assert issubclass(NonFiniteLossError, RecvaeError)
    assert epoch_seed(1, 2, 0) == epoch_seed(1, 2, 0) != epoch_seed(1, 3, 0)
    assert validation_ks("ndcg@100", 500) == [20, 50, 100]
    assert validation_ks("recall@5", 30) == [5, 20]
    with pytest.raises(RecvaeError, match="needs at least 100 items"):
        validation_ks("ndcg@100", 50)
