"""CPU scale benchmark on Gowalla (issue 14): bf16 against fp32 Mult-VAE, and 2 gloo processes
x 1 thread against 1 process x 2 threads, in steps short enough for the shared CPU lock.

    python benchmarks/cpu_scale_gowalla.py --out DIR --step fp32:0   # one run per step ...
    python benchmarks/cpu_scale_gowalla.py --out DIR --step report   # ... then the report

Steps (each writes DIR/steps/<step>.json; `report` reads them all, so a step that was not run is
reported as missing, never guessed):
  fp32:SEED, bf16:SEED  Mult-VAE (paper defaults, batch 500) for --epochs epochs on the LightGCN
                        Gowalla split (/work/shared/datasets/gowalla-lightgcn, train.txt ->
                        train, valid.txt -> validation), --threads torch threads, validation
                        NDCG@20 after every epoch; time per epoch from the training loop.
  speed                 fp32 and bf16 Mult-VAE epochs alternating in one process (--threads
                        threads, after one warm-up epoch each): the speed ratio, measured so that
                        other jobs on the machine slow both alike.
  one, two              `recvae train` for --ddp-epochs epochs (seed 0, fp32): one process with 2
                        threads, and `python -m torch.distributed.run --nproc-per-node 2` (gloo,
                        1 thread each); training users per second from the epoch log and the
                        validation NDCG@20 after the last epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_scale_bench import DATASETS, _train, load_lightgcn

from recvae.models.vae import MultVAE
from recvae.provenance import run_info

FOLDER = DATASETS / "gowalla-lightgcn"
PRECISION_STEPS = ("fp32:0", "bf16:0", "fp32:1", "bf16:1")
SPEED_STEP = "speed"
DDP_STEPS = {"one": "1 process x 2 threads", "two": "2 gloo processes x 1 thread"}


def precision_step(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """One Mult-VAE run at one precision and seed, validated after every epoch."""
    precision, seed = step.split(":")
    dataset = load_lightgcn(FOLDER)
    train, valid = dataset.split.train, dataset.split.valid
    model = MultVAE(
        epochs=args.epochs, seed=int(seed), precision=precision, threads=args.threads,
        metric="ndcg@20", patience=0,
    )  # fmt: skip
    model.fit(train, valid)
    seconds = [r["train_seconds"] for r in model.history]
    return {
        "precision": precision,
        "seed": int(seed),
        "epochs": len(model.history),
        "threads": args.threads,
        "data": f"gowalla-lightgcn, {train.shape[0]} users x {train.shape[1]} items, "
        f"{train.nnz} training interactions, {valid.heldout.nnz} validation interactions",
        "epoch_seconds": seconds,
        "median_epoch_seconds": statistics.median(seconds),
        "curve": [r["ndcg@20"] for r in model.history],
        "last_ndcg@20": model.history[-1]["ndcg@20"],
        "best_ndcg@20": max(r["ndcg@20"] for r in model.history),
    }


def speed_step(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate fp32 and bf16 training epochs in one process: their time ratio."""
    import torch

    from recvae.models.vae import AutoencoderTrainer

    torch.set_num_threads(args.threads)
    train = load_lightgcn(FOLDER).split.train
    trainers = {}
    for precision in ("fp32", "bf16"):
        model = MultVAE(epochs=1, threads=args.threads, seed=0, precision=precision)
        model.n_items = train.shape[1]
        model.module = model._build_module(train.shape[1])
        model.module.reset_parameters(torch.Generator().manual_seed(0))
        trainers[precision] = AutoencoderTrainer(model, train)
        trainers[precision].train_epoch(0, 0, lambda n, m: None)  # warm-up
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for repeat in range(args.speed_repeats):
        for precision, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_epoch(1 + repeat, 0, lambda n, m: None)
            seconds[precision].append(time.perf_counter() - started)
    return {
        "threads": args.threads,
        "epoch_seconds": seconds,
        "bf16_speedup_best": min(seconds["fp32"]) / min(seconds["bf16"]),
        "bf16_speedup_mean": statistics.mean(seconds["fp32"]) / statistics.mean(seconds["bf16"]),
    }


