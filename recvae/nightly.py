"""The nightly job: ingest the latest logs, gate on volume, train, publish, prune, report.

    recvae nightly --config nightly.toml            # run
    recvae nightly --config nightly.toml --check    # validate config and sources only

Each run, under the job lock (`work_dir/nightly.lock`):
  1. finishes or abandons a publication a killed run left behind, and removes stale temporary
     files of dead runs (work directory, store, beside the export);
  2. ingests the logs (files or a DuckDB table; optionally only the last `window_days` days);
  3. refuses when users or interactions fell by more than `max_volume_drop` against the data the
     current model was trained on (volume gate);
  4. splits (strong generalization, `valid_users` users held out for validation) and fits the
     configured model (any registered model) through `recvae.workflow.fit.fit_model`, resuming
     a crashed run's checkpoint and warm-starting from the current model when it is of the same
     kind: items it knew keep their weights, new items start from their most similar known
     items (recvae.models.warm_start);
  5. publishes (recvae.workflow.publish): registers the new version, evaluates it and the
     current model on the SAME validation users, gates, then promotes and exports as one step;
  6. prunes old versions, after every run that held the lock (refused and failed runs too);
  7. writes the run report: `work_dir/runs/<time>-<pid>/report.json` and `.md`, and the same JSON
     as `work_dir/last-run.json` for a scheduler to alert on.

Exit codes: 0 promoted and exported; 1 failed (current model and published export unchanged);
2 bad config or sources (nothing started); 3 refused by the quality gate; 4 refused by the
volume gate.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from recvae.errors import RecvaeError
from recvae.nightly_config import NightlyConfig, check_sources, ingest_options, load_nightly_config

console = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger(__name__)


def say(text: str, event: str, **fields: Any) -> None:
    """A status line: rich text on stderr for people, or one JSON log record (event
    `nightly.EVENT`) when `recvae --log-format json` asked for machine-readable output."""
    from recvae.logs import current_format

    if current_format() == "json":
        plain = Text.from_markup(text).plain
        log.info(plain, extra={"event": f"nightly.{event}", **fields})
    else:
        console.print(text)


EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED, EXIT_VOLUME = 0, 1, 2, 3, 4
STATUS_EXIT = {
    "promoted": EXIT_OK,
    "failed": EXIT_FAILED,
    "refused": EXIT_REFUSED,
    "refused_volume": EXIT_VOLUME,
}


# ---- run report ----------------------------------------------------------------------------


class RunReport:
    """Status, exit code, timings, gate numbers and outcome of one run, as JSON and Markdown."""

    def __init__(self, config: NightlyConfig) -> None:
        from recvae.provenance import now_iso, run_info

        self.started = time.perf_counter()
        self.work_dir = config.work_dir
        stamp = now_iso().replace(":", "").replace("+0000", "Z")
        self.dir = config.work_dir / "runs" / f"{stamp}-{os.getpid()}"
        self.data: dict[str, Any] = {
            "status": "running",
            "exit_code": None,
            "config": str(config.config_path),
            "model": config.model,
            "started_at": now_iso(),
            "run": run_info(),
            "timings": {},
        }

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        say(f"[bold]{name}[/] ...", "step_start", step=name)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            self.data["timings"][name] = round(seconds, 3)
            say(f"  {name} took {seconds:.1f}s", "step", step=name, seconds=round(seconds, 3))

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["status"] = status
        self.data["exit_code"] = STATUS_EXIT[status]
        if error is not None:
            self.data["error"] = error

    def announce(self, report_dir: Path) -> None:
        """Say where the report is (a `report` event: an MLflow run attaches the file)."""
        path = report_dir / "report.json"
        log.info("run report %s", path, extra={"event": "report", "path": str(path)})

    def write(self) -> Path:
        from recvae.io import atomic_file
        from recvae.provenance import now_iso

        self.data["finished_at"] = now_iso()
        self.data["timings"]["total"] = round(time.perf_counter() - self.started, 3)
        text = json.dumps(self.data, indent=2, default=str)
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.dir / "report.json") as tmp:
            tmp.write_text(text)
        with atomic_file(self.dir / "report.md") as tmp:
            tmp.write_text(markdown_report(self.data))
        with atomic_file(self.work_dir / "last-run.json") as tmp:
            tmp.write_text(text)
        return self.dir


def markdown_report(data: dict[str, Any]) -> str:
    lines = [f"# Nightly run: {data['status']} (exit {data['exit_code']})", ""]
    if data.get("error"):
        lines += [f"**Error:** {data['error']}", ""]
    for gate, title in (("volume_gate", "Volume gate"), ("gate", "Quality gate")):
        if data.get(gate):
            lines += [f"**{title}:** {data[gate]['reason']}", ""]
    for key in (
        "recovered", "new_version", "current_before", "current_after", "resumed_from_epoch",
        "warm_start", "pruned", "removed_temporary",
    ):  # fmt: skip
        if data.get(key) not in (None, []):
            lines.append(f"- {key.replace('_', ' ')}: {data[key]}")
    for key in ("dataset", "export"):
        if key in data:
            lines.append(f"- {key}: {data[key]}")
    if data.get("auto"):
        auto, metric = data["auto"], data["auto"]["metric"]
        lines += ["", f"**auto:** winner {auto['winner']} by validation {metric}, budget "
                  f"{auto['budget']}", "", f"| candidate | status | {metric} | seconds | notes |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {row['label']} | {row['status']} | {_fmt(row.get(metric))} | "
            f"{_fmt(row.get('fit_seconds'))} | {row.get('reason') or ''} |"
            for row in auto["candidates"]
        ]
    new, current = data.get("metrics_new") or {}, data.get("metrics_current") or {}
    if new or current:
        lines += ["", "| metric | new | current |", "|---|---|---|"]
        for key in sorted(set(new) | set(current)):
            lines.append(f"| {key} | {_fmt(new.get(key))} | {_fmt(current.get(key))} |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in data["timings"].items()]
    run = data["run"]
    lines += ["", f"git {run['git_commit']}, {run['time']}, {run['machine']['cpu']}"]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


# ---- the training step: the workflow's model factory and fit ---------------------------------


def train_spec(config: NightlyConfig, where: str = "[train.config]") -> Any:
    """[train] model with [train.config] as a typed, checked `TrainSpec` (any model)."""
    from recvae.workflow.fit import TrainSpec

    return TrainSpec.of(config.model, config.model_settings, source=where)


# [train.config] keys `model = "auto"` takes; the rest of AutoConfig the job sets itself.
AUTO_KEYS = ("candidates", "metric", "threads")


def auto_config(config: NightlyConfig) -> Any:
    """[train] model = "auto": its checked `AutoConfig`. It picks by the gate's metric unless
    [train.config] names another, and keeps the winner as fitted on the training part (no
    refit): the quality gate then compares the new and the current model on validation users
    neither has trained on."""
    from recvae.config import config_from_dict
    from recvae.workflow.auto import AutoConfig

    where = config.config_path
    extra = sorted(set(config.model_settings) - set(AUTO_KEYS))
    if extra:
        raise RecvaeError(
            f'{where}: [train.config] {", ".join(extra)}: model = "auto" takes only '
            f"{', '.join(AUTO_KEYS)} (it chooses each candidate's settings itself); to train "
            'one model with these settings, name the model: [train] model = "multvae"'
        )
    settings = {"metric": config.gate_metric, **config.model_settings, "budget": config.budget,
                "refit": False, "seed": config.seed}  # fmt: skip
    return config_from_dict(AutoConfig, settings, source=f"{where}: [train.config]")


def split_spec(config: NightlyConfig) -> Any:
    """Strong generalization: `valid_users` users held out, their items split into fold-in and
    held-out parts; the gate compares the new and the current model on these users."""
    from recvae.data.split import ProtocolSpec

    return ProtocolSpec(
        "strong",
        valid_users=config.valid_users,
        heldout_fraction=config.heldout_fraction,
        seed=config.seed,
    )


def fit_step(
    config: NightlyConfig,
    dataset: Any,
    checkpoint_dir: Path,
    warm_start: Any,
    on_epoch: Callable[[int, dict[str, Any]], None],
) -> Any:
    """Split and fit through the workflow (`recvae.workflow.fit.fit_model`): models trained by
    epochs checkpoint every epoch (a killed run resumes) and start from `warm_start`."""
    from recvae.workflow.fit import fit_model

    def callback(epoch: int, record: dict[str, Any]) -> bool:
        on_epoch(epoch, record)
        return False

    return fit_model(
        dataset,
        train_spec(config),
        split_spec(config),
        on_epoch=callback,
        warm_start=warm_start,
        checkpoint_dir=checkpoint_dir / "train",
        log_path=checkpoint_dir / "train.jsonl",
        metric=config.gate_metric,
        dataset_path=config.work_dir / "dataset",
    )


def warm_start_source(config: NightlyConfig, store: Any, items: Any) -> tuple[Any, str]:
    """A `WarmStart` from the current model when it can seed the new one (items matched by id,
    so new items do not prevent it), and why (or why not) in words."""
    from recvae.data.vocab import Vocabulary
    from recvae.models.base import read_model_json
    from recvae.models.configs import uses_loop
    from recvae.models.warm_start import WarmStart

    if not config.warm_start:
        return None, "off in config"
    if not uses_loop(config.model):
        return None, f"{config.model} is not trained by epochs; nothing to start from"
    current = store.current_path()
    if current is None:
        return None, "no current model"
    if read_model_json(current).get("model") != config.model:
        return None, f"current model is not a {config.model}"
    old_items = Vocabulary.load(current / "items.parquet")
    spec = WarmStart.by_item_ids(current, old_items, items)
    counts = spec.describe()
    dropped = len(old_items) - counts["known_items"]
    why = f"from {current.name}: {counts['known_items']} items copied by id"
    why += f", {counts['new_items']} new items initialised, {dropped} items gone"
    return spec, why


def prepare_checkpoint(checkpoint_dir: Path, run_key: dict[str, Any]) -> bool:
    """Keep the checkpoint only if it belongs to the same data and config; True if kept."""
    key_file = checkpoint_dir / "run.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == run_key:
        return True
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True)
    key_file.write_text(json.dumps(run_key, indent=2, default=str))
    return False


# ---- the job -------------------------------------------------------------------------------


def export_target(config: NightlyConfig) -> Any:
    from recvae.export import infer_format
    from recvae.workflow.publish import ExportTarget

    return ExportTarget(
        dest=config.export,
        fmt=infer_format(config.export, config.export_format),
        table=config.export_table,
        k=config.k,
        chunk_size=config.chunk_size,
        item_block=config.item_block,
    )


def check(config_path: Path) -> NightlyConfig:
    """Validate the whole config and the sources; raise RecvaeError (one line) on any problem."""
    config = load_nightly_config(config_path)
    check_sources(config)
    return config


def run_nightly(config_path: Path) -> int:
    """Run the job once; return its exit code. A bad config or source raises RecvaeError before
    anything is written (the CLI turns it into exit code 2)."""
    config = check(config_path)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(config)
    try:
        status = _locked_run(config, report)
        report.finish(status)
    except BaseException as error:
        report.finish("failed", f"{type(error).__name__}: {error}")
        report_dir = report.write()
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        say(
            f"[bold red]nightly job failed:[/] {escape(str(error))}\n"
            f"current model and published export are unchanged; report: {report_dir}",
            "nightly_failed",
            error=str(error),
        )
        report.announce(report_dir)
        return EXIT_FAILED
    report_dir = report.write()
    report.announce(report_dir)
    return STATUS_EXIT[status]


def _locked_run(config: NightlyConfig, report: RunReport) -> str:
    from recvae.lock import JobLock
    from recvae.registry import ModelStore

    store = ModelStore(config.store)
    with JobLock(config.work_dir / "nightly.lock"):
        try:
            return _run_steps(config, store, report)
        finally:
            # Every run that held the lock prunes, whatever its outcome: refused versions
            # must not pile up.
            try:
                report.data["pruned"] = store.prune(config.keep_versions)
            except (RecvaeError, OSError) as error:
                report.data["prune_error"] = str(error)


def _run_steps(config: NightlyConfig, store: Any, report: RunReport) -> str:
    from recvae.workflow.publish import publish, recover, volume_gate

    target = export_target(config)
    with report.step("recover"):
        report.data["recovered"] = recover(store, target)
        removed = remove_dead_runs_temporaries(config.work_dir, recursive=True)
        for directory in (config.store, store.versions_dir):
            removed += remove_dead_runs_temporaries(directory)
        prefix = f"{config.export.name}."
        removed += remove_dead_runs_temporaries(config.export.parent, prefix=prefix)
        report.data["removed_temporary"] = [str(path) for path in removed]
    with report.step("ingest"):
        dataset = ingest_logs(config)
        report.data["dataset"] = {
            "users": dataset.matrix.shape[0],
            "items": dataset.matrix.shape[1],
            "interactions": int(dataset.matrix.nnz),
            "fingerprint": dataset.fingerprint(),
        }
    volume = volume_gate(
        store, dataset.matrix.shape[0], int(dataset.matrix.nnz), config.max_volume_drop
    )
    report.data["volume_gate"] = asdict(volume)
    say(f"volume gate: {escape(volume.reason)}", "volume_gate", accept=volume.accept)
    if not volume.accept:
        say("[bold yellow]refused:[/] the data volume fell too far; nothing changed", "refused")
        return "refused_volume"
    dataset_dir = config.work_dir / "dataset"
    dataset.save(dataset_dir)
    checkpoint_dir = config.work_dir / "checkpoint"
    with report.step("train"):
        fitted = _train(config, store, dataset, checkpoint_dir, report)
    with report.step("publish"):
        fitted.metadata["nightly"] = {
            "config": str(config.config_path),
            "warm_start": report.data["warm_start"],
            "dataset": report.data["dataset"],
        }
        result = publish(
            store,
            fitted.artifact,
            fitted.split.train,
            fitted.split.valid,
            dataset_dir,
            target,
            metric=config.gate_metric,
            tolerance=config.tolerance,
            scratch=config.work_dir / "candidate",
        )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    report.data.update(
        new_version=result.version,
        current_before=result.previous,
        current_after=store.current_name(),
        gate=asdict(result.gate),
        metrics_new=result.metrics_new,
        metrics_current=result.metrics_current,
        current_evaluation=result.current_note,
        validation_users=result.validation_users,
    )
    say(f"quality gate: {escape(result.gate.reason)}", "gate", promote=result.gate.promote)
    if result.status != "promoted":
        say(f"[bold yellow]not promoted:[/] {result.version}; current unchanged", "refused")
        return "refused"
    report.data["export"] = result.export
    say(
        f"[bold green]promoted {result.version}[/] and exported to {config.export}",
        "promoted",
        version=result.version,
    )
    return "promoted"


def remove_dead_runs_temporaries(
    directory: Path, prefix: str = "", recursive: bool = False
) -> list[Path]:
    """Remove the temporary files and directories of killed runs (`atomic_file` / `atomic_dir`
    leave `.NAME.tmp-*` and `.NAME.old-*` behind when killed) from a directory of this job.

    Runs under the job lock, which keeps other nightly runs out of the work directory and the
    store; an entry whose name carries the PID of another live process is still spared.
    """
    from recvae.lock import pid_alive

    if not directory.is_dir():
        return []
    entries = directory.rglob(f".{prefix}*") if recursive else directory.glob(f".{prefix}*")
    removed: list[Path] = []
    for path in sorted(entries, key=lambda p: len(p.parts)):
        match = _TEMP_NAME.search(path.name)
        if match is None or not os.path.lexists(path):
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


_TEMP_NAME = re.compile(r"\.(?:tmp|old)-(?:(\d+)(?:-|$))?")


def ingest_logs(config: NightlyConfig) -> Any:
    """Read the logs into a Dataset (not saved yet: the volume gate looks at it first)."""
    import datetime as dt

    from recvae.data.ingest import ingest

    since = None
    if config.window_days is not None:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=config.window_days)
        since = int(start.timestamp())
    return ingest(list(config.sources), ingest_options(config, since))


def _train(
    config: NightlyConfig, store: Any, dataset: Any, checkpoint_dir: Path, report: RunReport
) -> Any:
    """Fit with a warm start when the current model can seed the new one; the FitResult."""
    from recvae.models.warm_start import WarmStartError

    if config.model == "auto":
        return _train_auto(config, dataset, report)
    warm, why = warm_start_source(config, store, dataset.items)
    run_key = {
        "fingerprint": dataset.fingerprint(),
        "model": config.model,
        "model_settings": config.model_settings,
        "split": [config.valid_users, config.heldout_fraction, config.seed],
        "warm_start": str(warm.source) if warm is not None else None,
    }
    prepare_checkpoint(checkpoint_dir, run_key)
    epochs_seen: list[int] = []

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        epochs_seen.append(epoch)
        metric = record.get(config.gate_metric)
        shown = f" {config.gate_metric} {metric:.4f}" if metric is not None else ""
        member = f" ({record['member']})" if "member" in record else ""
        loss = record.get("loss", float("nan"))
        print(f"epoch {epoch}{member} done: loss {loss:.4f}{shown}", flush=True)

    report.data["warm_start"] = why
    try:
        fitted = fit_step(config, dataset, checkpoint_dir, warm, on_epoch)
    except WarmStartError as error:  # raised before the first epoch: start cold instead
        why = f"cold: the current model cannot seed this one ({error})"
        prepare_checkpoint(checkpoint_dir, {**run_key, "warm_start": None})
        fitted = fit_step(config, dataset, checkpoint_dir, None, on_epoch)
        report.data["warm_start"] = why
    report.data["resumed_from_epoch"] = (epochs_seen[0] - 1) if epochs_seen else None
    report.data["epochs_trained_this_run"] = len(epochs_seen)
    return fitted


def _train_auto(config: NightlyConfig, dataset: Any, report: RunReport) -> Any:
    """[train] model = "auto": choose among the candidates within the budget on this run's
    split (recvae.workflow.auto); the run report lists every candidate."""
    from recvae.workflow.auto import fit_auto

    report.data["warm_start"] = "auto chooses its model each run; no warm start"
    result = fit_auto(
        dataset, auto_config(config), split_spec(config),
        say=lambda line: say(escape(line), "auto"), dataset_path=config.work_dir / "dataset",
    )  # fmt: skip
    summary = result.summary
    report.data["auto"] = {
        "winner": result.winner,
        "budget": summary["budget"],
        "metric": summary["metric"],
        "selection_seconds": summary["selection_seconds"],
        "candidates": [
            {key: row.get(key) for key in ("label", "model", "status", "reason", "fit_seconds")}
            | {summary["metric"]: (row.get("metrics") or {}).get(summary["metric"])}
            for row in result.rows
        ],
    }
    return result.fit
