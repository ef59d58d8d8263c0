"""Beyond the paper: RecVAE, its ablations and a RecVAE + EASE blend vs tuned EASE and ALS.

Trains on LightGCN's train.txt and reports on valid.txt (Recall@20 = hits / number held out,
LightGCN's definition; NDCG@20). Each step writes one JSON file under --out, so the steps can run
separately (in the background, niced) and `report` gathers them into report.md:

    python benchmarks/beyond.py fit ml-1m ../shared/datasets/ml-1m-lightgcn recvae-default \
        --model recvae --set epochs=60 --out benchmarks/reports/beyond-2026-11-28
    python benchmarks/beyond.py speed ml-1m ../shared/datasets/ml-1m-lightgcn --out ...
    python benchmarks/beyond.py blend ml-1m ../shared/datasets/ml-1m-lightgcn \
        --members recvae-default,ease-l2-500 --out ...   # weights tuned like `recvae train`
    python benchmarks/beyond.py paired ml-1m ../shared/datasets/ml-1m-lightgcn \
        --members recvae-enc1-beta02,ease-l2-1000 --weight 0.1 --normalise softmax \
        --baseline benchmarks/work/beyond/ml-1m/ease-l2-1000 --baseline ALS_DIR  # per-user margins
    python benchmarks/beyond.py final ml-1m ../shared/datasets/ml-1m-lightgcn models/ml-1m \
        --set epochs=N --ease-l2 500 --weight 0.5     # train + valid, fixed epochs
    python benchmarks/beyond.py final gowalla DATA models/gowalla-recvae --set epochs=50 \
        --snapshots-from 14                           # RecVAE alone, a snapshot per round
    python benchmarks/beyond.py final gowalla DATA models/gowalla --ease-l2 L --weight W \
        --recvae-model models/gowalla-recvae-rounds/round-N   # the blend, from a snapshot

Fitted models are kept under benchmarks/work/beyond/<dataset>/<run> (not committed) so that a
blend reuses them instead of refitting (EASE on Gowalla takes minutes and gigabytes).

Fitting goes through `recvae.workflow.fit.fit_model` (the path `recvae train` takes) and blend
weights are tuned by `recvae.models.blend.tune_weights` (what `weights = "tune"` runs), so a
number here is a number the product reproduces.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recvae.bench.data import ingest_spec
from recvae.cli.train import parse_set_options
from recvae.data.split import ProtocolSpec
from recvae.evaluate import evaluate
from recvae.models import build_model, load_model
from recvae.models.blend import Blend, tune_weights
from recvae.provenance import run_info
from recvae.workflow.fit import TrainSpec, fit_model

WORK = Path("benchmarks/work/beyond")
KS = [20]
METRICS = ("recall_lightgcn@20", "ndcg@20")


def load_dataset(path: str):
    """LightGCN's train.txt / valid.txt as a dataset carrying that split ("presplit")."""
    root = Path(path)
    if not (root / "train.txt").is_file():
        sys.exit(f"skipping: {root}/train.txt not found (pass the LightGCN data folder)")
    options = {
        "format": "lightgcn",
        "sources": ["train.txt", "valid.txt"],
        "split_sources": ["train", "valid"],
    }
    return ingest_spec(root.name, root, options)


def load_split(path: str):
    return load_dataset(path).split


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload["run_info"] = run_info()
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k not in ("history", "run_info")}))


