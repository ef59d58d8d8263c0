"""Write a suite's results as a dated report directory:

    <out>/<suite>-<YYYY-MM-DD>/
      report.md        what ran, where, on what, and the numbers (tables per data set)
      results.json     everything in report.md and every tuning run, machine-readable
      <dataset>-metrics.png       Recall@20 / NDCG@20 per model (bar chart)
      <dataset>-time-quality.png  NDCG@20 against fit time, every tuning run
      <dataset>-curves.png        per-epoch validation metrics, for models that record them

Written to a temporary directory and renamed into place (recvae.io.atomic_dir).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from recvae.bench.runner import ModelSummary, SuiteResults
from recvae.bench.runs import RunResult
from recvae.io import atomic_dir, check_output

TABLE_METRICS = ("recall@20", "recall@50", "recall_lightgcn@20", "ndcg@20", "ndcg@100")


def report_dir(results: SuiteResults, out: Path) -> Path:
    date = dt.datetime.fromisoformat(str(results.run_info["time"])).date().isoformat()
    return Path(out) / f"{results.suite}-{date}"


def write_report(results: SuiteResults, out: Path) -> Path:
    """Write report.md, results.json and the plots; return the report directory."""
    dest = report_dir(results, out)
    check_output(dest, "bench report")  # today's report of this suite, never someone's files
    with atomic_dir(dest) as tmp:
        (tmp / "results.json").write_text(json.dumps(results.as_dict(), indent=2, default=str))
        plots = write_plots(results, tmp)
        (tmp / "report.md").write_text(render_markdown(results, plots))
    return dest


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metric_cell(summary: ModelSummary, metric: str) -> str:
    if metric not in summary.metrics:
        return "–"
    cell = f"{summary.metrics[metric]:.4f}"
    if metric in summary.stderrs:
        cell += f" ± {summary.stderrs[metric]:.4f}"
    return cell


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


def render_markdown(results: SuiteResults, plots: dict[str, list[str]]) -> str:
    info = results.run_info
    machine = info.get("machine", {})
    lines = [
        f"# Benchmark report: {results.suite}",
        "",
        *(
            []
            if results.complete
            else ["**Partial report: the suite was still running or was stopped.**", ""]
        ),
        f"- Run at: {info.get('time')}",
        f"- Git commit: `{info.get('git_commit')}`",
        f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB memory, {machine.get('platform')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
        f"- Cut-offs: {results.ks}; seeds: {results.seeds}; "
        f"settings chosen by validation {results.tune_metric}",
    ]
    if results.command:
        lines += ["", "Reproduce with:", "", "```", results.command, "```"]
    lines += [
        "",
        "## How to read this",
        "",
        "- Every model is scored by the same code (`recvae.evaluate.evaluate`): all items ranked, "
        "the user's history items excluded, no sampled negatives. Recall@K divides hits by "
        "min(K, held out) (Mult-VAE paper); `recall_lightgcn` divides by the number held out "
        "(LightGCN papers). Means over evaluated users, ± the standard error across users.",
        "- Every model scores users from their history rows (fold-in), training users included.",
        "- Tuning: each model's grid is searched on the validation part and the setting with the "
        f"best {results.tune_metric} is reported. `grid` tries every combination; `coordinate` "
        "starts each axis at its middle value and tunes one axis at a time, in order, keeping the "
        "best (one pass). When a data set has no test part the reported numbers are on the "
        "validation data that also chose the setting (optimistic for tuned models).",
        "- Fit time: wall-clock `fit`; score time: wall-clock inside `model.score` for the "
        "reported users. The machine is shared, so read times as rough ratios.",
    ]
    if results.isolated:
        lines.append(
            "- Memory: each run is its own process. *Peak* is that process's resident high-water "
            "mark (VmHWM: interpreter, libraries, the split and the model); *added* is peak minus "
            "the resident size after the split was loaded, i.e. what fitting and evaluating cost."
        )
    else:
        lines.append("- Memory was not measured (runs shared one process: `isolate = false`).")
    for info_ds in results.datasets:
        lines += _dataset_section(results, info_ds, plots.get(info_ds.name, []))
    return "\n".join(lines) + "\n"


def _dataset_section(results: SuiteResults, ds, plots: list[str]) -> list[str]:
    summaries = [s for s in results.summaries if s.dataset == ds.name]
    on = summaries[0].evaluated_on if summaries else "valid"
    lines = [
        "",
        f"## {ds.name}",
        "",
        f"- Source: `{ds.path or 'synthetic'}`; fingerprint `{ds.fingerprint}`",
        f"- {ds.users} users x {ds.items} items, {ds.interactions} interactions",
        f"- Protocol: {ds.protocol} {json.dumps(ds.split_params)}; train users {ds.train_users}, "
        f"validation users {ds.valid_users}, test users {ds.test_users}",
        f"- Numbers below are on the **{on}** part.",
        "",
        "| model | setting | " + " | ".join(TABLE_METRICS) + " | fit s | score s | peak MiB "
        "| added MiB |",
        "|" + "---|" * (len(TABLE_METRICS) + 6),
    ]
    for s in summaries:
        if s.error:
            lines.append(f"| {s.label} | failed: {s.error} |" + " |" * (len(TABLE_METRICS) + 4))
            continue
        cells = [_metric_cell(s, m) for m in TABLE_METRICS]
        lines.append(
            f"| {s.label} | {_settings(s.settings)} | " + " | ".join(cells) + " | "
            f"{_fmt(s.fit_seconds, 1)} | {_fmt(s.score_seconds, 2)} | "
            f"{_fmt(s.peak_rss_mib, 0)} | {_fmt(s.added_rss_mib, 0)} |"
        )
    lines += ["", "Tuning (on validation):", ""]
    for s in summaries:
        grid = _settings(s.grid) if s.grid else "no grid"
        seeds = ", ".join(map(str, s.seeds)) if s.seeds else "model takes no seed"
        lines.append(
            f"- {s.label}: {s.search} search over {grid}; {s.tuning_runs} fits; chose "
            f"{_settings(s.settings)}; seeds {seeds}"
        )
    runs = [r for r in results.runs if r.dataset == ds.name]
    lines += ["", "<details><summary>Every run</summary>", ""]
    lines += ["| model | setting | seed | stage | valid " + results.tune_metric + " | fit s |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in runs:
        value = r.error or _fmt(r.valid.get(results.tune_metric))
        lines.append(
            f"| {r.model} | {_settings(r.settings)} | {r.seed} | {r.stage} | {value} | "
            f"{_fmt(r.fit_seconds, 1)} |"
        )
    lines += ["", "</details>", ""]
    lines += [f"![{name}]({name})" for name in plots]
    return lines


def write_plots(results: SuiteResults, directory: Path) -> dict[str, list[str]]:
    """PNG plots per data set; returns {dataset: [file names]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, list[str]] = {}
    for ds in results.datasets:
        summaries = [s for s in results.summaries if s.dataset == ds.name and not s.error]
        runs = [r for r in results.runs if r.dataset == ds.name and not r.error]
        names: list[str] = []
        if summaries:
            names.append(_bar_chart(plt, ds.name, summaries, directory))
        if runs:
            names.append(_time_quality(plt, ds.name, runs, results.tune_metric, directory))
        curves = [r for r in runs if r.history and r.stage == "final"]
        if curves:
            names.append(_curves(plt, ds.name, curves, directory))
        written[ds.name] = names
    return written


