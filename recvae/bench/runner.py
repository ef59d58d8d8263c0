"""Run a suite: for each data set, split it, tune every model on validation, repeat the chosen
setting over the seeds, and collect everything the report needs.

    from recvae.bench.config import load_suite
    from recvae.bench.runner import run_suite
    from recvae.bench.report import write_report

    suite = load_suite(Path("benchmarks/suites/ml-1m.toml"), {"ml-1m-lightgcn": Path(...)})
    results = run_suite(suite)                  # a SuiteResults (plain data, JSON-ready)
    write_report(results, Path("benchmarks/reports"))

Tuning: `search = "grid"` tries every combination; `search = "coordinate"` starts every axis at
its middle value and, one axis at a time in the order written, tries each value with the others
fixed and keeps the best (one pass: 1 + sum(len(axis) - 1) fits instead of the product). The
best setting is chosen by `tune_metric` on the validation part, using the first seed; further
seeds refit that setting. With no test part (pre-split valid only), the reported numbers are on
the same validation data that chose the setting, and the report says so.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recvae.bench.config import DatasetSpec, ModelSpec, SuiteConfig
from recvae.bench.data import load_dataset
from recvae.bench.runs import RunResult, execute_run, run_isolated
from recvae.data.dataset import Dataset
from recvae.data.split import Split, check_split, make_split
from recvae.errors import RecvaeError
from recvae.provenance import run_info

Progress = Callable[[str], None]


@dataclass
class DatasetInfo:
    name: str
    path: str | None
    fingerprint: str
    protocol: str
    split_params: dict[str, Any]
    users: int
    items: int
    interactions: int
    train_users: int
    valid_users: int
    test_users: int
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ModelSummary:
    """A model's tuned setting on one data set, averaged over seeds."""

    dataset: str
    model: str
    label: str
    settings: dict[str, Any]
    evaluated_on: str  # "test" or "valid"
    tuned_on: str
    metrics: dict[str, float]
    stderrs: dict[str, float]  # across users, of the first seed's run
    seed_spread: dict[str, float]  # std across seeds (0 with one seed)
    seeds: list[int]
    fit_seconds: float | None
    score_seconds: float | None
    peak_rss_mib: float | None
    added_rss_mib: float | None
    tuning_runs: int
    search: str
    grid: dict[str, list[Any]]
    error: str | None = None


@dataclass
class SuiteResults:
    suite: str
    config: dict[str, Any]
    run_info: dict[str, Any]
    ks: list[int]
    seeds: list[int]
    tune_metric: str
    isolated: bool
    datasets: list[DatasetInfo] = field(default_factory=list)
    summaries: list[ModelSummary] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    command: str | None = None
    complete: bool = False  # False while running (or if stopped): a partial report

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_suite(
    suite: SuiteConfig,
    progress: Progress | None = None,
    command: str | None = None,
    on_update: Callable[[SuiteResults], None] | None = None,
    keep_models: Path | None = None,
) -> SuiteResults:
    """Run every model of `suite` on every data set; failures are recorded, not raised.

    `on_update(results)` runs after each model (e.g. to rewrite a partial report, so a long
    suite that is stopped still leaves what it measured). With `keep_models`, every fitted model
    is saved under it (`runs.model_dir`)."""
    say = progress or (lambda message: None)
    results = SuiteResults(
        suite=suite.name,
        config=suite.raw,
        run_info=run_info(),
        ks=list(suite.ks),
        seeds=list(suite.seeds),
        tune_metric=suite.tune_metric,
        isolated=suite.isolate,
        command=command,
    )
    for spec in suite.datasets:
        say(f"data set {spec.name}: loading")
        dataset = load_dataset(spec)
        split = make_split(dataset, spec.protocol)
        check_split(split, dataset.matrix.shape[1])
        if max(suite.ks) > dataset.matrix.shape[1]:
            raise RecvaeError(
                f"data set {spec.name!r} has {dataset.matrix.shape[1]} items: every K in ks "
                f"{list(suite.ks)} must be at most that"
            )
        results.datasets.append(describe(spec, dataset, split))
        with _split_on_disk(split, suite.isolate) as split_dir:
            for model in suite.models:
                say(f"data set {spec.name}: model {model.display}")
                runner = _runner(
                    split, split_dir, spec.name, model.name, list(suite.ks), keep_models
                )
                summary, runs = tune_and_repeat(model, runner, suite, spec.name, say)
                results.summaries.append(summary)
                results.runs.extend(runs)
                if on_update is not None:
                    on_update(results)
    results.complete = True
    return results


def describe(spec: DatasetSpec, dataset: Dataset, split: Split) -> DatasetInfo:
    def users(part) -> int:
        return 0 if part is None else int(part.history.shape[0])

    return DatasetInfo(
        name=spec.name,
        path=str(spec.path) if spec.path else None,
        fingerprint=dataset.fingerprint(),
        protocol=split.protocol,
        split_params=dict(split.params or {}),
        users=int(dataset.matrix.shape[0]),
        items=int(dataset.matrix.shape[1]),
        interactions=int(dataset.matrix.nnz),
        train_users=int((split.train.getnnz(axis=1) > 0).sum()),
        valid_users=users(split.valid),
        test_users=users(split.test),
        manifest=dataset.manifest,
    )


