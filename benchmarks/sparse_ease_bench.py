"""Sparse EASE (neighbourhood EASE) against exact EASE: quality, fit time, peak memory, nnz.

Trains on LightGCN's train.txt and reports on valid.txt (Recall@20 = hits / number held out,
LightGCN's definition, and NDCG@20), as benchmarks/beyond.py does. Each fit runs in its own
process, so its peak resident memory (VmHWM) is its own; each writes one JSON under --out, and
`report` gathers them into report.md, results.json and a plot:

    python benchmarks/sparse_ease_bench.py sweep ml-1m /work/shared/datasets/ml-1m-lightgcn \
        --l2 1000 --neighbours 50,200,1000 --exact --out benchmarks/reports/sparse-ease-2026-12-02
    python benchmarks/sparse_ease_bench.py sweep gowalla /work/shared/datasets/gowalla-lightgcn \
        --l2 100 --neighbours 50,200 --out benchmarks/reports/sparse-ease-2026-12-02
    python benchmarks/sparse_ease_bench.py report --out benchmarks/reports/sparse-ease-2026-12-02

Run each sweep under the shared CPU lock (`flock /work/brief/cpu.lock ...`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recvae.bench.runs import memory_status
from recvae.provenance import run_info

METRICS = ("recall_lightgcn@20", "ndcg@20")
# Exact EASE on Gowalla is not rerun (about 12 minutes and 7+ GB): quoted from its report.
GOWALLA_EXACT_SOURCE = "benchmarks/reports/gowalla-2026-11-28"


def fit_one(args: argparse.Namespace) -> None:
    """Fit one setting on train, evaluate on valid; write <out>/<dataset>/<run>.json."""
    sys.path.insert(0, str(Path(__file__).parent))
    from beyond import load_dataset  # the LightGCN presplit loader the other reports use

    from recvae.data.split import ProtocolSpec, make_split
    from recvae.evaluate import evaluate
    from recvae.models import build_model

    dataset = load_dataset(args.data)
    split = make_split(dataset, ProtocolSpec("presplit"))  # what `recvae train` fits on
    settings: dict[str, Any] = {"l2": args.l2}
    if args.model == "sparse_ease":
        settings.update(neighbours=args.neighbours, min_cooccurrence=args.min_cooccurrence)
    model: Any = build_model(args.model, settings)
    before = memory_status().get("VmRSS")
    started = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - started
    fit_peak = memory_status().get("VmHWM")  # the fit's own high-water mark, before scoring
    started = time.perf_counter()
    evaluation = evaluate(model, split.valid, ks=[20], batch_size=1000)
    payload: dict[str, Any] = {
        "dataset": args.dataset,
        "run": args.run,
        "model": args.model,
        "settings": settings,
        "n_users": dataset.matrix.shape[0],
        "n_items": dataset.matrix.shape[1],
        "train_nnz": int(split.train.nnz),
        "valid": {m: evaluation.means[m] for m in METRICS},
        "valid_stderr": {m: evaluation.stderrs[m] for m in METRICS},
        "fit_seconds": round(fit_seconds, 2),
        "evaluate_seconds": round(time.perf_counter() - started, 2),
        "rss_before_fit_mib": before,
        "fit_peak_rss_mib": fit_peak,
        "peak_rss_mib": memory_status().get("VmHWM"),  # fit, then scoring 1000 users at a time
    }
    if args.model == "sparse_ease":
        from recvae.models.sparse_ease import estimate_fit_bytes

        train = split.train
        payload["model_nnz"] = int(model.columns.nnz)
        payload["model_mib"] = round(model.memory_bytes() / 2**20, 1)
        payload["stats"] = model.stats
        payload["estimated_fit_mib"] = round(
            estimate_fit_bytes(*train.shape, train.nnz, args.neighbours) / 2**20, 1
        )
    else:
        n = dataset.matrix.shape[1]
        payload["model_nnz"] = n * n
        payload["model_mib"] = round(n * n * 4 / 2**20, 1)
    payload["run_info"] = run_info()
    out = Path(args.out) / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.run}.json").write_text(json.dumps(payload, indent=1, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k != "run_info"}), flush=True)


def synthetic(args: argparse.Namespace) -> None:
    """Fit time and peak memory on a synthetic power-law catalogue (no quality: random data).

    Item i is drawn with probability ~ (i + 1)^-exponent, each user takes `per_user` draws
    (duplicates merged): a few blockbusters and a long tail, as in the scale benchmark's data.
    """
    import numpy as np
    import scipy.sparse as sp

    from recvae.models.sparse_ease import SparseEASE, estimate_fit_bytes

    rng = np.random.default_rng(0)
    weights = (np.arange(args.items) + 1.0) ** -args.exponent
    cdf = np.cumsum(weights / weights.sum())
    cols = np.searchsorted(cdf, rng.random(args.users * args.per_user)).clip(0, args.items - 1)
    rows = np.repeat(np.arange(args.users), args.per_user)
    data = np.ones(len(cols), dtype=np.float32)
    train = sp.csr_matrix((data, (rows, cols)), shape=(args.users, args.items))
    train.data[:] = 1.0  # merged duplicates count once
    del rows, cols, data
    before = memory_status().get("VmRSS")
    started = time.perf_counter()
    model = SparseEASE(l2=args.l2, neighbours=args.neighbours).fit(train)
    seconds = time.perf_counter() - started
    payload = {
        "dataset": f"synthetic-{args.items}",
        "run": f"sparse-m{args.neighbours}",
        "model": "sparse_ease",
        "settings": {"l2": args.l2, "neighbours": args.neighbours, "min_cooccurrence": 1.0},
        "n_users": args.users,
        "n_items": args.items,
        "nnz": int(train.nnz),
        "exponent": args.exponent,
        "fit_seconds": round(seconds, 2),
        "rss_before_fit_mib": before,
        "peak_rss_mib": memory_status().get("VmHWM"),
        "estimated_fit_mib": round(
            estimate_fit_bytes(args.users, args.items, train.nnz, args.neighbours) / 2**20, 1
        ),
        "model_nnz": int(model.columns.nnz),
        "model_mib": round(model.memory_bytes() / 2**20, 1),
        "stats": model.stats,
        "run_info": run_info(),
    }
    out = Path(args.out) / "synthetic"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"items-{args.items}-m{args.neighbours}.json").write_text(json.dumps(payload, indent=1))
    print(json.dumps({k: v for k, v in payload.items() if k != "run_info"}), flush=True)


def sweep(args: argparse.Namespace) -> None:
    """One process per setting (so each peak RSS is that fit's): exact EASE first if asked."""
    runs: list[list[str]] = []
    if args.exact:
        runs.append(["--model", "ease", "--run", f"ease-l2-{args.l2:g}"])
    for m in (int(x) for x in args.neighbours.split(",")):
        name = f"sparse-l2-{args.l2:g}-m{m}-c{args.min_cooccurrence:g}"
        runs.append(["--model", "sparse_ease", "--neighbours", str(m), "--run", name])
    for extra in runs:
        command = [
            sys.executable,
            __file__,
            "one",
            args.dataset,
            args.data,
            "--l2",
            str(args.l2),
            "--min-cooccurrence",
            str(args.min_cooccurrence),
            "--out",
            args.out,
            *extra,
        ]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def report(args: argparse.Namespace) -> None:
    """Gather every JSON under --out into results.json, report.md and the plot."""
    out = Path(args.out)
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*/*.json"))]
    runs = [r for r in runs if "valid" in r]  # quality runs; synthetic/ has fit cost only
    synthetic = [json.loads(p.read_text()) for p in sorted(out.glob("synthetic/*.json"))]
    quoted = (
        json.loads((out / "quoted.json").read_text()) if (out / "quoted.json").is_file() else []
    )
    (out / "results.json").write_text(
        json.dumps({"runs": runs, "quoted": quoted, "synthetic": synthetic}, indent=1)
    )
    plot(runs, quoted, out / "quality-vs-neighbours.png")
    notes = out / "notes.md"
    text = [render(runs, quoted, synthetic), notes.read_text() if notes.is_file() else ""]
    (out / "report.md").write_text("\n".join(text))
    print(f"wrote {out / 'results.json'}, report.md (tables, then notes.md) and the plot")


def render(runs: list[dict[str, Any]], quoted: list[dict[str, Any]], synthetic: list[dict]) -> str:
    """The measured tables of report.md, from the run JSONs (nothing typed by hand)."""
    with_info = [r for r in runs + synthetic if "run_info" in r]
    info = with_info[0]["run_info"]
    commits = sorted({r["run_info"]["git_commit"] for r in with_info})
    machine = info["machine"]
    lines = [
        "# Sparse EASE against exact EASE (2026-12-02)",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['platform']}; runs held the shared CPU lock (other sessions' light work ran)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- Git commits of the runs: {', '.join(commits)}",
        "- Data: LightGCN train.txt -> valid.txt (`/work/shared/datasets/<name>`); Recall@20 is "
        "LightGCN's (hits / number held out), NDCG@20; means over validation users +- std error",
        "- Each fit is its own process. *fit peak*: the process's VmHWM right after `fit` "
        "(interpreter, data and fit); *peak*: after scoring too (1000 users per batch); *before*: "
        "resident size before the fit. Times are wall-clock on a shared 2-core machine.",
        "",
        "| data | model | l2 | neighbours | Recall@20 | NDCG@20 | fit s | eval s | before MiB "
        "| fit peak MiB | peak MiB | model nnz | model MiB | larger-ridge items |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs + quoted, key=_order):
        st = r.get("stats", {})
        settings = r["settings"]
        lines.append(
            f"| {r['dataset']} | {r['model']}{_mark(r)} "
            f"| {settings['l2']:g} | {settings.get('neighbours', 'all')} "
            f"| {_metric(r, 'recall_lightgcn@20')} | {_metric(r, 'ndcg@20')} "
            f"| {r['fit_seconds']:.1f} | {_num(r.get('evaluate_seconds'))} "
            f"| {_num(r.get('rss_before_fit_mib'))} | {_num(r.get('fit_peak_rss_mib'))} "
            f"| {_num(r.get('peak_rss_mib'))} | {_num(r.get('model_nnz'))} "
            f"| {r.get('model_mib', '')} | {st.get('larger_ridge_items', '')} |"
        )
    for q in quoted:
        lines.append(f"\nQuoted, not rerun ({q['dataset']}): {q['source']}.")
    for note in sorted({r["source_note"] for r in runs if "source_note" in r}):
        lines.append(f"\n\\* {note}.")
    if synthetic:
        lines += [
            "",
            "## Fit cost on synthetic power-law catalogues (no quality: random data)",
            "",
            "Item i drawn with probability ~ (i + 1)^-exponent, `per_user` draws per user, "
            "duplicates merged (`sparse_ease_bench.py synthetic`).",
            "",
            "| items | users | nnz | neighbours | fit s | prune s | solve s | before MiB "
            "| peak MiB | estimate MiB | model nnz | model MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(synthetic, key=lambda r: (r["n_items"], r["settings"]["neighbours"])):
            st = r["stats"]
            lines.append(
                f"| {r['n_items']} | {r['n_users']} | {r['nnz']} | {r['settings']['neighbours']} "
                f"| {r['fit_seconds']:.1f} | {st['prune_seconds']:.1f} | {st['solve_seconds']:.1f} "
                f"| {r['rss_before_fit_mib']:.0f} | {r['peak_rss_mib']:.0f} "
                f"| {r['estimated_fit_mib']:.0f} | {r['model_nnz']} | {r['model_mib']} |"
            )
    lines += ["", "![quality and fit time against neighbours](quality-vs-neighbours.png)", ""]
    return "\n".join(lines)


def _order(r: dict[str, Any]) -> tuple:
    s = r["settings"]
    return (r["dataset"] != "ml-1m", r["model"] != "ease", s.get("neighbours", 0), s["l2"])


def _mark(r: dict[str, Any]) -> str:
    return " (quoted)" if "source" in r else " \\*" if "source_note" in r else ""


def _metric(r: dict[str, Any], name: str) -> str:
    return f"{r['valid'][name]:.4f} +- {r['valid_stderr'][name]:.4f}"


def _num(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def plot(runs: list[dict[str, Any]], quoted: list[dict[str, Any]], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7.5), squeeze=False)
    for column, name in enumerate(datasets):
        mine = [r for r in runs if r["dataset"] == name]
        exact = [r for r in mine if r["model"] == "ease"] + [
            q for q in quoted if q["dataset"] == name
        ]
        groups = sorted(
            {(r["settings"]["l2"], r["settings"]["min_cooccurrence"]) for r in mine
             if r["model"] == "sparse_ease"}
        )  # fmt: skip
        for l2, c in groups:
            sparse = sorted(
                (r for r in mine if r["model"] == "sparse_ease"
                 and (r["settings"]["l2"], r["settings"]["min_cooccurrence"]) == (l2, c)),
                key=lambda r: r["settings"]["neighbours"],
            )  # fmt: skip
            m = [r["settings"]["neighbours"] for r in sparse]
            label = f"sparse EASE l2={l2:g}, min_cooccurrence {c:g}"
            axes[0][column].plot(m, [r["valid"]["ndcg@20"] for r in sparse], "o-", label=label)
            axes[1][column].plot(m, [r["fit_seconds"] for r in sparse], "o-", label=label)
        for e in exact:
            exact_label = (
                f"exact EASE l2={e['settings']['l2']:g}{' (quoted)' if 'source' in e else ''}"
            )
            axes[0][column].axhline(e["valid"]["ndcg@20"], color="k", ls="--", label=exact_label)
            axes[1][column].axhline(e["fit_seconds"], color="k", ls="--", label=exact_label)
        axes[0][column].set(title=f"{name}: NDCG@20 on valid", xscale="log", xlabel="neighbours")
        axes[1][column].set(title=f"{name}: fit seconds", xscale="log", yscale="log",
                            xlabel="neighbours")  # fmt: skip
        for axis in axes[:, column]:
            axis.legend(fontsize=7)
            axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(file, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("one", "sweep"):
        command = commands.add_parser(name)
        command.add_argument("dataset")
        command.add_argument("data")
        command.add_argument("--l2", type=float, required=True)
        command.add_argument("--min-cooccurrence", type=float, default=1.0)
        command.add_argument("--out", required=True)
    one = commands.choices["one"]
    one.add_argument("--model", choices=["ease", "sparse_ease"], required=True)
    one.add_argument("--neighbours", type=int, default=200)
    one.add_argument("--run", required=True)
    many = commands.choices["sweep"]
    many.add_argument("--neighbours", default="50,200,1000", help="comma-separated counts")
    many.add_argument("--exact", action="store_true", help="also fit exact EASE (same l2)")
    synth = commands.add_parser("synthetic")
    synth.add_argument("--items", type=int, required=True)
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--per-user", type=int, default=100)
    synth.add_argument("--exponent", type=float, default=1.0)
    synth.add_argument("--neighbours", type=int, default=100)
    synth.add_argument("--l2", type=float, default=100.0)
    synth.add_argument("--out", required=True)
    gather = commands.add_parser("report")
    gather.add_argument("--out", required=True)
    args = parser.parse_args()
    {"one": fit_one, "sweep": sweep, "synthetic": synthetic, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
