"""One benchmark run: fit a model with one setting and evaluate it on the split's holdouts.

`execute_run` does the work in the current process. `run_isolated` does the same in a fresh
Python process (`python -m recvae.bench.runs JOB.json RESULT.json`) so that the peak memory it
reports belongs to that run alone, and a crash in native code becomes an error in the report
instead of the end of the benchmark.

Memory is read from /proc/self/status: `VmHWM` is the process's peak resident set size over its
life (data, libraries and model together) and `baseline` is `VmRSS` after the split is loaded,
so `peak - baseline` is what fitting and evaluating the model added on top of the data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recvae.data.split import Holdout, Split
from recvae.errors import RecvaeError
from recvae.evaluate import evaluate
from recvae.models import build_model
from recvae.models.configs import setting_types


@dataclass
class RunResult:
    """What one run measured; `error` is set (and metrics empty) when the run failed."""

    dataset: str
    model: str
    settings: dict[str, Any]
    seed: int
    valid: dict[str, float] = field(default_factory=dict)
    valid_stderr: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_stderr: dict[str, float] = field(default_factory=dict)
    fit_seconds: float | None = None
    score_seconds: float | None = None  # time inside model.score for the reported holdout
    scored_users: int | None = None
    peak_rss_mib: float | None = None  # process high-water mark (isolated runs only)
    added_rss_mib: float | None = None  # peak minus resident size after loading the data
    history: list[dict[str, Any]] | None = None  # per-epoch metrics, when the model keeps them
    seed_used: bool = True  # False when the model takes no seed (deterministic or unseeded)
    stage: str = "tune"  # "tune": one point of the search; "final": the chosen setting
    error: str | None = None


def memory_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB (Linux); empty elsewhere."""
    values: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return values


def seeded_model(name: str, settings: dict[str, Any], seed: int) -> tuple[Any, bool]:
    """The model with its settings (recvae.models.build_model), given the run's seed when the
    model has a `seed` setting and the settings do not name one; and whether it took it."""
    takes_seed = "seed" in setting_types(name)
    arguments = dict(settings)
    if takes_seed:
        arguments.setdefault("seed", seed)
    return build_model(name, arguments), takes_seed


def model_dir(root: Path, dataset: str, name: str, settings: dict[str, Any], seed: int) -> Path:
    """Where `--keep-models` puts one run's model: ROOT/dataset/model/key=value,...-seedS."""
    slug = ",".join(f"{key}={settings[key]}" for key in sorted(settings)) or "defaults"
    return root / dataset / name / f"{slug}-seed{seed}"


def execute_run(
    split: Split,
    dataset: str,
    name: str,
    settings: dict[str, Any],
    seed: int,
    ks: list[int],
    keep_models: Path | None = None,
) -> RunResult:
    """Fit on split.train (validating on split.valid), evaluate on valid and, if present, test.

    With `keep_models`, the fitted model is also saved (see `model_dir`), so that later work (a
    blend, say) can reuse a fit that took minutes instead of repeating it."""
    result = RunResult(dataset, name, dict(settings), seed)
    try:
        model, result.seed_used = seeded_model(name, settings, seed)
        started = time.perf_counter()
        model.fit(split.train, split.valid)
        result.fit_seconds = time.perf_counter() - started
        if keep_models is not None:
            model.save(model_dir(keep_models, dataset, name, settings, seed))
        if split.valid is not None:
            evaluation, seconds = _timed_evaluate(model, split.valid, ks)
            result.valid, result.valid_stderr = evaluation.means, evaluation.stderrs
            result.score_seconds, result.scored_users = seconds, evaluation.users
        if split.test is not None:
            evaluation, seconds = _timed_evaluate(model, split.test, ks)
            result.test, result.test_stderr = evaluation.means, evaluation.stderrs
            result.score_seconds, result.scored_users = seconds, evaluation.users
        history = getattr(model, "history", None)
        if history:
            result.history = [dict(epoch) for epoch in history]
    except RecvaeError as error:
        result.error = str(error)
    return result


def _timed_evaluate(model: Any, holdout: Holdout, ks: list[int]):
    seconds = 0.0

    def score(history):
        nonlocal seconds
        started = time.perf_counter()
        scores = model.score(history)
        seconds += time.perf_counter() - started
        return scores

    return evaluate(score, holdout, ks=ks), seconds


def run_isolated(
    split_dir: Path,
    dataset: str,
    name: str,
    settings: dict[str, Any],
    seed: int,
    ks: list[int],
    keep_models: Path | None = None,
) -> RunResult:
    """`execute_run` in a child Python process reading the split saved in `split_dir`."""
    job = {"split_dir": str(split_dir), "dataset": dataset, "model": name,
           "settings": settings, "seed": seed, "ks": list(ks),
           "keep_models": str(keep_models) if keep_models is not None else None}  # fmt: skip
    job_file = split_dir.parent / f"job-{time.monotonic_ns()}.json"
    result_file = job_file.with_suffix(".result.json")
    job_file.write_text(json.dumps(job))
    try:
        process = subprocess.run(
            [sys.executable, "-m", "recvae.bench.runs", str(job_file), str(result_file)],
            capture_output=True,
            text=True,
        )
        if process.returncode != 0 or not result_file.is_file():
            code = process.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            tail = " | ".join((process.stderr or process.stdout).strip().splitlines()[-3:])
            error = f"run process {how}" + (f": {tail}" if tail else "")
            return RunResult(dataset, name, dict(settings), seed, error=error)
        return RunResult(**json.loads(result_file.read_text()))
    finally:
        job_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)


def _main(job_file: str, result_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    split = Split.load(Path(job["split_dir"]))
    baseline = memory_status().get("VmRSS")
    keep = Path(job["keep_models"]) if job.get("keep_models") else None
    result = execute_run(
        split, job["dataset"], job["model"], job["settings"], job["seed"], job["ks"], keep
    )
    peak = memory_status().get("VmHWM")
    if peak is not None:
        result.peak_rss_mib = round(peak, 1)
        if baseline is not None:
            result.added_rss_mib = round(peak - baseline, 1)
    Path(result_file).write_text(json.dumps(asdict(result), default=float))


if __name__ == "__main__":
    _main(*sys.argv[1:3])
