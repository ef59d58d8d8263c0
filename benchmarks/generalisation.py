"""Generalisation: `recvae train --model auto` with its defaults against tuned EASE and tuned ALS
on data sets it was never tuned for, scored on users or interactions it never saw.

Each data set is cut into a development part, which auto sees (it holds out its own validation
users from it, chooses, and refits the winner on all of it), and a test part that only this
script scores:

- ml-100k, ml-1m-half (ratings above 3.5, users with at least 5): strong generalisation, i.e.
  `TEST_USERS` users held out whole (seed 0), each scored from 80% of their items (fold-in) on
  the other 20%;
- ml-1m-lightgcn, Gowalla: LightGCN's split; auto sees train.txt only and is scored on
  valid.txt (each user's training row is the history), the published protocol.

Tuned EASE and tuned ALS are fitted on the same development part and scored on the same test
part. Where tuned settings are known from earlier reports (ml-1m-lightgcn, Gowalla) they are
used as they are: they were tuned on valid.txt, the very interactions scored here, so they are
the baselines' best case. Elsewhere a short grid is searched on a validation split of the
development part (by ndcg@20, the metric reported), and the best refitted on all of it.

Each step writes one JSON file (and per-user values under benchmarks/work/generalisation/), so
the steps run separately under the CPU lock; `report` gathers them:

    python benchmarks/generalisation.py auto ml-100k            # auto, default budget
    python benchmarks/generalisation.py baselines ml-100k       # tuned EASE + tuned ALS
    python benchmarks/generalisation.py auto gowalla --budget 9m   # what ran is recorded
    python benchmarks/generalisation.py report

Per-user paired differences (auto minus baseline, mean and standard error over test users)
are computed in `report` from the per-user values of the three models on identical users.

Rotated test folds (ml-100k, ml-1m-half): 200 or 500 test users cannot show a gain of 2-3%
(ml-100k's NDCG@20 paired SE is about 0.008), so `rotate` splits all users into ROTATE_FOLDS
disjoint test folds (seed 0). For each fold, auto and the baselines (grid-tuned as above) see
only the other folds' users and are scored on that fold's; the per-user test values of all
folds are concatenated, so the paired differences are over every user. Each (model, fold) is
one JSON under steps/rotated/, per-user values included:

    python benchmarks/generalisation.py rotate ml-100k --models ease,als      # folds 0-4
    python benchmarks/generalisation.py rotate ml-100k --models auto --seed 1 --folds 0,1
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

from recvae.data.dataset import Dataset
from recvae.data.split import Holdout, ProtocolSpec, strong_generalization
from recvae.evaluate import evaluate
from recvae.provenance import run_info

SHARED = Path(os.environ.get("RECVAE_SHARED", "../shared/datasets"))
REPORT = Path("benchmarks/reports/generalisation-2026-12-02")
WORK = Path("benchmarks/work/generalisation")
TEST_SEED = 0
MOVIELENS = {"format": "movielens", "min_rating": 3.5, "min_user_count": 5}
ML100K = {
    "delimiter": "tab", "header": True, "user_col": "user_id:token", "item_col": "item_id:token",
    "rating_col": "rating:float", "time_col": "timestamp:float", "min_rating": 3.5,
    "min_user_count": 5,
}  # fmt: skip
LIGHTGCN = {"format": "lightgcn", "split_sources": ["train", "valid"]}
SUBSAMPLE = {"format": "lightgcn"}  # train.txt + valid.txt merged, then users drawn

# name -> where, how it is split, and the baselines' known tuned settings (None: grid search)
DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {"path": "ml-100k/ratings.tsv", "ingest": ML100K, "test_users": 200},
    "ml-1m-half": {"path": "ml-1m-half/ratings.dat.gz", "ingest": MOVIELENS, "test_users": 500},
    "ml-1m-lightgcn": {
        "path": "ml-1m-lightgcn", "ingest": LIGHTGCN,
        "ease": {"l2": 1000.0},  # beyond-2026-11-28: tuned on valid.txt
        "als": {"factors": 256, "regularization": 100.0, "alpha": 10.0, "iterations": 15},
    },
    "gowalla": {
        "path": "gowalla-lightgcn", "ingest": LIGHTGCN,
        "ease": {"l2": 100.0},  # gowalla-2026-11-28: tuned on valid.txt
        "als": {"factors": 512, "regularization": 30.0, "alpha": 30.0, "iterations": 15},
    },
    # a small sparse log like the issue's unnamed set A (1.9k users x 17k items): 2,000 Gowalla
    # users (seed 0) with all their items, items seen once among them dropped; each user's items
    # split 80/20 (seed 0), the 20% the test part (benchmarks/small_logs_bench.py's proxy)
    "gowalla-2k": {"path": "gowalla-lightgcn", "ingest": SUBSAMPLE, "users": 2000, "min_item": 2},
}  # fmt: skip
ROTATE_FOLDS = 5  # disjoint test folds of `rotate` (every user is tested once)
ROTATED = REPORT / "steps" / "rotated"
GRIDS = {
    # 1-20 added on 2026-12-02 (session 4): gowalla-2k's grid picked its lowest value, 50, then
    # (with 10 and 20 added) 10 again
    "ease": [{"l2": l2} for l2 in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                                   2000.0)],
    "als": [
        {"factors": f, "regularization": r, "alpha": 10.0, "iterations": 15}
        for f in (64, 128, 256)
        for r in (1.0, 10.0, 100.0)
    ],
}
TUNE_METRIC = "ndcg@20"


def recall_name(dataset: str) -> str:
    """LightGCN's recall (hits / held out) on its splits; the Mult-VAE paper's elsewhere."""
    return "recall_lightgcn@20" if DATASETS[dataset]["ingest"] is LIGHTGCN else "recall@20"


def load(dataset: str, fold: int | None = None) -> tuple[Dataset, Holdout, dict[str, Any]]:
    """The development dataset (what models see) and the test holdout (what is scored);
    with `fold`, test fold `fold` of `rotate` (held-out users data sets only)."""
    from recvae.data.ingest import IngestOptions, ingest

    spec = DATASETS[dataset]
    path = SHARED / spec["path"]
    if not path.exists():
        sys.exit(f"skipping {dataset}: {path} not found (set RECVAE_SHARED)")
    options = dict(spec["ingest"])
    if spec["ingest"] is SUBSAMPLE:
        return _subsample(dataset, spec, path, options)
    if spec["ingest"] is LIGHTGCN:
        full = ingest([path / "train.txt", path / "valid.txt"], IngestOptions(**options))
        assert full.split is not None and full.split.valid is not None
        dev = Dataset(full.split.train, full.users, full.items)
        test = full.split.valid
        protocol = {"test": "LightGCN valid.txt (weak: each user's train row is the history)"}
    else:
        full = ingest([path], IngestOptions(**options))
        if fold is not None:
            return _rotated(dataset, full, fold, options)
        split = strong_generalization(full.matrix, 0, spec["test_users"], 0.2, seed=TEST_SEED)
        assert split.test is not None
        kept = np.setdiff1d(np.arange(full.matrix.shape[0]), split.test.users)
        dev = Dataset(split.train, _subset(full.users, kept), full.items)
        test = split.test
        protocol = {"test": f"strong: {spec['test_users']} held-out users (seed {TEST_SEED}), "
                    "80% of their items as fold-in history, 20% held out"}  # fmt: skip
    shape = {
        "users": int(full.matrix.shape[0]), "items": int(full.matrix.shape[1]),
        "interactions": int(full.matrix.nnz), "dev_users": int(dev.matrix.shape[0]),
        "dev_interactions": int(dev.matrix.nnz), "test_users": int(test.history.shape[0]),
        "test_heldout": int(test.heldout.nnz), "ingest": {k: v for k, v in options.items()},
        **protocol,
    }  # fmt: skip
    return dev, test, shape


def _subsample(
    dataset: str, spec: dict[str, Any], path: Path, options: dict[str, Any]
) -> tuple[Dataset, Holdout, dict[str, Any]]:
    """`spec["users"]` users drawn at random (seed TEST_SEED) with all their items, items seen
    fewer than `spec["min_item"]` times among them dropped, each user's items split 80/20:
    the 80% is the development part, the 20% the test part (weak generalisation)."""
    from recvae.data.ingest import IngestOptions, ingest
    from recvae.data.split import as_csr, split_rows
    from recvae.data.vocab import Vocabulary

    full = ingest([path / "train.txt", path / "valid.txt"], IngestOptions(**options))
    rng = np.random.default_rng(TEST_SEED)
    users = np.sort(rng.permutation(full.matrix.shape[0])[: spec["users"]])
    matrix = as_csr(full.matrix[users])
    items = np.flatnonzero(np.asarray((matrix > 0).sum(axis=0)).ravel() >= spec["min_item"])
    matrix = as_csr(matrix[:, items])
    kept = np.flatnonzero(np.diff(matrix.indptr) > 0)
    matrix = as_csr(matrix[kept])
    dev_matrix, test_matrix = split_rows(matrix, 0.2, np.random.default_rng(TEST_SEED))
    dev = Dataset(dev_matrix, _subset(full.users, users[kept]),
                  Vocabulary(list(full.items.original(items)), name="item"))  # fmt: skip
    test = Holdout(dev_matrix, test_matrix, np.arange(len(kept))).with_heldout_users_only()
    shape = {
        "users": len(kept), "items": len(items), "interactions": int(matrix.nnz),
        "dev_users": len(kept), "dev_interactions": int(dev_matrix.nnz),
        "test_users": int(test.history.shape[0]), "test_heldout": int(test.heldout.nnz),
        "ingest": options, "test": f"{spec['users']} users of {spec['path']} drawn (seed "
        f"{TEST_SEED}), items seen < {spec['min_item']} times dropped; 20% of each user's items "
        "held out (weak: the other 80% is the history)",
    }  # fmt: skip
    return dev, test, shape


def rotated_users(n_users: int, fold: int) -> np.ndarray:
    """Test fold `fold` of `rotate`: block `fold` of ROTATE_FOLDS near-equal blocks of one
    permutation of all users (seed TEST_SEED), so the folds are disjoint and cover every user."""
    order = np.random.default_rng(TEST_SEED).permutation(n_users)
    return np.sort(np.array_split(order, ROTATE_FOLDS)[fold])


def _rotated(
    dataset: str, full: Dataset, fold: int, options: dict[str, Any]
) -> tuple[Dataset, Holdout, dict[str, Any]]:
    """Strong generalisation with test fold `fold`: its users held out whole, each scored from
    80% of their items (seed [TEST_SEED, fold]) on the other 20%; every other user is the
    development part."""
    from recvae.data.split import split_rows

    n_users = full.matrix.shape[0]
    users = rotated_users(n_users, fold)
    history, heldout = split_rows(full.matrix[users], 0.2, np.random.default_rng([TEST_SEED, fold]))
    test = Holdout(history, heldout, users.astype(np.int64)).with_heldout_users_only()
    kept = np.setdiff1d(np.arange(n_users), users)
    dev = Dataset(full.matrix[kept], _subset(full.users, kept), full.items)
    shape = {
        "users": int(n_users), "items": int(full.matrix.shape[1]),
        "interactions": int(full.matrix.nnz), "dev_users": int(dev.matrix.shape[0]),
        "dev_interactions": int(dev.matrix.nnz), "test_users": int(test.history.shape[0]),
        "test_heldout": int(test.heldout.nnz), "ingest": dict(options), "fold": fold,
        "folds": ROTATE_FOLDS,
        "test": f"strong, rotated: test fold {fold} of {ROTATE_FOLDS} disjoint folds of all users "
        f"(seed {TEST_SEED}), 80% of their items as fold-in history (seed [{TEST_SEED}, {fold}]), "
        "20% held out",
    }  # fmt: skip
    return dev, test, shape


def _subset(vocab: Any, rows: np.ndarray) -> Any:
    from recvae.data.vocab import Vocabulary

    return Vocabulary(list(vocab.original(rows)), name="user")


def score(model: Any, test: Holdout, dataset: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Test means and per-user values (recall and ndcg at 20) of a fitted model."""
    result = evaluate(model, test, ks=[20], batch_size=2000)
    names = (recall_name(dataset), "ndcg@20")
    means = {name: float(result.means[name]) for name in names}
    per_user = {name: result.per_user[name] for name in names}
    return means, per_user


