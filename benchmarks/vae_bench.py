"""Mult-VAE / Mult-DAE on LightGCN-style splits: quality, time per epoch, and how close each
epoch comes to the machine's own matrix-multiply bound.

    python benchmarks/vae_bench.py --data ml-1m=../shared/datasets/ml-1m-lightgcn \
        --epochs 200 --patience 50 --out benchmarks/reports/vae-2026-11-28

For each data set (a folder with LightGCN `train.txt` and `valid.txt`, read by recvae's ingest):
train each model with the paper's defaults on train.txt, validate every epoch on valid.txt
(all items ranked, training items excluded), keep the epoch with the best NDCG@100, and report
Recall@20 (paper and LightGCN definitions), NDCG@20, Recall@50 and NDCG@100 of that epoch.

Speed: the floating-point operations of one training epoch are counted from the layer sizes
and the nonzeros (sparse first layer: 4 * nnz * h forward + weight gradient; every dense layer:
6 * users * in * out for forward, input gradient and weight gradient). In the same run the
machine's float32 matmul throughput is measured on the decoder output layer's three products
(batch x decoder hidden x items), and the ratio of the measured epoch to that bound is reported.

Writes report.md, results.json, per-epoch JSONL logs and validation-curve PNGs into --out
(merging with results already there, so data sets can be run one at a time). Skips a data set
whose folder is absent.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recvae.data.ingest import IngestOptions, ingest
from recvae.models.vae import MultDAE, MultVAE
from recvae.provenance import run_info

MODELS = {"multvae": MultVAE, "multdae": MultDAE}
REPORTED = ("recall@20", "recall_lightgcn@20", "ndcg@20", "recall@50", "ndcg@100")


def load_lightgcn(folder: Path):
    """train.txt / valid.txt -> Dataset with a presplit (train, valid) split, via recvae ingest."""
    options = IngestOptions(format="lightgcn", split_sources=["train", "valid"])
    return ingest([folder / "train.txt", folder / "valid.txt"], options)


def layer_shapes(model: Any, n_items: int) -> list[tuple[int, int]]:
    """(in, out) of every weight matrix, first (sparse) layer first, decoder output last."""
    return [tuple(w.shape) for w in model._build_module(n_items).weights()]


def epoch_flops(model: Any, n_users: int, nnz: int, n_items: int) -> dict[str, float]:
    """FLOPs of one training epoch, from the layer sizes and the number of nonzeros."""
    weights = layer_shapes(model, n_items)
    first = 4.0 * nnz * weights[0][1]
    dense = [6.0 * n_users * d_in * d_out for d_in, d_out in weights[1:]]
    return {
        "total": first + sum(dense),
        "first_layer_sparse": first,
        "decoder_output_layer": dense[-1],
    }


def matmul_throughput(
    batch: int, hidden: int, n_items: int, repeats: int = 5
) -> tuple[float, float]:
    """Best-of-N float32 FLOP/s of the decoder output layer's forward and two backward products,
    by wall clock and by this process's CPU time (the CPU-time figure is the per-core speed
    when one thread runs on a busy machine, since waiting for a core costs no CPU time)."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(batch, hidden, generator=generator)
    w = torch.randn(hidden, n_items, generator=generator)
    g = torch.randn(batch, n_items, generator=generator)
    b = torch.zeros(n_items)
    flops = 3 * 2.0 * batch * hidden * n_items
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        torch.addmm(b, h, w)
        g @ w.T
        h.T @ g
        best_wall = min(best_wall, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    return flops / best_wall, flops / max(best_cpu, 1e-9)


def run_one(name: str, dataset: Any, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    train, valid = dataset.split.train, dataset.split.valid
    if args.speed_only:
        valid = None  # timing run: training epochs only, no validation
    model = MODELS[model_name](
        epochs=args.epochs, patience=args.patience, seed=args.seed, threads=args.threads
    )
    n_items = train.shape[1]
    active_users = int((np.diff(train.indptr) > 0).sum())
    flops = epoch_flops(model, active_users, train.nnz, n_items)
    decoder_in = layer_shapes(model, n_items)[-1][0]
    # The machine is shared: measure the matmul throughput right after every epoch (through the
    # per-epoch callback), so each epoch is compared with the bound at the same moment.
    throughputs: list[float] = []
    cpu_throughputs: list[float] = []

    def measure(epoch: int, record: dict[str, Any]) -> bool:
        wall, cpu = matmul_throughput(model.config.batch_size, decoder_in, n_items)
        throughputs.append(wall)
        cpu_throughputs.append(cpu)
        return False

    started = time.perf_counter()
    kind = "speed" if args.speed_only else "quality"
    log_path = args.out / f"log-{name}-{model_name}-{kind}.jsonl"
    model.fit(train, valid, progress=args.progress, callback=measure, log_path=log_path)
    wall = time.perf_counter() - started
    throughput = max(throughputs)
    seconds = [record["train_seconds"] for record in model.history]
    valid_seconds = [record.get("valid_seconds", 0.0) for record in model.history]
    cpu_seconds = [record["train_cpu_seconds"] for record in model.history]
    ratios = [s * t / flops["total"] for s, t in zip(seconds, throughputs, strict=True)]
    bound = flops["total"] / throughput
    # One thread: CPU seconds per epoch against FLOPs / per-core throughput (CPU time), which
    # a busy machine does not distort. With more threads CPU time includes spin-waiting.
    cpu_bound = flops["total"] / max(cpu_throughputs)
    best = model.best_metrics
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    result = {
        "dataset": name,
        "model": model_name,
        "kind": kind,
        "users": int(train.shape[0]),
        "items": int(n_items),
        "train_nnz": int(train.nnz),
        "valid_users": int(valid.history.shape[0]) if valid is not None else 0,
        "valid_nnz": int(valid.heldout.nnz) if valid is not None else 0,
        "epochs_run": len(model.history),
        "best_epoch": model.best_epoch,
        "stopped": model.stopped,
        "metrics": {key: best[key] for key in REPORTED if key in best},
        "epoch_seconds_median": statistics.median(seconds),
        "epoch_seconds_min": min(seconds),
        "epoch_cpu_seconds_median": statistics.median(cpu_seconds),
        "threads": threads,
        "validation_seconds_median": statistics.median(valid_seconds),
        "wall_seconds": wall,
        "flops_per_epoch": flops,
        "matmul_flops_per_second": throughput,
        "matmul_bound_seconds": bound,
        "ratio_to_bound_same_moment_median": statistics.median(ratios),
        "ratio_min_epoch_to_best_bound": min(seconds) / bound,
        "matmul_flops_per_cpu_second": max(cpu_throughputs),
        "cpu_bound_seconds": cpu_bound,
        "ratio_cpu_seconds_to_cpu_bound": statistics.median(cpu_seconds) / cpu_bound,
        "config": {k: v for k, v in vars(model.config).items()},
        "curve": [
            {
                k: r.get(k)
                for k in (
                    "epoch",
                    "loss",
                    "beta",
                    "ndcg@100",
                    "ndcg@20",
                    "train_seconds",
                    "train_cpu_seconds",
                )
            }
            for r in model.history
        ],
    }
    print(
        f"{name} {model_name} ({kind}, {threads} threads): "
        f"best epoch {model.best_epoch}/{len(model.history)} "
        + " ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        + f" | epoch {result['epoch_seconds_median']:.3f}s median "
        f"({result['epoch_seconds_min']:.3f}s min), bound {bound:.3f}s",
        flush=True,
    )
    return result


def plot_curves(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = [r for r in results if r["metrics"]]
    for dataset in sorted({r["dataset"] for r in quality}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for result in (r for r in quality if r["dataset"] == dataset):
            epochs = [point["epoch"] for point in result["curve"]]
            label = f"{result['model']} (seed {result['config']['seed']})"
            ax.plot(epochs, [p["ndcg@100"] for p in result["curve"]], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NDCG@100")
        ax.set_title(f"{dataset}: validation curve")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"curve-{dataset}.png", dpi=100)
        plt.close(fig)


def write_report(results: list[dict[str, Any]], info: dict[str, Any], out: Path) -> None:
    lines = [
        "# Mult-VAE / Mult-DAE benchmark",
        "",
        "Train on `train.txt`, validate every epoch on `valid.txt` ranking all items (training "
        "items excluded); the epoch with the best validation NDCG@100 is reported (as in the "
        "paper; there is no separate test split here, so these are validation figures).",
        "",
        "## Commands",
        "",
        *[f"    {command}" for command in info["commands"]],
        "",
        "## Quality (best epoch)",
        "",
        "| data | model | seed | epochs (best) | Recall@20 | Recall@20 (LightGCN) | NDCG@20 "
        "| Recall@50 | NDCG@100 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in results if r["metrics"]):
        m = r["metrics"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['config']['seed']} "
            f"| {r['epochs_run']} ({r['best_epoch']}) "
            f"| {m['recall@20']:.4f} | {m['recall_lightgcn@20']:.4f} | {m['ndcg@20']:.4f} "
            f"| {m['recall@50']:.4f} | {m['ndcg@100']:.4f} |"
        )
    lines += [
        "",
        "## Speed (training epoch, validation excluded)",
        "",
        "| data | model | run | threads | epoch s (median / min) | CPU s / epoch | validation s "
        "| GFLOP / epoch | best matmul GFLOP/s | bound s | min epoch / bound "
        "| epoch / bound at the same moment (median) | CPU s / CPU-time bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r.get('kind', 'quality')} | {r['threads']} "
            f"| {r['epoch_seconds_median']:.3f} / {r['epoch_seconds_min']:.3f} "
            f"| {r['epoch_cpu_seconds_median']:.3f} | {r['validation_seconds_median']:.3f} "
            f"| {r['flops_per_epoch']['total'] / 1e9:.1f} "
            f"| {r['matmul_flops_per_second'] / 1e9:.1f} | {r['matmul_bound_seconds']:.3f} "
            f"| {r['ratio_min_epoch_to_best_bound']:.2f} "
            f"| {r['ratio_to_bound_same_moment_median']:.2f} "
            f"| {_fmt(r.get('ratio_cpu_seconds_to_cpu_bound'))} |"
        )
    machine = info["run"]["machine"]
    lines += [
        "",
        "FLOPs are counted from layer sizes and nonzeros (see the script's docstring). After "
        "every epoch the float32 throughput of the decoder output layer's three products "
        "(forward, input gradient, weight gradient at batch size x hidden x items) is measured "
        "(best of 5); the bound is FLOPs / the best throughput seen in the run. The machine is "
        "shared with other jobs, so the median epoch includes interference; the minimum is the "
        "least disturbed epoch, and the last column compares each epoch with the throughput "
        "measured right after it, which cancels most of the interference.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"torch {info['run']['versions']['torch']}; git {info['run']['git_commit']}; "
        f"{info['run']['time']}.",
        "",
        *[
            f"![{d}](curve-{d}.png)"
            for d in sorted({r["dataset"] for r in results if r["metrics"]})
        ],
        "",
    ]
    notes = out / "notes.md"  # hand-written reading of the numbers, kept across re-merges
    if notes.is_file():
        lines += ["", notes.read_text()]
    (out / "report.md").write_text("\n".join(lines))


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _key(result: dict[str, Any]) -> tuple[str, str, str, int, int]:
    kind = result.get("kind", "quality")
    return result["dataset"], result["model"], kind, result["threads"], result["config"]["seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--merge", nargs="*", type=Path, default=[], help="only combine these results.json folders"
    )
    parser.add_argument("--data", action="append", default=[],
                        help="NAME=FOLDER with train.txt and valid.txt (repeatable)")  # fmt: skip
    parser.add_argument("--models", default="multvae,multdae")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads, 0 = all cores")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--speed-only", action="store_true", help="time training epochs without validation"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results = previous.get("results", [])
    commands = previous.get("commands", [])
    for folder in args.merge:
        merged = json.loads((folder / "results.json").read_text())
        commands += [c for c in merged["commands"] if c not in commands]
        keys = {_key(r) for r in merged["results"]}
        results = [r for r in results if _key(r) not in keys] + merged["results"]
    if args.merge:
        info = {"commands": commands, "run": run_info()}
        results_file.write_text(json.dumps({**info, "results": results}, indent=1))
        write_report(results, info, args.out)
        plot_curves(results, args.out)
        return
    commands.append("python " + " ".join(shlex.quote(a) for a in sys.argv))
    torch.set_num_threads(torch.get_num_threads())
    for spec in args.data:
        name, _, folder = spec.partition("=")
        folder = Path(folder)
        if not (folder / "train.txt").is_file() or not (folder / "valid.txt").is_file():
            print(f"skipping {name}: no train.txt/valid.txt in {folder}", file=sys.stderr)
            continue
        dataset = load_lightgcn(folder)
        for model_name in args.models.split(","):
            result = run_one(name, dataset, model_name, args)
            results = [r for r in results if _key(r) != _key(result)]
            results.append(result)
            info = {"commands": commands, "run": run_info()}
            results_file.write_text(json.dumps({**info, "results": results}, indent=1))
            write_report(results, info, args.out)
            plot_curves(results, args.out)


if __name__ == "__main__":
    main()
