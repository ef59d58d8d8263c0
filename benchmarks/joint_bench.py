"""The joint model (recvae.models.joint) against tuned EASE and tuned ALS on LightGCN valid splits.

Trains on train.txt, reports on valid.txt (Recall@20 LightGCN's definition, NDCG@20). Each fit is
one step writing one JSON (means, fit seconds, epoch history) under --out/<dataset>/ and the
per-user metrics under benchmarks/work/joint/<dataset>/<run>.npz, so paired differences against
any baseline need no refit (EASE on Gowalla takes minutes and gigabytes):

    python benchmarks/joint_bench.py fit ml-1m ../shared/datasets/ml-1m-lightgcn ease-l2-1000 \
        --model ease --set l2=1000
    python benchmarks/joint_bench.py fit ml-1m DATA joint --model joint --set epochs=30
    python benchmarks/joint_bench.py report        # report.md, results.json, plots

Fitting goes through `recvae.workflow.fit.fit_model`, the path `recvae train` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from beyond import load_dataset

from recvae.cli.train import parse_set_options
from recvae.data.split import ProtocolSpec
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
    log.unlink(missing_ok=True)
    result = fit_model(dataset, TrainSpec.of(args.model, settings), ProtocolSpec("presplit"),
                       log_path=log, metric="ndcg@20")  # fmt: skip
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
        payload["history"] = [
            {k: r.get(k) for k in ("epoch", "loss", "train_seconds", *METRICS)} for r in history
        ]
    write(Path(args.out) / args.dataset, args.run, payload)


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
                  "| run | model | settings | Recall@20 | NDCG@20 | best / run | fit s | s/epoch |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, r in sorted(runs.items(), key=lambda kv: -kv[1]["valid"]["ndcg@20"]):
            epochs = f"{r['best_epoch']} / {r['epochs_run']}" if "best_epoch" in r else ""
            per_epoch = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
            lines.append(
                f"| {name} | {r['model']} | `{json.dumps(r['settings'])}` "
                f"| {r['valid']['recall_lightgcn@20']:.4f} | {r['valid']['ndcg@20']:.4f} "
                f"| {epochs} | {r['fit_seconds']:.0f} | {per_epoch} |"
            )
        pairs = results["paired"].get(dataset, {})
        if pairs:
            lines += [
                "",
                "Paired per-user differences (run - baseline) on the same valid users:",
                "",
                "| comparison | metric | difference | paired SE | margin (SE) | relative |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for key, rows in pairs.items():
                for metric, row in rows.items():
                    lines.append(
                        f"| {key} | {metric} | {row['difference']:+.4f} | {row['paired_se']:.4f} "
                        f"| {row['margin_se']:+.1f} | {row['relative']:+.1%} |"
                    )
        lines += ["", f"![{dataset}]({dataset}-ndcg.png)", ""]
    return "\n".join(lines) + "\n"


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
            elif "valid" in r:
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
    p.set_defaults(func=fit)
    p = sub.add_parser("report")
    p.set_defaults(func=report)
    for p in sub.choices.values():
        p.add_argument("--out", default=OUT)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