def save_step(dataset: str, name: str, payload: dict[str, Any], per_user: dict[str, Any]) -> None:
    (WORK / dataset).mkdir(parents=True, exist_ok=True)
    np.savez(WORK / dataset / f"{name}-per-user.npz", **per_user)
    out = REPORT / "steps"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": dataset, "step": name, **payload, "run_info": run_info()}
    (out / f"{dataset}-{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    shown = {k: v for k, v in payload.items() if k not in ("run_info", "candidates")}
    print(json.dumps(shown, default=str)[:2000])


# ---- steps ---------------------------------------------------------------------------------


def run_auto(args: argparse.Namespace) -> None:
    """`recvae train --model auto` with its defaults (only the budget may be given), on the
    development part; the refitted winner is scored on the test part."""
    dev, test, shape = load(args.dataset)
    payload, per_user = auto_step(args.dataset, dev, test, shape, args.budget, args.seed)
    save_step(args.dataset, "auto" if args.seed == 0 else f"auto-seed{args.seed}", payload,
              per_user)  # fmt: skip


def auto_step(
    dataset: str, dev: Dataset, test: Holdout, shape: dict[str, Any], budget: str | None, seed: int,
    one_fold: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """auto fitted on `dev` and scored on `test`: the step's payload and per-user values.
    `one_fold`: auto as it was before repeated validation folds (the fold rule replaced by 1,
    everything else the same), to measure what the folds change."""
    from recvae.workflow import auto
    from recvae.workflow.auto import AutoConfig, fit_auto

    if one_fold:
        auto.fold_count = lambda *args, **kwargs: 1  # this process only: an ablation
    config = AutoConfig(budget=budget or "", seed=seed)
    started = time.perf_counter()
    result = fit_auto(dev, config, ProtocolSpec("auto", seed=seed),
                      say=lambda s: print(s, flush=True))  # fmt: skip
    seconds = time.perf_counter() - started
    means, per_user = score(result.fit.model, test, dataset)
    summary = result.summary
    payload = {
        "data": shape,
        "model": "auto",
        "winner": result.winner,
        "budget": summary["budget"],
        "budget_seconds": summary["budget_seconds"],
        "metric": summary["metric"],
        "seconds": round(seconds, 1),
        "selection_seconds": summary["selection_seconds"],
        "refit_seconds": summary["refit_seconds"],
        "test": means,
        "test_users": int(test.history.shape[0]),
        "folds": summary.get("folds", 1),
        "fold_users": summary.get("fold_users"),
        "first_pass_seconds": summary.get("first_pass_seconds"),
        "candidates": result.rows,
        "seed": config.seed,
    }
    return payload, per_user


def run_baselines(args: argparse.Namespace) -> None:
    """Tuned EASE and tuned ALS: known settings, or a short grid on a validation split of the
    development part, then the best refitted on all of it and scored on the test part."""
    for model in args.models.split(","):
        run_baseline(args.dataset, model, args.tune_protocol)


def run_baseline(dataset: str, model: str, tune_protocol: str = "auto") -> None:
    dev, test, shape = load(dataset)
    payload, per_user = baseline_step(dataset, model, dev, test, shape, tune_protocol)
    # a grid on a weak split is an extra step beside the main one (gowalla-2k, whose test part
    # is weak: each user's 20%), not a replacement
    save_step(dataset, model if tune_protocol == "auto" else f"{model}-{tune_protocol}tuned",
              payload, per_user)  # fmt: skip


def baseline_step(
    dataset: str, model: str, dev: Dataset, test: Holdout, shape: dict[str, Any],
    tune_protocol: str = "auto",
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """A tuned baseline fitted on `dev` and scored on `test`: payload and per-user values.
    `tune_protocol`: the grid's validation split of `dev`: "auto" (held-out users, as auto
    chooses) or "weak" (20% of every user's items, like gowalla-2k's test part)."""
    from recvae.workflow.fit import TrainSpec, fit_model

    known = DATASETS[dataset].get(model)
    threads = {"num_threads": 0} if model == "als" else {}
    tried: list[dict[str, Any]] = []
    grid_seconds = 0.0
    if known is None:
        for settings in GRIDS[model]:
            fit = fit_model(dev, TrainSpec.of(model, {**settings, **threads}),
                            ProtocolSpec(tune_protocol, seed=0), metric=TUNE_METRIC)  # fmt: skip
            seconds = fit.metadata["training"]["seconds"]
            grid_seconds += seconds
            tried.append({"settings": settings, TUNE_METRIC: fit.metadata["metrics"][TUNE_METRIC],
                          "fit_seconds": seconds})  # fmt: skip
            print(tried[-1], flush=True)
        chosen = max(tried, key=lambda row: row[TUNE_METRIC])["settings"]
        how = (
            f"grid of {len(tried)} on a validation split of the development part, by {TUNE_METRIC}"
        )
        if tune_protocol != "auto":
            how += f" ({tune_protocol} split: 20% of every user's items)"
    else:
        chosen = known
        how = "known tuned settings (tuned on the split scored here: the baseline's best case)"
    fit = fit_model(dev, TrainSpec.of(model, {**chosen, **threads}), ProtocolSpec("none"))
    means, per_user = score(fit.model, test, dataset)
    payload = {
        "data": shape,
        "model": model,
        "settings": chosen,
        "tuning": how,
        "grid": tried,
        "grid_seconds": round(grid_seconds, 1),
        "seconds": fit.metadata["training"]["seconds"],
        "test": means,
        "test_users": int(test.history.shape[0]),
        "seed": fit.metadata["seed"],
    }
    return payload, per_user


def run_rotate(args: argparse.Namespace) -> None:
    """auto and/or the baselines on test folds of `rotate` (one JSON per model and fold,
    with the per-user test values, so the report needs no other file)."""
    if DATASETS[args.dataset].get("test_users") is None:
        sys.exit("rotate is for the held-out-users data sets (ml-100k, ml-1m-half)")
    folds = [int(f) for f in args.folds.split(",")] if args.folds else range(ROTATE_FOLDS)
    for fold in folds:
        dev, test, shape = load(args.dataset, fold)
        for model in args.models.split(","):
            if model == "auto":
                payload, per_user = auto_step(args.dataset, dev, test, shape, args.budget,
                                              args.seed, args.one_fold)  # fmt: skip
                name = "auto" if args.seed == 0 else f"auto-seed{args.seed}"
                if args.one_fold:
                    name = name.replace("auto", "auto1fold")
                    payload["ablation"] = "one validation fold (the fold rule off)"
            else:
                payload, per_user = baseline_step(args.dataset, model, dev, test, shape)
                name = model
            payload = {"dataset": args.dataset, "step": f"rotate {name}", "fold": fold, **payload,
                       "test_user_ids": [int(u) for u in test.users],
                       "per_user": {k: [float(v) for v in values]
                                    for k, values in per_user.items()},
                       "run_info": run_info()}  # fmt: skip
            ROTATED.mkdir(parents=True, exist_ok=True)
            path = ROTATED / f"{args.dataset}-{name}-fold{fold}.json"
            path.write_text(json.dumps(payload, indent=1, default=str))
            print(f"wrote {path}: test {payload['test']}", flush=True)


def run_adopt(args: argparse.Namespace) -> None:
    """A baseline fitted by another benchmark on the same split with the same evaluation code
    (benchmarks/joint_bench.py: train.txt, scored on valid.txt by recvae.evaluate): its per-user
    values and fit time are taken as they are instead of refitting (EASE on Gowalla costs 12
    minutes and 7 GB). Only for the LightGCN splits, whose test part is fixed."""
    if DATASETS[args.dataset]["ingest"] is not LIGHTGCN:
        sys.exit("adopt is for the LightGCN splits only (the others' test users are drawn here)")
    _dev, test, shape = load(args.dataset)
    source = json.loads(Path(args.json).read_text())
    arrays = np.load(args.per_user)
    per_user = {name: arrays[name] for name in (recall_name(args.dataset), "ndcg@20")}
    users = int(test.history.shape[0])
    if any(len(values) != users for values in per_user.values()):
        sys.exit(f"{args.per_user}: {len(per_user['ndcg@20'])} users, the test part has {users}")
    means = {name: float(values.mean()) for name, values in per_user.items()}
    for name, value in source["valid"].items():
        if name in means and abs(means[name] - value) > 1e-9:
            sys.exit(f"{args.per_user} does not match {args.json} on {name}")
    known = DATASETS[args.dataset][args.model]
    verified = None
    if args.verify:  # refit here and compare user by user: the users line up, the values agree
        from recvae.workflow.fit import TrainSpec, fit_model

        fit = fit_model(_dev, TrainSpec.of(args.model, known), ProtocolSpec("none"))
        _means, mine = score(fit.model, test, args.dataset)
        gap = max(float(np.abs(mine[n] - per_user[n]).max()) for n in per_user)
        verified = f"refitted here: largest per-user difference {gap:.2e}"
        print(verified)
    if source.get("settings") and {k: float(v) for k, v in source["settings"].items()} != {
        k: float(v) for k, v in known.items() if k in source["settings"]
    }:
        sys.exit(f"{args.json} has settings {source['settings']}, expected {known}")
    payload = {
        "data": shape, "model": args.model, "settings": known,
        "tuning": "known tuned settings (tuned on the split scored here: the baseline's best "
        f"case); fitted by {args.origin} (same split, same evaluation code) and taken from "
        f"its per-user values, not refitted here",
        "verified": verified,
        "grid": [], "grid_seconds": 0.0, "seconds": source["fit_seconds"], "test": means,
        "test_users": users, "seed": 0, "adopted_from": [str(args.json), str(args.per_user)],
    }  # fmt: skip
    save_step(args.dataset, args.model, payload, per_user)


# ---- report --------------------------------------------------------------------------------


def load_per_user(dataset: str, name: str, step: dict[str, Any]) -> Any:
    """A step's per-user test values (WORK, git-ignored), refused when their means are not the
    step JSON's: per-user files from another checkout or an older run would pair wrong users."""
    path = WORK / dataset / f"{name}-per-user.npz"
    if not path.is_file():
        sys.exit(f"{path} not found: the per-user values of step {dataset}-{name} live beside "
                 "the checkout that ran it (benchmarks/work/ is not in git)")  # fmt: skip
    arrays = np.load(path)
    for metric, value in step["test"].items():
        if metric in arrays.files and abs(float(arrays[metric].mean()) - value) > 1e-6:
            sys.exit(f"{path}: mean {metric} {float(arrays[metric].mean()):.6f} is not the step "
                     f"JSON's {value:.6f}: these per-user values are from another run")  # fmt: skip
    return arrays


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    stderr = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    mean = float(diff.mean())
    return {"mean": mean, "stderr": stderr, "z": mean / stderr if stderr > 0 else 0.0}


def report(args: argparse.Namespace) -> None:
    steps = {p.stem: json.loads(p.read_text()) for p in sorted((REPORT / "steps").glob("*.json"))}
    results: dict[str, Any] = {"datasets": {}, "run_info": run_info()}
    lines = _header()
    rows, losses = [], []
    for dataset in DATASETS:
        found = {m: steps.get(f"{dataset}-{m}") for m in ("auto", "ease", "als")}
        if found["auto"] is None:
            name = recall_name(dataset)
            done = [f"{m.upper()} test {name} {st['test'][name]:.4f} / ndcg@20 "
                    f"{st['test']['ndcg@20']:.4f}"
                    for m, st in found.items() if st is not None]  # fmt: skip
            measured = f"; baselines measured: {'; '.join(done)}" if done else ""
            lines.append(f"- {dataset}: auto not run (its step was queued for the CPU lock and "
                         f"had not started by the hand-off){measured}")  # fmt: skip
            continue
        recall = recall_name(dataset)
        per_user = {m: load_per_user(dataset, m, step)
                    for m, step in found.items() if step is not None}  # fmt: skip
        entry: dict[str, Any] = {"steps": found, "paired": {}}
        for baseline in ("ease", "als"):
            if baseline not in per_user:
                continue
            entry["paired"][baseline] = {
                metric: paired(per_user["auto"][metric], per_user[baseline][metric])
                for metric in (recall, "ndcg@20")
            }
            for metric, numbers in entry["paired"][baseline].items():
                if numbers["mean"] <= 0:
                    losses.append(f"{dataset}: auto ({found['auto']['winner']}) below tuned "
                                  f"{baseline.upper()} on {metric} by {-numbers['mean']:.4f} "
                                  f"(paired stderr {numbers['stderr']:.4f})")  # fmt: skip
                elif numbers["z"] < 2:
                    losses.append(f"{dataset}: auto ahead of tuned {baseline.upper()} on {metric} "
                                  f"by {numbers['mean']:.4f}, within 2 paired standard errors "
                                  f"({numbers['stderr']:.4f}): not a clear win")  # fmt: skip
        results["datasets"][dataset] = entry
        rows.append((dataset, found, entry, recall))
    lines += _tables(rows)
    lines += _seeds(rows, steps)
    rotated_lines, results["rotated"], rotated_losses = _rotated_report()
    lines += rotated_lines
    losses += rotated_losses
    lines += _candidates(rows)
    lines += ["", "## Where a candidate lost", ""]
    lines += [f"- {line}" for line in losses] or ["- auto did not lose to a baseline anywhere."]
    lines.append("- Inside auto (validation, its own held-out users), every candidate below the "
                 "winner lost to it:")
    lines += _candidate_losses(rows)
    notes = REPORT / "notes.md"  # what ran differently from the plan, written by hand
    if notes.is_file():
        lines += ["", "## Notes", "", notes.read_text().strip()]
    (REPORT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    _plot(rows)
    (REPORT / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT / 'report.md'}")


def _header() -> list[str]:
    info = run_info()
    return [
        "# Generalisation: `recvae train --model auto` (defaults) vs tuned EASE and tuned ALS",
        "",
        "Written by `python benchmarks/generalisation.py report` from the step JSONs in `steps/`"
        " (commands in the script's docstring). Machine: "
        f"{info['machine'].get('cpu', '?')}, shared by several sessions (timings are noisy). "
        f"Versions: {json.dumps(info.get('versions', {}))}.",
        "",
        "Protocol: auto sees only the development part of each data set, holds out its own "
        "validation users from it (10%, but at least 1,000 where three quarters are left; seed "
        "= the run's seed), and when its first selection pass is cheap (it fits twice or more "
        "in the selection time) repeats it on up to 4 more disjoint held-out user sets "
        "('validation folds'); it picks by its default metric (ndcg@100, pooled over the folds' "
        "users) and refits the winner on the whole development part. Every model is then "
        "scored on the "
        "test part, which nothing here was chosen on: held-out users for ml-100k and ml-1m-half "
        "(strong generalisation), LightGCN's valid.txt for ml-1m-lightgcn and Gowalla. The "
        "baselines' known tuned settings were tuned on that same valid.txt (their best case). "
        "Seeds: test split 0; auto's validation split and every model's seed 0 in the main "
        "tables, 1 in 'Other seeds of auto'.",
        "",
    ]


def _tables(rows: list[Any]) -> list[str]:
    lines = ["", "## Test results", "",
             "| data set | model | settings | Recall@20 | NDCG@20 | fit seconds |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for dataset, found, _entry, recall in rows:
        for name, step in found.items():
            if step is None:
                lines.append(f"| {dataset} | {name} | not run | | | |")
                continue
            if name == "auto":
                settings = f"winner {step['winner']}, budget {step['budget']}"
                seconds = (f"{step['seconds']:.0f} (choose {step['selection_seconds']:.0f} + "
                           f"refit {step['refit_seconds'] or 0:.0f})")  # fmt: skip
            else:
                settings = f"{json.dumps(step['settings'])}; {step['tuning']}"
                seconds = f"{step['seconds']:.1f}"
                if step["grid_seconds"]:
                    seconds += f" (+ grid {step['grid_seconds']:.1f})"
            test = step["test"]
            lines.append(f"| {dataset} | {name} | {settings} | {test[recall]:.4f} | "
                         f"{test['ndcg@20']:.4f} | {seconds} |")  # fmt: skip
    lines += ["", "## Paired differences (auto minus baseline, per test user)", "",
              "| data set | baseline | metric | mean difference | paired stderr | mean / stderr |"
              " users |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for dataset, found, entry, _recall in rows:
        for baseline, metrics in entry["paired"].items():
            for metric, numbers in metrics.items():
                lines.append(f"| {dataset} | {baseline} | {metric} | {numbers['mean']:+.4f} | "
                             f"{numbers['stderr']:.4f} | {numbers['z']:+.1f} | "
                             f"{found['auto']['test_users']} |")  # fmt: skip
    lines.append("")
    lines.append(
        "Recall@20 is LightGCN's (hits / items held out) on ml-1m-lightgcn and Gowalla, "
        "the Mult-VAE paper's (hits / min(20, held out)) on ml-100k and ml-1m-half."
    )
    return lines


def _seeds(rows: list[Any], steps: dict[str, Any]) -> list[str]:
    """auto rerun with other seeds (its validation users and every model's seed): the winner
    and the paired difference against tuned EASE and ALS, beside the seed-0 run."""
    lines = ["", "## Other seeds of auto", "",
             "| data set | seed | winner | Recall@20 | NDCG@20 | NDCG@20 vs EASE (SE) "
             "| NDCG@20 vs ALS (SE) | fit seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    found_any = False
    for dataset, found, _entry, recall in rows:
        runs = {0: found["auto"]}
        for name, step in steps.items():
            if name.startswith(f"{dataset}-auto-seed"):
                runs[int(name.rsplit("seed", 1)[1])] = step
        if len(runs) == 1:
            continue
        found_any = True
        baselines = {m: load_per_user(dataset, m, steps[f"{dataset}-{m}"]) for m in ("ease", "als")}
        for seed, step in sorted(runs.items()):
            name = "auto" if seed == 0 else f"auto-seed{seed}"
            mine = load_per_user(dataset, name, step)["ndcg@20"]
            versus = [paired(mine, baselines[m]["ndcg@20"]) for m in ("ease", "als")]
            winner = step["winner"]
            blend = next((r for r in step["candidates"] if r["label"] == winner), {})
            if blend.get("members"):
                winner += f" ({' + '.join(blend['members'])})"
            lines.append(
                f"| {dataset} | {seed} | {winner} | {step['test'][recall]:.4f} | "
                f"{step['test']['ndcg@20']:.4f} | "
                + " | ".join(f"{v['mean']:+.4f} ({v['z']:+.1f})" for v in versus)
                + f" | {step['seconds']:.0f} |"
            )
    return lines if found_any else []


def _rotated_report() -> tuple[list[str], dict[str, Any], list[str]]:
    """The `rotate` steps: per-user test values concatenated over the test folds (every user
    once), paired differences auto minus each baseline, and what each fold's auto chose."""
    runs: dict[str, dict[str, dict[int, Any]]] = {}
    for path in sorted(ROTATED.glob("*.json")):
        step = json.loads(path.read_text())
        name = path.stem.split(f"{step['dataset']}-", 1)[1].rsplit("-fold", 1)[0]
        runs.setdefault(step["dataset"], {}).setdefault(name, {})[step["fold"]] = step
    if not runs:
        return [], {}, []
    lines = ["", "## Rotated test folds: every user tested once (`rotate`)", "",
             f"The users are split into {ROTATE_FOLDS} disjoint test folds (seed {TEST_SEED}); for "
             "each fold auto and the grid-tuned baselines see only the other folds' users and are "
             "scored on that fold's users (80% of their items in, 20% held out). Per-user values "
             "of all folds are concatenated.", "",
             "| data set | model | folds | users | Recall@20 | NDCG@20 | seconds (all folds) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    results: dict[str, Any] = {}
    losses: list[str] = []
    paired_lines = ["", "Paired differences over all rotated users (auto minus baseline):", "",
                    "| data set | auto seed | baseline | metric | mean difference | paired stderr "
                    "| mean / stderr | users |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    fold_lines = ["", "What each fold's auto chose (test NDCG@20 of that fold's users):", "",
                  "| data set | fold | test users | auto seed | winner | validation folds "
                  "| auto | EASE (l2) | ALS |", "| --- | --- | --- | --- | --- | --- | --- | --- "
                  "| --- |"]  # fmt: skip
    for dataset, names in runs.items():
        recall = recall_name(dataset)
        complete = {n: f for n, f in names.items() if sorted(f) == list(range(ROTATE_FOLDS))}
        values: dict[str, dict[str, np.ndarray]] = {}
        for name, folds in sorted(complete.items()):
            ids = [folds[i]["test_user_ids"] for i in range(ROTATE_FOLDS)]
            values[name] = {m: np.concatenate([np.asarray(folds[i]["per_user"][m])
                                               for i in range(ROTATE_FOLDS)])
                            for m in (recall, "ndcg@20")}  # fmt: skip
            values[name]["ids"] = np.concatenate(ids)
            seconds = sum(folds[i]["seconds"] + folds[i].get("grid_seconds", 0.0)
                          for i in range(ROTATE_FOLDS))  # fmt: skip
            lines.append(f"| {dataset} | {name} | {ROTATE_FOLDS} | {len(values[name]['ids'])} | "
                         f"{values[name][recall].mean():.4f} | "
                         f"{values[name]['ndcg@20'].mean():.4f} | {seconds:.0f} |")  # fmt: skip
        for name in sorted(set(names) - set(complete)):
            lines.append(f"| {dataset} | {name} | {len(names[name])} of {ROTATE_FOLDS} (folds "
                         f"{sorted(names[name])}): incomplete, not pooled | | | | |")  # fmt: skip
        entry: dict[str, Any] = {"models": {n: {m: float(v[m].mean()) for m in (recall, "ndcg@20")}
                                            | {"users": len(v["ids"])}
                                            for n, v in values.items()}, "paired": {}}  # fmt: skip
        for auto_name in [n for n in values if n.startswith("auto")]:
            for baseline in ("ease", "als"):
                if baseline not in values:
                    continue
                if not np.array_equal(values[auto_name]["ids"], values[baseline]["ids"]):
                    sys.exit(f"rotated {dataset}: {auto_name} and {baseline} test users differ")
                for metric in (recall, "ndcg@20"):
                    numbers = paired(values[auto_name][metric], values[baseline][metric])
                    entry["paired"][f"{auto_name} vs {baseline} {metric}"] = numbers
                    paired_lines.append(
                        f"| {dataset} | {auto_name} | {baseline} | {metric} | "
                        f"{numbers['mean']:+.4f} | {numbers['stderr']:.4f} | {numbers['z']:+.1f} "
                        f"| {len(values[auto_name]['ids'])} |"
                    )
                    where = f"{dataset} rotated ({auto_name}, all users)"
                    if numbers["mean"] <= 0:
                        losses.append(f"{where}: auto below tuned {baseline.upper()} on {metric} "
                                      f"by {-numbers['mean']:.4f} (paired stderr "
                                      f"{numbers['stderr']:.4f})")  # fmt: skip
                    elif numbers["z"] < 2:
                        losses.append(f"{where}: auto ahead of tuned {baseline.upper()} on "
                                      f"{metric} by {numbers['mean']:.4f}, within 2 paired "
                                      f"standard errors ({numbers['stderr']:.4f}): not a clear "
                                      "win")  # fmt: skip
        for single in [n for n in values if n.startswith("auto1fold")]:
            folded = single.replace("auto1fold", "auto")
            if folded not in values:
                continue
            for metric in (recall, "ndcg@20"):  # what the validation folds changed
                numbers = paired(values[folded][metric], values[single][metric])
                entry["paired"][f"{folded} vs {single} {metric}"] = numbers
                paired_lines.append(
                    f"| {dataset} | {folded} | {single} (auto, one validation fold) | {metric} | "
                    f"{numbers['mean']:+.4f} | {numbers['stderr']:.4f} | {numbers['z']:+.1f} "
                    f"| {len(values[folded]['ids'])} |"
                )
        for fold in range(ROTATE_FOLDS):
            base = {b: names.get(b, {}).get(fold) for b in ("ease", "als")}
            for auto_name in sorted(n for n in names if n.startswith("auto")):
                step = names[auto_name].get(fold)
                if step is None:
                    continue
                winner = step["winner"]
                row = next((r for r in step["candidates"] if r["label"] == winner), {})
                if row.get("members"):
                    winner += f" ({' + '.join(row['members'])}, weights {row['weights']})"
                ease = ""
                if base["ease"]:
                    tuned = base["ease"]
                    ease = f"{tuned['test']['ndcg@20']:.4f} ({tuned['settings']['l2']:g})"
                als = f"{base['als']['test']['ndcg@20']:.4f}" if base["als"] else ""
                fold_lines.append(
                    f"| {dataset} | {fold} | {step['test_users']} | {step['seed']} | {winner} | "
                    f"{step.get('folds', 1)} | {step['test']['ndcg@20']:.4f} | {ease} | {als} |"
                )
        results[dataset] = entry
    return lines + paired_lines + fold_lines, results, losses


def _candidates(rows: list[Any]) -> list[str]:
    lines = ["", "## What auto tried (validation on its own held-out users)", ""]
    for dataset, found, _entry, _recall in rows:
        step = found["auto"]
        metric = step["metric"]
        commit = step["run_info"]["git_commit"][:7]
        title = f"{dataset} (budget {step['budget']}, winner {step['winner']}, commit {commit})"
        folds = step.get("folds", 1)
        column = f"validation {metric}"
        if folds > 1:
            column += f" pooled over {folds} folds ({sum(step['fold_users'])} users)"
            title += (f"; {folds} validation folds of {step['fold_users'][0]} users, first "
                      f"pass {step['first_pass_seconds']:.0f} s")  # fmt: skip
        elif "folds" in step:
            title += f"; one validation fold (first pass {step['first_pass_seconds']:.0f} s)"
        lines += [f"### {title}",
                  "",
                  f"| candidate | status | {column} | fit seconds | notes |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in step["candidates"]:
            value = f"{row['metrics'][metric]:.4f}" if row["status"] == "fitted" else ""
            seconds = f"{row['fit_seconds']:.0f}" if row.get("fit_seconds") is not None else ""
            notes = row.get("reason") or ""
            if row.get("epochs_run"):
                notes = (f"{row['epochs_run']} epochs ({row['stopped']}), best "
                         f"{row['best_epoch']}")  # fmt: skip
            if row.get("weights"):
                notes = f"{' + '.join(row['members'])}, weights {row['weights']}"
            if row.get("pairs"):
                tried = "; ".join(f"{' + '.join(p['members'])} {p[metric]:.4f}"
                                  for p in row["pairs"])  # fmt: skip
                notes += f" (pairs tried: {tried})"
            if row.get("thirds"):
                tried = "; ".join(f"+ {p['members'][-1]} {p[metric]:.4f}" for p in row["thirds"])
                notes += f" (third members tried: {tried})"
            if len(row.get("fold_metrics") or []) > 1:
                notes += "; per fold " + " / ".join(f"{v:.4f}" for v in row["fold_metrics"])
                if row.get("fold_best_epochs"):
                    notes += (f"; best epochs {row['fold_best_epochs']}, refit with "
                              f"{row['refit_epochs']}")  # fmt: skip
            lines.append(f"| {row['label']} | {row['status']} | {value} | {seconds} | {notes} |")
        lines.append("")
    return lines


def _candidate_losses(rows: list[Any]) -> list[str]:
    """Plainly: which candidate lost to which within auto's own choice."""
    lines = []
    for dataset, found, _entry, _recall in rows:
        step = found["auto"]
        metric = step["metric"]
        fitted = [r for r in step["candidates"] if r["status"] == "fitted"]
        skipped = [r["label"] for r in step["candidates"] if r["status"] == "skipped"]
        order = sorted(fitted, key=lambda r: -r["metrics"][metric])
        ranking = " > ".join(f"{r['label']} {r['metrics'][metric]:.4f}" for r in order)
        lines.append(f"  - {dataset} (validation {metric}): {ranking}"
                     + (f"; skipped: {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    return lines


def _plot(rows: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric_of in zip(axes, (lambda r: r, lambda r: "ndcg@20"), strict=True):
        labels, series = [], {"auto": [], "ease": [], "als": []}
        for dataset, found, _entry, recall in rows:
            metric = metric_of(recall)
            labels.append(dataset)
            for name in series:
                step = found.get(name)
                series[name].append(step["test"][metric] if step else np.nan)
        x = np.arange(len(labels))
        for offset, (name, values) in zip((-0.27, 0, 0.27), series.items(), strict=True):
            ax.bar(x + offset, values, 0.27, label=name)
        ax.set_xticks(x, labels, rotation=15)
        ax.set_title("Recall@20" if metric_of("r") == "r" else "NDCG@20")
        ax.legend()
    fig.suptitle("Test: auto (defaults) vs tuned EASE and tuned ALS")
    fig.tight_layout()
    fig.savefig(REPORT / "test-metrics.png", dpi=120)
    plt.close(fig)
    # paired differences, auto minus each baseline, with 2 paired standard errors
    fig, ax = plt.subplots(figsize=(11, 4))
    labels, means, errors = [], [], []
    for dataset, _found, entry, _recall in rows:
        for baseline, metrics in entry["paired"].items():
            for metric, numbers in metrics.items():
                labels.append(f"{dataset}\nvs {baseline} {metric.split('@')[0].split('_')[0]}")
                means.append(numbers["mean"])
                errors.append(2 * numbers["stderr"])
    x = np.arange(len(labels))
    colours = ["tab:green" if m - e > 0 else "tab:red" if m + e < 0 else "tab:grey"
               for m, e in zip(means, errors, strict=True)]  # fmt: skip
    ax.bar(x, means, yerr=errors, color=colours, capsize=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("auto minus baseline (@20)")
    ax.set_title("Per-user paired differences on test, +-2 standard errors")
    fig.tight_layout()
    fig.savefig(REPORT / "paired-differences.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    step = sub.add_parser("auto")
    step.add_argument("dataset", choices=list(DATASETS))
    step.add_argument("--budget", help="default: auto's own (scaled with the data)")
    step.add_argument("--seed", type=int, default=0,
                      help="auto's validation split and every model's seed (0: the main run)")
    step.set_defaults(run=run_auto)
    step = sub.add_parser("baselines")
    step.add_argument("dataset", choices=list(DATASETS))
    step.add_argument("--models", default="ease,als")
    step.add_argument("--tune-protocol", choices=["auto", "weak"], default="auto",
                      help="the grid's validation split; weak: an extra step <model>-weaktuned")
    step.set_defaults(run=run_baselines)
    step = sub.add_parser("adopt")
    step.add_argument("dataset", choices=list(DATASETS))
    step.add_argument("model", choices=["ease", "als"])
    step.add_argument("--json", required=True, help="the other benchmark's step JSON")
    step.add_argument("--per-user", required=True, help="its per-user .npz")
    step.add_argument("--origin", default="benchmarks/joint_bench.py (branch h5)")
    step.add_argument("--verify", action="store_true", help="refit here and compare per user")
    step.set_defaults(run=run_adopt)
    step = sub.add_parser("rotate")
    step.add_argument("dataset", choices=[d for d, s in DATASETS.items() if s.get("test_users")])
    step.add_argument("--models", default="ease,als", help="auto, ease, als (comma-separated)")
    step.add_argument("--folds", default="", help=f"e.g. 0,1 (default all {ROTATE_FOLDS})")
    step.add_argument("--seed", type=int, default=0, help="auto's seed")
    step.add_argument("--budget", help="auto's budget; default: its own")
    step.add_argument("--one-fold", action="store_true",
                      help="ablation: auto with one validation fold (as before the fold rule)")
    step.set_defaults(run=run_rotate)
    sub.add_parser("report").set_defaults(run=report)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
