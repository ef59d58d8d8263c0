"""CPU scale benchmark (issue 14): the Mult-VAE epoch against the same run's matmul bound, bf16
against fp32, and 2 gloo processes x 1 thread against 1 process x 2 threads.

    python benchmarks/cpu_scale_bench.py --out benchmarks/reports/cpu-scale-2026-12-02

(a) Hot loop, Gowalla (LightGCN split, /work/shared/datasets/gowalla-lightgcn): one Mult-VAE
    epoch (paper defaults, batch 500, 1 torch thread) timed with the hot-loop kernels of
    before this change ("before": the first layer's weight gradient in a fresh table per batch
    through `torch.mm(out=)`, the output layer's in a fresh table from autograd, a second users
    x items table in the NLL backward) and after
    ("after": both weight-gradient tables reused, the NLL backward in place), alternating, in
    one process. The bound is the time the epoch's dense matmuls
    take on their own: each dense layer's forward and two backward products at the batch's
    shapes, timed best-of-3 in the same process, times the number of batches. The sparse first
    layer, the softmax, Adam and the rest are what the ratio measures above 1.
(b) ml-1m (LightGCN split): Mult-VAE fp32 against bf16 for a few epochs, 2 seeds: time per
    epoch and the best validation NDCG@20.
(c) ml-1m: `recvae train` under `python -m torch.distributed.run --nproc-per-node 2` (gloo, 1
    thread each) against one process with 2 threads: training examples per second and the
    best validation NDCG@20.

Data sets are read by path; a missing one is skipped and said so. Nothing is written outside
--out except a temporary directory (ingested data sets, model directories), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from recvae.data.ingest import IngestOptions, ingest
from recvae.models import torch_sparse
from recvae.models.vae import AutoencoderTrainer, MultVAE
from recvae.provenance import run_info

DATASETS = Path("/work/shared/datasets")


def load_lightgcn(folder: Path) -> Any:
    """train.txt / valid.txt -> a Dataset with a presplit (train, valid) split."""
    options = IngestOptions(format="lightgcn", split_sources=["train", "valid"])
    return ingest([folder / "train.txt", folder / "valid.txt"], options)


# --- (a) the hot loop against the matmul bound --------------------------------------------------


def _legacy_sparse_backward(ctx: Any, grad: torch.Tensor):
    """SparseInputLinear.backward as it was before the buffer change (verbatim, plus the
    extra None for the new optional argument)."""
    (xt,) = ctx.saved_tensors
    grad_weight = torch.empty(xt.shape[0], grad.shape[1], dtype=grad.dtype, device=grad.device)
    torch.mm(xt, grad, out=grad_weight)
    return grad_weight, grad.sum(0), None, None, None


def _legacy_nll_backward(ctx: Any, grad: torch.Tensor):
    """MultinomialNLL.backward as it was before the buffer change (verbatim)."""
    log_probs, rows, cols, values = ctx.saved_tensors
    scale = grad / log_probs.shape[0]
    totals = torch.zeros(log_probs.shape[0], dtype=values.dtype, device=values.device).index_add_(
        0, rows, values
    )
    out = log_probs.exp().mul_((totals * scale)[:, None])
    out.index_put_((rows, cols), values * -scale, accumulate=True)
    return out, None, None, None


@contextmanager
def legacy_kernels(trainer: AutoencoderTrainer):
    """The hot loop of before the buffer change, for timing both in one process."""
    sparse, nll = torch_sparse.SparseInputLinear.backward, torch_sparse.MultinomialNLL.backward
    buffers = trainer.module.first_grad, trainer.module.output_grad
    torch_sparse.SparseInputLinear.backward = staticmethod(_legacy_sparse_backward)
    torch_sparse.MultinomialNLL.backward = staticmethod(_legacy_nll_backward)
    trainer.module.first_grad = trainer.module.output_grad = None  # plain addmm output layer
    try:
        yield
    finally:
        torch_sparse.SparseInputLinear.backward = staticmethod(sparse)
        torch_sparse.MultinomialNLL.backward = staticmethod(nll)
        trainer.module.first_grad, trainer.module.output_grad = buffers


def dense_bound_per_batch(shapes: list[tuple[int, int]], batch: int) -> tuple[float, float]:
    """(seconds, FLOPs) of one batch's dense matmuls: every dense layer's forward addmm and its
    two backward products at these shapes, each timed best-of-3."""
    generator = torch.Generator().manual_seed(0)
    seconds = flops = 0.0
    for d_in, d_out in shapes:
        h = torch.randn(batch, d_in, generator=generator)
        w = torch.randn(d_in, d_out, generator=generator)
        g = torch.randn(batch, d_out, generator=generator)
        b = torch.zeros(d_out)
        torch.addmm(b, h, w), g @ w.T, h.T @ g  # warm up
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            torch.addmm(b, h, w)
            g @ w.T
            h.T @ g
            best = min(best, time.perf_counter() - started)
        seconds += best
        flops += 6.0 * batch * d_in * d_out
    return seconds, flops


def hot_loop(args: argparse.Namespace) -> dict[str, Any]:
    folder = DATASETS / "gowalla-lightgcn"
    if not folder.exists():
        return {"skipped": f"{folder} absent"}
    torch.set_num_threads(1)
    train = load_lightgcn(folder).split.train
    if args.gowalla_users:
        train = train[: args.gowalla_users]
    model = MultVAE(epochs=1, threads=1, seed=0)
    model.n_items = train.shape[1]
    model.module = model._build_module(train.shape[1])
    model.module.reset_parameters(torch.Generator().manual_seed(0))
    trainer = AutoencoderTrainer(model, train)
    batches = -(-trainer.examples_per_epoch // model.config.loop.batch_size)
    shapes = [tuple(w.shape) for w in model.module.weights()][1:]  # the dense layers
    times: dict[str, list[float]] = {"before": [], "after": [], "bound": []}
    trainer.train_epoch(0, 0, lambda n, m: None)  # warm-up (Adam state, first-touch)
    epoch = 1
    for _ in range(args.repeats):
        for mode in ("before", "after"):
            if mode == "before":
                with legacy_kernels(trainer):
                    started = time.perf_counter()
                    trainer.train_epoch(epoch, 0, lambda n, m: None)
            else:
                started = time.perf_counter()
                trainer.train_epoch(epoch, 0, lambda n, m: None)
            times[mode].append(time.perf_counter() - started)
            epoch += 1
            per_batch, flops = dense_bound_per_batch(shapes, model.config.loop.batch_size)
            times["bound"].append(per_batch * batches)
    bound = min(times["bound"])
    return {
        "data": f"gowalla-lightgcn train split, {train.shape[0]} users x {train.shape[1]} items, "
        f"{train.nnz} interactions",
        "batches": batches,
        "threads": 1,
        "dense_layer_shapes": shapes,
        "dense_flops_per_epoch": flops * batches,
        "dense_gflops_measured": flops * batches / bound / 1e9,
        "bound_seconds": bound,
        "seconds": times,
        "ratio_before": min(times["before"]) / bound,
        "ratio_after": min(times["after"]) / bound,
        "speedup": min(times["before"]) / min(times["after"]),
    }


# --- (b) bf16 against fp32 ----------------------------------------------------------------------


def precision_runs(args: argparse.Namespace) -> dict[str, Any]:
    folder = DATASETS / "ml-1m-lightgcn"
    if not folder.exists():
        return {"skipped": f"{folder} absent"}
    dataset = load_lightgcn(folder)
    runs = []
    for precision in ("fp32", "bf16"):
        for seed in (0, 1):
            model = MultVAE(
                epochs=args.epochs, seed=seed, precision=precision, threads=1, metric="ndcg@20"
            )
            model.fit(dataset.split.train, dataset.split.valid)
            epoch_seconds = [r["train_seconds"] for r in model.history]
            runs.append(
                {
                    "precision": precision,
                    "seed": seed,
                    "median_epoch_seconds": statistics.median(epoch_seconds),
                    "best_ndcg@20": max(r["ndcg@20"] for r in model.history),
                    "curve": [r["ndcg@20"] for r in model.history],
                }
            )
    by = {p: [r for r in runs if r["precision"] == p] for p in ("fp32", "bf16")}
    speed = statistics.mean(r["median_epoch_seconds"] for r in by["fp32"]) / statistics.mean(
        r["median_epoch_seconds"] for r in by["bf16"]
    )
    return {
        "data": f"ml-1m-lightgcn, {dataset.split.train.shape[0]} users x "
        f"{dataset.split.train.shape[1]} items",
        "epochs": args.epochs,
        "threads": 1,
        "runs": runs,
        "bf16_speedup": speed,
        "fp32_seed_spread": abs(by["fp32"][0]["best_ndcg@20"] - by["fp32"][1]["best_ndcg@20"]),
    }


# --- (c) 2 gloo processes x 1 thread against 1 process x 2 threads -------------------------------


def _train(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    records = [r for r in records if "train_seconds" in r]
    examples = sum(r.get("examples", 0) for r in records)
    seconds = sum(r["train_seconds"] for r in records)
    return {
        "command": shlex.join(command),
        "wall_seconds": wall,
        "train_seconds": seconds,
        "examples_per_second": examples / seconds if seconds else None,
        "best_ndcg@20": max(r["ndcg@20"] for r in records if "ndcg@20" in r),
        "epochs": len(records),
    }


def ddp_runs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    folder = DATASETS / "ml-1m-lightgcn"
    if not folder.exists():
        return {"skipped": f"{folder} absent"}
    recvae = [sys.executable, "-m", "recvae"]
    data = work / "ml1m"
    subprocess.run(
        [*recvae, "ingest", str(folder / "train.txt"), str(folder / "valid.txt"),
         "--split-sources", "train,valid", "--out", str(data)],
        check=True, capture_output=True,
    )  # fmt: skip
    common = ["train", str(data), "--model", "multvae", "--metric", "ndcg@20", "--no-progress",
              "--device", "cpu", "--set", f"epochs={args.epochs}", "--set", "seed=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    # the per-epoch log goes to CHECKPOINT_DIR/log.jsonl: torchrun's own parser would take
    # `--log` as an abbreviation of its `--log-dir`
    results["1 process x 2 threads"] = _train(
        [*recvae, *common, "--set", "threads=2", "--out", str(work / "one"),
         "--checkpoint-dir", str(work / "ck1")], env, work / "ck1" / "log.jsonl")  # fmt: skip
    results["2 gloo processes x 1 thread"] = _train(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29531", "-m", "recvae", *common, "--set", "threads=1",
         "--out", str(work / "two"), "--checkpoint-dir", str(work / "ck2")],
        env, work / "ck2" / "log.jsonl")  # fmt: skip
    one, two = results["1 process x 2 threads"], results["2 gloo processes x 1 thread"]
    return {
        "data": "ml-1m-lightgcn",
        "epochs": args.epochs,
        "runs": results,
        "throughput_ratio_2proc_over_1proc": two["examples_per_second"]
        / one["examples_per_second"],
    }


# --- report -------------------------------------------------------------------------------------


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    hot = results["hot_loop"]
    if "skipped" not in hot:
        axes[0].bar(["before", "after"], [hot["ratio_before"], hot["ratio_after"]])
        axes[0].axhline(1.3, color="red", linestyle="--", label="1.3x target")
        axes[0].set_ylabel("epoch time / dense matmul bound")
        axes[0].set_title("(a) Mult-VAE epoch, Gowalla, 1 thread")
        axes[0].legend()
    prec = results["precision"]
    if "skipped" not in prec:
        for run in prec["runs"]:
            axes[1].plot(run["curve"], label=f"{run['precision']} seed {run['seed']}")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("validation NDCG@20")
        axes[1].set_title("(b) ml-1m, fp32 vs bf16")
        axes[1].legend()
    ddp = results["ddp"]
    if "skipped" not in ddp:
        names = list(ddp["runs"])
        axes[2].bar(names, [ddp["runs"][n]["examples_per_second"] for n in names])
        axes[2].set_ylabel("training users / second")
        axes[2].set_title("(c) ml-1m, 2 cores")
        axes[2].tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "cpu_scale.png", dpi=100)
    plt.close(fig)


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def write_report(results: dict[str, Any], info: dict[str, Any], out: Path, argv: list[str]) -> None:
    machine, versions = info["machine"], info["versions"]
    lines = [
        "# CPU scale benchmark (issue 14)",
        "",
        f"Command: `python benchmarks/cpu_scale_bench.py {shlex.join(argv)}` "
        f"({_f(results['total_seconds'], 0)} s in all). Run {info['time']}, commit "
        f"{info['git_commit']}.",
        "",
        f"Machine: {json.dumps(machine)}. Versions: {json.dumps(versions)}.",
        "The machine is shared with other jobs, so absolute times are noisy; every comparison "
        "below is made inside one run, alternating where it can.",
        "",
        "## (a) Mult-VAE epoch against the same-run dense matmul bound",
        "",
    ]
    hot = results["hot_loop"]
    if "skipped" in hot:
        lines.append(f"Skipped: {hot['skipped']}.")
    else:
        lines += [
            f"Data: {hot['data']}; paper defaults (600-200-600, batch 500), {hot['batches']} "
            f"batches, 1 torch thread. Bound: {hot['dense_flops_per_epoch'] / 1e12:.2f} TFLOP "
            f"of dense matmuls per epoch at the measured "
            f"{_f(hot['dense_gflops_measured'], 1)} GFLOP/s = {_f(hot['bound_seconds'], 1)} s "
            "(sparse first layer not in the bound).",
            "",
            "| kernels | best epoch (s) | all epochs (s) | epoch / bound |",
            "|---|---|---|---|",
        ]
        for mode in ("before", "after"):
            times = hot["seconds"][mode]
            lines.append(
                f"| {mode} | {_f(min(times), 1)} | {', '.join(_f(t, 1) for t in times)} | "
                f"{_f(hot['ratio_' + mode], 2)} |"
            )
        verdict = "reached" if hot["ratio_after"] <= 1.3 else "NOT reached"
        lines += [
            "",
            f"Speed-up of the buffer change: {_f(hot['speedup'], 2)}x. The issue's 1.3x target "
            f"is {verdict} (after: {_f(hot['ratio_after'], 2)}x the bound).",
        ]
    lines += ["", "## (b) bf16 against fp32 (Mult-VAE, ml-1m)", ""]
    prec = results["precision"]
    if "skipped" in prec:
        lines.append(f"Skipped: {prec['skipped']}.")
    else:
        lines += [
            f"Data: {prec['data']}; {prec['epochs']} epochs, 1 thread, validation every epoch.",
            "",
            "| precision | seed | median epoch (s) | best validation NDCG@20 |",
            "|---|---|---|---|",
        ]
        for run in prec["runs"]:
            lines.append(
                f"| {run['precision']} | {run['seed']} | {_f(run['median_epoch_seconds'])} | "
                f"{_f(run['best_ndcg@20'], 4)} |"
            )
        lines += [
            "",
            f"bf16 speed-up over fp32 (mean of median epoch times): "
            f"{_f(prec['bf16_speedup'], 2)}x. fp32 seed-to-seed spread of NDCG@20: "
            f"{_f(prec['fp32_seed_spread'], 4)}. A few epochs only, not converged runs.",
        ]
    lines += ["", "## (c) 2 gloo processes x 1 thread against 1 process x 2 threads (ml-1m)", ""]
    ddp = results["ddp"]
    if "skipped" in ddp:
        lines.append(f"Skipped: {ddp['skipped']}.")
    else:
        lines += [
            f"{ddp['epochs']} epochs of Mult-VAE (paper defaults, seed 0), `recvae train`.",
            "",
            "| launch | training users/s | train s (all epochs) | wall s | best NDCG@20 |",
            "|---|---|---|---|---|",
        ]
        for name, run in ddp["runs"].items():
            lines.append(
                f"| {name} | {_f(run['examples_per_second'], 0)} | "
                f"{_f(run['train_seconds'], 1)} | {_f(run['wall_seconds'], 1)} | "
                f"{_f(run['best_ndcg@20'], 4)} |"
            )
        lines += [
            "",
            f"Throughput ratio (2 processes / 1 process): "
            f"{_f(ddp['throughput_ratio_2proc_over_1proc'], 2)}.",
            "",
            "Commands:",
            "",
            *[f"    {run['command']}" for run in ddp["runs"].values()],
        ]
    lines += ["", "![cpu scale](cpu_scale.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/cpu-scale-2026-12-02"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the ml-1m runs")
    parser.add_argument("--repeats", type=int, default=2, help="before/after epoch pairs")
    parser.add_argument(
        "--gowalla-users", type=int, default=0, help="train on the first N users only (0: all)"
    )
    parser.add_argument("--parts", default="a,b,c", help="which parts to run, e.g. a,b")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    skip = {"skipped": "not run (--parts)"}
    with tempfile.TemporaryDirectory(prefix="cpu-scale-") as tmp:
        results["hot_loop"] = hot_loop(args) if "a" in parts else skip
        print(json.dumps(results["hot_loop"], default=str), flush=True)
        results["precision"] = precision_runs(args) if "b" in parts else skip
        print(json.dumps(results["precision"], default=str), flush=True)
        results["ddp"] = ddp_runs(args, Path(tmp)) if "c" in parts else skip
        print(json.dumps(results["ddp"], default=str), flush=True)
    results["total_seconds"] = time.perf_counter() - started
    info = run_info()
    (args.out / "results.json").write_text(
        json.dumps({"info": info, "argv": argv, **results}, indent=2, default=str)
    )
    plot(results, args.out)
    write_report(results, info, args.out, argv)
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
