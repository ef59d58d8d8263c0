"""The joint model (recvae.models.joint) against tuned EASE and tuned ALS on LightGCN valid splits.

Trains on train.txt, reports on valid.txt (Recall@20 LightGCN's definition, NDCG@20). Each fit is
one step writing one JSON (means, fit seconds, epoch history) under --out/<dataset>/ and the
per-user metrics under benchmarks/work/joint/<dataset>/<run>.npz, so paired differences against
any baseline need no refit (EASE on Gowalla takes minutes and gigabytes):

    python benchmarks/joint_bench.py fit ml-1m ../shared/datasets/ml-1m-lightgcn ease-l2-1000 \
        --model ease --set l2=1000
    python benchmarks/joint_bench.py fit ml-1m DATA joint --model joint --set epochs=30
    python benchmarks/joint_bench.py report        # report.md, results.json, plots
    python benchmarks/joint_bench.py pair ml-1m joint-no-split joint-e12   # any two runs

`--resume` keeps checkpoints in benchmarks/work/joint/<dataset>/<run>.ckpt, so a long run split
into steps by `--set time_limit=...` continues where the last step stopped (same command).
`--deep-weights 0,0.25,...` (a joint model with both paths) also scores the trained model with
its deep logits times each weight; the weight is chosen on one half of the valid users and
measured on the other (both ways round), saved as the run `<run>+dw` (a diagnostic: the
shipped model has no such weight).

Fitting goes through `recvae.workflow.fit.fit_model`, the path `recvae train` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from beyond import load_dataset

from recvae.cli.train import parse_set_options
from recvae.data.split import Holdout, ProtocolSpec, make_split
from recvae.evaluate import evaluate_candidates
from recvae.provenance import run_info
from recvae.workflow.fit import TrainSpec, fit_model

WORK = Path("benchmarks/work/joint")
OUT = "benchmarks/reports/joint-2026-12-02"
METRICS = ("recall_lightgcn@20", "ndcg@20")


def fit(args: argparse.Namespace) -> None:
    """Fit one model on train, evaluate on valid; JSON to --out, per-user metrics to WORK."""
    dataset = load_dataset(args.data)
    settings = parse_set_options(args.set or [])
    (WORK / args.dataset).mkdir(parents=True, exist_ok=True)
    log = WORK / args.dataset / f"{args.run}.log.jsonl"
    checkpoint = WORK / args.dataset / f"{args.run}.ckpt" if args.resume else None
    if checkpoint is None:
        log.unlink(missing_ok=True)
    result = fit_model(dataset, TrainSpec.of(args.model, settings), ProtocolSpec("presplit"),
                       log_path=log, metric="ndcg@20", checkpoint_dir=checkpoint)  # fmt: skip
    evaluation = result.evaluation
    assert evaluation is not None
    np.savez(WORK / args.dataset / f"{args.run}.npz",
             **{m: evaluation.per_user[m] for m in METRICS})  # fmt: skip
    model: Any = result.model
    payload: dict[str, Any] = {
        "dataset": args.dataset, "run": args.run, "model": args.model, "settings": settings,
        "valid": {m: evaluation.means[m] for m in METRICS},
        "valid_stderr": {m: evaluation.stderrs[m] for m in METRICS},
        "users": evaluation.users,
        "fit_seconds": result.metadata["training"]["seconds"],
    }  # fmt: skip
    for key in ("linear_scale", "linear_l2"):
        if hasattr(model, key):
            payload[key] = getattr(model, key)
    history = getattr(model, "history", None)
    if history:
        payload["best_epoch"] = model.best_epoch
        payload["epochs_run"] = len(history)
        payload["seconds_per_epoch"] = float(np.median([r["train_seconds"] for r in history]))
        # over every step of a resumed run (fit_seconds counts the last step only)
        payload["train_seconds_total"] = float(sum(r["train_seconds"] for r in history))
        payload["valid_seconds_total"] = float(sum(r.get("valid_seconds", 0.0) for r in history))
        payload["stopped"] = model.stopped
        payload["history"] = [
            {k: r.get(k) for k in ("epoch", "loss", "train_seconds", *METRICS)} for r in history
        ]
    write(Path(args.out) / args.dataset, args.run, payload)
    if args.deep_weights:
        weights = [float(w) for w in args.deep_weights.split(",")]
        split = make_split(dataset, ProtocolSpec("presplit"))
        assert split.valid is not None
        deep_weight_run(args, model, split.valid, weights, payload)


def deep_weight_run(args: argparse.Namespace, model: Any, valid: Holdout,
                    weights: list[float], fitted: dict[str, Any]) -> None:  # fmt: skip
    """Score the trained joint model with logits = w x deep + linear (+ bias) for each w; choose
    w on the odd-numbered valid users and score the even-numbered with it, and the other way
    round, so no user is scored with a weight chosen on itself; written as run `<run>+dw`."""
    module = model.module
    combine = type(module).combine
    parts: dict[str, Any] = {}

    def grab(deep: Any, linear: Any, training: bool) -> Any:
        parts["deep"], parts["linear"] = deep, linear
        return combine(module, deep, linear, training)

    def candidates(history: Any) -> dict[float, Any]:
        module.combine = grab  # one scoring of both paths, then each weight's sum
        try:
            model.score_tensor(history)
        finally:
            del module.combine
        return {w: combine(module, parts["deep"] * w, parts["linear"], False) for w in weights}

    batch = model.config.loop.eval_batch_size  # one scoring batch per evaluation batch
    with torch.no_grad():
        results = evaluate_candidates(candidates, valid, ks=[20], batch_size=batch)
    per_user = {w: {m: results[w].per_user[m] for m in METRICS} for w in weights}
    halves = np.arange(len(per_user[weights[0]]["ndcg@20"])) % 2
    chosen: dict[str, float] = {}
    combined = {m: np.zeros_like(per_user[weights[0]][m]) for m in METRICS}
    for half in (0, 1):
        other = halves != half
        w = max(weights, key=lambda w: float(per_user[w]["ndcg@20"][other].mean()))
        chosen[f"half {half}"] = w
        for m in METRICS:
            combined[m][halves == half] = per_user[w][m][halves == half]
    run = f"{args.run}+dw"
    np.savez(WORK / args.dataset / f"{run}.npz", **combined)
    payload = {
        "dataset": args.dataset, "run": run, "model": "joint (diagnostic)",
        "settings": {**fitted["settings"], "deep_weight": chosen},
        "valid": {m: float(combined[m].mean()) for m in METRICS},
        "users": len(halves), "fit_seconds": fitted["fit_seconds"],
        "sweep": {str(w): {m: float(per_user[w][m].mean()) for m in METRICS} for w in weights},
        "about": "the trained run's deep logits times w at scoring; w chosen on the other half "
                 "of the valid users by ndcg@20",
    }  # fmt: skip
    write(Path(args.out) / args.dataset, run, payload)


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload["run_info"] = run_info()
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k not in ("history", "run_info")}))


def paired(dataset: str, run: str, baseline: str) -> dict[str, Any]:
    """Mean per-user difference run - baseline, its standard error and margin in SEs."""
    a = np.load(WORK / dataset / f"{run}.npz")
    b = np.load(WORK / dataset / f"{baseline}.npz")
    rows: dict[str, Any] = {}
    for m in METRICS:
        diff = a[m] - b[m]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        mean = float(diff.mean())
        rows[m] = {"difference": mean, "paired_se": se, "margin_se": mean / se,
                   "relative": mean / float(b[m].mean())}  # fmt: skip
    return rows


def pair(args: argparse.Namespace) -> None:
    """Print the paired difference of two runs of one dataset (e.g. a variant and its start)."""
    for metric, row in paired(args.dataset, args.run, args.baseline).items():
        print(f"{args.run} - {args.baseline} {metric}: {row['difference']:+.4f} "
              f"+- {row['paired_se']:.4f} ({row['margin_se']:+.1f} SE)")  # fmt: skip


def report(args: argparse.Namespace) -> None:
    """report.md's tables, results.json and the plots from every JSON under --out."""
    out = Path(args.out)
    spec = json.loads((out / "comparisons.json").read_text())  # which runs to pair, per dataset
    results: dict[str, Any] = {"runs": {}, "paired": {}}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}
        results["runs"][folder.name] = runs
        for run, baselines in spec.get(folder.name, {}).items():
            for baseline in baselines:
                if (WORK / folder.name / f"{run}.npz").is_file() and (
                    WORK / folder.name / f"{baseline}.npz"
                ).is_file():
                    key = f"{run} vs {baseline}"
                    results["paired"].setdefault(folder.name, {})[key] = paired(
                        folder.name, run, baseline
                    )
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, out)
    (out / "report.md").write_text(markdown(results, out))
    print(out / "report.md")


