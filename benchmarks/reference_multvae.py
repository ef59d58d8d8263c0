"""A plain, dense transcription of the paper's Mult-VAE notebook, used only to cross-check
recvae's fast implementation on the same data (issue #3: "a peer implementation with the paper's
defaults reaches NDCG@20 0.193").

    python benchmarks/reference_multvae.py ../shared/datasets/ml-1m-lightgcn --seed 0 \
        --out benchmarks/reports/vae-2026-11-28/reference/seed0.jsonl

Nothing from recvae is imported: the LightGCN files are read by hand, the model is the
notebook's graph written in PyTorch with a dense users x items input (Xavier-uniform weights,
biases ~ N(0, 0.001), tanh, L2-normalise then dropout 0.5, multinomial log-likelihood,
beta = min(0.2, step / 200,000) unless --anneal-steps says otherwise, Adam 1e-3, batch 500,
global torch seed), and the metrics are the paper's NDCG@K and LightGCN's Recall@K written
out with numpy. One JSON line per epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def read_lightgcn(path: Path) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        if tokens:
            rows[int(tokens[0])] = [int(t) for t in tokens[1:]]
    return rows


def dense(rows: dict[int, list[int]], n_users: int, n_items: int) -> np.ndarray:
    matrix = np.zeros((n_users, n_items), dtype=np.float32)
    for user, items in rows.items():
        matrix[user, items] = 1.0
    return matrix


class NotebookVAE(torch.nn.Module):
    """q: I -> 600 -> 2 x 200; p: 200 -> 600 -> I (the notebook's MultiVAE)."""

    def __init__(self, n_items: int, hidden: int = 600, latent: int = 200) -> None:
        super().__init__()
        self.latent = latent
        self.q = torch.nn.ModuleList(
            [torch.nn.Linear(n_items, hidden), torch.nn.Linear(hidden, 2 * latent)]
        )
        self.p = torch.nn.ModuleList(
            [torch.nn.Linear(latent, hidden), torch.nn.Linear(hidden, n_items)]
        )
        for layer in [*self.q, *self.p]:
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    def forward(self, x: torch.Tensor, keep_prob: float, training: bool):
        h = F.dropout(F.normalize(x, dim=1), p=1.0 - keep_prob, training=keep_prob < 1.0)
        h = torch.tanh(self.q[0](h))
        h = self.q[1](h)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        std = torch.exp(0.5 * logvar)
        kl = torch.mean(torch.sum(0.5 * (-logvar + torch.exp(logvar) + mu**2 - 1), dim=1))
        z = mu + (torch.randn_like(std) * std if training else 0.0)
        logits = self.p[1](torch.tanh(self.p[0](z)))
        return logits, kl


def metrics(scores: np.ndarray, heldout: np.ndarray, ks=(20, 50, 100)) -> dict[str, float]:
    """Paper NDCG@K (ideal over min(K, n) hits), LightGCN recall (hits / n), paper recall."""
    out: dict[str, float] = {}
    n_held = heldout.sum(1)
    users = n_held > 0
    order = np.argsort(-scores, axis=1)
    for k in ks:
        top = order[:, :k]
        hits = np.take_along_axis(heldout, top, axis=1)
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        dcg = (hits * discounts).sum(1)
        idcg = np.array([discounts[: int(min(n, k))].sum() for n in n_held])
        out[f"ndcg@{k}"] = float((dcg[users] / idcg[users]).mean())
        out[f"recall_lightgcn@{k}"] = float((hits.sum(1)[users] / n_held[users]).mean())
        out[f"recall@{k}"] = float((hits.sum(1)[users] / np.minimum(k, n_held[users])).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seed", type=int, default=98765)  # the notebook's seed
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--anneal-steps", type=int, default=200_000, help="the notebook's value")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    train_rows = read_lightgcn(args.data / "train.txt")
    valid_rows = read_lightgcn(args.data / "valid.txt")
    n_users = max(max(train_rows), max(valid_rows)) + 1
    n_items = 1 + max(i for rows in (train_rows, valid_rows) for r in rows.values() for i in r)
    train = dense(train_rows, n_users, n_items)
    valid = dense(valid_rows, n_users, n_items)
    train_users = np.array(sorted(u for u, r in train_rows.items() if r))

    model = NotebookVAE(n_items)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as log:
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            np.random.shuffle(train_users)
            model.train()
            for start in range(0, len(train_users), 500):
                x = torch.from_numpy(train[train_users[start : start + 500]])
                beta = min(0.2, step / args.anneal_steps)
                logits, kl = model(x, keep_prob=0.5, training=True)
                nll = -torch.mean(torch.sum(F.log_softmax(logits, dim=1) * x, dim=1))
                loss = nll + beta * kl
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
            train_seconds = time.perf_counter() - started
            model.eval()
            with torch.no_grad():
                logits, _ = model(torch.from_numpy(train), keep_prob=1.0, training=False)
            scores = logits.numpy()
            scores[train > 0] = -np.inf
            row = {"epoch": epoch, "train_seconds": train_seconds, **metrics(scores, valid)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
