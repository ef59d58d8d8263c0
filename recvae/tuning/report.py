"""What a study leaves in STUDY_DIR besides its storage: the best config as TOML, every trial as
CSV and JSON, plots, and a Markdown report that puts the best trial beside the defaults.

    best.toml       the best trial's full model config: `recvae train --config best.toml` as is
    nightly-train.toml  Mult-VAE/DAE: the same as the nightly job's [train] section
    trials.csv      one row per trial: number, state, value, parameters, validation metrics, time
    trials.json     the same, plus each epoch model's per-epoch validation values
    history.png     metric per trial, running best, and the defaults' value
    importances.png parameter importances (Optuna's PED-ANOVA), when enough trials completed
    curves.png      epoch models: validation metric per epoch of every trial (pruned ones grey)
    report.md       the summary; links the plots
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recvae.config import config_to_dict, to_toml
from recvae.io import atomic_file
from recvae.models.configs import config_class
from recvae.provenance import run_info
from recvae.tuning.spaces import EPOCH_MODELS, HIDDEN_DIM
from recvae.tuning.study import (
    PRUNER_STARTUP_TRIALS,
    STORAGE_FILE,
    StudyRun,
)

REPORT_METRICS = ("ndcg@20", "recall@20", "ndcg@50", "recall@50", "ndcg@100", "recall@100")


def write_outputs(run: StudyRun) -> list[Path]:
    """Write every output file atomically; returns their paths."""
    out = Path(run.options.out)
    rows = trial_rows(run.study)
    written = [write_trials_csv(rows, out / "trials.csv")]
    written.append(_write_text(out / "trials.json", json.dumps(trial_records(run.study), indent=1)))
    best = best_trial(run.study)
    if best is not None:
        written.append(_write_text(out / "best.toml", best_toml(run, best)))
        if run.options.model in EPOCH_MODELS:
            written.append(_write_text(out / "nightly-train.toml", nightly_section(run, best)))
    plots = write_plots(run, out)
    written += plots
    written.append(_write_text(out / "report.md", report_markdown(run, best, plots)))
    return written


# --- trials ---------------------------------------------------------------------------------


def best_trial(study: Any) -> Any | None:
    """The completed trial with the highest value (pruned and failed trials never win)."""
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def state_name(trial: Any) -> str:
    name = trial.state.name.lower()
    return "interrupted" if name == "fail" and trial.user_attrs.get("interrupted") else name


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Flat rows: one per trial, parameters as `param_NAME`, metrics as `valid_METRIC`."""
    rows = []
    for trial in study.trials:
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "number": trial.number,
            "state": state_name(trial),
            "value": trial.value,
        }
        row.update({f"param_{k}": v for k, v in trial.params.items()})
        row.update({f"valid_{k}": v for k, v in (attrs.get("metrics") or {}).items()})
        row["seconds"] = attrs.get("seconds")
        row["epochs"] = attrs.get("epochs")
        row["best_epoch"] = attrs.get("best_epoch")
        row["started"] = trial.datetime_start.isoformat() if trial.datetime_start else None
        row["finished"] = trial.datetime_complete.isoformat() if trial.datetime_complete else None
        row["error"] = attrs.get("error")
        rows.append(row)
    return rows


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Everything Optuna kept per trial, JSON-ready (incl. per-epoch validation values)."""
    return [
        {
            "number": trial.number,
            "state": state_name(trial),
            "value": trial.value,
            "params": trial.params,
            "user_attrs": trial.user_attrs,
            "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        }
        for trial in study.trials
    ]


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    import polars as pl

    columns = list(dict.fromkeys(key for row in rows for key in row))
    frame = pl.DataFrame(
        [{c: row.get(c) for c in columns} for row in rows], infer_schema_length=None
    )
    with atomic_file(path) as tmp:
        frame.write_csv(tmp)
    return path


# --- best config ----------------------------------------------------------------------------


def best_config(run: StudyRun, trial: Any) -> dict[str, Any]:
    """The full model config of `trial` (defaults filled in), as `recvae train` reads it."""
    from recvae.bench.runs import seeded_model

    settings = trial.user_attrs.get("settings") or run.space.settings(trial.params)
    model, _ = seeded_model(run.options.model, settings, run.options.seed)
    return config_to_dict(model.config)


def best_toml(run: StudyRun, trial: Any) -> str:
    model = run.options.model
    header = [
        f"# recvae tune: best of {len(run.study.trials)} trials for {model} "
        f"(trial {trial.number}, valid {run.metric} = {trial.value:.5f})",
    ]
    header.append(f"# train it: recvae train DATASET --model {model} --config best.toml --out DIR")
    header.append("# nightly job: see nightly-train.toml (these keys under [train.config])")
    return "\n".join(header) + "\n" + to_toml(best_config(run, trial))


def nightly_section(run: StudyRun, trial: Any) -> str:
    """The [train] section of a `recvae nightly` config, ready to paste."""
    return (
        f"# recvae tune: trial {trial.number}, valid {run.metric} = {trial.value:.5f}; paste into "
        "the nightly job's config in place of its [train] section\n"
        + to_toml({"train": {"model": run.options.model, "config": best_config(run, trial)}})
    )


# --- plots ----------------------------------------------------------------------------------


def write_plots(run: StudyRun, out: Path) -> list[Path]:
    """PNG plots with matplotlib's object API (no pyplot, no global backend change)."""
    written = [_history_plot(run, out / "history.png")]
    importances = _importance_plot(run, out / "importances.png")
    if importances is not None:
        written.append(importances)
    if run.options.model in EPOCH_MODELS:
        written.append(_curves_plot(run, out / "curves.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return path


def _history_plot(run: StudyRun, path: Path) -> Path:
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    complete = [t for t in run.study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in run.study.trials if t.state == TrialState.PRUNED and t.value is not None]
    axes.scatter([t.number for t in complete], [t.value for t in complete], label="complete")
    if pruned:
        axes.scatter([t.number for t in pruned], [t.value for t in pruned], marker="x",
                     color="grey", label="pruned (last value)")  # fmt: skip
    best, xs, ys = -math.inf, [], []
    for trial in sorted(complete, key=lambda t: t.number):
        best = max(best, trial.value)
        xs.append(trial.number)
        ys.append(best)
    if xs:
        axes.step(xs, ys, where="post", color="C1", label="best so far")
    if run.reference is not None and run.metric in run.reference.metrics:
        axes.axhline(run.reference.metrics[run.metric], color="C3", linestyle="--",
                     label="defaults")  # fmt: skip
    axes.set_xlabel("trial")
    axes.set_ylabel(f"valid {run.metric}")
    axes.set_title(f"{run.options.model}: optimisation history")
    axes.legend(loc="lower right")
    return _save(figure, path)


def parameter_importances(study: Any) -> dict[str, float] | None:
    """Importances of the searched parameters by Optuna's default evaluator (PED-ANOVA);
    None when too few trials completed for them to mean anything."""
    import warnings

    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):
            return None
    if any("too small" in str(w.message) for w in caught):
        return None  # Optuna then returns equal importances: not information
    return importances


def _importance_plot(run: StudyRun, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    importances = parameter_importances(run.study)
    if not importances:
        return None
    names = list(reversed(importances))
    figure = Figure(figsize=(6, 0.4 * len(names) + 1.2))
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names])
    axes.set_xlabel(f"importance for valid {run.metric} (PED-ANOVA)")
    axes.set_title(f"{run.options.model}: parameter importances")
    return _save(figure, path)


