"""The nightly training job: ingest the latest logs, train, gate, promote, export, report.

    python jobs/nightly_train.py --config jobs/examples/nightly.toml

Steps, each timed in the run report:
  1. take the job lock (a lock left by a dead process on this host is replaced);
  2. ingest the logs (files or a DuckDB table; optionally only the last `window_days` days);
  3. split: strong generalization, `valid_users` users held out for validation;
  4. train Mult-VAE, resuming from the last checkpoint when the previous run of the same data
     and config crashed, warm-started from the current model when the item vocabularies match;
  5. evaluate the new and the current model on the SAME validation users;
  6. register the new model as a version; promote it only if it is not worse than the current
     one by more than `tolerance` (quality gate);
  7. export top-N for every user with the promoted model (atomic; on failure the promotion is
     undone);
  8. prune old versions; write the run report (JSON and Markdown) under work_dir/runs/.

Exit codes: 0 promoted and exported; 3 refused by the quality gate (nothing changed); 1 failed
(nothing changed: the current model and the last good export are untouched).
Relative paths in the config are relative to the config file's directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from recvae.config import read_toml
from recvae.errors import RecvaeError

console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3


# ---- config -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobConfig:
    """The TOML file, section by section (see jobs/examples/nightly.toml)."""

    store: Path  # model store: versions/ and the `current` pointer
    work_dir: Path  # dataset, checkpoint, lock and run reports of this job
    export: Path  # where the top-N export goes (.parquet, .csv or .duckdb)
    sources: list[Path]  # log files, or one DuckDB database file (with ingest.table)
    window_days: float | None = None  # only events newer than this many days (needs a time col)
    ingest: dict[str, Any] = field(default_factory=dict)  # recvae IngestOptions fields
    valid_users: int = 1000
    heldout_fraction: float = 0.2
    seed: int = 0
    model: str = "multvae"
    warm_start: bool = True
    model_config: dict[str, Any] = field(default_factory=dict)  # MultVAE config overrides
    gate_metric: str = "ndcg@100"
    tolerance: float = 0.0
    k: int = 100
    chunk_size: int = 1000
    export_format: str | None = None
    export_table: str = "recommendations"
    keep_versions: int = 5


SECTIONS = {
    "paths": {"store", "work_dir", "export"},
    "data": {"sources", "window_days", "ingest"},
    "split": {"valid_users", "heldout_fraction", "seed"},
    "train": {"model", "warm_start", "config"},
    "gate": {"metric", "tolerance"},
    "export": {"k", "chunk_size", "format", "table"},
    "registry": {"keep"},
}
RENAMED = {
    ("train", "config"): "model_config",
    ("gate", "metric"): "gate_metric",
    ("export", "format"): "export_format",
    ("export", "table"): "export_table",
    ("registry", "keep"): "keep_versions",
}


def load_job_config(path: Path) -> JobConfig:
    """Read the TOML config; unknown sections or keys are errors (typos fail before any work)."""
    raw = read_toml(path)
    values: dict[str, Any] = {}
    for section, table in raw.items():
        if section not in SECTIONS:
            raise RecvaeError(f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        for key, value in table.items():
            if key not in SECTIONS[section]:
                known = ", ".join(sorted(SECTIONS[section]))
                raise RecvaeError(f"{path}: unknown key {key!r} in [{section}]; known: {known}")
            values[RENAMED.get((section, key), key)] = value
    for required in ("store", "work_dir", "export", "sources"):
        if required not in values:
            raise RecvaeError(f"{path}: missing required setting {required!r}")
    base = path.parent

    def resolve(value: str) -> Path:
        return (base / value).resolve() if not Path(value).is_absolute() else Path(value)

    for key in ("store", "work_dir", "export"):
        values[key] = resolve(values[key])
    if isinstance(values["sources"], str):
        values["sources"] = [values["sources"]]
    values["sources"] = [resolve(source) for source in values["sources"]]
    try:
        config = JobConfig(**values)
    except TypeError as error:
        raise RecvaeError(f"{path}: {error}") from error
    if config.valid_users < 1:
        raise RecvaeError(f"{path}: [split] valid_users must be at least 1: the gate needs them")
    return config


# ---- run report ---------------------------------------------------------------------------


class RunReport:
    """Timings, numbers and the outcome of one run, written as JSON and Markdown at the end."""

    def __init__(self, work_dir: Path, config_path: Path) -> None:
        from recvae.provenance import now_iso, run_info

        self.started = time.perf_counter()
        stamp = now_iso().replace(":", "").replace("+0000", "Z")
        self.dir = work_dir / "runs" / f"{stamp}-{os.getpid()}"
        self.data: dict[str, Any] = {
            "status": "running",
            "config": str(config_path),
            "run": run_info(),
            "timings": {},
        }

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        console.print(f"[bold]{name}[/] ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            self.data["timings"][name] = round(seconds, 3)
            console.print(f"  {name} took {seconds:.1f}s")

    def write(self) -> Path:
        from recvae.io import atomic_file

        self.data["timings"]["total"] = round(time.perf_counter() - self.started, 3)
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.dir / "report.json") as tmp:
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
        with atomic_file(self.dir / "report.md") as tmp:
            tmp.write_text(markdown_report(self.data))
        return self.dir


def markdown_report(data: dict[str, Any]) -> str:
    lines = [f"# Nightly run: {data['status']}", ""]
    if data.get("error"):
        lines += [f"**Error:** {data['error']}", ""]
    if data.get("gate"):
        lines += [f"**Quality gate:** {data['gate']['reason']}", ""]
    for key in ("new_version", "current_before", "current_after", "resumed_from_epoch"):
        if key in data:
            lines.append(f"- {key.replace('_', ' ')}: {data[key]}")
    if "dataset" in data:
        lines.append(f"- dataset: {data['dataset']}")
    if "warm_start" in data:
        lines.append(f"- warm start: {data['warm_start']}")
    if "export" in data:
        lines.append(f"- export: {data['export']}")
    lines += ["", "| metric | new | current |", "|---|---|---|"]
    new, current = data.get("metrics_new") or {}, data.get("metrics_current") or {}
    for key in sorted(set(new) | set(current)):
        lines.append(f"| {key} | {_fmt(new.get(key))} | {_fmt(current.get(key))} |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in data["timings"].items()]
    run = data["run"]
    lines += ["", f"git {run['git_commit']}, {run['time']}, {run['machine']['cpu']}"]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


# ---- steps ------------------------------------------------------------------------------


def ingest_logs(config: JobConfig, dataset_dir: Path) -> Any:
    """Read the logs into a dataset directory (atomic) and return the Dataset."""
    import datetime as dt

    from recvae.data.ingest import IngestOptions, ingest

    options = dict(config.ingest)
    if config.window_days is not None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=config.window_days)
        options["since"] = int(since.timestamp())
    try:
        ingest_options = IngestOptions(**options)
    except TypeError as error:
        raise RecvaeError(f"[data.ingest]: {error}") from error
    dataset = ingest(config.sources, ingest_options)
    dataset.save(dataset_dir)
    return dataset


def split_spec(config: JobConfig) -> Any:
    """The job's protocol: strong generalization, `valid_users` users held out for the gate."""
    from recvae.data.split import ProtocolSpec

    return ProtocolSpec(
        "strong",
        valid_users=config.valid_users,
        heldout_fraction=config.heldout_fraction,
        seed=config.seed,
    )


