"""Run an Optuna study over one model's search space, on the VALIDATION part of a dataset.

Honesty: trials are fitted on the split's training part and scored on its validation part; the
test part (if any) is never loaded into a trial. The reference run (the model's default settings
with the study's fixed settings, e.g. the same epoch cap and early stopping) is scored the same
way, so "tuned vs defaults" in the report compares like with like.

Resuming: the study lives in STUDY_DIR/study.journal (Optuna's append-only journal file) under a
fixed name, so running the same command again continues it. `--trials N` is the total the study
should hold; trials cut off by an interruption are marked failed ("interrupted") and do not count.
A lock file keeps two runs from writing the same study at once, which is also what makes it safe
to mark any trial still "running" at start as interrupted. Each resumed run seeds its sampler
from (seed, trials so far), so a resumed random search does not repeat the points it tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Holdout
from recvae.errors import RecvaeError
from recvae.io import atomic_file
from recvae.lock import JobLock
from recvae.metrics import parse_metric
from recvae.tuning.spaces import EPOCH_MODELS, SearchSpace, config_fields, load_space

STUDY_NAME = "recvae-tune"
STORAGE_FILE = "study.journal"
LOCK_FILE = "tune.lock"
DEFAULTS_FILE = "defaults.json"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
# Epochs every epoch-model trial runs before the pruner may stop it.
PRUNER_WARMUP_EPOCHS = 10
PRUNER_STARTUP_TRIALS = 3


@dataclass(frozen=True)
class StudyOptions:
    """Everything `recvae tune` was asked to do."""

    dataset_dir: Path
    out: Path
    model: str
    trials: int
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = "ndcg@100"
    space_file: Path | None = None
    seed: int = 0
    reference: bool = True  # also train the model's default settings, for comparison
    prune_warmup: int = PRUNER_WARMUP_EPOCHS  # epochs every trial runs before it may be pruned
    command: str = ""


@dataclass
class FitOutcome:
    """One fitted setting scored on validation."""

    settings: dict[str, Any]
    metrics: dict[str, float]  # validation means, e.g. {"ndcg@20": ..., "ndcg@100": ...}
    seconds: float
    epochs: int | None = None
    best_epoch: int | None = None
    stopped: str | None = None


@dataclass
class StudyRun:
    """What `run_study` returns: the study and what the report needs beside it."""

    study: Any  # optuna.Study
    space: SearchSpace
    options: StudyOptions
    metric: str
    identity: dict[str, Any]
    reference: FitOutcome | None
    ran: int  # trials run by this call


TrialCallback = Callable[[Any, int], None]  # (FrozenTrial, trials counted so far)


def normalise_metric(metric: str) -> str:
    name, k = parse_metric(metric.lower())
    return f"{name}@{k}"


def fit_and_validate(
    model: str,
    settings: dict[str, Any],
    train: sp.csr_matrix,
    valid: Holdout,
    metric: str,
    seed: int,
    on_epoch: Callable[[int, dict[str, Any]], bool | None] | None = None,
) -> FitOutcome:
    """Fit `model` with `settings` on `train` and score it on `valid` (never a test part).

    Epoch models validate every epoch, keep their best epoch (by `metric`) and report through
    `on_epoch`; the others are scored once after fitting.
    """
    from recvae.bench.runs import seeded_model
    from recvae.evaluate import evaluate
    from recvae.train import validation_ks

    settings = run_settings(model, settings, metric, seed)
    fitted, _ = seeded_model(model, settings, seed)
    started = time.perf_counter()
    if model in EPOCH_MODELS:
        fitted.fit(train, valid, callback=on_epoch)
        seconds = time.perf_counter() - started
        metrics = {k: float(v) for k, v in fitted.best_metrics.items() if "@" in k}
        return FitOutcome(settings, metrics, seconds,
                          len(fitted.history), fitted.best_epoch, fitted.stopped)  # fmt: skip
    fitted.fit(train, valid)
    evaluation = evaluate(fitted, valid, ks=validation_ks(metric, valid.n_items))
    seconds = time.perf_counter() - started
    return FitOutcome(settings, dict(evaluation.means), seconds)


def run_settings(model: str, settings: dict[str, Any], metric: str, seed: int) -> dict[str, Any]:
    """The settings a run actually uses: epoch models pick their best epoch by the study's
    metric, and every seeded model gets the study's seed unless [fixed] sets one."""
    settings = dict(settings)
    if "metric" in config_fields(model):  # the epoch models' best epoch, a blend's weights
        settings["metric"] = metric
    if "seed" in config_fields(model):
        settings.setdefault("seed", seed)
    return settings


