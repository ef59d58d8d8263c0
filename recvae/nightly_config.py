"""The nightly job's TOML config: every value checked for type and range before any work.

    [paths]    store, work_dir, export          (relative to the config file's directory)
    [data]     sources, window_days, [data.ingest] (any `recvae ingest` option)
    [split]    valid_users, heldout_fraction, seed
    [train]    model (or "auto"), budget (auto), warm_start, [train.config] (the model's settings)
    [gate]     metric, tolerance, max_volume_drop
    [export]   k, chunk_size, item_block, format, table
    [registry] keep

A typo, a wrong type (`k = "ten"`) or a value out of range (`chunk_size = 0`) stops the job with
one line naming the section and key, before the lock is taken or a log is read: a nightly run
that fails after three hours of training because of a config value is the failure this prevents.
`check_sources` adds what can be known about the inputs without reading them all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recvae.errors import RecvaeError


@dataclass(frozen=True)
class NightlyConfig:
    """The config file, flattened; see jobs/examples/nightly.toml for every key in context."""

    config_path: Path
    store: Path  # model store: versions/ and the `current` pointer
    work_dir: Path  # dataset, checkpoint, lock and run reports of this job
    export: Path  # the published top-N export (.parquet, .csv or .duckdb)
    sources: tuple[Path, ...]  # log files, or one DuckDB database file (with ingest.table)
    window_days: float | None = None  # only events newer than this many days
    ingest: dict[str, Any] = field(default_factory=dict)  # recvae IngestOptions fields
    valid_users: int = 1000
    heldout_fraction: float = 0.2
    seed: int = 0
    model: str = "auto"
    warm_start: bool = True
    model_settings: dict[str, Any] = field(default_factory=dict)
    budget: str = ""  # model = "auto": its time budget ("" = scaled with the data)
    gate_metric: str = "ndcg@100"
    tolerance: float = 0.0
    max_volume_drop: float = 0.5  # refuse when users or interactions fall by more than this
    k: int = 100
    chunk_size: int = 1000
    # items per block for item-chunked top-K: memory chunk_size x item_block, not x items
    item_block: int | None = None
    export_format: str | None = None
    export_table: str = "recommendations"
    keep_versions: int = 5


# ---- value checkers: each returns the converted value or the words of what was expected ----

Checker = Callable[[Any], Any]


class _Expected(Exception):
    """Raised by a checker with the words of what the key expects."""


def _integer(minimum: int) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Expected(f"an integer >= {minimum}")
        return value

    return check


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Checker:
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"

    def check(value: Any) -> float:
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        ok = ok and not math.isnan(value)
        ok = ok and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise _Expected(f"a number in {lo}{low:g}, {high:g}{hi}")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Expected("true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Expected("a non-empty string")
    return value


def _text_list(value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str) and v.strip() for v in values)
    ):
        raise _Expected("a path or a non-empty list of paths")
    return values


def _budget(value: Any) -> str:
    from recvae.workflow.auto import parse_budget

    try:
        parse_budget(value if isinstance(value, str) else "")
    except RecvaeError:
        raise _Expected("a duration such as 90s, 30m, 2h or 1h30m") from None
    return value


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Expected("a table")
    return value


def _choice(*choices: str) -> Checker:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Expected("one of " + ", ".join(map(repr, choices)))
        return value

    return check


# (section, key) -> (NightlyConfig field, checker)
SETTINGS: dict[tuple[str, str], tuple[str, Checker]] = {
    ("paths", "store"): ("store", _text),
    ("paths", "work_dir"): ("work_dir", _text),
    ("paths", "export"): ("export", _text),
    ("data", "sources"): ("sources", _text_list),
    ("data", "window_days"): ("window_days", _number(0, math.inf, low_open=True)),
    ("data", "ingest"): ("ingest", _table),
    ("split", "valid_users"): ("valid_users", _integer(1)),
    ("split", "heldout_fraction"): ("heldout_fraction", _number(0, 1, True, True)),
    ("split", "seed"): ("seed", _integer(0)),
    ("train", "model"): ("model", _text),
    ("train", "warm_start"): ("warm_start", _boolean),
    ("train", "config"): ("model_settings", _table),
    ("train", "budget"): ("budget", _budget),
    ("gate", "metric"): ("gate_metric", _text),
    ("gate", "tolerance"): ("tolerance", _number(-1, 1)),
    ("gate", "max_volume_drop"): ("max_volume_drop", _number(0, 1)),
    ("export", "k"): ("k", _integer(1)),
    ("export", "chunk_size"): ("chunk_size", _integer(1)),
    ("export", "item_block"): ("item_block", _integer(1)),
    ("export", "format"): ("export_format", _choice("parquet", "csv", "duckdb")),
    ("export", "table"): ("export_table", _text),
    ("registry", "keep"): ("keep_versions", _integer(1)),
}
SECTIONS: dict[str, list[str]] = {}
for _section, _key in SETTINGS:
    SECTIONS.setdefault(_section, []).append(_key)
REQUIRED = (("paths", "store"), ("paths", "work_dir"), ("paths", "export"), ("data", "sources"))


def load_nightly_config(path: Path) -> NightlyConfig:
    """Read and check the whole config: unknown keys, types, ranges, then the combinations
    (metric name, export format, ingest options, the model's own settings)."""
    from recvae.config import read_toml

    path = Path(path).resolve()
    try:
        raw = read_toml(path)
    except (OSError, UnicodeDecodeError) as error:
        raise RecvaeError(f"config file {path} cannot be read: {error}") from error
    values: dict[str, Any] = {}
    for section, table in raw.items():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise RecvaeError(f"{path}: unknown section [{section}]; known: {known}")
        if not isinstance(table, dict):
            raise RecvaeError(f"{path}: {section} must be a section [{section}], not a value")
        for key, value in table.items():
            if key not in SECTIONS[section]:
                known = ", ".join(sorted(SECTIONS[section]))
                raise RecvaeError(f"{path}: unknown key {key!r} in [{section}]; known: {known}")
            name, check = SETTINGS[(section, key)]
            try:
                values[name] = check(value)
            except _Expected as expected:
                raise RecvaeError(
                    f"{path}: [{section}] {key} = {value!r}: expected {expected}"
                ) from None
    for section, key in REQUIRED:
        if SETTINGS[(section, key)][0] not in values:
            raise RecvaeError(f"{path}: missing required setting {key!r} in [{section}]")

    base = path.parent

    def resolve(value: str) -> Path:
        return Path(value) if Path(value).is_absolute() else (base / value).resolve()

    for key in ("store", "work_dir", "export"):
        values[key] = resolve(values[key])
    values["sources"] = tuple(resolve(source) for source in values["sources"])
    config = NightlyConfig(config_path=path, **values)
    _check_combinations(config)
    return config


def _check_combinations(config: NightlyConfig) -> None:
    """What no single key can say: a known metric, an export format, valid ingest options and
    model settings."""
    from recvae.export import infer_format
    from recvae.metrics import parse_metric

    where = config.config_path
    try:
        parse_metric(config.gate_metric)
    except RecvaeError as error:
        raise RecvaeError(f"{where}: [gate] metric: {error}") from None
    try:
        infer_format(config.export, config.export_format)
    except RecvaeError as error:
        raise RecvaeError(f"{where}: [paths] export: {error}") from None
    ingest_options(config)
    if config.export_format == "duckdb" or config.export.suffix in (".duckdb", ".db"):
        from recvae.export import _TABLE_NAME

        if not _TABLE_NAME.match(config.export_table):
            raise RecvaeError(
                f"{where}: [export] table = {config.export_table!r}: expected letters, digits "
                "and underscores"
            )
    build_model(config)


def ingest_options(config: NightlyConfig, since: int | None = None) -> Any:
    """The `IngestOptions` of [data.ingest] (plus the window's start), checked."""
    from recvae.data.ingest import IngestOptions

    options = dict(config.ingest)
    if since is not None:
        options["since"] = since
    try:
        result = IngestOptions(**options)
        result.validate()
    except TypeError as error:
        raise RecvaeError(f"{config.config_path}: [data.ingest]: {error}") from None
    except RecvaeError as error:
        raise RecvaeError(f"{config.config_path}: [data.ingest]: {error}") from None
    return result


def build_model(config: NightlyConfig) -> Any:
    """[train] model with [train.config] as the workflow's checked `TrainSpec`: the same check
    the fit uses, done before any work."""
    from recvae.models import MODEL_CLASSES
    from recvae.nightly import auto_config, train_spec

    if config.budget and config.model != "auto":
        raise RecvaeError(
            f'{config.config_path}: [train] budget is for model = "auto", not '
            f"model = {config.model!r}"
        )
    if config.model == "auto":
        return auto_config(config)
    if config.model not in MODEL_CLASSES:
        known = ", ".join(sorted([*MODEL_CLASSES, "auto"]))
        raise RecvaeError(
            f"{config.config_path}: [train] model = {config.model!r}: expected one of {known}"
        )
    try:
        return train_spec(config)
    except RecvaeError as error:
        raise RecvaeError(f"{config.config_path}: {error}") from None


def check_sources(config: NightlyConfig) -> None:
    """Each source exists and is readable, and the output locations can be written; one line
    naming the path otherwise."""
    where = config.config_path
    for source in config.sources:
        if not source.exists():
            raise RecvaeError(f"{where}: [data] sources: {source} does not exist")
        if source.is_dir():
            if not os.access(source, os.R_OK | os.X_OK):
                raise RecvaeError(f"{where}: [data] sources: directory {source} is not readable")
            continue
        try:
            with open(source, "rb") as handle:
                handle.read(1)
        except OSError as error:
            raise RecvaeError(
                f"{where}: [data] sources: {source} cannot be read ({error.strerror})"
            ) from None
    from recvae.io import check_output

    try:
        check_output(config.store, "model store", config.sources)
        if config.export.suffix.lower() not in (".duckdb", ".db"):
            check_output(config.export, "export", config.sources)
    except RecvaeError as error:
        raise RecvaeError(f"{where}: [paths]: {error}") from None
    for key, target in (
        ("store", config.store),
        ("work_dir", config.work_dir),
        ("export", config.export.parent),
    ):
        existing = target
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise RecvaeError(f"{where}: [paths] {key}: cannot write under {existing}")
