"""Numbers checked at the door (typer bounds on every command) and EASE's memory check under a
cgroup memory limit (v2 and v1), on fake cgroup trees."""

import pytest
from typer.testing import CliRunner

from recvae.cli import app
from recvae.cli.bounds import CPU_COUNT
from recvae.models.ease import cgroup_memory_headroom, check_fits_in_memory

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "ds", "--out", "m", "--valid-users", "-5"], "--valid-users"),
        (["train", "ds", "--out", "m", "--threads", str(CPU_COUNT + 1)], "--threads"),
        (["train", "ds", "--out", "m", "--epochs", "0"], "--epochs"),
        (["train", "ds", "--out", "m", "--batch-size", "0"], "--batch-size"),
        (["train", "ds", "--out", "m", "--lr", "0"], "--lr"),
        (["evaluate", "m", "--dataset", "ds", "--batch-size", "0"], "--batch-size"),
        (["recommend", "m", "--history", "ds", "--out", "r.csv", "--k", "0"], "--k"),
        (
            ["recommend", "m", "--history", "ds", "--out", "r.csv", "--chunk-size", "0"],
            "--chunk-size",
        ),
        (
            ["recommend", "m", "--history", "ds", "--out", "r.csv", "--num-shards", "0"],
            "--num-shards",
        ),
        (["recommend", "m", "--history", "ds", "--out", "r.csv", "--shard", "-1"], "--shard"),
        (["split", "ds", "--heldout-fraction", "1.5"], "--heldout-fraction"),
        (["split", "ds", "--valid-users", "-1"], "--valid-users"),
        (["tune", "ds", "--out", "s", "--trials", "0"], "--trials"),
        (["tune", "ds", "--out", "s", "--timeout", "-3"], "--timeout"),
        (["models", "prune", "store", "--keep", "0"], "--keep"),
        (["demo", "--threads", "10000"], "--threads"),
        (["demo", "--users", "0"], "--users"),
        (["ingest", "log.csv", "--out", "ds", "--min-user-count", "-2"], "--min-user-count"),
        (["synth", "--out", "log.csv", "--interactions", "0"], "--interactions"),
    ],
)
def test_out_of_range_numbers_are_refused_before_any_work(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and option in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_evaluate_k_cutoffs_must_be_positive(tmp_path):
    result = runner.invoke(app, ["evaluate", "m", "--dataset", "ds", "--k", "20,0"])
    assert "cut-offs of at least 1" in str(result.exception)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_counts_every_level_and_ignores_reclaimable_cache(tmp_path):
    root = tmp_path / "cg"
    write(tmp_path / "self", "0::/jobs/run1\n")
    write(root / "cgroup.controllers", "memory\n")
    write(root / "jobs" / "memory.max", str(8 * 2**30))
    write(root / "jobs" / "memory.current", str(1 * 2**30))
    write(root / "jobs" / "run1" / "memory.max", "max\n")
    write(root / "jobs" / "run1" / "memory.current", str(3 * 2**30))
    write(root / "jobs" / "run1" / "memory.stat", f"anon 1\ninactive_file {2**30}\n")
    # parent: 8 GiB limit - 1 GiB used = 7 GiB; the child has no limit of its own
    assert cgroup_memory_headroom(root, tmp_path / "self") == 7 * 2**30
    write(root / "jobs" / "run1" / "memory.max", str(4 * 2**30))
    # child: 4 GiB - (3 GiB - 1 GiB inactive cache) = 2 GiB, the tighter one
    assert cgroup_memory_headroom(root, tmp_path / "self") == 2 * 2**30


def test_cgroup_v1_limit_and_no_limit(tmp_path):
    root = tmp_path / "cg"
    write(tmp_path / "self", "4:memory:/docker/abc\n0::/\n")
    memory = root / "memory" / "docker" / "abc"
    write(memory / "memory.limit_in_bytes", str(9223372036854771712))  # no limit
    write(memory / "memory.usage_in_bytes", "100")
    assert cgroup_memory_headroom(root, tmp_path / "self") is None
    write(memory / "memory.limit_in_bytes", str(2 * 2**30))
    write(memory / "memory.usage_in_bytes", str(2**30))
    assert cgroup_memory_headroom(root, tmp_path / "self") == 2**30
    assert cgroup_memory_headroom(root, tmp_path / "missing") is None


def test_ease_refuses_when_the_container_limit_is_the_smaller(monkeypatch):
    from recvae.errors import RecvaeError

    monkeypatch.setattr("recvae.models.memory.meminfo_available", lambda: 64 * 2**30)
    monkeypatch.setattr("recvae.models.memory.cgroup_memory_headroom", lambda: 2**30)
    with pytest.raises(RecvaeError, match=r"only 1\.0 GiB is available"):
        check_fits_in_memory(20_000)  # 3.2 GiB needed