def check_settings_build(model: str, space: SearchSpace, seed: int) -> None:
    """Build the model once with the fixed settings so a bad [fixed] value fails before trial 1."""
    from recvae.bench.runs import seeded_model

    seeded_model(model, space.settings({}), seed)


def run_study(
    options: StudyOptions,
    on_trial: TrialCallback | None = None,
    on_message: Callable[[str], None] | None = None,
) -> StudyRun:
    """Create or resume the study in `options.out` and run trials until it holds `trials`."""
    import optuna

    from recvae.data.dataset import Dataset
    from recvae.data.split import ProtocolSpec, describe_split, make_split
    from recvae.train import validation_ks

    say = on_message or (lambda _: None)
    if options.trials < 1:
        raise RecvaeError(f"--trials must be at least 1, got {options.trials}")
    if options.sampler not in SAMPLERS:
        raise RecvaeError(f"unknown sampler {options.sampler!r}: expected {', '.join(SAMPLERS)}")
    if options.pruner not in PRUNERS:
        raise RecvaeError(f"unknown pruner {options.pruner!r}: expected {', '.join(PRUNERS)}")
    metric = normalise_metric(options.metric)
    space = load_space(options.model, options.space_file)
    check_settings_build(options.model, space, options.seed)
    dataset = Dataset.load(options.dataset_dir)
    protocol = ProtocolSpec("auto", seed=options.seed)
    run = make_split(dataset, protocol)
    assert run.valid is not None
    validation_ks(metric, run.valid.n_items)  # a K above the item count fails here, not per trial
    identity = {
        "model": options.model,
        "metric": metric,
        "space": space.to_dict(),
        "seed": options.seed,
        "dataset_fingerprint": dataset.fingerprint(),
        "validation": describe_split(dataset, protocol, run),
    }
    identity = json.loads(json.dumps(identity, default=str))  # as stored: compare like with like
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with JobLock(out / LOCK_FILE):
        storage = open_storage(out)
        counted = prepare_resume(storage, identity, say)
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction="maximize",
            load_if_exists=True,
            sampler=make_sampler(
                options.sampler, space, derived_seed(options.seed, counted), options.trials
            ),
            pruner=make_pruner(
                options.pruner if options.model in EPOCH_MODELS else "none", options.prune_warmup
            ),
        )
        if "identity" not in study.user_attrs:
            study.set_user_attr("identity", identity)
        reference = None
        if options.reference:
            reference = reference_run(options, space, metric, run.train, run.valid, say)
        remaining = options.trials - counted
        say(
            f"study {out}: {counted} trial(s) so far, running {max(remaining, 0)} more "
            f"({options.sampler} sampler, optimising valid {metric})"
        )
        before = len(study.trials)
        if remaining > 0 and options.command:  # every command that added trials, for the report
            study.set_user_attr(
                "commands", [*study.user_attrs.get("commands", []), options.command]
            )
        if remaining > 0:
            objective = make_objective(options.model, space, metric, run.train, run.valid,
                                       options.seed)  # fmt: skip

            def after_trial(study: Any, trial: Any) -> None:
                if on_trial is not None:
                    on_trial(trial, count_trials(study.trials))

            study.optimize(
                objective,
                n_trials=remaining,
                timeout=options.timeout,
                catch=(RecvaeError,),
                callbacks=[after_trial],
            )
        ran = len(study.trials) - before
    return StudyRun(study, space, options, metric, identity, reference, ran)