def fit(args: argparse.Namespace) -> None:
    """Fit one model with one setting on train, evaluate on valid, save model + JSON."""
    dataset = load_dataset(args.data)
    settings = parse_set_options(args.set or [])
    log = WORK / args.dataset / f"{args.run}.log.jsonl"  # epoch models: one line per epoch
    result = fit_model(
        dataset, TrainSpec.of(args.model, settings), ProtocolSpec("presplit"), log_path=log,
        metric="ndcg@20",
    )  # fmt: skip
    evaluation = result.evaluation
    assert evaluation is not None
    model: Any = result.model
    payload: dict[str, Any] = {
        "dataset": args.dataset,
        "run": args.run,
        "model": args.model,
        "settings": settings,
        "valid": {m: evaluation.means[m] for m in METRICS},
        "valid_stderr": {m: evaluation.stderrs[m] for m in METRICS},
        "fit_seconds": result.metadata["training"]["seconds"],
    }
    history = getattr(model, "history", None)
    if history:
        payload["best_epoch"] = model.best_epoch
        payload["epochs_run"] = len(history)
        payload["seconds_per_epoch"] = float(np.median([r["train_seconds"] for r in history]))
        payload["history"] = [
            {k: r.get(k) for k in ("epoch", "loss", "train_seconds", *METRICS)} for r in history
        ]
    if not args.no_save:
        result.save(WORK / args.dataset / args.run)
    write(Path(args.out) / args.dataset, args.run, payload)


def speed(args: argparse.Namespace) -> None:
    """Seconds per epoch of Mult-VAE (paper settings) and per round of RecVAE, same process."""
    split = load_split(args.data)
    rows: dict[str, Any] = {}
    for name, model in (
        ("multvae", build_model("multvae", {"epochs": args.epochs, "threads": args.threads})),
        ("recvae", build_model("recvae", {"epochs": args.epochs, "threads": args.threads})),
        ("multvae-again", build_model("multvae", {"epochs": args.epochs, "threads": args.threads})),
    ):
        model.fit(split.train)
        rows[name] = [r["train_seconds"] for r in model.history]
    multvae = float(np.median(rows["multvae"] + rows["multvae-again"]))
    recvae = float(np.median(rows["recvae"]))
    payload = {
        "dataset": args.dataset,
        "threads": args.threads,
        "epochs": args.epochs,
        "seconds": rows,
        "multvae_median": multvae,
        "recvae_round_median": recvae,
        "ratio": recvae / multvae,
    }
    write(Path(args.out) / args.dataset, "speed", payload)


def load_member(dataset: str, name: str) -> Any:
    """A blend member: a run of this script (its name), or a saved model's path (one with a "/",
    e.g. from `recvae bench --keep-models`)."""
    return load_model(Path(name) if "/" in name else WORK / dataset / name)


def member_label(name: str) -> str:
    """A short label for a member: its run name, or the last two parts of its path."""
    return name if "/" not in name else f"{Path(name).parent.name}-{Path(name).name}"


def blend(args: argparse.Namespace) -> None:
    """Tune the blend weights of saved members on valid, per normalisation: the grid and the
    choice are `weights = "tune"`'s (each member scores a batch of users once for the grid)."""
    split = load_split(args.data)
    names = args.members.split(",")
    models = [load_member(args.dataset, n) for n in names]
    holdout = split.valid.with_heldout_users_only()  # the users evaluate() scores
    results = []
    for how in args.normalise.split(","):
        _, table = tune_weights(models, holdout, how, "ndcg@20", args.weight_step, batch_size=2000)
        results += [
            {"normalise": how, "weight": row["weights"][0], **{m: row[m] for m in METRICS}}
            for row in table
        ]
    for row in results:
        print(row)
    best = max(results, key=lambda r: r["ndcg@20"])
    labels = [member_label(n) for n in names]
    payload = {
        "dataset": args.dataset,
        "members": labels,
        "grid": results,
        "best": best,
        "valid_users": holdout.history.shape[0],
    }
    write(Path(args.out) / args.dataset, f"blend-{'+'.join(labels)}", payload)