def _bar_chart(plt, dataset: str, summaries: list[ModelSummary], directory: Path) -> str:
    metrics = [m for m in ("recall@20", "ndcg@20") if m in summaries[0].metrics]
    fig, ax = plt.subplots(figsize=(1.2 * len(summaries) + 3, 4))
    width = 0.8 / max(len(metrics), 1)
    for i, metric in enumerate(metrics):
        xs = [j + i * width for j in range(len(summaries))]
        ax.bar(xs, [s.metrics[metric] for s in summaries], width, label=metric,
               yerr=[s.stderrs.get(metric, 0.0) for s in summaries])  # fmt: skip
    ax.set_xticks([j + width * (len(metrics) - 1) / 2 for j in range(len(summaries))])
    ax.set_xticklabels([s.label for s in summaries], rotation=30, ha="right")
    ax.set_title(f"{dataset}: tuned models on {summaries[0].evaluated_on}")
    ax.legend()
    fig.tight_layout()
    name = f"{dataset}-metrics.png"
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name


def _time_quality(plt, dataset: str, runs: list[RunResult], metric: str, directory: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({r.model for r in runs}):
        mine = [r for r in runs if r.model == model and metric in r.valid]
        ax.scatter([max(r.fit_seconds or 0, 1e-3) for r in mine],
                   [r.valid[metric] for r in mine], label=model)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("fit time (s, log scale)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{dataset}: quality against training time (every run)")
    ax.legend()
    fig.tight_layout()
    name = f"{dataset}-time-quality.png"
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name


def _curves(plt, dataset: str, runs: list[RunResult], directory: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        keys = [k for k in r.history[0] if "@" in k]
        for key in keys[:2]:
            points = [(e.get("epoch", i + 1), e[key]) for i, e in enumerate(r.history) if key in e]
            ax.plot(*zip(*points, strict=True), label=f"{r.model} seed {r.seed} {key}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation metric")
    ax.set_title(f"{dataset}: validation curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    name = f"{dataset}-curves.png"
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name