def prepare_checkpoint(checkpoint_dir: Path, run_key: dict[str, Any]) -> bool:
    """Keep the checkpoint only if it belongs to the same data and config; True if kept."""
    key_file = checkpoint_dir / "run.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == run_key:
        return True
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True)
    key_file.write_text(json.dumps(run_key, indent=2))
    return False


def warm_start_source(config: JobConfig, store: Any, items: Any) -> tuple[Path | None, str]:
    """The current model's directory when it can seed the new one, and why (or why not)."""
    from recvae.data.vocab import Vocabulary
    from recvae.models.base import read_model_json

    if not config.warm_start:
        return None, "off in config"
    current = store.current_path()
    if current is None:
        return None, "no current model"
    if read_model_json(current).get("model") != config.model:
        return None, f"current model is not a {config.model}"
    if Vocabulary.load(current / "items.parquet") != items:
        return None, "item vocabulary changed since the current model was trained"
    return current, f"from {current.name}"


def train_model(
    config: JobConfig,
    split: Any,
    checkpoint_dir: Path,
    warm_start: Path | None,
    on_epoch: Callable[[int, dict[str, Any]], None],
) -> Any:
    from recvae.models import model_class

    model = model_class(config.model)(**config.model_config)

    def callback(epoch: int, record: dict[str, Any]) -> bool:
        on_epoch(epoch, record)
        return False

    return model.fit(
        split.train,
        split.valid,
        callback=callback,
        checkpoint_dir=checkpoint_dir / "train",
        resume=True,
        warm_start=warm_start,
        log_path=checkpoint_dir / "train.jsonl",
    )


