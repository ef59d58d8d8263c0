"""`recvae train --model auto`: pick the model for a data set nobody tuned for, within a budget.

    result = fit_auto(dataset, AutoConfig(budget="30m"))
    result.fit.save("models/auto")      # the winner, refitted on all data; metadata["auto"]

Within the time budget it fits a small, fixed set of candidates (`CANDIDATES`, plain data) on the
training part, scores each on the validation users by one metric, adds a blend of the best
candidate with its best partner from another model family (weights tuned on validation, like
`weights = "tune"`) and, where it scores higher still, a third member from a third family (one
greedy step of ensemble selection, Caruana et al. 2004), picks the best,
and refits the winner on every interaction with the epochs it chose. Every candidate's score,
settings, time and, when it was skipped, the reason land in the model's metadata (`auto`,
`candidates`) and in the command's report.

How the budget is spent (the reasoning is "cheap and strong first, the rest to what learns"):
- SELECTION_SHARE of it for choosing, the rest is left for the refit of the winner (a deep
  model refits with its chosen epochs and no validation, about as long as its selection fit);
- linear models (EASE with a short l2 grid, ALS) first, within LINEAR_SHARE of the selection
  time; each is skipped, with the reason, when its estimate does not fit in the time left or
  when exact EASE's dense matrices do not fit in memory (sparse EASE, recvae.models.sparse_ease,
  then stands in with the same l2 grid);
- then the deep models share what is left, one after the other: each gets the time left
  divided by the deep models still to run as its loop's `time_limit`, and early stopping
  (the loop's data-scaled patience) hands unused time on to the next.

Repeated validation folds when choosing is cheap (`recvae.workflow.folds`): after that first
pass, if it fits (k-1) more times in the selection time, every fitted candidate is fitted again
on k-1 other, disjoint sets of held-out users (k at most MAX_FOLDS and at most users // held-out
users), and the choice is made by the metric over all folds' users, each user once. The blend's
leader and partners are then the families' bests by that pooled metric; each pair's weight grid
is scored on every fold with that fold's fits and pooled entry by entry. Deep models refit with
the mean of the folds' best epochs. Where the first pass takes half the selection time or more
(Gowalla, a 2k-user Gowalla sample) one fold runs, as before. Rows record every fold's score
(`fold_metrics`), the summary the folds (`folds`, `fold_users`, `fold_seconds`).

The default budget scales with the data set (`default_budget`). Everything runs through
`recvae.workflow.fit.fit_model`, so each candidate is a fit `recvae train` reproduces.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from recvae.errors import RecvaeError
from recvae.workflow.folds import MAX_FOLDS, fold_count, fold_split, pooled, pooled_table

log = logging.getLogger(__name__)

Kind = Literal["linear", "deep", "blend"]


@dataclass(frozen=True)
class Candidate:
    """One model with fixed settings that auto may fit. `label` names it in reports."""

    label: str
    model: str  # a name of the model registry (recvae.models.MODEL_CLASSES)
    settings: Mapping[str, Any]
    kind: Kind
    # a stand-in: runs only when every candidate of this model was skipped (e.g. a scalable
    # EASE when the catalogue is too big for exact EASE's memory or time)
    instead_of: str | None = None


# The fixed candidate set, in the order it runs. Adding a model is one line here. The settings
# are generic (no data set was tuned for): EASE's l2 spans the range Steck reports useful, ALS
# two regularisation strengths at 256 factors, the deep models their defaults. Exact EASE is
# skipped when its two dense items x items matrices do not fit in memory or its estimated time
# (EASE_SECONDS_PER_ITEM3) in the linear models' share; sparse EASE then runs instead.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ease-l2-100", "ease", {"l2": 100.0}, "linear"),
    Candidate("ease-l2-500", "ease", {"l2": 500.0}, "linear"),
    Candidate("ease-l2-2000", "ease", {"l2": 2000.0}, "linear"),
    # GF-CF with the paper's settings: one truncated SVD, so it runs early; weaker than EASE
    # alone on both LightGCN splits, but a blend partner that adds to it (recvae.models.gfcf)
    Candidate("gfcf", "gfcf", {}, "linear"),
    Candidate("als-reg-10", "als", {"factors": 256, "regularization": 10.0}, "linear"),
    Candidate("als-reg-100", "als", {"factors": 256, "regularization": 100.0}, "linear"),
    # sparse EASE (each item's top 200 neighbours) stands in when exact EASE cannot run
    Candidate("sparse-ease-l2-100", "sparse_ease", {"l2": 100.0}, "linear", "ease"),
    Candidate("sparse-ease-l2-500", "sparse_ease", {"l2": 500.0}, "linear", "ease"),
    Candidate("sparse-ease-l2-2000", "sparse_ease", {"l2": 2000.0}, "linear", "ease"),
    # not the joint model (recvae.models.joint): it lost to EASE and ALS on both LightGCN splits
    # (benchmarks/reports/joint-2026-12-02), so it would only spend the deep models' time
    Candidate("multdae", "multdae", {}, "deep"),
    Candidate("recvae", "recvae", {}, "deep"),
)
BLEND_LABEL = "blend"  # the best candidate blended with its best partner of another family
# model -> family, where two models are one kind of model (a blend pairs different families)
FAMILIES = {"sparse_ease": "ease"}

SELECTION_SHARE = 0.7  # of the budget spent choosing; the rest is left for the refit
LINEAR_SHARE = 0.5  # of the selection time the linear models may use when deep ones follow
MIN_DEEP_SECONDS = 1.0  # a deep model given less than this is skipped, not started
# Exact EASE costs about this many seconds per items^3 (Cholesky and inverse on the 2-core
# development machine: 323 s at 40,981 items under the CPU lock on 2026-12-02, 745 s on a busier
# day); the first EASE fit replaces the guess.
EASE_SECONDS_PER_ITEM3 = 5e-12


@dataclass(frozen=True)
class AutoConfig:
    """`recvae train --model auto` settings (also a TOML file via --config, the nightly job's
    [train] budget and `recvae.auto`).

        budget = "30m"        # 90s, 30m, 2h, 1h30m; "" = scaled with the data (default_budget)
        metric = "ndcg@100"   # the validation metric that picks the winner and the best epochs
        candidates = []       # labels of CANDIDATES to consider; empty = all of them
        refit = true          # refit the winner on all data (train + validation users)
        threads = 0           # CPU threads of every fit; 0 = all cores
        seed = 0
    """

    budget: str = ""
    metric: str = "ndcg@100"
    candidates: tuple[str, ...] = ()
    refit: bool = True
    threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget:
            parse_budget(self.budget)
        known = {c.label for c in CANDIDATES}
        unknown = [label for label in self.candidates if label not in known]
        if unknown:
            raise ValueError(
                f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


_BUDGET = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_budget(text: str | float | int) -> float:
    """Seconds of a budget written as 90s, 30m, 2h, 1h30m (or a number of seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        match = _BUDGET.match(raw)
        if not raw or match is None or not any(match.groups()):
            raise RecvaeError(f"budget {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds <= 0:
        raise RecvaeError(f"budget {text!r}: must be more than 0 seconds, e.g. 30m")
    return seconds


def format_seconds(seconds: float) -> str:
    """90 -> '1m30s', 7200 -> '2h0m', 12.3 -> '12s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"


def default_budget(n_interactions: int) -> float:
    """The budget when none is given: 3 minutes plus 1 minute per 100,000 interactions, at
    most 2 hours (ml-100k: 4 minutes, ml-1m: about 9, ML-20M: the 2 hours)."""
    return min(7200.0, 180.0 + 60.0 * n_interactions / 100_000)


def selection_valid_users(n_users: int) -> int:
    """Users auto holds out to choose on, when none are given: 10% as for any training run,
    but at least 1,000 where that leaves three quarters of the users to train on, and at most
    10,000. Why more than a training run holds out: auto picks among about fifteen candidates
    whose scores often differ by less than one standard error of a few hundred users' NDCG,
    so on small data the 10% left the choice to chance (ml-100k, 74 users: the seed decided
    between a winner 0.005 above tuned EASE on the test users and one 0.021 below it). The
    winner is refitted on every user, so the larger hold-out costs only the selection fits
    a little data. ml-100k: 184 users; ml-1m: 1,000; Gowalla: 2,985 (10%)."""
    ten_percent = n_users // 10
    return max(1, min(10_000, max(ten_percent, min(1_000, n_users // 4))))


@dataclass
class AutoResult:
    """The final fit (the winner, refitted unless refit is off) and every candidate's row."""

    fit: Any  # recvae.workflow.fit.FitResult
    winner: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


Say = Callable[[str], None]


def fit_auto(
    dataset: Any,
    config: AutoConfig | None = None,
    split_settings: Any = None,
    *,
    say: Say | None = None,
    dataset_path: Path | str | None = None,
    candidates: tuple[Candidate, ...] | None = None,
) -> AutoResult:
    """Choose and fit the best candidate for `dataset` within `config.budget` (see the module
    docstring). `split_settings` (a ProtocolSpec; default "auto") gives the validation users;
    `candidates` replaces CANDIDATES (tests use tiny ones); `say` receives progress lines."""
    from recvae.data.split import ProtocolSpec, make_split
    from recvae.workflow.fit import _fitting_metric

    config = config or AutoConfig()
    say = say or (lambda line: log.info(line))
    started = time.perf_counter()
    budget = parse_budget(config.budget) if config.budget else default_budget(dataset.matrix.nnz)
    protocol = split_settings or ProtocolSpec("auto", seed=config.seed)
    if protocol.protocol == "auto" and not protocol.valid_users and dataset.split is None:
        protocol = replace(protocol, valid_users=selection_valid_users(dataset.matrix.shape[0]))
    split = make_split(dataset, protocol)
    if split.valid is None:
        raise RecvaeError(
            "auto picks by validation: it needs validation users (not --no-validation)"
        )
    metric = _fitting_metric(config.metric, split.valid.n_items)
    pool = tuple(candidates if candidates is not None else CANDIDATES)
    if config.candidates:
        pool = tuple(c for c in pool if c.label in config.candidates)
    if not pool:
        raise RecvaeError("auto: no candidates to choose from")
    selection_end = started + SELECTION_SHARE * budget
    say(
        f"auto: budget {format_seconds(budget)} ({format_seconds(SELECTION_SHARE * budget)} to "
        f"choose), {len(pool)} candidates + a blend, picked by validation {metric}"
    )
    runner = _Runner(dataset, protocol, config, metric, say, dataset_path, len(pool))
    linear = [c for c in pool if c.kind == "linear"]
    deep = [c for c in pool if c.kind == "deep"]
    linear_end = selection_end
    if deep:
        linear_end = started + LINEAR_SHARE * SELECTION_SHARE * budget
    for candidate in linear:
        runner.run_linear(candidate, linear_end)
    for index, candidate in enumerate(deep):
        left = selection_end - time.perf_counter()
        runner.run_deep(candidate, left / (len(deep) - index))
    runner.run_blend(selection_end)
    first_pass = time.perf_counter() - started
    planned = runner.plan_folds(first_pass, SELECTION_SHARE * budget)
    if planned > 1:
        runner.run_folds(planned, selection_end, first_pass)
    fitted = [row for row in runner.rows if row["status"] == "fitted"]
    if not fitted:
        reasons = "; ".join(f"{row['label']}: {row['reason']}" for row in runner.rows)
        raise RecvaeError(
            f"auto: no candidate could be fitted within the budget {format_seconds(budget)} "
            f"({reasons}); give a larger --budget, e.g. {format_seconds(max(60.0, budget * 10))}"
        )
    best = max(fitted, key=lambda row: row["metrics"][metric])  # first best in run order
    selection_seconds = time.perf_counter() - started
    pooled_over = (
        f" (pooled over {len(runner.fold_results)} folds, {sum(runner.fold_users)} users)"
        if len(runner.fold_results) > 1 else ""
    )  # fmt: skip
    say(
        f"auto: winner {best['label']} with validation {metric} "
        f"{best['metrics'][metric]:.4f}{pooled_over} after {format_seconds(selection_seconds)}"
    )
    winner_fit = runner.results[best["label"]]
    refit_seconds = None
    if config.refit:
        say(f"auto: refitting {best['label']} on all data ({_refit_note(best)})")
        refit_started = time.perf_counter()
        final = runner.refit(best)
        refit_seconds = time.perf_counter() - refit_started
    else:
        final = winner_fit
    summary = {
        "budget_seconds": round(budget, 3),
        "budget": config.budget or f"{format_seconds(budget)} (scaled with the data)",
        "metric": metric,
        "winner": best["label"],
        "winner_model": best["model"],
        "selection_seconds": round(selection_seconds, 3),
        "refit": config.refit,
        "refit_seconds": round(refit_seconds, 3) if refit_seconds is not None else None,
        "total_seconds": round(time.perf_counter() - started, 3),
        "validation_split": winner_fit.metadata["split"],
        "first_pass_seconds": round(first_pass, 3),
        **runner.fold_summary(planned),
        "candidates": runner.rows,
    }
    _describe(final, winner_fit, summary, best)
    return AutoResult(final, best["label"], runner.rows, summary)


def _refit_note(row: dict[str, Any]) -> str:
    if row["model"] == "blend":
        return f"members {' + '.join(row['members'])} as chosen, weights {row['weights']}"
    epochs = row.get("refit_epochs")
    return f"{epochs} epochs, the best on validation" if epochs else "its chosen settings"


def _describe(final: Any, winner_fit: Any, summary: dict[str, Any], best: dict[str, Any]
              ) -> None:  # fmt: skip
    """Put the selection into the final model's metadata: the winner's validation evaluation
    (from before the refit: the refitted model has seen the validation users; with several
    folds, pooled over them, as it was chosen), every candidate, and the `auto` summary."""
    meta = final.metadata
    meta["auto"] = summary
    meta["candidates"] = summary["candidates"]
    if summary["folds"] > 1:
        evaluation = dict(winner_fit.metadata["evaluation"])
        evaluation.update(users=sum(summary["fold_users"]), means=dict(best["metrics"]),
                          stderrs=dict(best["stderrs"]), folds=summary["folds"])  # fmt: skip
        meta["evaluation"] = evaluation
        meta["metrics"] = dict(best["metrics"])
        meta["auto"]["metrics_from"] = (
            f"the winner fitted on each of {summary['folds']} folds' training part and scored "
            "on that fold's validation users, pooled over all of them (each user once), "
            "before the refit on all data"
        )
    elif final is not winner_fit:
        meta["evaluation"] = winner_fit.metadata["evaluation"]
        meta["metrics"] = winner_fit.metadata["metrics"]
        meta["auto"]["metrics_from"] = (
            "the winner fitted on the training part and scored on the validation users, "
            "before the refit on all data"
        )


class _Runner:
    """Fits candidates one by one and keeps a row per candidate (fitted or skipped)."""

    def __init__(
        self,
        dataset: Any,
        protocol: Any,
        config: AutoConfig,
        metric: str,
        say: Say,
        dataset_path: Path | str | None,
        total: int,
    ) -> None:
        self.dataset, self.protocol, self.config = dataset, protocol, config
        self.metric, self.say, self.dataset_path = metric, say, dataset_path
        self.total = total + 1  # the blend
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}  # label -> FitResult on fold 0 (the first hold-out)
        self.models: dict[str, Candidate] = {}
        self.measured: dict[str, float] = {}  # model name -> seconds of its last fit
        # per fold: label -> FitResult; fold 0 is `results`; later folds: `run_folds`
        self.fold_results: list[dict[str, Any]] = [self.results]
        self.fold_users: list[int] = []  # per fold: validation users with held-out items
        self.fold_seconds: list[float] = []  # per later fold: seconds its pass took
        self.fold_note = ""  # why fewer folds ran than planned ('' when all did)
        self.pair_tables: dict[tuple[int, tuple[str, ...]], list[dict[str, Any]]] = {}

    # -- candidates --

    def run_linear(self, candidate: Candidate, deadline: float) -> None:
        if candidate.instead_of is not None:
            tried = [r for r in self.rows if r["model"] == candidate.instead_of]
            if any(r["status"] == "fitted" for r in tried):
                self._skip(candidate, f"not needed: {candidate.instead_of} was fitted")
                return
        left = deadline - time.perf_counter()
        why = self._cannot_fit(candidate, left)
        if why:
            self._skip(candidate, why)
            return
        self._fit(candidate, {})

    def run_deep(self, candidate: Candidate, seconds: float) -> None:
        if seconds < MIN_DEEP_SECONDS:
            self._skip(
                candidate,
                f"{format_seconds(max(seconds, 0))} left for it, less than the "
                f"{MIN_DEEP_SECONDS:g}s a deep model needs to start",
            )
            return
        self._fit(candidate, {"time_limit": round(seconds, 3)})

    def _cannot_fit(self, candidate: Candidate, left: float) -> str:
        """Why `candidate` cannot run in `left` seconds or in memory ('' when it can)."""
        n_items = self.dataset.matrix.shape[1]
        if candidate.model == "ease":
            from recvae.models.ease import check_fits_in_memory

            try:
                check_fits_in_memory(n_items)
            except RecvaeError as error:
                return f"memory: {error}"
        estimate = self.measured.get(candidate.model)
        if estimate is None and candidate.model == "ease":
            estimate = EASE_SECONDS_PER_ITEM3 * n_items**3
        if left <= 0:
            return "no time left for linear models"
        if estimate is not None and estimate > left:
            return (
                f"needs about {format_seconds(estimate)}, only {format_seconds(left)} left for "
                "linear models"
            )
        return ""

    def _settings(self, candidate: Candidate, extra: dict[str, Any]) -> dict[str, Any]:
        from recvae.models.configs import setting_types, uses_loop

        settings = dict(candidate.settings)
        known = setting_types(candidate.model)
        if "threads" in known:
            settings["threads"] = self.config.threads
        elif "num_threads" in known:
            settings["num_threads"] = self.config.threads
        if "seed" in known:
            settings["seed"] = self.config.seed
        if uses_loop(candidate.model):
            settings["metric"] = self.metric
        settings.update(extra)
        return settings

    def _fit(self, candidate: Candidate, extra: dict[str, Any]) -> None:
        from recvae.workflow.fit import TrainSpec, fit_model

        settings = self._settings(candidate, extra)
        number = len(self.rows) + 1
        limit = f", time limit {format_seconds(extra['time_limit'])}" if extra else ""
        self.say(
            f"auto [{number}/{self.total}]: fitting {candidate.label} ({candidate.kind}{limit})"
        )
        spec = TrainSpec(candidate.model, _config(candidate.model, settings, candidate.label))
        try:
            result = fit_model(
                self.dataset, spec, self.protocol, metric=self.metric,
                dataset_path=self.dataset_path,
            )  # fmt: skip
            if not self.fold_users:
                self.fold_users.append(int(result.evaluation.users))
        except Exception as error:  # one failing candidate must not sink the choice
            log.warning("auto: %s failed", candidate.label, exc_info=True)
            first = str(error).splitlines()[0] if str(error) else ""
            self.rows.append(self._row(candidate, "failed", settings=settings,
                                       reason=f"{type(error).__name__}: {first}"))  # fmt: skip
            self.say(f"auto [{number}/{self.total}]: {candidate.label} failed: {first}")
            return
        training = result.metadata["training"]
        self.measured[candidate.model] = training["seconds"]
        row = self._row(candidate, "fitted", settings=settings)
        row.update(
            metrics=result.metadata["metrics"],
            stderrs=result.metadata["evaluation"]["stderrs"],
            fit_seconds=training["seconds"],
            fold_metrics=[result.metadata["metrics"][self.metric]],
            fold_fit_seconds=[training["seconds"]],
        )
        for key in ("epochs_run", "best_epoch", "stopped"):
            if key in training:
                row[key] = training[key]
        if "best_epoch" in training:
            row["fold_best_epochs"] = [_best_epoch(training)]
            row["refit_epochs"] = _best_epoch(training)
        self.rows.append(row)
        self.results[candidate.label] = result
        self.models[candidate.label] = candidate
        self.say(
            f"auto [{number}/{self.total}]: {candidate.label} validation {self.metric} "
            f"{row['metrics'][self.metric]:.4f} in {format_seconds(training['seconds'])}"
        )

    def _skip(self, candidate: Candidate, reason: str) -> None:
        self.rows.append(self._row(candidate, "skipped", reason=reason))
        self.say(f"auto [{len(self.rows)}/{self.total}]: skipped {candidate.label}: {reason}")

    def _row(self, candidate: Candidate, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "label": candidate.label,
            "model": candidate.model,
            "kind": candidate.kind,
            "status": status,
            "settings": dict(fields.pop("settings", candidate.settings)),
            "reason": fields.pop("reason", None),
            **fields,
        }

    # -- the blend --

    def _family_bests(self) -> list[dict[str, Any]]:
        """The best fitted candidate of each model family, best first (EASE and its sparse
        stand-in are one family; a blend is not a member). With several folds, by the pooled
        metric."""
        bests: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            if row["status"] != "fitted" or row["model"] == "blend":
                continue
            family = FAMILIES.get(row["model"], row["model"])
            held = bests.get(family)
            if held is None or row["metrics"][self.metric] > held["metrics"][self.metric]:
                bests[family] = row
        return sorted(bests.values(), key=lambda r: -r["metrics"][self.metric])

    def run_blend(self, deadline: float) -> None:
        """Blend the best candidate with the best of each other model family, each pair's
        weights tuned on the validation users (`recvae.models.blend.tune_weights`, what
        `weights = "tune"` runs), and keep the best pair as the `blend` candidate. A partner
        helps when its errors differ from the leader's (EASE and GF-CF, a deep model and EASE),
        which its own score alone does not tell; pairs of two weaker models are not tried.
        The first pair (the two best families) always runs; the others only while the
        selection time (`deadline`) lasts, so a budget spent by the deep models stays spent.

        Then one greedy step of ensemble selection (Caruana et al., ICML 2004): the chosen
        pair with each remaining family's best as a third member, weights tuned on the same
        grid (66 vectors at step 0.1), again only while the selection time lasts. A triple
        replaces the pair only when it scores strictly higher on validation; since the grid
        holds the pair's own weights (third weight 0), it never scores lower. Three members
        at most: a fourth adds a grid of 286 vectors for what the third leaves.

        With several folds the leader and partners are the families' bests by the pooled
        metric, each pair's weight grid is scored on every fold with that fold's fits, the
        grids are pooled entry by entry (each user once), and the best pooled entry wins; so
        a fold whose own family order differs still scores the same pairs."""
        from recvae.evaluate import evaluate
        from recvae.models.blend import Blend
        from recvae.train import validation_ks
        from recvae.workflow.fit import FitResult, fit_metadata

        blend = Candidate(BLEND_LABEL, "blend", {}, "blend")
        bests = self._family_bests()
        if len(bests) < 2:
            only = f" ({bests[0]['label']})" if bests else ""
            self._skip(blend, f"fewer than two model families were fitted{only}: nothing to blend")
            return
        leader, partners = bests[0], bests[1:]
        self.say(f"auto [{len(self.rows) + 1}/{self.total}]: blending {leader['label']} with "
                 f"{', '.join(p['label'] for p in partners)} in turn (weights tuned on "
                 "validation)")  # fmt: skip
        started = time.perf_counter()
        tried = self._tune_sets([(leader["label"], p["label"]) for p in partners], deadline)
        chosen = max(tried, key=lambda t: t[self.metric])  # first best: the stronger partner
        thirds = [row for row in partners if row["label"] not in chosen["members"]]
        extended = self._tune_sets(
            [(*chosen["members"], t["label"]) for t in thirds],
            deadline, first_always=False,
        )  # fmt: skip
        best_third = max(extended, key=lambda t: t[self.metric], default=None)
        if best_third is not None and best_third[self.metric] > chosen[self.metric]:
            chosen = best_third
        evaluations, fold_models = [], []
        for results in self.fold_results:
            members = [results[label] for label in chosen["members"]]
            valid = members[0].split.valid
            model = Blend.from_members(
                [m.model for m in members], tuple(chosen["weights"]), valid.n_items, "zscore"
            )
            fold_models.append(model)
            ks = validation_ks(self.metric, valid.n_items)
            evaluations.append(evaluate(model, valid, ks=ks))
        model, evaluation = fold_models[0], evaluations[0]
        split = self.results[leader["label"]].split
        means, stderrs = pooled([e.per_user for e in evaluations])
        seconds = time.perf_counter() - started
        fitted_seconds = sum(r["fit_seconds"] for r in self.rows
                             if r["label"] in chosen["members"]) + seconds  # fmt: skip
        training = {"seconds": round(fitted_seconds, 3), "warm_start": None, "checkpoint_dir": None}
        metadata = fit_metadata(
            "blend", model, self.dataset, self.results[chosen["members"][0]].metadata["split"],
            training, evaluation, self.metric, self.dataset_path,
        )  # fmt: skip
        metadata["seed"] = self.config.seed
        self.results[BLEND_LABEL] = FitResult(
            model, self.dataset.items, split, evaluation, metadata
        )
        row = self._row(
            blend, "fitted", settings={"members": chosen["members"],
                                       "weights": chosen["weights"], "normalise": "zscore"},
        )  # fmt: skip
        row.update(
            metrics=means, stderrs=stderrs,
            fit_seconds=round(fitted_seconds, 3), tune_seconds=round(seconds, 3),
            members=chosen["members"], weights=chosen["weights"],
            fold_metrics=[e.means[self.metric] for e in evaluations],
            weight_grid=[{"weights": r["weights"], self.metric: r[self.metric]}
                         for r in chosen["table"]],
            pairs=[{k: v for k, v in t.items() if k != "table"} for t in tried],
            pairs_not_tried=[[leader["label"], p["label"]] for p in partners[len(tried):]],
            thirds=[{k: v for k, v in t.items() if k != "table"} for t in extended],
            thirds_not_tried=[t["label"] for t in thirds[len(extended):]],
        )  # fmt: skip
        self.rows.append(row)
        self.say(
            f"auto [{len(self.rows)}/{self.total}]: blend {' + '.join(chosen['members'])} "
            f"weights {chosen['weights']} validation {self.metric} "
            f"{row['metrics'][self.metric]:.4f}"
        )

    def _tune_sets(
        self, sets: list[tuple[str, ...]], deadline: float, first_always: bool = True
    ) -> list[dict[str, Any]]:
        """Each set of candidate labels' best weights (`weight_grid` at step 0.1) and
        validation metric, pooled over the folds, sets in order; the first one always runs (unless
        `first_always` is false), the others only before `deadline`. A set's grid on a fold is
        scored once (`pair_tables`), so the pooled pass reuses fold 0's."""
        from recvae.models.blend import tune_weights

        tried: list[dict[str, Any]] = []
        for labels in sets:
            if (tried or not first_always) and time.perf_counter() > deadline:
                left = "; ".join(" + ".join(m) for m in sets[len(tried) :])
                self.say(f"auto: out of selection time; blends not tried: {left}")
                break
            tables = []
            for fold, results in enumerate(self.fold_results):
                key = (fold, labels)
                if key not in self.pair_tables:
                    _weights, self.pair_tables[key] = tune_weights(
                        [results[label].model for label in labels],
                        results[labels[0]].split.valid, "zscore", self.metric, 0.1,
                    )  # fmt: skip
                tables.append(self.pair_tables[key])
            table = pooled_table(tables, self.fold_users[: len(tables)])
            best = max(table, key=lambda row: row[self.metric])  # first best in grid order
            at = table.index(best)
            tried.append({"members": list(labels), "weights": list(best["weights"]),
                          self.metric: best[self.metric],
                          "fold_metrics": [t[at][self.metric] for t in tables],
                          "table": table})  # fmt: skip
        return tried

    # -- more folds --

    def plan_folds(self, first_pass: float, selection_seconds: float) -> int:
        """How many folds to run in all (`recvae.workflow.folds.fold_count`): 1 unless the
        validation users were held out by auto itself (strong generalisation, no test users:
        a data set's own split or a weak split has no other users to hold out)."""
        spec = self.protocol
        own = self.dataset.split is None and spec.protocol in ("auto", "strong")
        if not own or spec.test_users or not spec.valid_users or not self.results:
            return 1
        n_users, n_valid = self.dataset.matrix.shape[0], spec.valid_users
        folds = fold_count(first_pass, selection_seconds, n_users, n_valid)
        self.say(
            f"auto: the first pass took {format_seconds(first_pass)} of "
            f"{format_seconds(selection_seconds)} to choose: "
            + (f"{folds} folds of {n_valid} held-out users in all, chosen by the metric pooled "
               "over them" if folds > 1 else "one fold")
        )  # fmt: skip
        return folds

    def run_folds(self, planned: int, deadline: float, first_pass: float) -> None:
        """Fit every candidate fitted on fold 0 again on folds 1..planned-1, each fold only
        while a pass (at the pace of the passes so far) still fits before `deadline`; then
        pool every candidate's per-user values over the folds and blend again on them."""
        from recvae.data.split import ProtocolSpec

        spec = self.protocol
        fitted = [r for r in self.rows if r["status"] == "fitted" and r["model"] != "blend"]
        for fold in range(1, planned):
            started = time.perf_counter()
            pace = (first_pass + sum(self.fold_seconds)) / (1 + len(self.fold_seconds))
            if started + pace > deadline:
                left = format_seconds(max(deadline - started, 0))
                self.fold_note = (f"fold {fold + 1} of {planned} not run: a pass takes about "
                                  f"{format_seconds(pace)}, {left} of the selection time "
                                  "left")  # fmt: skip
                self.say(f"auto: {self.fold_note}")
                break
            split = fold_split(self.dataset.matrix, spec.valid_users, fold,
                               spec.heldout_fraction, spec.seed)  # fmt: skip
            dataset = replace(self.dataset, split=split)
            protocol = ProtocolSpec("presplit", seed=spec.seed)
            results: dict[str, Any] = {}
            deep_left = sum(1 for r in fitted if r["kind"] == "deep") * (planned - fold)
            for index, row in enumerate(fitted, 1):
                if row["status"] != "fitted":  # failed on an earlier fold: out of the running
                    continue
                extra: dict[str, Any] = {}
                if row["kind"] == "deep":
                    left = deadline - time.perf_counter()
                    extra["time_limit"] = round(max(MIN_DEEP_SECONDS, left / deep_left), 3)
                    deep_left -= 1
                self.say(f"auto fold {fold + 1}/{planned} [{index}/{len(fitted)}]: fitting "
                         f"{row['label']}")  # fmt: skip
                result = self._fit_fold(row, dataset, protocol, fold, extra)
                if result is not None:
                    results[row["label"]] = result
            self.fold_seconds.append(round(time.perf_counter() - started, 3))
            if not results:  # every candidate failed here: nothing to pool
                self.fold_note = f"fold {fold + 1} of {planned}: every candidate failed"
                break
            self.fold_results.append(results)
            self.fold_users.append(int(next(iter(results.values())).evaluation.users))
        if len(self.fold_results) > 1:
            self._pool()
            self.rows = [r for r in self.rows if r["label"] != BLEND_LABEL]
            self.results.pop(BLEND_LABEL, None)
            self.run_blend(deadline)

    def _fit_fold(
        self, row: dict[str, Any], dataset: Any, protocol: Any, fold: int, extra: dict[str, Any]
    ) -> Any:
        """Fit `row`'s candidate on a later fold with the settings it had on fold 0 (a deep
        model: this fold's time limit); record the fold's score, seconds and best epoch on
        the row. A failure takes the candidate out of the running (None)."""
        from recvae.workflow.fit import TrainSpec, fit_model

        settings = {**row["settings"], **extra}
        spec = TrainSpec(row["model"], _config(row["model"], settings, row["label"]))
        try:
            result = fit_model(dataset, spec, protocol, metric=self.metric,
                               dataset_path=self.dataset_path)  # fmt: skip
        except Exception as error:  # as on fold 0: it must not sink the choice
            log.warning("auto: %s failed on fold %d", row["label"], fold + 1, exc_info=True)
            first = str(error).splitlines()[0] if str(error) else ""
            row.update(status="failed",
                       reason=f"fold {fold + 1}: {type(error).__name__}: {first}")  # fmt: skip
            self.say(f"auto fold {fold + 1}: {row['label']} failed: {first}")
            return None
        result.metadata["split"]["source"] = f"held out by recvae (auto fold {fold + 1})"
        training = result.metadata["training"]
        row["fold_metrics"].append(result.metadata["metrics"][self.metric])
        row["fold_fit_seconds"].append(training["seconds"])
        if "fold_best_epochs" in row:
            row["fold_best_epochs"].append(_best_epoch(training))
        self.say(f"auto fold {fold + 1}: {row['label']} validation {self.metric} "
                 f"{row['fold_metrics'][-1]:.4f} in {format_seconds(training['seconds'])}")
        return result

    def _pool(self) -> None:
        """Every fitted candidate's metrics over all folds' validation users (per-user values
        concatenated); its fit seconds summed; a deep model's refit epochs the mean of the
        folds' best epochs, rounded (each fold's best is a noisy estimate of one number)."""
        for row in self.rows:
            if row["status"] != "fitted" or row["model"] == "blend":
                continue
            evaluations = [results[row["label"]].evaluation for results in self.fold_results]
            row["metrics"], row["stderrs"] = pooled([e.per_user for e in evaluations])
            row["fit_seconds"] = round(sum(row["fold_fit_seconds"]), 3)
            if row.get("fold_best_epochs"):
                epochs = row["fold_best_epochs"]
                row["refit_epochs"] = max(1, math.floor(sum(epochs) / len(epochs) + 0.5))

    def fold_summary(self, planned: int) -> dict[str, Any]:
        """What the `auto` summary records about the folds."""
        return {
            "folds": len(self.fold_results),
            "folds_planned": planned,
            "fold_users": list(self.fold_users),
            "fold_seconds": list(self.fold_seconds),
            "fold_note": self.fold_note or None,
            "fold_rule": (
                "after the first pass, as many passes in all as fit in the selection time at "
                f"its pace, at most {MAX_FOLDS} and at most users // held-out users; each "
                "later fold holds out the next block of the same seeded user order"
            ),
        }

    # -- the refit --

    def _final_settings(self, label: str) -> tuple[str, dict[str, Any]]:
        """The model and settings to refit `label` with: deep models with the epochs they
        chose and no early stopping or time limit (there is nothing to validate on)."""
        row = next(r for r in self.rows if r["label"] == label)
        settings = dict(row["settings"])
        if row.get("refit_epochs"):
            settings.update(epochs=row["refit_epochs"], patience=0, time_limit=0.0)
        return row["model"], settings

    def refit(self, best: dict[str, Any]) -> Any:
        from recvae.data.split import ProtocolSpec
        from recvae.workflow.fit import TrainSpec, fit_model

        if best["label"] == BLEND_LABEL:
            members = []
            for label in best["members"]:
                model, settings = self._final_settings(label)
                members.append({"model": model, **_nested(model, settings)})
            settings = {"members": members, "weights": best["weights"], "normalise": "zscore",
                        "metric": self.metric}  # fmt: skip
            spec = TrainSpec("blend", _config("blend", settings, "blend"))
        else:
            model, settings = self._final_settings(best["label"])
            spec = TrainSpec(model, _config(model, settings, best["label"]))
        return fit_model(
            self.dataset, spec, ProtocolSpec("none"), metric=self.metric,
            dataset_path=self.dataset_path,
        )  # fmt: skip


def _best_epoch(training: dict[str, Any]) -> int:
    """The epochs a deep model chose on one fold (its best; all it ran if none was best)."""
    return max(1, int(training["best_epoch"] or training["epochs_run"]))


def _config(model: str, settings: Mapping[str, Any], label: str) -> Any:
    """The model's default config with `settings` applied. (`make_config` from a dict builds a
    partial `loop` table on LoopConfig's defaults, which would drop RecVAE's own loop defaults,
    lr 5e-4 and 50 rounds.)"""
    from recvae.models.configs import make_config, with_settings

    return with_settings(make_config(model), settings, source=f"auto candidate {label}")


def _nested(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Flat settings as a blend member's full table (loop keys under `loop`)."""
    from recvae.config import config_to_dict

    return config_to_dict(_config(model, settings, model))


def with_overrides(config: AutoConfig, **overrides: Any) -> AutoConfig:
    """`config` with the given (non-None) values replaced."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **given) if given else config