def markdown(results: dict[str, Any], out: Path) -> str:
    """notes.md (the findings, written by hand) followed by the generated tables."""
    notes = out / "notes.md"
    lines = [notes.read_text().rstrip() if notes.is_file() else "# Joint model", "",
             "## Every run (generated from the JSON files beside this report)", ""]  # fmt: skip
    for dataset, runs in results["runs"].items():
        lines += [f"### {dataset}", "",
                  "| run | model | settings | Recall@20 | NDCG@20 | best / run | fit s | s/epoch "
                  "| train s, all epochs |", "|" + " --- |" * 9]  # fmt: skip
        for name, r in sorted(runs.items(), key=lambda kv: -kv[1]["valid"]["ndcg@20"]):
            epochs = f"{r['best_epoch']} / {r['epochs_run']}" if "best_epoch" in r else ""
            per_epoch = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
            total = f"{r['train_seconds_total']:.0f}" if "train_seconds_total" in r else ""
            lines.append(
                f"| {name} | {r['model']} | `{json.dumps(r['settings'])}` "
                f"| {r['valid']['recall_lightgcn@20']:.4f} | {r['valid']['ndcg@20']:.4f} "
                f"| {epochs} | {r['fit_seconds']:.0f} | {per_epoch} | {total} |"
            )
        lines += paired_table(results["paired"].get(dataset, {}), runs)
        lines += ["", f"![{dataset}]({dataset}-ndcg.png)", ""]
    return "\n".join(lines) + "\n"