def evaluate_current(store: Any, split: Any, items: Any, ks: list[int]) -> tuple[Any, str]:
    """The current model's metrics on the new validation users, or (None, why not)."""
    from recvae.artifact import load_artifact
    from recvae.evaluate import evaluate
    from recvae.scoring import scorer_over_items

    current = store.current_path()
    if current is None:
        return None, "no current model"
    try:
        artifact = load_artifact(current)
    except (RecvaeError, OSError, ValueError) as error:
        return None, f"current model {current.name} cannot be loaded: {error}"
    scorer = scorer_over_items(artifact.model, artifact.items, items)
    return evaluate(scorer, split.valid, ks=ks), f"evaluated {current.name}"


# ---- the job ----------------------------------------------------------------------------


def run(config_path: Path) -> int:
    config = load_job_config(config_path)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(config.work_dir, config_path)
    try:
        status = run_steps(config, report)
    except BaseException as error:
        report.data["status"] = "failed"
        report.data["error"] = f"{type(error).__name__}: {error}"
        report_dir = report.write()
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        console.print(f"[bold red]nightly job failed:[/] {escape(str(error))}")
        console.print(f"current model and last export are unchanged; report: {report_dir}")
        return EXIT_FAILED
    report_dir = report.write()
    console.print(f"run report: {report_dir / 'report.md'}")
    return status


