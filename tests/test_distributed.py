"""Data-parallel training under torchrun (recvae.distributed): two gloo processes on this CPU.

One launch of `python -m torch.distributed.run --nproc-per-node 2 -m recvae ...` per check,
against the same command in one process: with dropout off the weights after one epoch
must match to 1e-5 (the same users per global batch, gradients averaged by batch share); with
the defaults the validation metric must land within noise, and rank 0 alone writes the log,
checkpoints and model; `recommend` publishes one export equal to the one-process export.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file
from typer.testing import CliRunner

from recvae import distributed
from recvae.cli import app
from recvae.cli.train import join_torchrun
from recvae.data.dataset import Dataset
from recvae.data.vocab import Vocabulary
from recvae.device import set_run_device
from recvae.errors import RecvaeError
from recvae.workflow.fit import TrainSpec

SMALL = ["--model", "multvae", "--threads", "1", "--seed", "3", "--batch-size", "45",
         "--set", "hidden_dims=[16]", "--set", "latent_dim=8", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """300 users in 3 taste groups over 60 items (each user 8 items of their group's 20)."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(300):
        items = rng.choice(20, size=8, replace=False) + 20 * (user % 3)
        rows += [user] * 8
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(300, 60))
    path = tmp_path_factory.mktemp("ddp") / "ds"
    Dataset(matrix, Vocabulary([f"u{i}" for i in range(300)], name="user"),
            Vocabulary(list(range(60)), name="item")).save(path)  # fmt: skip
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    args: list[str], program: list[str] | None = None, env: dict[str, str] | None = None,
    succeed: bool = True, launcher: tuple[str, ...] | list[str] = (),
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`recvae ARGS` (or `program ARGS`) as 2 gloo processes; it must succeed unless told not."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *launcher,
               *(program or ["-m", "recvae"]), *args]  # fmt: skip
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}  # fmt: skip
    full_env.update(OMP_NUM_THREADS="1", RECVAE_LOG_LEVEL="warning", **(env or {}))
    result = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=180)
    if succeed:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def one_process(args: list[str]) -> None:
    try:
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    finally:
        set_run_device(None)  # --device is process-wide: leave none behind
    assert result.exit_code == 0, result.output


def test_two_ranks_without_dropout_give_the_one_process_weights(dataset_dir, tmp_path):
    args = ["train", str(dataset_dir), *SMALL, "--epochs", "1", "--set", "dropout=0",
            "--no-validation", "--device", "cpu"]  # fmt: skip
    torchrun([*args, "--out", str(tmp_path / "two")])
    one_process([*args, "--out", str(tmp_path / "one")])
    two = load_file(tmp_path / "two" / "weights.safetensors")
    one = load_file(tmp_path / "one" / "weights.safetensors")
    assert two.keys() == one.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, rtol=0, err_msg=key)


@pytest.mark.parametrize(
    ("killed", "restart"),
    [(1, "rerun"), (0, "torchrun"), pytest.param(0, "rerun", marks=pytest.mark.slow)],
)
def test_a_killed_rank_resumes_from_the_checkpoint_to_the_uninterrupted_weights(
    dataset_dir, tmp_path, killed, restart
):
    """Rank `killed` dies (SIGKILL) as epoch 2 of 3 starts, after the epoch-1 checkpoint. Run
    again ("rerun": the same command; "torchrun": torchrun's own --max-restarts, whose restarted
    processes need recvae.distributed's per-attempt store), the job resumes from the checkpoint
    and ends with the weights of a run never stopped."""
    checkpoints = tmp_path / "ckpt"
    args = ["train", str(dataset_dir), *SMALL, "--epochs", "3", "--set", "dropout=0",
            "--no-validation", "--device", "cpu", "--out", str(tmp_path / "two"),
            "--checkpoint-dir", str(checkpoints)]  # fmt: skip
    fault = {"RECVAE_KILL_RANK": str(killed), "RECVAE_KILL_AT_EPOCH": "1",
             "RECVAE_KILL_CHECKPOINT": str(checkpoints)}  # fmt: skip
    helper = [str(Path(__file__).parent / "ddp_fault.py")]
    if restart == "rerun":
        crashed = torchrun(args, program=helper, env=fault, succeed=False)
        assert crashed.returncode != 0
        assert not (tmp_path / "two").exists()  # nothing published by the killed run
        state = json.loads((checkpoints / "last" / "state.json").read_text())
        assert state["loop"]["epoch"] == 1
        torchrun(args)  # the same command again: resumes from `last`
    else:
        result = torchrun(args, program=helper, env=fault, launcher=["--max-restarts", "1"])
        assert f"exitcode: -9) local_rank: {killed}" in result.stderr  # it was killed
    log = [json.loads(line) for line in (checkpoints / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2, 3]
    one_process(["train", str(dataset_dir), *SMALL, "--epochs", "3", "--set", "dropout=0",
                 "--no-validation", "--device", "cpu", "--out", str(tmp_path / "one")])  # fmt: skip
    two = load_file(tmp_path / "two" / "weights.safetensors")
    one = load_file(tmp_path / "one" / "weights.safetensors")
    assert two.keys() == one.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, rtol=0, err_msg=key)


def test_two_ranks_with_defaults_validate_like_one_process_and_rank_0_writes(dataset_dir,
                                                                             tmp_path):  # fmt: skip
    args = ["train", str(dataset_dir), *SMALL, "--epochs", "3", "--valid-users", "60",
            "--metric", "ndcg@10"]  # fmt: skip
    result = torchrun([*args, "--out", str(tmp_path / "two"),
                       "--checkpoint-dir", str(tmp_path / "ckpt")])  # fmt: skip
    assert result.stderr.count("saved ") == 1  # rank 0 alone reports
    one_process([*args, "--out", str(tmp_path / "one")])
    two = json.loads((tmp_path / "two" / "metadata.json").read_text())
    one = json.loads((tmp_path / "one" / "metadata.json").read_text())
    assert two["split"] == one["split"]  # the same validation users
    assert abs(two["metrics"]["ndcg@10"] - one["metrics"]["ndcg@10"]) < 0.02
    log = (tmp_path / "ckpt" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]  # written once per epoch
    assert (tmp_path / "ckpt" / "last" / "state.json").is_file()


def test_recommend_under_torchrun_publishes_one_export_equal_to_one_process(dataset_dir,
                                                                            tmp_path):  # fmt: skip
    import polars as pl

    one_process(["train", str(dataset_dir), *SMALL, "--model", "multdae", "--epochs", "1",
                 "--no-validation", "--out", str(tmp_path / "m")])  # fmt: skip
    args = ["recommend", str(tmp_path / "m"), "--history", str(dataset_dir), "--k", "5"]
    torchrun([*args, "--out", str(tmp_path / "two.parquet")])
    one_process([*args, "--out", str(tmp_path / "one.parquet")])
    two, one = pl.read_parquet(tmp_path / "two.parquet"), pl.read_parquet(tmp_path / "one.parquet")
    assert two.height == 300 * 5
    assert two.equals(one)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "one.parquet", "two.parquet"]


def test_rank_parts_cover_a_batch_once_in_order():
    for n in (0, 1, 7, 45):
        parts = [distributed.Ranks(r, 3).part(n) for r in range(3)]
        covered = [i for p in parts for i in range(n)[p]]
        assert covered == list(range(n))
    assert distributed.ranks() == distributed.Ranks(0, 1)  # not launched: a world of one


def test_torchrun_refuses_models_that_do_not_train_data_parallel(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecvaeError, match="supports multvae and multdae, not ease"):
        join_torchrun(TrainSpec.of("ease"))
