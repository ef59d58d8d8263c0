"""A week of nightly runs with a growing catalogue: warm start by item id vs a cold retrain.

    python benchmarks/warm_start_week.py --out benchmarks/reports/warm-start-week-2026-12-02

The log is synthetic (recvae.data.synth): a topic model with popularity, so co-occurrence can be
learned. A share of items (`--new-per-day` of the catalogue per day, 1% by default) is held back
and released one batch a day for 7 days; each day's log is every event up to that day's time
(day 0 holds 93% of the events, each day adds 1%) over the items released so far. A new item
arrives with the events the generator drew for it up to that day, as if imported with its
history; that favours neither arm.

Every day, on the same split (strong generalization, the same validation users for every arm):
- warm: Mult-VAE warm-started from yesterday's warm model, items matched by id (new items
  initialised), `--warm-epochs` epochs: what `recvae nightly` does now;
- cold: Mult-VAE from scratch, `--cold-epochs` epochs: a full retrain;
- cold-short: from scratch with the warm budget, to show what the warm start itself brings.
Measured: validation NDCG@100 / Recall@20 (mean, standard error, and the paired warm - cold
difference with its standard error), training seconds (one thread), and whether the items
released during the week reach anyone's top-20 among all users (every user scored from their
history, seen items masked). Day 0 trains one cold model that seeds the warm arm.

Writes report.md, results.json and week.png into --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recvae.data.ingest import IngestOptions, ingest
from recvae.data.split import ProtocolSpec, make_split
from recvae.data.synth import SynthConfig, synthetic_log
from recvae.evaluate import evaluate
from recvae.models.vae import MultVAE
from recvae.models.warm_start import WarmStart
from recvae.provenance import run_info
from recvae.topk import mask_seen, top_k

DAYS = 7


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=1500, help="catalogue at the end of day 7")
    parser.add_argument("--interactions", type=int, default=250_000)
    parser.add_argument("--new-per-day", type=float, default=0.01, help="share of the catalogue")
    parser.add_argument("--warm-epochs", type=int, default=10)
    parser.add_argument("--cold-epochs", type=int, default=100, help="budget of a cold retrain")
    parser.add_argument(
        "--patience", type=int, default=10, help="cold retrain: stop after N epochs without gain"
    )
    parser.add_argument("--valid-users", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def daily_logs(args: argparse.Namespace) -> tuple[list[pl.DataFrame], dict[int, int]]:
    """The log as it stands at the end of days 0..7, and each held-back item's release day."""
    config = SynthConfig(
        n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=args.seed
    )
    log = synthetic_log(config).sort("timestamp")
    rng = np.random.default_rng(args.seed)
    per_day = max(1, round(args.items * args.new_per_day))
    held_back = rng.choice(np.arange(1, args.items + 1), size=per_day * DAYS, replace=False)
    release = {int(item): 1 + index // per_day for index, item in enumerate(held_back)}
    released = pl.DataFrame(
        {"item_id": list(release), "day": list(release.values())},
        schema={"item_id": log.schema["item_id"], "day": pl.Int64},
    )
    log = log.join(released, on="item_id", how="left").with_columns(pl.col("day").fill_null(0))
    logs = []
    for day in range(DAYS + 1):
        cutoff = int(log.height * (1 - 0.01 * (DAYS - day)))
        logs.append(log.head(cutoff).filter(pl.col("day") <= day).drop("day"))
    return logs, release


def fit(settings: dict[str, Any], split: Any, warm: WarmStart | None) -> tuple[Any, float]:
    started = time.perf_counter()
    model = MultVAE(**settings).fit(split.train, split.valid, warm_start=warm)
    return model, time.perf_counter() - started


def new_item_reach(model: Any, dataset: Any, new_ids: set[int], k: int = 20) -> dict[str, Any]:
    """How the items released this week fare in every user's top-k."""
    columns = np.flatnonzero(np.isin(dataset.items.ids.to_numpy(), list(new_ids)))
    counts = np.zeros(dataset.matrix.shape[1], dtype=np.int64)
    for start in range(0, dataset.matrix.shape[0], 2000):
        history = dataset.matrix[start : start + 2000]
        ranked, _ = top_k(mask_seen(model.score(history), history), k)
        counts += np.bincount(ranked.ravel(), minlength=len(counts))
    interactions = np.bincount(dataset.matrix.indices, minlength=dataset.matrix.shape[1])
    return {
        "new_items": len(columns),
        "new_items_recommended": int((counts[columns] > 0).sum()),
        "new_item_slots": int(counts[columns].sum()),
        "slots": int(counts.sum()),
        "new_item_interaction_share": float(interactions[columns].sum() / interactions.sum()),
    }


def paired(a: Any, b: Any, key: str) -> tuple[float, float]:
    diff = a.per_user[key] - b.per_user[key]
    diff = diff[~np.isnan(diff)]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    base = {"hidden_dims": [200], "latent_dim": 50, "batch_size": 500, "threads": 1}
    base["seed"] = args.seed
    logs, release = daily_logs(args)
    spec = ProtocolSpec("strong", valid_users=args.valid_users, seed=args.seed)
    days: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        warm_model, warm_model_items = None, None
        for day, log in enumerate(logs):
            path = Path(scratch) / f"day{day}.parquet"
            log.write_parquet(path)
            dataset = ingest([path], IngestOptions())
            split = make_split(dataset, spec)
            new_ids = {item for item, released_on in release.items() if released_on <= day}
            row: dict[str, Any] = {
                "day": day,
                "users": dataset.matrix.shape[0],
                "items": dataset.matrix.shape[1],
                "interactions": int(dataset.matrix.nnz),
                "released_so_far": len(new_ids),
            }
            cold = {**base, "epochs": args.cold_epochs, "patience": args.patience}
            arms = {"cold": (cold, None)}
            if day > 0:
                assert warm_model is not None
                spec_warm = WarmStart.by_item_ids(warm_model, warm_model_items, dataset.items)
                arms["warm"] = ({**base, "epochs": args.warm_epochs}, spec_warm)
                arms["cold-short"] = ({**base, "epochs": args.warm_epochs}, None)
                row["warm_start"] = spec_warm.describe()
            evaluations = {}
            for arm, (settings, warm) in arms.items():
                model, seconds = fit(settings, split, warm)
                evaluation = evaluate(model, split.valid, ks=[20, 100])
                evaluations[arm] = evaluation
                row[arm] = {
                    "seconds": round(seconds, 2),
                    "epochs_run": len(model.history),
                    "best_epoch": model.best_epoch,
                    **{f"{k}": round(v, 5) for k, v in evaluation.means.items()},
                    **{f"{k}_se": round(v, 5) for k, v in evaluation.stderrs.items()},
                    **(new_item_reach(model, dataset, new_ids) if new_ids else {}),
                }
                if day > 0:
                    today = {item for item, released_on in release.items() if released_on == day}
                    reach = new_item_reach(model, dataset, today)
                    row[arm]["today_recommended"] = reach["new_items_recommended"]
                    row[arm]["today_items"] = reach["new_items"]
                if arm == "warm" or day == 0:
                    warm_model, warm_model_items = model, dataset.items
            if day > 0:
                warm_eval, cold_eval = evaluations["warm"], evaluations["cold"]
                row["warm_minus_cold"] = {
                    key: [round(v, 5) for v in paired(warm_eval, cold_eval, key)]
                    for key in ("ndcg@100", "recall@20")
                }
            days.append(row)
            print(json.dumps(row), flush=True)
    write_report(args, days)


def write_report(args: argparse.Namespace, days: list[dict[str, Any]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results = {"command": command, "settings": vars(args) | {"out": str(args.out)}}
    results |= {"run": run_info(), "days": days}
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot(days, args.out / "week.png")
    week = [d for d in days if d["day"] > 0]
    lines = [
        "# Warm start across a growing catalogue: a simulated week",
        "",
        f"`{command}`",
        "",
        f"Synthetic log: {args.users:,} users, {args.items:,} items at the end of the week, "
        f"{args.interactions:,} generated events (recvae.data.synth, seed {args.seed}); "
        f"{round(args.items * args.new_per_day)} items ({args.new_per_day:.0%}) released per day. "
        f"Mult-VAE [200] hidden, 50 latent, batch 500, one thread. Validation: "
        f"{args.valid_users} held-out users (strong generalization), the same users for every "
        f"arm of a day. warm = {args.warm_epochs} epochs from yesterday's warm model (items "
        f"matched by id), the best validated epoch kept; cold = from scratch, up to "
        f"{args.cold_epochs} epochs, stopped after {args.patience} without improvement (a "
        f"retrain to convergence), best epoch kept; cold-short = "
        f"{args.warm_epochs} epochs from scratch.",
        "",
        "| day | items | new so far | NDCG@100 warm | cold | cold-short | warm - cold (SE) "
        "| train s warm | cold (epochs) | new items in a top-20 warm | cold "
        "| of them released today, warm | cold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in week:
        diff, se = d["warm_minus_cold"]["ndcg@100"]
        w, c, s = d["warm"], d["cold"], d["cold-short"]
        lines.append(
            f"| {d['day']} | {d['items']:,} | {d['released_so_far']} | {w['ndcg@100']:.4f} "
            f"| {c['ndcg@100']:.4f} | {s['ndcg@100']:.4f} | {diff:+.4f} ({se:.4f}) "
            f"| {w['seconds']:.1f} | {c['seconds']:.1f} ({c['epochs_run']}) "
            f"| {w['new_items_recommended']}/{w['new_items']} "
            f"| {c['new_items_recommended']}/{c['new_items']} "
            f"| {w['today_recommended']}/{w['today_items']} "
            f"| {c['today_recommended']}/{c['today_items']} |"
        )
    warm_s = sum(d["warm"]["seconds"] for d in week)
    cold_s = sum(d["cold"]["seconds"] for d in week)
    diffs = [d["warm_minus_cold"]["ndcg@100"] for d in week]
    within = sum(abs(diff) <= 2 * se for diff, se in diffs)
    lines += [
        "",
        f"Training time over days 1-7: warm {warm_s:.1f} s, cold {cold_s:.1f} s "
        f"({warm_s / cold_s:.2f}x). Warm - cold NDCG@100 within two paired standard errors on "
        f"{within} of {len(week)} days; mean difference "
        f"{np.mean([diff for diff, _ in diffs]):+.4f}.",
        "",
        "![week](week.png)",
        "",
        f"git {results['run']['git_commit']}, {results['run']['time']}, "
        f"{results['run']['machine']['cpu']}. Timings are wall-clock on a shared 2-core box.",
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")


def plot(days: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    week = [d for d in days if d["day"] > 0]
    x = [d["day"] for d in week]
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for arm, style in (("warm", "o-"), ("cold", "s-"), ("cold-short", "^--")):
        axes[0].errorbar(
            x,
            [d[arm]["ndcg@100"] for d in week],
            yerr=[d[arm]["ndcg@100_se"] for d in week],
            fmt=style,
            label=arm,
            capsize=3,
        )
        axes[1].plot(x, [d[arm]["seconds"] for d in week], style, label=arm)
        reach = [d[arm]["new_items_recommended"] / d[arm]["new_items"] for d in week]
        axes[2].plot(x, reach, style, label=arm)
    axes[0].set(title="validation NDCG@100 (± SE)", xlabel="day")
    axes[1].set(title="training seconds (1 thread)", xlabel="day")
    axes[2].set(title="share of new items in someone's top-20", xlabel="day", ylim=(0, 1.05))
    for axis in axes:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