@contextlib.contextmanager
def _split_on_disk(split: Split, needed: bool) -> Iterator[Path | None]:
    """A temporary copy of the split for isolated runs to load (removed afterwards)."""
    if not needed:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="recvae-bench-"))
    try:
        split.save(root / "split")
        yield root / "split"
    finally:
        shutil.rmtree(root, ignore_errors=True)


Runner = Callable[[dict[str, Any], int], RunResult]


def _runner(
    split: Split,
    split_dir: Path | None,
    dataset: str,
    name: str,
    ks: list[int],
    keep_models: Path | None,
) -> Runner:
    if split_dir is None:
        return lambda settings, seed: execute_run(
            split, dataset, name, settings, seed, ks, keep_models
        )
    return lambda settings, seed: run_isolated(
        split_dir, dataset, name, settings, seed, ks, keep_models
    )


def candidate_settings(
    model: ModelSpec, score: Callable[[dict[str, Any]], float]
) -> Iterator[dict]:
    """Settings to try, in order; coordinate search asks `score` (higher is better) as it goes."""
    if not model.grid:
        yield dict(model.settings)
        return
    axes = list(model.grid)
    if model.search == "grid":
        for values in itertools.product(*(model.grid[axis] for axis in axes)):
            yield {**model.settings, **dict(zip(axes, values, strict=True))}
        return
    current = {axis: model.grid[axis][(len(model.grid[axis]) - 1) // 2] for axis in axes}
    for axis in axes:
        best_value, best_score = current[axis], -np.inf
        for value in model.grid[axis]:
            settings = {**model.settings, **current, axis: value}
            yield settings
            value_score = score(settings)
            if value_score > best_score:
                best_value, best_score = value, value_score
        current[axis] = best_value


def tune_and_repeat(
    model: ModelSpec, run: Runner, suite: SuiteConfig, dataset: str, say: Progress
) -> tuple[ModelSummary, list[RunResult]]:
    """Tune on validation with the first seed, then refit the best setting for other seeds."""
    seed0 = suite.seeds[0]
    cache: dict[str, RunResult] = {}

    def key(settings: dict[str, Any]) -> str:
        return repr(sorted(settings.items()))

    def score(settings: dict[str, Any]) -> float:
        result = cache[key(settings)]
        return -np.inf if result.error else result.valid.get(suite.tune_metric, -np.inf)

    for settings in candidate_settings(model, score):
        if key(settings) not in cache:
            result = run(settings, seed0)
            cache[key(settings)] = result
            shown = result.error or f"{suite.tune_metric} {score(settings):.4f}"
            say(f"  {model.display} {settings}: {shown}")
    tuning = list(cache.values())
    best = max(tuning, key=lambda r: score(r.settings))
    finals = [best]
    for seed in suite.seeds[1:]:
        if best.error or not best.seed_used:  # a failed or unseeded model: nothing to repeat
            break
        say(f"  {model.display} seed {seed}")
        finals.append(run(best.settings, seed))
    for result in finals:
        result.stage = "final"
    return summarise(model, dataset, suite, best, finals, len(tuning)), tuning + finals[1:]


def summarise(
    model: ModelSpec,
    dataset: str,
    suite: SuiteConfig,
    best: RunResult,
    finals: list[RunResult],
    tuning_runs: int,
) -> ModelSummary:
    ok = [r for r in finals if not r.error]
    evaluated_on = "test" if best.test else "valid"

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else None

    metrics: dict[str, float] = {}
    spread: dict[str, float] = {}
    for name in getattr(ok[0], evaluated_on) if ok else {}:
        values = [getattr(r, evaluated_on)[name] for r in ok]
        metrics[name], spread[name] = float(np.mean(values)), float(np.std(values))
    return ModelSummary(
        dataset=dataset,
        model=model.name,
        label=model.display,
        settings=dict(best.settings),
        evaluated_on=evaluated_on,
        tuned_on="valid" if model.grid else "not tuned",
        metrics=metrics,
        stderrs=dict(getattr(best, f"{evaluated_on}_stderr")) if ok else {},
        seed_spread=spread,
        seeds=[r.seed for r in ok] if all(r.seed_used for r in ok) else [],
        fit_seconds=mean([r.fit_seconds for r in ok]),
        score_seconds=mean([r.score_seconds for r in ok]),
        peak_rss_mib=max((r.peak_rss_mib for r in ok if r.peak_rss_mib), default=None),
        added_rss_mib=max((r.added_rss_mib for r in ok if r.added_rss_mib), default=None),
        tuning_runs=tuning_runs,
        search=model.search if model.grid else "none",
        grid=model.grid,
        error=best.error,
    )
