"""`recvae train --model auto`: pick the model for a data set nobody tuned for, within a budget.

    result = fit_auto(dataset, AutoConfig(budget="30m"))
    result.fit.save("models/auto")      # the winner, refitted on all data; metadata["auto"]

Within the time budget it fits a small, fixed set of candidates (`CANDIDATES`, plain data) on the
training part, scores each on the validation users by one metric, adds a blend of the best
candidate with its best partner from another model family (weights tuned on validation, like
`weights = "tune"`), picks the best,
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
    fitted = [row for row in runner.rows if row["status"] == "fitted"]
    if not fitted:
        reasons = "; ".join(f"{row['label']}: {row['reason']}" for row in runner.rows)
        raise RecvaeError(
            f"auto: no candidate could be fitted within the budget {format_seconds(budget)} "
            f"({reasons}); give a larger --budget, e.g. {format_seconds(max(60.0, budget * 10))}"
        )
    best = max(fitted, key=lambda row: row["metrics"][metric])  # first best in run order
    selection_seconds = time.perf_counter() - started
    say(
        f"auto: winner {best['label']} with validation {metric} "
        f"{best['metrics'][metric]:.4f} after {format_seconds(selection_seconds)}"
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
        "candidates": runner.rows,
    }
    _describe(final, winner_fit, summary)
    return AutoResult(final, best["label"], runner.rows, summary)


def _refit_note(row: dict[str, Any]) -> str:
    if row["model"] == "blend":
        return f"members {' + '.join(row['members'])} as chosen, weights {row['weights']}"
    epochs = row.get("refit_epochs")
    return f"{epochs} epochs, the best on validation" if epochs else "its chosen settings"


def _describe(final: Any, winner_fit: Any, summary: dict[str, Any]) -> None:
    """Put the selection into the final model's metadata: the winner's validation evaluation
    (from before the refit: the refitted model has seen the validation users), every
    candidate, and the `auto` summary."""
    meta = final.metadata
    meta["auto"] = summary
    meta["candidates"] = summary["candidates"]
    if final is not winner_fit:
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
        self.results: dict[str, Any] = {}
        self.models: dict[str, Candidate] = {}
        self.measured: dict[str, float] = {}  # model name -> seconds of its last fit

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
        )
        for key in ("epochs_run", "best_epoch", "stopped"):
            if key in training:
                row[key] = training[key]
        if "best_epoch" in training:
            row["refit_epochs"] = max(1, int(training["best_epoch"] or training["epochs_run"]))
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
        stand-in are one family; a blend is not a member)."""
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
        selection time (`deadline`) lasts, so a budget spent by the deep models stays spent."""
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
        split = self.results[leader["label"]].split
        tried = self._tune_pairs(leader, partners, split.valid, deadline)
        chosen = max(tried, key=lambda t: t[self.metric])  # first best: the stronger partner
        members = [self.results[label] for label in chosen["members"]]
        model = Blend.from_members(
            [m.model for m in members], tuple(chosen["weights"]), split.valid.n_items, "zscore"
        )
        evaluation = evaluate(
            model, split.valid, ks=validation_ks(self.metric, split.valid.n_items)
        )
        seconds = time.perf_counter() - started
        fitted_seconds = sum(r["fit_seconds"] for r in self.rows
                             if r["label"] in chosen["members"]) + seconds  # fmt: skip
        training = {"seconds": round(fitted_seconds, 3), "warm_start": None, "checkpoint_dir": None}
        metadata = fit_metadata(
            "blend", model, self.dataset, members[0].metadata["split"], training, evaluation,
            self.metric, self.dataset_path,
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
            metrics=dict(evaluation.means), stderrs=dict(evaluation.stderrs),
            fit_seconds=round(fitted_seconds, 3), tune_seconds=round(seconds, 3),
            members=chosen["members"], weights=chosen["weights"],
            weight_grid=[{"weights": r["weights"], self.metric: r[self.metric]}
                         for r in chosen["table"]],
            pairs=[{k: v for k, v in t.items() if k != "table"} for t in tried],
            pairs_not_tried=[[leader["label"], p["label"]] for p in partners[len(tried):]],
        )  # fmt: skip
        self.rows.append(row)
        self.say(
            f"auto [{len(self.rows)}/{self.total}]: blend {' + '.join(chosen['members'])} "
            f"weights {chosen['weights']} validation {self.metric} "
            f"{row['metrics'][self.metric]:.4f}"
        )

    def _tune_pairs(
        self, leader: dict[str, Any], partners: list[dict[str, Any]], valid: Any, deadline: float
    ) -> list[dict[str, Any]]:
        """Each (leader, partner) pair's best weights and validation metric, partners in order,
        the second and later ones only before `deadline`."""
        from recvae.models.blend import tune_weights

        tried: list[dict[str, Any]] = []
        for partner in partners:
            if tried and time.perf_counter() > deadline:
                self.say(f"auto: out of selection time; pairs not tried: {leader['label']} + "
                         f"{', '.join(p['label'] for p in partners[len(tried):])}")  # fmt: skip
                break
            labels = [leader["label"], partner["label"]]
            weights, table = tune_weights(
                [self.results[label].model for label in labels], valid, "zscore", self.metric, 0.1
            )
            best = next(row for row in table if tuple(row["weights"]) == tuple(weights))
            tried.append({"members": labels, "weights": list(weights),
                          self.metric: best[self.metric], "table": table})  # fmt: skip
        return tried

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