def paired(args: argparse.Namespace) -> None:
    """The best blend against baselines user by user: mean and standard error of the per-user
    difference of each metric (paired, so much tighter than comparing two means' errors).

    The blend is the project's `Blend` of the saved members; every model is scored by the shared
    `evaluate`, whose per-user values line up (same users, same order)."""
    split = load_split(args.data)
    members = [load_member(args.dataset, n) for n in args.members.split(",")]
    weights = (args.weight, 1.0 - args.weight)
    blend_model = Blend.from_members(members, weights, split.valid.n_items, args.normalise)
    blended = evaluate(blend_model, split.valid, ks=KS, batch_size=2000).per_user
    rows = []
    for path in args.baseline:
        name = f"{Path(path).parent.name}/{Path(path).name}"
        baseline = evaluate(load_model(Path(path)), split.valid, ks=KS, batch_size=2000).per_user
        for metric in METRICS:
            diff = blended[metric] - baseline[metric]
            stderr = float(diff.std(ddof=1) / np.sqrt(len(diff)))
            rows.append({"baseline": name, "metric": metric,
                         "blend": float(blended[metric].mean()),
                         "baseline_mean": float(baseline[metric].mean()),
                         "difference": float(diff.mean()), "paired_stderr": stderr})  # fmt: skip
            print(rows[-1])
    payload = {"dataset": args.dataset, "members": args.members.split(","), "weight": args.weight,
               "normalise": args.normalise, "users": len(blended[METRICS[0]]),
               "comparisons": rows}  # fmt: skip
    write(Path(args.out) / args.dataset, "paired", payload)


def final(args: argparse.Namespace) -> None:
    """Train the final model on train + valid (fixed epochs, no validation) into an artifact.

    RecVAE is trained for the validated number of rounds; with --ease-l2 an EASE is fitted too
    and the two are blended with the validated weight and normalisation. Both go through
    `fit_model` (protocol "none"); with --recvae-model a RecVAE trained earlier is reused and
    only EASE is fitted, and the blend's artifact gets the same metadata layout.
    """
    from recvae.artifact import Artifact, load_artifact, save_artifact
    from recvae.data.split import describe_split, make_split
    from recvae.workflow.fit import fit_metadata

    root = Path(args.data)
    options = {"format": "lightgcn", "sources": ["train.txt", "valid.txt"]}
    dataset = ingest_spec(root.name, root, options)  # no split: one matrix, train + valid
    everything = ProtocolSpec("none")
    settings = parse_set_options(args.set or [])
    weights = [args.weight, 1.0 - args.weight]
    if args.recvae_model:  # e.g. from `recvae train DS --model recvae --no-validation --epochs N`
        recvae = load_artifact(Path(args.recvae_model)).model
        if recvae.n_items != dataset.matrix.shape[1]:
            sys.exit(f"{args.recvae_model} has {recvae.n_items} items, the data set another count")
        if args.ease_l2 is None:
            sys.exit("--recvae-model builds a blend: give --ease-l2 too")
        started = time.perf_counter()
        ease = fit_model(dataset, TrainSpec.of("ease", {"l2": args.ease_l2}), everything).model
        n_items = dataset.matrix.shape[1]
        model = Blend.from_members([recvae, ease], tuple(weights), n_items, args.normalise)
        training = {"seconds": round(time.perf_counter() - started, 3),
                    "reused": args.recvae_model}  # fmt: skip
        split = describe_split(dataset, everything, make_split(dataset, everything))
        metadata = fit_metadata("blend", model, dataset, split, training, None, "ndcg@20", root)
        artifact = Artifact(model, dataset.items, metadata)
        save_artifact(artifact, Path(args.model_out), dataset.matrix)
        print(json.dumps({"model_out": args.model_out, **training}))
        return
    if args.ease_l2 is None:
        spec = TrainSpec.of("recvae", settings)
    else:
        members = [{"model": "recvae", **settings}, {"model": "ease", "l2": args.ease_l2}]
        blend_settings = {"members": members, "weights": weights, "normalise": args.normalise}
        spec = TrainSpec.of("blend", blend_settings)
    if args.snapshots_from is not None and args.ease_l2 is not None:
        sys.exit("--snapshots-from trains RecVAE alone: leave out --ease-l2")
    checkpoints = Path(f"{args.model_out}-rounds") / "checkpoint"
    on_epoch = snapshot_rounds(args, dataset, checkpoints)
    result = fit_model(
        dataset, spec, everything, on_epoch=on_epoch, dataset_path=root,
        checkpoint_dir=checkpoints if on_epoch is not None else None,
    )  # fmt: skip
    result.save(Path(args.model_out))
    print(json.dumps({"model_out": args.model_out, **result.metadata["training"]}, default=str))