def paired_table(pairs: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    """One row per paired run: its means and, per baseline and metric, the mean per-user
    difference (run - baseline) +- its paired standard error, (difference / SE)."""
    by_run: dict[str, dict[str, Any]] = {}
    for key, rows in pairs.items():
        run, baseline = key.split(" vs ")
        by_run.setdefault(run, {})[baseline] = rows
    if not by_run:
        return []
    baselines = list(next(iter(by_run.values())))
    head = ["run", "Recall@20", "NDCG@20"] + [
        f"{'R' if m.startswith('recall') else 'N'}@20 - {b}" for b in baselines for m in METRICS
    ]
    lines = ["", "Paired per-user differences (run - baseline) on the same valid users: "
             "difference +- paired SE (difference / SE):", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]  # fmt: skip
    for run, against in by_run.items():
        valid = runs[run]["valid"] if run in runs else {}
        cells = [run] + [f"{valid[m]:.4f}" if m in valid else "" for m in METRICS]
        for b in baselines:
            for m in METRICS:
                row = against.get(b, {}).get(m)
                cells.append(f"{row['difference']:+.4f} +- {row['paired_se']:.4f} "
                             f"({row['margin_se']:+.1f})" if row else "")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(results: dict[str, Any], out: Path) -> None:
    """Validation NDCG@20 per epoch of every epoch-trained run, with the baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dataset, runs in results["runs"].items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, r in sorted(runs.items()):
            if r.get("history"):
                points = [(h["epoch"], h["ndcg@20"]) for h in r["history"] if h.get("ndcg@20")]
                if points:
                    ax.plot(*zip(*points, strict=True), label=name, marker=".")
            elif "joint" not in r["model"]:  # a baseline
                ax.axhline(r["valid"]["ndcg@20"], linestyle="--", color="grey")
                ax.text(0.5, r["valid"]["ndcg@20"], name, fontsize=7, va="bottom")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@20")
        ax.set_title(f"{dataset}: joint model and its ablations (dashed: baselines)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{dataset}-ndcg.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("run")
    p.add_argument("--model", required=True)
    p.add_argument("--set", action="append")
    p.add_argument("--resume", action="store_true", help="checkpoint, and continue a stopped run")
    p.add_argument("--deep-weights", help="comma-separated weights on the deep logits to try")
    p.set_defaults(func=fit)
    p = sub.add_parser("pair")
    p.add_argument("dataset")
    p.add_argument("run")
    p.add_argument("baseline")
    p.set_defaults(func=pair)
    p = sub.add_parser("report")
    p.set_defaults(func=report)
    for p in sub.choices.values():
        p.add_argument("--out", default=OUT)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