def ddp_step(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """`recvae train` on Gowalla as one process x 2 threads ("one") or 2 gloo processes ("two")."""
    work = args.work
    data = work / "gowalla"
    recvae = [sys.executable, "-m", "recvae"]
    if not (data / "manifest.json").is_file():
        subprocess.run(
            [*recvae, "ingest", str(FOLDER / "train.txt"), str(FOLDER / "valid.txt"),
             "--split-sources", "train,valid", "--out", str(data)],
            check=True, capture_output=True,
        )  # fmt: skip
    common = ["train", str(data), "--model", "multvae", "--metric", "ndcg@20", "--no-progress",
              "--device", "cpu", "--set", f"epochs={args.ddp_epochs}", "--set", "seed=0",
              "--set", "patience=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out, checkpoints = work / f"model-{step}", work / f"ck-{step}"
    for stale in (out, checkpoints):
        subprocess.run(["rm", "-rf", str(stale)], check=True)
    if step == "one":
        command = [*recvae, *common, "--set", "threads=2"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                   "--master-port", "29547", "-m", "recvae", *common,
                   "--set", "threads=1"]  # fmt: skip
    # the epoch log goes to CHECKPOINT_DIR/log.jsonl (torchrun would read `--log` as --log-dir)
    command += ["--out", str(out), "--checkpoint-dir", str(checkpoints)]
    result = _train(command, env, checkpoints / "log.jsonl")
    records = [json.loads(line) for line in (checkpoints / "log.jsonl").read_text().splitlines()]
    records = [r for r in records if "train_seconds" in r]
    result["last_ndcg@20"] = records[-1]["ndcg@20"]
    result["epoch_seconds"] = [r["train_seconds"] for r in records]
    result["launch"] = DDP_STEPS[step]
    return result


# --- report -------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_fastest(runs: list[dict[str, Any]]) -> float:
    return statistics.mean(min(r["epoch_seconds"]) for r in runs)


def summarise(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparisons the report states, from whichever steps were run."""
    summary: dict[str, Any] = {}
    runs = {s: steps[s] for s in PRECISION_STEPS if s in steps}
    by = {p: [r for r in runs.values() if r["precision"] == p] for p in ("fp32", "bf16")}
    if by["fp32"] and by["bf16"]:
        last = {p: [r["last_ndcg@20"] for r in by[p]] for p in by}
        summary["precision"] = {
            "bf16_speedup": statistics.mean(r["median_epoch_seconds"] for r in by["fp32"])
            / statistics.mean(r["median_epoch_seconds"] for r in by["bf16"]),
            # the fastest epoch of each run: the least disturbed by other jobs on the machine
            "bf16_speedup_fastest_epoch": _mean_fastest(by["fp32"]) / _mean_fastest(by["bf16"]),
            "mean_last_ndcg@20": {p: statistics.mean(v) for p, v in last.items()},
            "seed_spread_last_ndcg@20": {p: max(v) - min(v) for p, v in last.items()},
            "bf16_minus_fp32_last_ndcg@20": statistics.mean(last["bf16"])
            - statistics.mean(last["fp32"]),
        }
        if min(len(v) for v in last.values()) >= 2:
            spread = max(summary["precision"]["seed_spread_last_ndcg@20"].values())
            summary["precision"]["within_seed_spread"] = (
                abs(summary["precision"]["bf16_minus_fp32_last_ndcg@20"]) <= spread
            )
        else:  # one seed: no spread to compare with
            del summary["precision"]["seed_spread_last_ndcg@20"]
            summary["precision"]["within_seed_spread"] = None
    if SPEED_STEP in steps:
        summary["speed"] = {k: v for k, v in steps[SPEED_STEP].items() if "speedup" in k}
    if "one" in steps and "two" in steps:
        one, two = steps["one"], steps["two"]
        summary["ddp"] = {
            "throughput_ratio_2proc_over_1proc": two["examples_per_second"]
            / one["examples_per_second"],
            "last_ndcg@20": {"one": one["last_ndcg@20"], "two": two["last_ndcg@20"]},
        }
    return summary


def plot(steps: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for step in PRECISION_STEPS:
        if step in steps:
            run = steps[step]
            epochs = range(1, len(run["curve"]) + 1)
            style = "-" if run["precision"] == "fp32" else "--"
            axes[0].plot(epochs, run["curve"], style, marker="o",
                         label=f"{run['precision']} seed {run['seed']}")  # fmt: skip
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation NDCG@20")
    axes[0].set_title("Gowalla Mult-VAE: fp32 vs bf16")
    axes[0].legend()
    names = [s for s in DDP_STEPS if s in steps]
    axes[1].bar([DDP_STEPS[s] for s in names], [steps[s]["examples_per_second"] for s in names])
    axes[1].set_ylabel("training users / second")
    axes[1].set_title("Gowalla, 2 cores: 1 process vs 2 gloo processes")
    axes[1].tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "cpu_scale_gowalla.png", dpi=100)
    plt.close(fig)


def write_report(steps: dict[str, dict[str, Any]], out: Path) -> None:
    info = run_info()
    summary = summarise(steps)
    (out / "results.json").write_text(
        json.dumps({"info": info, "steps": steps, "summary": summary}, indent=2, default=str)
    )
    plot(steps, out)
    lines = [
        "# CPU scale benchmark on Gowalla (issue 14)",
        "",
        "Command: `python benchmarks/cpu_scale_gowalla.py --out DIR --step S` for each step "
        f"({', '.join(PRECISION_STEPS)}, speed, one, two), each under the shared CPU lock, then "
        f"`--step report`. Report written {info['time']}, commit {info['git_commit']}.",
        "",
        f"Machine: {json.dumps(info['machine'])}. Versions: {json.dumps(info['versions'])}. "
        "The machine is shared with other jobs (the steps held a lock against heavy ones, light "
        "ones still ran), so absolute times are noisy. CPU only: no GPU was lent to this "
        "session, so nothing here ran on CUDA.",
        "",
        "## bf16 against fp32 (Mult-VAE, Gowalla)",
        "",
    ]
    runs = [steps[s] for s in PRECISION_STEPS if s in steps]
    if runs:
        first = runs[0]
        lines += [
            f"Data: {first['data']}. Paper defaults (600-200-600, batch 500, dropout 0.5, "
            f"KL annealing), {first['epochs']} epochs per run (a fixed, equal budget, far from "
            f"converged), {first['threads']} torch threads, validation NDCG@20 after every epoch.",
            "",
            "| precision | seed | epochs (s) | median epoch (s) | NDCG@20 after last epoch | "
            "best NDCG@20 |",
            "|---|---|---|---|---|---|",
        ]
        for run in runs:
            lines.append(
                f"| {run['precision']} | {run['seed']} | "
                f"{', '.join(_f(t, 0) for t in run['epoch_seconds'])} | "
                f"{_f(run['median_epoch_seconds'], 1)} | "
                f"{_f(run['last_ndcg@20'], 4)} | {_f(run['best_ndcg@20'], 4)} |"
            )
    missing = [s for s in PRECISION_STEPS if s not in steps]
    if missing:
        lines += ["", f"Not run: {', '.join(missing)}."]
    if "precision" in summary:
        p = summary["precision"]
        lines += [
            "",
            f"bf16 speed-up over fp32 from these runs: {_f(p['bf16_speedup'], 2)}x by the mean "
            f"of median epoch times, {_f(p['bf16_speedup_fastest_epoch'], 2)}x by the mean of "
            "each run's fastest epoch (runs at different times: other jobs' load differs; see "
            "the `speed` step below for a same-load ratio).",
            f"Mean NDCG@20 after the last epoch: fp32 {_f(p['mean_last_ndcg@20']['fp32'], 5)}, "
            f"bf16 {_f(p['mean_last_ndcg@20']['bf16'], 5)} (difference "
            f"{p['bf16_minus_fp32_last_ndcg@20']:+.5f}).",
        ]
        if p["within_seed_spread"] is None:
            lines.append("One seed per precision: no seed-to-seed spread was measured here.")
        else:
            verdict = "within" if p["within_seed_spread"] else "OUTSIDE"
            lines.append(
                f"Seed-to-seed spread fp32 {_f(p['seed_spread_last_ndcg@20']['fp32'], 5)}, bf16 "
                f"{_f(p['seed_spread_last_ndcg@20']['bf16'], 5)}: the difference is {verdict} the "
                "larger spread. Two seeds give a crude spread: a check, not a significance test."
            )
    if SPEED_STEP in steps:
        speed = steps[SPEED_STEP]
        lines += [
            "",
            f"Speed measured apart (step `speed`): fp32 and bf16 training epochs alternating in "
            f"one process, {speed['threads']} threads, after a warm-up epoch each. Epoch seconds "
            f"fp32 {', '.join(_f(t, 1) for t in speed['epoch_seconds']['fp32'])}; bf16 "
            f"{', '.join(_f(t, 1) for t in speed['epoch_seconds']['bf16'])}. bf16 speed-up: "
            f"{_f(speed['bf16_speedup_best'], 2)}x best epoch against best epoch, "
            f"{_f(speed['bf16_speedup_mean'], 2)}x by the means.",
        ]
    lines += ["", "## 2 gloo processes x 1 thread against 1 process x 2 threads (Gowalla)", ""]
    ddp = [steps[s] for s in DDP_STEPS if s in steps]
    if ddp:
        lines += [
            f"`recvae train --model multvae` (paper defaults, seed 0, fp32), {ddp[0]['epochs']} "
            "epochs, validation NDCG@20 on rank 0 after each epoch.",
            "",
            "| launch | training users/s | train s (all epochs) | wall s | NDCG@20 after last "
            "epoch |",
            "|---|---|---|---|---|",
        ]
        for run in ddp:
            lines.append(
                f"| {run['launch']} | {_f(run['examples_per_second'], 0)} | "
                f"{_f(run['train_seconds'], 1)} | {_f(run['wall_seconds'], 1)} | "
                f"{_f(run['last_ndcg@20'], 4)} |"
            )
    if "ddp" in summary:
        lines += [
            "",
            "Throughput ratio (2 processes / 1 process): "
            f"{_f(summary['ddp']['throughput_ratio_2proc_over_1proc'], 2)}.",
            "",
            "Commands:",
            "",
            *[f"    {run['command']}" for run in ddp],
        ]
    missing = [s for s in DDP_STEPS if s not in steps]
    if missing:
        lines += ["", f"Not run: {', '.join(missing)}."]
    notes = out / "notes.md"  # hand-written observations, kept across report rebuilds
    if notes.is_file():
        lines += ["", "## Notes", "", notes.read_text().strip()]
    lines += ["", "![cpu scale gowalla](cpu_scale_gowalla.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/reports/cpu-scale-gowalla-2026-12-02")
    )
    parser.add_argument("--step", required=True,
                        help="one step, or several run in turn in one process: fp32:1,bf16:1")
    parser.add_argument("--speed-repeats", type=int, default=2, help="fp32/bf16 epoch pairs")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each precision run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, precision runs")
    parser.add_argument("--ddp-epochs", type=int, default=2, help="epochs of the one/two runs")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/cpu-scale-gowalla"))
    args = parser.parse_args(argv)
    known = {*PRECISION_STEPS, SPEED_STEP, *DDP_STEPS}
    wanted = args.step.split(",")
    if args.step != "report" and not set(wanted) <= known:
        parser.error(f"--step must be report or among {sorted(known)}, got {args.step!r}")
    if not FOLDER.exists():
        print(f"{FOLDER} is absent; nothing to measure", file=sys.stderr)
        return 2
    steps_dir = args.out / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        steps = {p.stem.replace("_", ":"): json.loads(p.read_text())
                 for p in sorted(steps_dir.glob("*.json"))}  # fmt: skip
        write_report(steps, args.out)
        print(f"wrote {args.out / 'report.md'}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    for step in wanted:
        started = time.perf_counter()
        if step == SPEED_STEP:
            run = speed_step(args)
        elif step in DDP_STEPS:
            run = ddp_step(step, args)
        else:
            run = precision_step(step, args)
        run["step_seconds"] = time.perf_counter() - started
        run["argv"] = sys.argv[1:] if argv is None else argv
        (steps_dir / f"{step.replace(':', '_')}.json").write_text(json.dumps(run, indent=2))
        print(json.dumps(run), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