def snapshot_rounds(args: argparse.Namespace, dataset: Any, checkpoints: Path) -> Any:
    """With --snapshots-from R: an epoch callback that saves RecVAE's weights of every round
    >= R, from the checkpoint the loop has just written (`checkpoints`/last), as an artifact
    under MODEL_OUT-rounds/round-N. The final
    model can then start training before the validation run has found its best round (on
    Gowalla both take about an hour); the blend is built afterwards from the snapshot of that
    round with --recvae-model."""
    if args.snapshots_from is None:
        return None
    from safetensors.torch import load_file

    from recvae.artifact import Artifact, save_artifact
    from recvae.models.recvae_model import RecVAE

    root = Path(f"{args.model_out}-rounds")
    snapshot = RecVAE(**parse_set_options(args.set or []))
    snapshot.n_items = dataset.matrix.shape[1]
    snapshot.module = snapshot._build_module(snapshot.n_items)

    def save(epoch: int, record: dict[str, Any]) -> None:
        if epoch < args.snapshots_from:
            return
        tensors = load_file(str(checkpoints / "last" / "weights.safetensors"))
        prefix = "module."
        module = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        snapshot.module.load_state_dict(module)
        metadata = {"trained_on": "train.txt + valid.txt", "round": epoch, "run": run_info()}
        save_artifact(Artifact(snapshot, dataset.items, metadata), root / f"round-{epoch}",
                      dataset.matrix)  # fmt: skip

    return save


def logged(args: argparse.Namespace) -> None:
    """A result JSON from the epoch log of a run that was stopped before its budget (the
    machine is shared; runs are stopped to free CPU): best logged round, marked as interrupted."""
    log = WORK / args.dataset / f"{args.run}.log.jsonl"
    history = [json.loads(line) for line in log.read_text().splitlines()]
    best = max((r for r in history if "ndcg@20" in r), key=lambda r: r["ndcg@20"])
    payload = {
        "dataset": args.dataset, "run": args.run, "model": args.model,
        "settings": {**parse_set_options(args.set or []), "interrupted_after": len(history)},
        "valid": {m: best[m] for m in METRICS}, "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "fit_seconds": sum(r["train_seconds"] + r.get("valid_seconds", 0) for r in history),
        "seconds_per_epoch": float(np.median([r["train_seconds"] for r in history])),
        "history": [{k: r.get(k) for k in ("epoch", "loss", "train_seconds", *METRICS)}
                    for r in history],
    }  # fmt: skip
    write(Path(args.out) / args.dataset, args.run, payload)


