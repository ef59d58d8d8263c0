"""Probe (issue #16): can a deep path trained on the residual of a FIXED, full EASE beat EASE?

The joint model (recvae.models.joint) trains its deep path beside a linear path started at the
EASE closed form; on ml-1m-lightgcn every variant stayed below tuned EASE
(benchmarks/reports/joint-2026-12-02). One suspected cause: the linear path's logits for a
training user come from an EASE fitted on that very user, so the deep path learns the in-sample
residual, which is not what EASE misses on held-out items. This probe tests that, and a second
objective, with the smallest model that can show it (dense tensors, ml-1m's 3.6k items):

    training logits = deep(dropout(x)) + s * x B_u + b      (b: an item bias, not scored)
    scores          = w * deep(x) + s * x B                 (w swept at scoring)

- `B` is full EASE (l2 = 1000, the tuned value); `B_u` is B itself ("insample") or, for user u,
  an EASE fitted without u's fold of K = 5 user folds ("oof": stacking);
- `--loss softmax`: Mult-VAE's multinomial likelihood, s fitted on training users (lowest NLL);
  `--loss mse`: EASE's own squared error, s = 1 (the deep path fits the regression residual);
- the deep path is Mult-DAE's network (600-200-600, tanh, dropout 0.5 on the normalised input),
  its output layer started at zero, Adam lr 1e-3, batch 500.

Each validation (every 2nd epoch) records NDCG@20 and Recall@20 on valid.txt for every w. The
best (epoch, w) is chosen on the users it is scored on: an optimistic upper bound, which is
what a negative result needs. Writes <out>/residual-probe-<variant>-<loss>.json.

    python benchmarks/joint_residual_probe.py DATA --variant oof --loss mse --epochs 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).parent))
from beyond import load_dataset

from recvae.evaluate import evaluate
from recvae.provenance import run_info

OUT = Path("benchmarks/reports/joint-2026-12-02")
WEIGHTS = (0.0, 0.25, 0.5, 1.0)
FOLDS = 5
HIDDEN, LATENT, BATCH = 600, 200, 500


def ease(x: torch.Tensor, l2: float) -> torch.Tensor:
    """EASE's closed form (Steck 2019) in float64 through torch (MKL), zero diagonal."""
    gram = (x.T @ x).double() + l2 * torch.eye(x.shape[1], dtype=torch.float64)
    inverse = torch.linalg.inv(gram)
    weights = (-inverse / torch.diag(inverse)).float()
    weights.fill_diagonal_(0.0)
    return weights


def training_logits(x: torch.Tensor, full: torch.Tensor, variant: str, l2: float,
                    seed: int) -> torch.Tensor:  # fmt: skip
    """Each training user's linear logits: from the full EASE, or out of fold."""
    if variant == "insample":
        return x @ full
    fold = np.random.default_rng(seed).integers(0, FOLDS, x.shape[0])
    out = torch.empty(x.shape)
    for k in range(FOLDS):
        inside = torch.from_numpy(fold != k)
        out[~inside] = x[~inside] @ ease(x[inside], l2)
    return out


def fitted_scale(x: torch.Tensor, logits: torch.Tensor) -> float:
    """The scale s whose softmax(s x logits) fits 2,000 training users best (lowest NLL)."""
    rows = slice(0, min(2000, x.shape[0]))

    def nll(scale: float) -> float:
        return float(-(x[rows] * torch.log_softmax(scale * logits[rows], 1)).sum())

    return float(min(np.geomspace(1.0, 100.0, 30), key=nll))


class Deep(torch.nn.Module):
    """Mult-DAE's network with its output layer at zero, plus a training-only item bias."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.encode = torch.nn.Sequential(
            torch.nn.Linear(n_items, HIDDEN), torch.nn.Tanh(),
            torch.nn.Linear(HIDDEN, LATENT), torch.nn.Tanh(),
        )  # fmt: skip
        self.hidden = torch.nn.Linear(LATENT, HIDDEN)
        self.output = torch.nn.Linear(HIDDEN, n_items)
        torch.nn.init.zeros_(self.output.weight)
        torch.nn.init.zeros_(self.output.bias)
        self.bias = torch.nn.Parameter(torch.zeros(n_items))

    def forward(self, x: torch.Tensor, dropout: bool) -> torch.Tensor:
        x = torch.nn.functional.normalize(x, dim=1)
        x = torch.nn.functional.dropout(x, 0.5, dropout)
        return self.output(torch.tanh(self.hidden(self.encode(x))))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    split = load_dataset(args.data).split
    train = sp.csr_matrix(split.train, dtype=np.float32)
    train.data[:] = 1.0
    x = torch.from_numpy(train.toarray())
    started = time.perf_counter()
    full = ease(x, args.l2)
    linear = training_logits(x, full, args.variant, args.l2, args.seed)
    ease_seconds = time.perf_counter() - started
    scale = 1.0 if args.loss == "mse" else fitted_scale(x, linear)
    model = Deep(x.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def scorer(weight: float) -> Any:
        def score(history: sp.csr_matrix) -> torch.Tensor:
            h = torch.from_numpy(history.toarray().astype(np.float32))
            with torch.no_grad():
                return weight * model(h, False) + scale * (h @ full)

        return score

    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        tick, total = time.perf_counter(), 0.0
        order = torch.randperm(x.shape[0])
        for start in range(0, x.shape[0], BATCH):
            users = order[start : start + BATCH]
            batch = x[users]
            logits = model(batch, True) + scale * linear[users] + model.bias
            if args.loss == "mse":
                loss = ((batch - logits) ** 2).sum(1).mean()
            else:
                loss = -(batch * torch.log_softmax(logits, 1)).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        if epoch % 2 and epoch != args.epochs:
            continue
        model.eval()
        row: dict[str, Any] = {"epoch": epoch, "loss": total,
                               "train_seconds": round(time.perf_counter() - tick, 2)}  # fmt: skip
        for weight in WEIGHTS:
            means = evaluate(scorer(weight), split.valid, ks=[20]).means
            row[f"w={weight}"] = {"ndcg@20": means["ndcg@20"],
                                  "recall_lightgcn@20": means["recall_lightgcn@20"]}  # fmt: skip
        print(json.dumps(row), flush=True)
        history.append(row)
    best = max(((r["epoch"], w, r[f"w={w}"]) for r in history for w in WEIGHTS),
               key=lambda t: t[2]["ndcg@20"])  # fmt: skip
    return {"variant": args.variant, "loss": args.loss, "l2": args.l2, "scale": scale,
            "folds": FOLDS if args.variant == "oof" else None, "epochs": args.epochs,
            "seed": args.seed, "threads": args.threads, "ease_seconds": round(ease_seconds, 1),
            "best_on_scored_users": {"epoch": best[0], "w": best[1], **best[2]},
            "history": history, "run_info": run_info()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the ml-1m-lightgcn folder (train.txt, valid.txt)")
    p.add_argument("--variant", choices=("insample", "oof"), default="oof")
    p.add_argument("--loss", choices=("softmax", "mse"), default="mse")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--l2", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"residual-probe-{args.variant}-{args.loss}.json"
    (out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
