"""`recvae demo`: the whole pipeline on a synthetic log, in a minute or two, with nothing to fetch.

synthetic log in a local DuckDB file -> ingest -> split (held-out users) -> fit Mult-VAE, ALS and
popularity (recvae.workflow.fit, the path `recvae train` takes) -> evaluate them on the same test
users -> register in a model store, promote if the new model is not worse than the current one
on the SAME validation users -> export top-N for every user to Parquet -> print a summary and
the next commands; the numbers are also written to WORKDIR/summary.json.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from recvae.cli.bounds import CPU_COUNT


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(demo)


@dataclass
class DemoSettings:
    users: int = 6000
    items: int = 2000
    interactions: int = 300_000
    epochs: int = 30
    heldout_users: int = 600
    k: int = 20
    seed: int = 0
    threads: int = 1
    timings: dict[str, float] = field(default_factory=dict)


def demo(
    workdir: Annotated[
        Path, typer.Option(help="Directory for the log, dataset, models and export, e.g. demo-run")
    ] = Path("demo-run"),
    users: Annotated[int, typer.Option(min=1, help="Synthetic users, e.g. 6000")] = 6000,
    items: Annotated[int, typer.Option(min=1, help="Synthetic items, e.g. 2000")] = 2000,
    interactions: Annotated[
        int, typer.Option(min=1, help="Synthetic events, e.g. 300000")
    ] = 300_000,
    epochs: Annotated[int, typer.Option(min=1, help="Mult-VAE epochs, e.g. 30")] = 30,
    heldout_users: Annotated[
        int,
        typer.Option(min=1, help="Users held out for validation, and as many for test, e.g. 600"),
    ] = 600,
    k: Annotated[
        int, typer.Option(min=1, help="Recommendations per user in the export, e.g. 20")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed for the log, the split and the models")] = 0,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            max=CPU_COUNT,
            help="CPU threads for Mult-VAE; 0 = all cores (1 is fastest on a busy box)",
        ),
    ] = 1,
) -> None:
    """Run the whole pipeline on a synthetic log and print what each step produced.

    Overwrites: WORKDIR when it is new, empty, or holds only what the demo writes (logs/,
    dataset/, models/, recommendations.parquet, summary.json, ...); anything else is refused.
    """
    from recvae.io import check_output

    check_output(workdir, "demo")
    settings = DemoSettings(users, items, interactions, epochs, heldout_users, k, seed, threads)
    run_demo(Path(workdir), settings)


def _step(settings: DemoSettings, name: str, started: float) -> None:
    settings.timings[name] = time.perf_counter() - started


def run_demo(workdir: Path, settings: DemoSettings) -> dict[str, Any]:
    """The demo's steps; returns the numbers it printed (for tests)."""
    from rich.console import Console

    from recvae.artifact import load_artifact
    from recvae.data.ingest import IngestOptions, ingest
    from recvae.data.split import ProtocolSpec
    from recvae.data.synth import SynthConfig, write_synthetic_log
    from recvae.evaluate import evaluate
    from recvae.export import ExportRequest, export_top_n
    from recvae.provenance import run_info
    from recvae.registry import ModelStore, quality_gate
    from recvae.scoring import scorer_over_items
    from recvae.workflow.fit import TrainSpec, fit_model

    console = Console(highlight=False)
    workdir.mkdir(parents=True, exist_ok=True)
    s = settings

    started = time.perf_counter()
    log = workdir / "logs" / "events.duckdb"
    log.parent.mkdir(parents=True, exist_ok=True)
    synth = SynthConfig(
        n_users=s.users, n_items=s.items, n_interactions=s.interactions, seed=s.seed
    )
    rows = write_synthetic_log(synth, log, table="events")
    _step(s, "synthesize log", started)
    console.print(f"[bold]1. log[/]      {rows:,} events in {log} (DuckDB table events)")

    started = time.perf_counter()
    options = IngestOptions(table="events", min_rating=3.5, min_user_count=5, min_item_count=1)
    dataset = ingest([log], options)
    dataset.save(workdir / "dataset")
    _step(s, "ingest", started)
    n_users, n_items = dataset.matrix.shape
    console.print(
        f"[bold]2. ingest[/]   ratings > 3.5, users with >= 5: {n_users:,} users x "
        f"{n_items:,} items, {dataset.matrix.nnz:,} interactions -> {workdir / 'dataset'}"
    )

    started = time.perf_counter()
    protocol = ProtocolSpec(
        "strong", s.heldout_users, s.heldout_users, heldout_fraction=0.2, seed=s.seed
    )
    _step(s, "split", started)
    console.print(
        f"[bold]3. split[/]    {n_users - 2 * s.heldout_users:,} training users, "
        f"{s.heldout_users} validation and test users (80% of their items folded in, "
        "20% held out)"
    )

    started = time.perf_counter()
    vae_spec = TrainSpec.of("multvae", {"epochs": s.epochs, "seed": s.seed, "threads": s.threads})
    fitted = fit_model(dataset, vae_spec, protocol, progress=True, dataset_path=workdir / "dataset")
    vae: Any = fitted.model
    split = fitted.split
    _step(s, "train Mult-VAE", started)
    console.print(
        f"[bold]4. train[/]    Mult-VAE {s.epochs} epochs, best epoch {vae.best_epoch} "
        f"(validation ndcg@100 {fitted.metadata['metrics'].get('ndcg@100', float('nan')):.4f})"
    )

    started = time.perf_counter()
    als_spec = TrainSpec.of("als", {"factors": 64, "iterations": 15, "seed": s.seed})
    als = fit_model(dataset, als_spec, protocol).model
    popularity = fit_model(dataset, TrainSpec.of("popularity"), protocol).model
    _step(s, "train baselines", started)

    started = time.perf_counter()
    ks = [20, 50, 100]
    assert split.test is not None and split.valid is not None
    results = {
        "Mult-VAE": evaluate(vae, split.test, ks=ks),
        "ALS": evaluate(als, split.test, ks=ks),
        "Popularity": evaluate(popularity, split.test, ks=ks),
    }
    _step(s, "evaluate", started)
    _print_results(console, results, split.test.history.shape[0])

    started = time.perf_counter()
    store = ModelStore(workdir / "models")
    # The gate compares like with like: the current model is scored on the validation users
    # the new one was validated on (never a test score against a number from another split).
    current = store.current_path()
    current_value = None
    if current is not None:
        artifact = load_artifact(current)
        scorer = scorer_over_items(artifact.model, artifact.items, dataset.items)
        current_value = evaluate(scorer, split.valid, ks=ks)["ndcg@100"]
    new_value = fitted.metadata["metrics"]["ndcg@100"]
    gate = quality_gate("ndcg@100", new_value, current_value, 0.0)
    candidate = workdir / "candidate-model"
    fitted.metadata["note"] = "recvae demo"
    fitted.save(candidate)
    version = store.add(candidate)
    shutil.rmtree(candidate)
    if gate.promote:
        store.promote(version.name, reason=gate.reason)
    _step(s, "register", started)
    verdict = "promoted" if gate.promote else "kept, not promoted"
    console.print(f"[bold]6. registry[/] {version.name} {verdict} ({gate.reason})")

    started = time.perf_counter()
    out = workdir / "recommendations.parquet"
    request = ExportRequest(model=store.root, history=workdir / "dataset", dest=out, k=s.k)
    export = export_top_n(request, show_progress=True)
    _step(s, "export", started)
    rate = export.users / max(export.seconds, 1e-9)
    console.print(
        f"[bold]7. export[/]   top-{s.k} for {export.users:,} users "
        f"({export.summary.rows:,} rows, {rate:,.0f} users/s) with model "
        f"{export.model_version} -> {out}"
    )
    _print_sample(console, out)
    _print_timings_and_next_steps(console, s, workdir)
    summary = {
        "log_rows": rows,
        "dataset": {"users": n_users, "items": n_items, "interactions": int(dataset.matrix.nnz)},
        "test_metrics": {name: result.means for name, result in results.items()},
        "version": version.name,
        "promoted": gate.promote,
        "gate": {"reason": gate.reason, "valid_new": new_value, "valid_current": current_value},
        "export_rows": export.summary.rows,
        "timings": s.timings,
        "run": run_info(),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _print_results(console: Any, results: dict[str, Any], n_test: int) -> None:
    from rich.table import Table

    table = Table(title=f"5. evaluate: {n_test} held-out test users (fold-in), all items ranked")
    keys = ["recall@20", "recall@50", "ndcg@20", "ndcg@100"]
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    for name, result in results.items():
        cells = [f"{result[key]:.3f} ± {result.stderrs[key]:.3f}" for key in keys]
        table.add_row(name, *cells)
    console.print(table)


def _print_sample(console: Any, out: Path) -> None:
    import polars as pl

    recs = pl.read_parquet(out)
    first_user = recs["user_id"][0]
    sample = recs.filter(pl.col("user_id") == first_user).head(5)
    items = ", ".join(
        f"{item} ({score:.2f})" for item, score in sample.select("item_id", "score").iter_rows()
    )
    console.print(f"   user {first_user}: {items}, ...")


def _print_timings_and_next_steps(console: Any, s: DemoSettings, workdir: Path) -> None:
    total = sum(s.timings.values())
    steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in s.timings.items())
    console.print(f"\n[bold]done in {total:.0f}s[/]: {steps}")
    console.print(
        "next:\n"
        f"  recvae models list {workdir / 'models'}\n"
        f"  recvae recommend {workdir / 'models'} --history {workdir / 'dataset'} "
        f"--k 50 --out {workdir / 'recs.duckdb'}\n"
        "  recvae nightly --config jobs/examples/nightly.toml   "
        "(see docs/export-and-nightly.md)"
    )
