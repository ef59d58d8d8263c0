"""Small, sparse logs: do the deep models' default sizes, dropout and KL weight fit them?

Issue #16 (item 4) reports the default Mult-VAE 6-21% below tuned EASE/ALS on two unnamed small
sparse sets (1.9k users x 17k items, 5.6k x 17k). Those sets are not here and nothing is tuned
to them. This script builds proxies from ../shared/datasets (nothing is copied into the repo):

- gowalla-2k / gowalla-5k6: 2,000 / 5,600 users of Gowalla (LightGCN's train + valid merged),
  drawn with seed 0, all their items, then items seen fewer than `min_item` times among them
  dropped (2 / 3: one-off items can be neither learnt nor found; it also keeps EASE affordable);
- ml-1m-2k: 2,000 users of ml-1m-lightgcn (train + valid merged), seed 0, all their items;
- ml-1m: all of ml-1m-lightgcn (train + valid merged), the mid-size set that must not regress.

Every set gets one fixed per-user split (seed 0): 20% of each user's items are the test part;
20% of the rest validate (early stopping, EASE's l2). Models train on the rest, are validated
with the training rows as history, and are tested with train + valid rows as history (fold-in),
items of that history excluded from the ranking. NDCG@20 and Recall@20 (the Mult-VAE paper's:
hits / min(20, held out)) per user; paired per-user differences against the default.

Each step writes one JSON (benchmarks/reports/small-logs-2026-12-02/steps/) and its per-user
values (benchmarks/work/small_logs/), so steps run separately under the CPU lock:

    python benchmarks/small_logs_bench.py data                       # shapes of the proxies
    python benchmarks/small_logs_bench.py fit gowalla-2k multvae default
    python benchmarks/small_logs_bench.py fit gowalla-2k ease grid
    python benchmarks/small_logs_bench.py report

Every fit runs with threads = 1 and the deep models with the same short epoch budget
(BUDGET: the session's CPU time did not allow the 200-epoch default on every variant); the
variants "full" and "full-batch100" use the shipped budget (200 epochs, data-scaled patience).
Variants are settings laid over each model's defaults (VARIANTS); EASE's l2 is picked from
EASE_GRID on the valid part. The report (benchmarks/reports/small-logs-2026-12-02) says what
was found: no size, dropout or KL-weight rule won on every proxy, so no default changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recvae.data.split import Holdout, as_csr, split_rows
from recvae.evaluate import evaluate
from recvae.provenance import run_info

SHARED = Path(os.environ.get("RECVAE_SHARED", "../shared/datasets"))
REPORT = Path("benchmarks/reports/small-logs-2026-12-02")
WORK = Path("benchmarks/work/small_logs")
SEED = 0
METRICS = ("ndcg@20", "recall@20")
# name -> (LightGCN-format folder, users drawn (None: all), minimum item count among them)
DATASETS: dict[str, tuple[str, int | None, int]] = {
    "gowalla-2k": ("gowalla-lightgcn", 2000, 2),
    "ml-1m-2k": ("ml-1m-lightgcn", 2000, 1),
    "gowalla-5k6": ("gowalla-lightgcn", 5600, 3),
    "ml-1m": ("ml-1m-lightgcn", None, 1),
}
# the deep models' shared loop settings here (see the module docstring)
BUDGET: dict[str, Any] = {"epochs": 50, "patience": 10, "threads": 1, "seed": SEED}
# variants: settings over each model's defaults; "default" is the shipped config as it is
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "multvae": {
        "default": {},
        "half": {"hidden_dims": [300], "latent_dim": 100},
        "quarter": {"hidden_dims": [150], "latent_dim": 50},
        "drop0.7": {"dropout": 0.7},
        "drop0.3": {"dropout": 0.3},
        "beta0.5": {"beta_cap": 0.5},
        "nohidden": {"hidden_dims": []},  # items -> 200 -> items, Mult-DAE's shape
        "batch100": {"batch_size": 100},
        # the shipped epoch budget and data-scaled patience instead of BUDGET's
        "full": {"epochs": 200, "patience": None},
        # does training past the 200-epoch cap help when an epoch is a few updates? (lead, s3)
        "epochs600": {"epochs": 600, "patience": None},
        "full-batch100": {"epochs": 200, "patience": None, "batch_size": 100},
    },
    "multdae": {
        "default": {},
        "half": {"latent_dim": 100},
        "quarter": {"latent_dim": 50},
        "drop0.7": {"dropout": 0.7},
        "drop0.3": {"dropout": 0.3},
        "batch100": {"batch_size": 100},
        "full": {"epochs": 200, "patience": None},
        # does training past the 200-epoch cap help when an epoch is a few updates? (lead, s3)
        "epochs600": {"epochs": 600, "patience": None},
        "full-batch100": {"epochs": 200, "patience": None, "batch_size": 100},
    },
    "recvae": {"default": {}},
    "ease": {"grid": {}},
}
EASE_GRID = (100.0, 300.0, 1000.0)
# exact EASE costs items^3 (minutes at 20k items on one core): the largest proxy uses sparse EASE
# (recvae.models.sparse_ease, 200 neighbours; within 0.0003 NDCG@20 of exact EASE on Gowalla)
EASE_MODEL = {"gowalla-5k6": "sparse_ease"}


def read_lightgcn(path: Path) -> sp.csr_matrix:
    """train.txt + valid.txt of a LightGCN-format folder as one users x items 0/1 matrix."""
    rows: list[int] = []
    cols: list[int] = []
    for name in ("train.txt", "valid.txt"):
        for line in (path / name).read_text().splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            rows += [int(parts[0])] * (len(parts) - 1)
            cols += [int(p) for p in parts[1:]]
    values = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)))
    matrix.data[:] = 1.0
    return as_csr(matrix)


def load(dataset: str) -> tuple[sp.csr_matrix, Holdout, Holdout, dict[str, Any]]:
    """(train, valid holdout, test holdout, shape) of a proxy; see the module docstring."""
    folder, users, min_item = DATASETS[dataset]
    path = SHARED / folder
    if not path.exists():
        sys.exit(f"skipping {dataset}: {path} not found (set RECVAE_SHARED)")
    full = read_lightgcn(path)
    rng = np.random.default_rng(SEED)
    if users is not None:
        full = full[np.sort(rng.permutation(full.shape[0])[:users])]
    counts = np.asarray((full > 0).sum(axis=0)).ravel()
    full = as_csr(full[:, np.flatnonzero(counts >= min_item)])
    full = full[np.flatnonzero(np.diff(full.indptr) > 0)]
    split_rng = np.random.default_rng(SEED)
    rest, test = split_rows(full, 0.2, split_rng)
    train, valid = split_rows(rest, 0.2, split_rng)
    ids = np.arange(full.shape[0], dtype=np.int64)
    valid_part = Holdout(train, valid, ids).with_heldout_users_only()
    test_part = Holdout(rest, test, ids).with_heldout_users_only()
    shape = {
        "source": folder, "users_drawn": users, "min_item_count": min_item,
        "users": int(full.shape[0]), "items": int(full.shape[1]),
        "interactions": int(full.nnz), "train": int(train.nnz), "valid": int(valid.nnz),
        "test": int(test.nnz), "density": full.nnz / (full.shape[0] * full.shape[1]),
        "interactions_per_item": full.nnz / full.shape[1],
        "test_users": int(test_part.history.shape[0]),
    }  # fmt: skip
    return train, valid_part, test_part, shape


def scored(model: Any, part: Holdout) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    result = evaluate(model, part, ks=[20], batch_size=2000)
    return (
        {m: float(result.means[m]) for m in METRICS},
        {m: result.per_user[m] for m in METRICS},
    )


def save_step(name: str, payload: dict[str, Any], per_user: dict[str, np.ndarray]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(WORK / f"{name}.npz", **per_user)
    out = REPORT / "steps"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"step": name, **payload, "run_info": run_info()}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    shown = {k: v for k, v in payload.items() if k not in ("run_info", "history", "data")}
    print(json.dumps(shown, default=str), flush=True)


def fit_deep(dataset: str, model: str, variant: str) -> None:
    from recvae.models import build_model

    train, valid, test, shape = load(dataset)
    settings = {**BUDGET, **VARIANTS[model][variant]}
    if model == "recvae":
        settings["epochs"] = 25  # a RecVAE round is two passes over the data
    fitted = build_model(model, settings)
    started = time.process_time()
    fitted.fit(train, valid)
    seconds = time.process_time() - started
    means, per_user = scored(fitted, test)
    valid_means, _ = scored(fitted, valid)
    payload = {
        "dataset": dataset, "model": model, "variant": variant, "settings": settings,
        "resolved": _resolved(fitted), "data": shape, "test": means, "valid": valid_means,
        "best_epoch": fitted.best_epoch, "epochs_run": len(fitted.history),
        "cpu_seconds": round(seconds, 1), "seed": SEED,
    }  # fmt: skip
    save_step(f"{dataset}-{model}-{variant}", payload, per_user)


def _resolved(model: Any) -> dict[str, Any]:
    """The network sizes the fit used (after any data-scaled resolution)."""
    config = model.config
    keys = ("hidden_dims", "hidden_dim", "latent_dim", "dropout", "beta_cap", "beta")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}


def fit_ease(dataset: str) -> None:
    """EASE with l2 from EASE_GRID chosen on the valid part by NDCG@20, scored on test."""
    from recvae.models import build_model

    train, valid, test, shape = load(dataset)
    grid = []
    best: tuple[float, Any] | None = None
    started = time.process_time()
    name = EASE_MODEL.get(dataset, "ease")
    for l2 in EASE_GRID:
        fitted = build_model(name, {"l2": l2}).fit(train)
        valid_means, _ = scored(fitted, valid)
        grid.append({"l2": l2, "valid": valid_means})
        print(grid[-1], flush=True)
        if best is None or valid_means["ndcg@20"] > best[0]:
            best = (valid_means["ndcg@20"], fitted)
    seconds = time.process_time() - started
    assert best is not None
    means, per_user = scored(best[1], test)
    payload = {
        "dataset": dataset, "model": "ease", "variant": "grid", "ease_model": name, "grid": grid,
        "settings": {"l2": best[1].config.l2}, "data": shape, "test": means,
        "valid": max(g["valid"] for g in grid if g["l2"] == best[1].config.l2),
        "cpu_seconds": round(seconds, 1), "seed": SEED,
    }  # fmt: skip
    save_step(f"{dataset}-ease-grid", payload, per_user)


def run_data(_: argparse.Namespace) -> None:
    for dataset in DATASETS:
        print(dataset, json.dumps(load(dataset)[3]), flush=True)


def run_fit(args: argparse.Namespace) -> None:
    for variant in args.variants.split(","):
        if args.model == "ease":
            fit_ease(args.dataset)
        else:
            fit_deep(args.dataset, args.model, variant)


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    stderr = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    mean = float(diff.mean())
    return {"mean": mean, "stderr": stderr, "z": mean / stderr if stderr > 0 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("data").set_defaults(run=run_data)
    fit = steps.add_parser("fit")
    fit.add_argument("dataset", choices=sorted(DATASETS))
    fit.add_argument("model", choices=sorted(VARIANTS))
    fit.add_argument("variants", help="comma-separated variant names (ease: grid)")
    fit.set_defaults(run=run_fit)
    steps.add_parser("report").set_defaults(run=lambda _: report())
    args = parser.parse_args()
    args.run(args)


def report() -> None:
    """results.json, report tables and a plot from every step's JSON and per-user values."""
    steps = {p.stem: json.loads(p.read_text()) for p in sorted((REPORT / "steps").glob("*.json"))}
    results: dict[str, Any] = {"run_info": run_info(), "budget": BUDGET, "seed": SEED,
                               "variants": VARIANTS, "datasets": {}}  # fmt: skip
    lines: list[str] = []
    for dataset in DATASETS:
        found = {k: v for k, v in steps.items() if v.get("dataset") == dataset}
        if not found:
            continue
        data = next(iter(found.values()))["data"]
        entry: dict[str, Any] = {"data": data, "rows": {}}
        lines += ["", f"### {dataset}", "", _shape_line(data), "",
                  "| model | variant | sizes (resolved) | valid N@20 | test N@20 | test R@20 | "
                  "paired N@20 vs default (SE) | paired R@20 vs default (SE) | paired N@20 vs "
                  "EASE (SE) | best epoch | CPU s |",
                  "|" + " --- |" * 11]  # fmt: skip
        for name, step in sorted(found.items(), key=lambda kv: _order(kv[1])):
            row = {k: step.get(k) for k in ("model", "variant", "settings", "resolved", "valid",
                                            "test", "best_epoch", "epochs_run", "cpu_seconds",
                                            "grid", "ease_model")}  # fmt: skip
            base = f"{dataset}-{step['model']}-default"
            cells = ["", ""]
            if step["variant"] != "default" and base in steps and step["model"] != "ease":
                mine, ref = np.load(WORK / f"{name}.npz"), np.load(WORK / f"{base}.npz")
                row["paired_vs_default"] = {m: paired(mine[m], ref[m]) for m in METRICS}
                cells = [_pair(row["paired_vs_default"][m]) for m in ("ndcg@20", "recall@20")]
            ease = ""
            if step["model"] != "ease" and f"{dataset}-ease-grid" in steps:
                mine = np.load(WORK / f"{name}.npz")
                ref = np.load(WORK / f"{dataset}-ease-grid.npz")
                row["paired_vs_ease"] = {m: paired(mine[m], ref[m]) for m in METRICS}
                ease = _pair(row["paired_vs_ease"]["ndcg@20"])
            entry["rows"][name] = row
            sizes = (
                f"{step['ease_model']} l2 {step['settings']['l2']:g}"
                if step["model"] == "ease"
                else _sizes(step.get("resolved") or {})
            )
            lines.append(
                f"| {step['model']} | {step['variant']} | {sizes} | {step['valid']['ndcg@20']:.4f} "
                f"| {step['test']['ndcg@20']:.4f} | {step['test']['recall@20']:.4f} | {cells[0]} "
                f"| {cells[1]} | {ease} | {step.get('best_epoch', '')} | {step['cpu_seconds']} |"
            )
        dae, vae = f"{dataset}-multdae-default", f"{dataset}-multvae-default"
        if dae in steps and vae in steps:  # the two shipped defaults against each other
            mine, ref = np.load(WORK / f"{dae}.npz"), np.load(WORK / f"{vae}.npz")
            entry["multdae_vs_multvae"] = {m: paired(mine[m], ref[m]) for m in METRICS}
            lines += ["", "Mult-DAE default minus Mult-VAE default (paired): " + ", ".join(
                f"{m} {_pair(entry['multdae_vs_multvae'][m])}" for m in METRICS)]  # fmt: skip
        results["datasets"][dataset] = entry
    REPORT.mkdir(parents=True, exist_ok=True)
    (REPORT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (REPORT / "tables.md").write_text("\n".join(lines).strip() + "\n")
    _plot(results)
    print("\n".join(lines))


def _order(step: dict[str, Any]) -> tuple[int, int]:
    models = list(VARIANTS)
    variants = list(VARIANTS[step["model"]])
    return models.index(step["model"]), variants.index(step["variant"])


def _shape_line(data: dict[str, Any]) -> str:
    return (
        f"{data['users']} users x {data['items']} items, {data['interactions']} interactions "
        f"(density {data['density']:.4f}, {data['interactions_per_item']:.1f} per item); "
        f"train / valid / test {data['train']} / {data['valid']} / {data['test']}; "
        f"{data['test_users']} test users"
    )


def _sizes(resolved: dict[str, Any]) -> str:
    hidden = resolved.get("hidden_dims", resolved.get("hidden_dim", ()))
    hidden = list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
    parts = ["-".join(str(d) for d in [*hidden, resolved.get("latent_dim")])]
    if "dropout" in resolved:
        parts.append(f"drop {resolved['dropout']:g}")
    if "beta_cap" in resolved:
        parts.append(f"beta {resolved['beta_cap']:g}")
    return ", ".join(parts)


def _pair(numbers: dict[str, float]) -> str:
    return f"{numbers['mean']:+.4f} ({numbers['stderr']:.4f})"


def _plot(results: dict[str, Any]) -> None:
    """Test NDCG@20 of every variant relative to the default, per data set and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels: list[str] = []
    shown: set[str] = set()
    for index, (dataset, entry) in enumerate(results["datasets"].items()):
        for row in entry["rows"].values():
            pair = row.get("paired_vs_default")
            if pair is None:
                continue
            label = f"{row['model']} {row['variant']}"
            if label not in labels:
                labels.append(label)
            y = labels.index(label)
            numbers = pair["ndcg@20"]
            ax.errorbar(numbers["mean"], y + 0.15 * index, xerr=2 * numbers["stderr"], fmt="o",
                        color=f"C{index}", label=None if dataset in shown else dataset)  # fmt: skip
            shown.add(dataset)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("test NDCG@20 minus the default's (paired, +-2 SE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPORT / "paired-ndcg.png", dpi=110)


if __name__ == "__main__":
    main()