def report(args: argparse.Namespace) -> None:
    """Tables of every JSON under --out/<dataset>/ (one row per fitted run), as report.md."""
    out = Path(args.out)
    lines = [
        "# Beyond the paper: results on LightGCN valid splits",
        "",
        "Generated by `python benchmarks/beyond.py report`; one JSON per run beside it.",
        "",
    ]
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
        runs = [r for r in runs if isinstance(r, dict) and "dataset" in r]  # ours only
        fits = [r for r in runs if "valid" in r]
        if not runs:
            continue
        lines += [
            f"## {folder.name}",
            "",
            "| run | model | settings | Recall@20 | NDCG@20 | best / run | fit s | s/epoch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sorted(fits, key=lambda r: -r["valid"]["ndcg@20"]):
            epochs = f"{r['best_epoch']} / {r['epochs_run']}" if "best_epoch" in r else ""
            per_epoch = f"{r['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in r else ""
            lines.append(
                f"| {r['run']} | {r['model']} | `{json.dumps(r['settings'])}` "
                f"| {r['valid']['recall_lightgcn@20']:.4f} | {r['valid']['ndcg@20']:.4f} "
                f"| {epochs} | {r['fit_seconds']:.0f} | {per_epoch} |"
            )
        with_history = [r for r in fits if r.get("history")]
        if with_history:
            lines += [
                "",
                f"Equal budget (best validated round of the first {args.budget}, for ablations):",
                "",
                "| run | Recall@20 | NDCG@20 | round |",
                "| --- | --- | --- | --- |",
            ]
            for r in sorted(with_history, key=lambda r: r["run"]):
                first = [h for h in r["history"][: args.budget] if h.get("ndcg@20") is not None]
                if not first:
                    continue
                best = max(first, key=lambda h: h["ndcg@20"])
                lines.append(
                    f"| {r['run']} | {best['recall_lightgcn@20']:.4f} "
                    f"| {best['ndcg@20']:.4f} | {best['epoch']} |"
                )
        for r in runs:
            if "grid" in r:
                b = r["best"]
                lines += [
                    "",
                    f"Blend {' + '.join(r['members'])}: best {b['normalise']} weight "
                    f"{b['weight']}: Recall@20 {b['recall_lightgcn@20']:.4f}, "
                    f"NDCG@20 {b['ndcg@20']:.4f} (grid: "
                    + ", ".join(
                        f"{g['normalise']} {g['weight']}: {g['ndcg@20']:.4f}" for g in r["grid"]
                    )
                    + ")",
                ]
            if "ratio" in r:
                lines += [
                    "",
                    f"Speed ({r['threads']} thread(s), median of {r['epochs']} epochs, "
                    f"same process): Mult-VAE {r['multvae_median']:.2f} s/epoch, RecVAE "
                    f"{r['recvae_round_median']:.2f} s/round, ratio {r['ratio']:.2f}",
                ]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    print(out / "report.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("run")
    p.add_argument("--model", required=True)
    p.add_argument("--set", action="append")
    p.add_argument("--no-save", action="store_true")
    p.set_defaults(func=fit)
    p = sub.add_parser("speed")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=speed)
    p = sub.add_parser("blend")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("--members", required=True)
    p.add_argument("--weight-step", type=float, default=0.1, help="the tuning grid's step")
    p.add_argument("--normalise", default="zscore,softmax")
    p.set_defaults(func=blend)
    p = sub.add_parser("paired")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("--members", required=True, help="the blend's two members (runs or paths)")
    p.add_argument("--weight", type=float, required=True, help="the first member's weight")
    p.add_argument("--normalise", required=True)
    p.add_argument("--baseline", action="append", required=True,
                   help="a saved baseline model (repeat; paths may contain commas)")  # fmt: skip
    p.set_defaults(func=paired)
    p = sub.add_parser("final")
    p.add_argument("dataset")
    p.add_argument("data")
    p.add_argument("model_out")
    p.add_argument("--set", action="append")
    p.add_argument("--ease-l2", type=float)
    p.add_argument("--recvae-model", help="artifact of a RecVAE already trained on train + valid")
    p.add_argument("--weight", type=float, default=0.5, help="RecVAE's weight in the blend")
    p.add_argument("--normalise", default="zscore")
    p.add_argument("--snapshots-from", type=int, help="also save RecVAE at every round >= N")
    p.set_defaults(func=final)
    p = sub.add_parser("logged")
    p.add_argument("dataset")
    p.add_argument("run")
    p.add_argument("--model", default="recvae")
    p.add_argument("--set", action="append")
    p.set_defaults(func=logged)
    p = sub.add_parser("report")
    p.add_argument("--budget", type=int, default=6, help="rounds compared in the ablation table")
    p.set_defaults(func=report)
    for p in sub.choices.values():
        p.add_argument("--out", default="benchmarks/reports/beyond-2026-11-28")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