def run_steps(config: JobConfig, report: RunReport) -> int:
    from recvae.artifact import Artifact, save_artifact
    from recvae.data.split import make_split
    from recvae.evaluate import evaluate
    from recvae.export import ExportRequest, export_top_n
    from recvae.lock import JobLock
    from recvae.metrics import parse_metric
    from recvae.registry import ModelStore, quality_gate

    store = ModelStore(config.store)
    dataset_dir = config.work_dir / "dataset"
    with JobLock(config.work_dir / "nightly.lock"):
        with report.step("ingest"):
            dataset = ingest_logs(config, dataset_dir)
            report.data["dataset"] = {
                "users": dataset.matrix.shape[0],
                "items": dataset.matrix.shape[1],
                "interactions": int(dataset.matrix.nnz),
                "fingerprint": dataset.fingerprint(),
            }
        with report.step("split"):
            split = make_split(dataset, split_spec(config))
        with report.step("train"):
            warm, why = warm_start_source(config, store, dataset.items)
            report.data["warm_start"] = why
            run_key = {
                "fingerprint": dataset.fingerprint(),
                "model": config.model,
                "model_config": config.model_config,
                "split": [config.valid_users, config.heldout_fraction, config.seed],
                "warm_start": str(warm),
            }
            checkpoint_dir = config.work_dir / "checkpoint"
            prepare_checkpoint(checkpoint_dir, run_key)
            epochs_seen: list[int] = []

            def on_epoch(epoch: int, record: dict[str, Any]) -> None:
                epochs_seen.append(epoch)
                metric = record.get(config.gate_metric)
                shown = f" {config.gate_metric} {metric:.4f}" if metric is not None else ""
                print(f"epoch {epoch} done: loss {record['loss']:.4f}{shown}", flush=True)

            model = train_model(config, split, checkpoint_dir, warm, on_epoch)
            report.data["resumed_from_epoch"] = (epochs_seen[0] - 1) if epochs_seen else None
            report.data["epochs_trained_this_run"] = len(epochs_seen)
        with report.step("evaluate"):
            _, k = parse_metric(config.gate_metric)
            ks = sorted({k, 20, 50, 100} & set(range(1, dataset.matrix.shape[1] + 1)))
            new_eval = evaluate(model, split.valid, ks=ks)
            current_eval, current_note = evaluate_current(store, split, dataset.items, ks)
            report.data["metrics_new"] = new_eval.means
            report.data["metrics_current"] = current_eval.means if current_eval else None
            report.data["current_evaluation"] = current_note
            report.data["validation_users"] = new_eval.users
        with report.step("register"):
            candidate = config.work_dir / "candidate"
            metadata = {
                "metrics": new_eval.means,
                "validation_users": new_eval.users,
                "data_fingerprint": dataset.fingerprint(),
                "dataset": report.data["dataset"],
                "training": {"best_epoch": model.best_epoch, "stopped": model.stopped},
                "warm_start": why,
                "run": report.data["run"],
            }
            save_artifact(Artifact(model, dataset.items, metadata), candidate, train=split.train)
            version = store.add(candidate)
            shutil.rmtree(candidate, ignore_errors=True)
            report.data["new_version"] = version.name
        current_before = store.current_name()
        report.data["current_before"] = current_before
        current_value = current_eval.means[config.gate_metric] if current_eval else None
        gate = quality_gate(
            config.gate_metric, new_eval.means[config.gate_metric], current_value, config.tolerance
        )
        report.data["gate"] = asdict(gate)
        console.print(f"quality gate: {escape(gate.reason)}")
        if not gate.promote:
            report.data["status"] = "refused"
            report.data["current_after"] = current_before
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            console.print(f"[bold yellow]not promoted:[/] {version.name}; current unchanged")
            return EXIT_REFUSED
        with report.step("promote and export"):
            store.promote(version.name, reason=gate.reason)
            try:
                request = ExportRequest(
                    model=store.root,
                    history=dataset_dir,
                    dest=config.export,
                    k=config.k,
                    fmt=config.export_format,
                    table=config.export_table,
                    chunk_size=config.chunk_size,
                )
                result = export_top_n(request)
            except BaseException:
                store.revert_promotion(current_before)
                raise
            report.data["export"] = {
                "path": str(result.summary.path),
                "rows": result.summary.rows,
                "users": result.users,
                "fallback_users": result.fallback_users,
                "users_per_second": round(result.users / max(result.seconds, 1e-9), 1),
            }
        report.data["current_after"] = store.current_name()
        report.data["pruned"] = store.prune(config.keep_versions)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        report.data["status"] = "promoted"
        console.print(f"[bold green]promoted {version.name}[/] and exported to {config.export}")
        return EXIT_OK


def main() -> None:
    parser = argparse.ArgumentParser(description="recvae nightly training job")
    parser.add_argument("--config", type=Path, required=True, help="TOML config file")
    args = parser.parse_args()
    try:
        code = run(args.config.resolve())
    except RecvaeError as error:  # a config error: nothing was started
        console.print(f"[bold red]nightly job failed:[/] {escape(str(error))}")
        code = EXIT_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