def open_storage(out: Path) -> Any:
    """Optuna's journal storage in one append-only file: nothing to install, safe to resume."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(out / STORAGE_FILE)))


def prepare_resume(storage: Any, identity: dict[str, Any], say: Callable[[str], None]) -> int:
    """Check an existing study is the same search, close trials a crash left running, and
    return how many trials count toward --trials (0 for a new study)."""
    import optuna
    from optuna.trial import TrialState

    if STUDY_NAME not in optuna.study.get_all_study_names(storage):
        return 0
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    previous = study.user_attrs.get("identity")
    if previous is not None:
        changed = sorted(k for k in identity if previous.get(k) != identity[k])
        if changed:
            raise RecvaeError(
                f"the study in this directory was run with a different {', '.join(changed)}; "
                "use a new --out directory (or the same model, metric, space, seed and dataset)"
            )
    for trial in study.trials:
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            say(f"trial {trial.number} was cut off by an interruption: marked failed")
    return count_trials(study.get_trials(deepcopy=False))


def count_trials(trials: list[Any]) -> int:
    """Trials that count toward --trials: finished ones, except those cut off by interruption."""
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(t.state in finished and not t.user_attrs.get("interrupted") for t in trials)


def derived_seed(seed: int, counted: int) -> int:
    """A sampler seed per (seed, trials so far): a resumed random search draws new points."""
    return int(np.random.SeedSequence([seed, counted]).generate_state(1)[0])


def make_sampler(kind: str, space: SearchSpace, seed: int, trials: int = 30) -> Any:
    """TPE starts with random trials (Optuna's default 10); a short study uses a third of its
    trials (at least 3) so the Bayesian part gets a chance to run."""
    import optuna

    if kind == "tpe":
        startup = max(3, min(10, trials // 3))
        return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def make_pruner(kind: str, warmup: int = PRUNER_WARMUP_EPOCHS) -> Any:
    """Median: after `warmup` epochs, stop a trial whose metric at epoch t is below the median
    of earlier trials at t. Successive halving: rungs at warmup, 4 x warmup, ...; at each rung
    only the top quarter goes on (Optuna's default reduction factor)."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=warmup
        )
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup))
    return optuna.pruners.NopPruner()


def make_objective(
    model: str,
    space: SearchSpace,
    metric: str,
    train: sp.csr_matrix,
    valid: Holdout,
    seed: int,
) -> Callable[[Any], float]:
    """The function Optuna maximises: one fit on train, its validation `metric`."""
    import optuna

    def objective(trial: Any) -> float:
        values = {spec.name: spec.suggest(trial) for spec in space.params}
        settings = space.settings(values)
        best: dict[str, Any] = {}

        def on_epoch(epoch: int, record: dict[str, Any]) -> None:
            if metric not in record:
                return
            if not best or record[metric] > best[metric]:
                best.clear()
                best.update({k: float(v) for k, v in record.items() if "@" in k}, epoch=epoch)
            trial.report(float(record[metric]), epoch)
            if trial.should_prune():
                trial.set_user_attr("epochs", epoch)
                trial.set_user_attr("best_epoch", best["epoch"])
                trial.set_user_attr("metrics", {k: v for k, v in best.items() if "@" in k})
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        started = time.perf_counter()
        try:
            outcome = fit_and_validate(model, settings, train, valid, metric, seed, on_epoch)
        except RecvaeError as error:
            trial.set_user_attr("error", str(error))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            trial.set_user_attr("settings", run_settings(model, settings, metric, seed))
        trial.set_user_attr("metrics", outcome.metrics)
        if outcome.epochs is not None:
            trial.set_user_attr("epochs", outcome.epochs)
            trial.set_user_attr("best_epoch", outcome.best_epoch)
            trial.set_user_attr("stopped", outcome.stopped)
        return outcome.metrics[metric]

    return objective


def reference_run(
    options: StudyOptions,
    space: SearchSpace,
    metric: str,
    train: sp.csr_matrix,
    valid: Holdout,
    say: Callable[[str], None],
) -> FitOutcome | None:
    """The model's defaults (plus the study's fixed settings) scored on validation, once per
    study directory (kept in defaults.json and reused when the study resumes)."""
    path = Path(options.out) / DEFAULTS_FILE
    if path.is_file():
        return FitOutcome(**json.loads(path.read_text()))
    say("training the default settings for reference (same fixed settings as the trials)")
    try:
        outcome = fit_and_validate(
            options.model, space.settings({}), train, valid, metric, options.seed
        )
    except RecvaeError as error:
        say(f"the default settings failed: {error}")
        return None
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(outcome.__dict__, indent=1, default=float))
    return outcome
