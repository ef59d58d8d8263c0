"""The crash harness (benchmarks/crash_harness.py): its resume check, and (slow) one real kill
per target on a tiny log."""

import json
from pathlib import Path

import pytest
from bench_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def load_harness():
    return load_benchmark("crash_harness")


def test_resume_is_told_apart_from_a_restart_by_the_epochs_own_timings(tmp_path):
    harness = load_harness()
    history = [{"loss": 1.0, "seconds": 0.51}, {"loss": 0.9, "seconds": 0.47}]
    log = tmp_path / "log.jsonl"
    resumed = [*history, {"loss": 0.8, "seconds": 0.5}]
    log.write_text("\n".join(json.dumps(r) for r in resumed))
    assert harness._resumed(log, history)
    restarted = [{"loss": 1.0, "seconds": 0.53}, {"loss": 0.9, "seconds": 0.46}, resumed[2]]
    log.write_text("\n".join(json.dumps(r) for r in restarted))
    assert not harness._resumed(log, history)
    assert harness._resumed(log, [])  # killed before the first checkpoint: nothing to resume


def test_temporaries_are_found_anywhere_below_the_roots(tmp_path):
    harness = load_harness()
    (tmp_path / "a" / "ckpt").mkdir(parents=True)
    (tmp_path / "a" / "ckpt" / ".last.tmp-123-abcd").mkdir()
    (tmp_path / "a" / "model.json").write_text("{}")
    assert harness.temp_leftovers(tmp_path / "a") == [str(tmp_path / "a/ckpt/.last.tmp-123-abcd")]


@pytest.mark.slow
def test_one_kill_per_target_breaks_no_invariant(tmp_path):
    harness = load_harness()
    args = ["--kills-per-target", "1", "--users", "300", "--items", "60",
            "--interactions", "4000", "--epochs", "3", "--workdir", str(tmp_path / "work"),
            "--out", str(tmp_path / "reports")]  # fmt: skip
    assert harness.main(args) == 0
    (report,) = (tmp_path / "reports").iterdir()
    results = json.loads((report / "results.json").read_text())
    assert results["kills"] == 3 and results["broken_invariants"] == 0