def _curves_plot(run: StudyRun, path: Path) -> Path:
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for trial in run.study.trials:
        values = sorted(trial.intermediate_values.items())
        if not values:
            continue
        complete = trial.state == TrialState.COMPLETE
        axes.plot([e for e, _ in values], [v for _, v in values], linewidth=1,
                  color=None if complete else "lightgrey", zorder=2 if complete else 1)  # fmt: skip
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"valid {run.metric}")
    axes.set_title("validation curves (grey: pruned or failed)")
    return _save(figure, path)


# --- Markdown -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def default_values(model: str) -> dict[str, Any]:
    """The model's own defaults, keyed like the search space (hidden_dim for VAE/DAE)."""
    config = config_to_dict(config_class(model)())
    values = {**config.pop("loop", {}), **config}  # flat, like the space's names
    if values.get("hidden_dims"):
        values[HIDDEN_DIM] = values["hidden_dims"][0]
    return values


def report_markdown(run: StudyRun, best: Any | None, plots: list[Path]) -> str:
    options, study, metric = run.options, run.study, run.metric
    states = [state_name(t) for t in study.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    seconds = sum(t.user_attrs.get("seconds") or 0.0 for t in study.trials)
    identity = run.identity
    # A resumed study lists every command that added trials; a rewrite-only run adds none.
    commands = study.user_attrs.get("commands") or ([options.command] if options.command else [])
    lines = [
        f"# recvae tune: {options.model} on {Path(options.dataset_dir).name}",
        "",
        *[f"Command: `{command}`" for command in commands],
        "",
        f"- Optimised: **validation {metric}** ({identity['validation'].get('source')}, "
        f"{identity['validation'].get('protocol')} protocol); the test part is never used.",
        f"- Dataset: `{options.dataset_dir}` "
        f"(fingerprint `{identity['dataset_fingerprint'][:16]}`)",
        f"- Sampler: {options.sampler}, seed {options.seed}; pruner: "
        + (
            f"{options.pruner} (after {PRUNER_STARTUP_TRIALS} trials, from epoch "
            f"{options.prune_warmup + 1})"
            if options.model in EPOCH_MODELS and options.pruner != "none"
            else "none"
        ),
        f"- Trials: {len(study.trials)} ({counts}); {seconds / 60:.1f} min of trial time",
        f"- Storage: `{STORAGE_FILE}` (Optuna journal, study `{study.study_name}`); rerun the "
        "command with a larger --trials to continue it",
        "",
    ]
    lines += _comparison(run, best)
    if best is not None:
        lines += _best_settings(run, best)
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    if not any(p.name == "importances.png" for p in plots):
        lines.append(
            "(No importance plot: too few completed trials for Optuna to rank the parameters.)"
        )
    lines += ["", "## Top trials", ""]
    lines += _top_trials(run)
    lines += ["", "## Search space", ""]
    lines += _table(["parameter", "range"], [[s.name, s.describe()] for s in run.space.params])
    fixed = ", ".join(f"{k} = {v}" for k, v in run.space.fixed.items()) or "none"
    lines += ["", f"Fixed for every trial (and the defaults run): {fixed}.", ""]
    info = run_info()
    lines += [
        "## Run",
        "",
        f"Written {info['time']}, git {info['git_commit']}, "
        f"{info['machine'].get('cores')} cores ({info['machine'].get('cpu')}).",  # type: ignore[union-attr]
        "",
    ]
    return "\n".join(lines)


def _comparison(run: StudyRun, best: Any | None) -> list[str]:
    lines = ["## Best trial vs the defaults (validation)", ""]
    if best is None:
        return [*lines, "No trial completed, so there is no best configuration yet.", ""]
    rows = []
    metrics = [m for m in dict.fromkeys((*REPORT_METRICS, run.metric))
               if m in best.user_attrs.get("metrics", {})]  # fmt: skip
    if run.reference is not None:
        reference = run.reference
        rows.append(["defaults", *[reference.metrics.get(m) for m in metrics],
                     reference.epochs, _seconds(reference.seconds)])  # fmt: skip
    attrs = best.user_attrs
    rows.append([f"best (trial {best.number})", *[attrs["metrics"].get(m) for m in metrics],
                 attrs.get("epochs"), _seconds(attrs.get("seconds"))])  # fmt: skip
    lines += _table(["setting", *metrics, "epochs", "seconds"], rows)
    if run.reference is not None and run.metric in run.reference.metrics:
        gain = best.value / run.reference.metrics[run.metric] - 1
        lines += ["", f"Tuned vs defaults on valid {run.metric}: {gain:+.1%}."]
    lines += [
        "",
        "The best value is the maximum over all trials on the same validation users, so it is "
        "optimistic; confirm the chosen config on a test split (`recvae evaluate`).",
        "",
    ]
    return lines


def _best_settings(run: StudyRun, best: Any) -> list[str]:
    defaults = default_values(run.options.model)
    rows = [[s.name, best.params.get(s.name), defaults.get(s.name), s.describe()]
            for s in run.space.params]  # fmt: skip
    return [
        "## Best settings",
        "",
        *_table(["parameter", "best", "default", "searched"], rows),
        "",
        "The full config is in `best.toml`"
        + (
            f"; train it with `recvae train DATASET --model {run.options.model} "
            "--config best.toml --out MODEL_DIR`."
            if run.options.model in EPOCH_MODELS
            else "."
        ),
        "",
    ]


def _top_trials(run: StudyRun, count: int = 10) -> list[str]:
    from optuna.trial import TrialState

    complete = [t for t in run.study.trials if t.state == TrialState.COMPLETE]
    top = sorted(complete, key=lambda t: -t.value)[:count]
    names = [s.name for s in run.space.params]
    rows = [[t.number, t.value, *[t.params.get(n) for n in names], t.user_attrs.get("epochs"),
             _seconds(t.user_attrs.get("seconds"))] for t in top]  # fmt: skip
    return _table(["trial", run.metric, *names, "epochs", "seconds"], rows)


def _write_text(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path
