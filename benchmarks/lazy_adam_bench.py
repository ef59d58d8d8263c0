"""Row-wise (lazy) Adam at catalogue scale: peak memory and epoch time of Mult-VAE with sampled
softmax, and the memory estimate against the measured peak.

Each case runs in its own child process so that its peak RSS (ru_maxrss) is its own. The data
are drawn here, not read: `users` users with `per_user` distinct items each, items drawn with
Zipf-like popularity (p ~ 1 / (rank + 10)^0.9) over the catalogue, so that the popular head is
in most batches and most of the million items are in none. Memory does not depend on the weights'
quality, so one epoch (users / batch_size updates) is trained, without validation.

    python benchmarks/lazy_adam_bench.py --case 1m-600        # one case, appends to results.json
    python benchmarks/lazy_adam_bench.py --report             # report.md from results.json

Cases (name: items, hidden_dims, optimizer):
    1m-600: 1,000,000 items, [600], lazy_adam    the issue's target: one epoch within 16 GB
    1m-400: 1,000,000 items, [400], lazy_adam
    100k-lazy / 100k-adam: 100,000 items, [600], lazy_adam vs dense adam (time per update)
    1m-600-adam-estimate: the estimate of dense Adam at 1M items (not run)
    speed-small: 600 users, hidden 200, latent 64, batches of 100, 1024 negatives, 1 thread:
        dense vs lazy Adam, alternating twice, at 20k and at 200k items (seconds per update)
    gowalla-lazy / gowalla-adam: quality on real data, Gowalla (LightGCN split, 40,981 items),
        sampled softmax (4096 negatives), `--epochs` epochs, NDCG@20 on valid every 5 epochs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPORT = Path(__file__).parent / "reports" / "lazy-adam-2026-12-02"
CASES = {
    "1m-600": {"items": 1_000_000, "hidden": 600, "optimizer": "lazy_adam"},
    "1m-400": {"items": 1_000_000, "hidden": 400, "optimizer": "lazy_adam"},
    "100k-lazy": {"items": 100_000, "hidden": 600, "optimizer": "lazy_adam"},
    "100k-adam": {"items": 100_000, "hidden": 600, "optimizer": "adam"},
    "gowalla-lazy": {"items": 40_981, "hidden": 600, "optimizer": "lazy_adam", "real": True},
    "gowalla-adam": {"items": 40_981, "hidden": 600, "optimizer": "adam", "real": True},
    "1m-600-adam-estimate": {
        "items": 1_000_000, "hidden": 600, "optimizer": "adam", "estimate_only": True
    },
}


def synthetic(n_users: int, n_items: int, per_user: int, seed: int = 0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    weights /= weights.sum()
    order = rng.permutation(n_items)  # popular items are not the low ids
    cols = order[rng.choice(n_items, size=n_users * per_user, p=weights)]
    rows = np.repeat(np.arange(n_users), per_user)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0  # a repeated draw is one interaction
    return matrix


def run_gowalla(name: str, args: argparse.Namespace) -> dict:
    """Sampled-softmax Mult-VAE on Gowalla with lazy or dense Adam: validation NDCG@20."""
    import torch

    from recvae.data.ingest import IngestOptions, ingest
    from recvae.models.vae import MultVAE

    folder = Path(args.gowalla)
    options = IngestOptions(format="lightgcn", split_sources=["train", "valid"])
    dataset = ingest([folder / "train.txt", folder / "valid.txt"], options)
    case = CASES[name]
    model = MultVAE(
        softmax="sampled", negatives=args.negatives, optimizer=case["optimizer"],
        epochs=args.epochs, validate_every=5, metric="ndcg@20", threads=args.threads, seed=0,
    )  # fmt: skip
    train = dataset.split.train
    model.fit(train, dataset.split.valid)
    validated = [r for r in model.history if "ndcg@20" in r]
    seconds = [r["train_seconds"] for r in model.history]
    return {
        "case": name, **case, "users": int(train.shape[0]), "nnz": int(train.nnz),
        "negatives": args.negatives, "batch_size": 500, "threads": args.threads,
        "epochs": args.epochs, "estimate_line": model.memory_estimate(train).line(),
        "estimate_gib": model.memory_estimate(train).total / 2**30,
        "ndcg@20_by_epoch": {r["epoch"]: r["ndcg@20"] for r in validated},
        "recall@20_by_epoch": {r["epoch"]: r["recall@20"] for r in validated},
        "best_ndcg@20": max(r["ndcg@20"] for r in validated),
        "epoch_seconds": sum(seconds) / len(seconds),
        "updates": model.history[-1]["steps"],
        "seconds_per_update": sum(seconds) / sum(r["steps"] for r in model.history),
        "peak_rss_gib": peak_rss_gib(), "torch": torch.__version__,
    }  # fmt: skip


def run_speed_small() -> dict:
    """Seconds per update, dense against lazy Adam, in one process, at two catalogue sizes."""
    import torch

    from recvae.models.vae import MultVAE

    runs = []
    for items in (20_000, 200_000):
        train = synthetic(600, items, 100)
        for optimizer in ("adam", "lazy_adam", "adam", "lazy_adam"):
            model = MultVAE(
                softmax="sampled", negatives=1024, optimizer=optimizer, epochs=1, batch_size=100,
                threads=1, hidden_dims=(200,), latent_dim=64,
            )  # fmt: skip
            model.fit(train)
            record = model.history[-1]
            seconds = record["train_seconds"] / record["steps"]
            runs.append({"items": items, "optimizer": optimizer, "seconds_per_update": seconds})
    return {"case": "speed-small", "runs": runs, "torch": torch.__version__}


def run_case(name: str, args: argparse.Namespace) -> dict:
    import torch

    from recvae.models.memory import GIB
    from recvae.models.vae import MultVAE

    if name == "speed-small":
        return run_speed_small()
    case = CASES[name]
    if case.get("real"):
        return run_gowalla(name, args)
    started = time.perf_counter()
    train = synthetic(args.users, case["items"], args.per_user)
    data_seconds = time.perf_counter() - started
    model = MultVAE(
        hidden_dims=(case["hidden"],), softmax="sampled", negatives=args.negatives,
        optimizer=case["optimizer"], epochs=1, batch_size=args.batch_size, threads=args.threads,
    )  # fmt: skip
    estimate = model.memory_estimate(train)
    result = {
        "case": name, **case, "users": args.users, "nnz": int(train.nnz),
        "negatives": args.negatives, "batch_size": args.batch_size, "threads": args.threads,
        "estimate_line": estimate.line(), "estimate_gib": estimate.total / GIB,
        "estimate_parts_gib": {k: v / GIB for k, v in estimate.parts},
    }  # fmt: skip
    if case.get("estimate_only"):
        return result
    rss_before = peak_rss_gib()
    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    updates = model.history[-1]["steps"]
    result.update(
        data_seconds=data_seconds,
        rss_before_fit_gib=rss_before,
        peak_rss_gib=peak_rss_gib(),
        fit_seconds=fit_seconds,
        epoch_seconds=model.history[-1]["train_seconds"],
        updates=updates,
        seconds_per_update=model.history[-1]["train_seconds"] / updates,
        loss=model.history[-1]["loss"],
        torch=torch.__version__,
    )
    return result


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def report(results: list[dict]) -> str:
    lines = [
        "# Row-wise (lazy) Adam at catalogue scale, 2026-12-02",
        "",
        f"Machine: {platform.machine()}, 2 CPU cores, 24 GiB RAM shared by several sessions; "
        f"Python {platform.python_version()}, torch {results[0].get('torch', '2.13.0')}.",
        "Command: `python benchmarks/lazy_adam_bench.py --case NAME` per case (each in its own "
        "process, under the shared CPU lock), then `--report`.",
        "",
        "Data: synthetic, drawn by the script: users with 100 draws each from a Zipf-like "
        "popularity (p ~ 1/(rank+10)^0.9) over the catalogue (duplicates dropped); gowalla-* "
        "rows: the LightGCN Gowalla split (train; NDCG@20 on valid). Mult-VAE "
        "(paper shape unless stated), `softmax = \"sampled\"`, one epoch, no validation. "
        "Peak RSS = ru_maxrss of the case's process (includes Python, torch, the data).",
        "",
        "| case | items | hidden | optimizer | users | interactions | estimate GiB | "
        "peak RSS GiB | epoch s | updates | s / update |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r["case"] == "speed-small":
            continue
        measured = "peak_rss_gib" in r
        lines.append(
            f"| {r['case']} | {r['items']:,} | {r['hidden']} | {r['optimizer']} | {r['users']:,} "
            f"| {r['nnz']:,} | {r['estimate_gib']:.2f} | "
            + (f"{r['peak_rss_gib']:.2f} | {r['epoch_seconds']:.1f} | {r['updates']} | "
               f"{r['seconds_per_update']:.2f} |" if measured else "not run | | | |")
        )  # fmt: skip
    lines += ["", "## Findings (computed from the table)", ""]
    by_case = {r["case"]: r for r in results}
    big = by_case.get("1m-600")
    if big and "peak_rss_gib" in big:
        peak, before = big["peak_rss_gib"], big["rss_before_fit_gib"]
        lines.append(
            f"- 1M items, hidden 600, sampled softmax + lazy Adam: one epoch ran; peak RSS "
            f"{peak:.2f} GiB = {peak * 2**30 / 1e9:.2f} GB, "
            f"{'within' if peak * 2**30 <= 16e9 else 'ABOVE'} 16 GB; the logged estimate "
            f"({big['estimate_gib']:.2f} GiB) plus the process before the fit "
            f"({before:.2f} GiB) is {big['estimate_gib'] + before:.2f} GiB."
        )
    dense = by_case.get("1m-600-adam-estimate")
    if dense:
        lines.append(
            f"- Dense Adam at the same shape is estimated at {dense['estimate_gib']:.2f} GiB "
            "(an items x hidden gradient for each item matrix): above the 16 GB target; not run."
        )
    lazy, adam = by_case.get("100k-lazy"), by_case.get("100k-adam")
    if lazy and adam and "seconds_per_update" in lazy and "seconds_per_update" in adam:
        lines.append(
            f"- 100k items, hidden 600: {lazy['seconds_per_update']:.2f} s per update with lazy "
            f"Adam against {adam['seconds_per_update']:.2f} s with dense Adam (ratio "
            f"{adam['seconds_per_update'] / lazy['seconds_per_update']:.2f}x), peak RSS "
            f"{lazy['peak_rss_gib']:.2f} against {adam['peak_rss_gib']:.2f} GiB. One run each, "
            "on a shared machine: timings are noisy."
        )
    speed = by_case.get("speed-small")
    if speed:
        parts = []
        for items in sorted({run["items"] for run in speed["runs"]}):
            means = {}
            for optimizer in ("adam", "lazy_adam"):
                times = [run["seconds_per_update"] for run in speed["runs"]
                         if run["items"] == items and run["optimizer"] == optimizer]  # fmt: skip
                means[optimizer] = sum(times) / len(times)
            parts.append(f"{items:,} items: dense {means['adam']:.3f}, lazy "
                         f"{means['lazy_adam']:.3f} s/update")  # fmt: skip
        lines.append(
            "- Small speed check (600 users, hidden 200, 1024 negatives, batches of 100, one "
            "thread, each optimiser twice, alternating, mean shown; run without the CPU lock on "
            "a shared machine, so noisy): " + "; ".join(parts) + ". By construction lazy Adam "
            "costs in proportion to the touched items (index_select / index_copy of their "
            "weights and moments), dense Adam in proportion to the catalogue."
        )
    g_lazy, g_adam = by_case.get("gowalla-lazy"), by_case.get("gowalla-adam")
    if g_lazy and g_adam:
        lines.append(
            f"- Gowalla (valid, NDCG@20 every 5 epochs, {g_lazy['epochs']} epochs, one seed): "
            f"lazy Adam best {g_lazy['best_ndcg@20']:.4f}, dense Adam best "
            f"{g_adam['best_ndcg@20']:.4f}; {g_lazy['seconds_per_update']:.2f} against "
            f"{g_adam['seconds_per_update']:.2f} s per update. By epoch (lazy / dense): "
            + ", ".join(
                f"{e}: {g_lazy['ndcg@20_by_epoch'][e]:.4f} / {g_adam['ndcg@20_by_epoch'][e]:.4f}"
                for e in g_lazy["ndcg@20_by_epoch"] if e in g_adam["ndcg@20_by_epoch"]
            )
            + "."
        )  # fmt: skip
    else:
        lines.append(
            "- Lazy Adam is a different optimiser from dense Adam (rows a batch misses keep "
            "their weights and moments); its quality against dense Adam on real data was not "
            "measured."
        )
    lines += ["", "Estimate lines as logged at the start of each fit:", ""]
    lines += [f"- {r['case']}: `{r['estimate_line']}`" for r in results if "estimate_line" in r]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted([*CASES, "speed-small"]))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--gowalla", default="/work/shared/datasets/gowalla-lightgcn")
    args = parser.parse_args()
    REPORT.mkdir(parents=True, exist_ok=True)
    results_file = REPORT / "results.json"
    if args.child:
        print(json.dumps(run_case(args.case, args)))
        return
    if args.case:
        command = [sys.executable, __file__, "--child", *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            raise SystemExit(done.returncode)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results = json.loads(results_file.read_text()) if results_file.exists() else []
        results = [r for r in results if r["case"] != result["case"]] + [result]
        results_file.write_text(json.dumps(results, indent=1))
        print(json.dumps(result, indent=1))
    if args.report:
        results = json.loads(results_file.read_text())
        (REPORT / "report.md").write_text(report(results))


if __name__ == "__main__":
    main()
