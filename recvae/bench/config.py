"""Suite configuration: a TOML file naming data sets, models (with settings and tuning grids),
cut-offs and seeds, read into typed dataclasses and validated before anything runs.

    name = "ml-1m"                 # report directory: <out>/<name>-<YYYY-MM-DD>/
    ks = [20, 50, 100]             # cut-offs for every metric
    seeds = [0]                    # final runs repeat the tuned setting once per seed
    tune_metric = "ndcg@20"        # chosen on the validation part
    isolate = true                 # each run in its own process: peak memory per run

    [[datasets]]
    name = "ml-1m-lightgcn"        # `--data ml-1m-lightgcn=PATH` gives (or overrides) the path
    path = "../shared/datasets/ml-1m-lightgcn"
    protocol = "presplit"          # presplit | strong | weak
    ingest = { format = "lightgcn", split_sources = ["train", "valid"] }

    [[models]]
    name = "als"                   # any name in recvae.models.MODEL_CLASSES
    settings = { iterations = 15 } # fixed settings
    grid = { factors = [64, 128, 256], regularization = [0.01, 0.1, 1.0] }
    search = "coordinate"          # grid (every combination) | coordinate (one axis at a time)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recvae.config import read_toml
from recvae.data.split import ProtocolSpec
from recvae.errors import RecvaeError
from recvae.metrics import parse_metric
from recvae.models import MODEL_CLASSES
from recvae.models.configs import setting_types

SEARCHES = ("grid", "coordinate")
PROTOCOL_KEYS = ("valid_users", "test_users", "heldout_fraction", "by_time", "seed")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set comes from and how it is split for evaluation."""

    name: str
    path: Path | None = None
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    ingest: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] | None = None  # generate instead of reading: users, items, seed


@dataclass(frozen=True)
class ModelSpec:
    """A model, its fixed settings, and the grid of settings tuned on validation."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: str = "grid"
    label: str = ""  # shown in the report; defaults to the model name

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    datasets: list[DatasetSpec]
    models: list[ModelSpec]
    ks: tuple[int, ...] = (20, 50, 100)
    seeds: tuple[int, ...] = (0,)
    tune_metric: str = "ndcg@20"
    isolate: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def load_suite(path: Path, data_paths: dict[str, Path] | None = None) -> SuiteConfig:
    """Read and validate a suite file; `data_paths` (from `--data NAME=PATH`) override paths."""
    path = Path(path)
    raw = read_toml(path, "suite config")
    return parse_suite(raw, path.stem, data_paths or {}, base_dir=path.parent)


def parse_suite(
    raw: dict[str, Any],
    default_name: str = "suite",
    data_paths: dict[str, Path] | None = None,
    base_dir: Path | None = None,
) -> SuiteConfig:
    """Validate a suite given as a dict (what the TOML file holds)."""
    data_paths = dict(data_paths or {})
    datasets = [_dataset(entry, data_paths, base_dir) for entry in raw.get("datasets", [])]
    models = [_model(entry) for entry in raw.get("models", [])]
    if not datasets or not models:
        raise RecvaeError("a suite needs at least one [[datasets]] and one [[models]] entry")
    unknown = set(data_paths) - {d.name for d in datasets}
    if unknown:
        raise RecvaeError(
            f"--data names {sorted(unknown)} are not data sets of this suite "
            f"({', '.join(d.name for d in datasets)})"
        )
    ks = tuple(int(k) for k in raw.get("ks", (20, 50, 100)))
    if not ks or min(ks) < 1:
        raise RecvaeError(f"ks must be positive integers, got {list(ks)}")
    tune_metric = str(raw.get("tune_metric", "ndcg@20"))
    metric_name, metric_k = parse_metric(tune_metric)
    if metric_k not in ks:
        raise RecvaeError(f"tune_metric {tune_metric!r} needs k={metric_k} in ks {list(ks)}")
    return SuiteConfig(
        name=str(raw.get("name", default_name)),
        datasets=datasets,
        models=models,
        ks=ks,
        seeds=tuple(int(s) for s in raw.get("seeds", (0,))),
        tune_metric=f"{metric_name}@{metric_k}",
        isolate=bool(raw.get("isolate", True)),
        raw=raw,
    )


def _dataset(
    entry: dict[str, Any], data_paths: dict[str, Path], base_dir: Path | None
) -> DatasetSpec:
    if "name" not in entry:
        raise RecvaeError(f"a [[datasets]] entry has no name: {entry}")
    name = str(entry["name"])
    path = data_paths.get(name)
    if path is None and entry.get("path"):
        path = Path(entry["path"])
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = base_dir / path
    options = {key: entry[key] for key in PROTOCOL_KEYS if key in entry}
    protocol = ProtocolSpec(protocol=str(entry.get("protocol", "presplit")), **options)
    synthetic = entry.get("synthetic")
    if path is None and synthetic is None:
        raise RecvaeError(f"data set {name!r} has no path: give one with --data {name}=PATH")
    return DatasetSpec(
        name, Path(path) if path else None, protocol, entry.get("ingest", {}), synthetic
    )


def _model(entry: dict[str, Any]) -> ModelSpec:
    if "name" not in entry:
        raise RecvaeError(f"a [[models]] entry has no name: {entry}")
    name = str(entry["name"])
    if name not in MODEL_CLASSES:
        known = ", ".join(sorted(MODEL_CLASSES))
        raise RecvaeError(f"unknown model {name!r} in the suite: expected one of {known}")
    search = str(entry.get("search", "grid"))
    if search not in SEARCHES:
        raise RecvaeError(f"model {name!r}: search must be one of {SEARCHES}, got {search!r}")
    settings = dict(entry.get("settings", {}))
    grid = {key: list(values) for key, values in entry.get("grid", {}).items()}
    for key, values in grid.items():
        if not values:
            raise RecvaeError(f"model {name!r}: grid for {key!r} is empty")
    check_settings(name, [*settings, *grid])
    return ModelSpec(name, settings, grid, search, str(entry.get("label", "")))


def check_settings(name: str, keys: list[str]) -> None:
    """Refuse settings the model does not take, listing the ones it does."""
    accepted = setting_types(name)
    unknown = [key for key in keys if key not in accepted]
    if unknown:
        raise RecvaeError(
            f"model {name!r} has no setting(s) {unknown}; it accepts {', '.join(sorted(accepted))}"
        )
