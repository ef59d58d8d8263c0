"""The top-N export job: recommendations for every user with the model in production.

    python jobs/export_topn.py --config jobs/examples/export.toml
    python jobs/export_topn.py --config jobs/examples/export.toml --shard 2 --num-shards 8

Reads the users' latest histories (a dataset directory, or a log ingested against the model's
items), scores them in chunks with the store's `current` model, and writes the export
atomically (the previous export stays readable until the new one is complete). With shards,
`export` must contain `{shard}` so that each shard writes its own file; the shards together are
exactly the unsharded export. A lock beside the output keeps two runs of one shard apart.

Exit codes: 0 written; 1 failed (the previous export is untouched).
Relative paths in the config are relative to the config file's directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from recvae.config import read_toml
from recvae.errors import RecvaeError

console = Console(stderr=True, highlight=False, soft_wrap=True)

KNOWN = {
    "paths": {"model", "history", "export"},
    "export": {
        "k",
        "chunk_size",
        "format",
        "table",
        "exclude_seen",
        "users",
        "allow_items",
        "deny_items",
    },
    "ingest": None,  # any recvae IngestOptions field, used when `history` is a log
}


def load_config(path: Path) -> dict[str, Any]:
    raw = read_toml(path)
    for section, table in raw.items():
        if section not in KNOWN:
            raise RecvaeError(f"{path}: unknown section [{section}]; known: {', '.join(KNOWN)}")
        allowed = KNOWN[section]
        for key in table if allowed is not None else ():
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise RecvaeError(f"{path}: unknown key {key!r} in [{section}]; known: {known}")
    paths = raw.get("paths", {})
    for required in ("model", "history", "export"):
        if required not in paths:
            raise RecvaeError(f"{path}: missing {required!r} in [paths]")
    return raw


def build_request(config_path: Path, raw: dict[str, Any], shard: int, num_shards: int) -> Any:
    from recvae.data.ingest import IngestOptions
    from recvae.export import ExportRequest

    base = config_path.parent

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        return Path(value) if Path(value).is_absolute() else (base / value).resolve()

    paths, export = raw["paths"], raw.get("export", {})
    dest = paths["export"]
    if num_shards > 1 and "{shard}" not in dest:
        raise RecvaeError(
            f"with --num-shards {num_shards}, [paths] export must contain {{shard}}, "
            "e.g. recs-{shard}.parquet, so that shards do not overwrite each other"
        )
    try:
        ingest_options = IngestOptions(**raw.get("ingest", {}))
    except TypeError as error:
        raise RecvaeError(f"{config_path}: [ingest]: {error}") from error
    return ExportRequest(
        model=resolve(paths["model"]),
        history=resolve(paths["history"]),
        dest=resolve(dest.replace("{shard}", str(shard))),
        k=int(export.get("k", 100)),
        fmt=export.get("format"),
        table=export.get("table", "recommendations"),
        users_file=resolve(export.get("users")),
        allow_items_file=resolve(export.get("allow_items")),
        deny_items_file=resolve(export.get("deny_items")),
        exclude_seen=bool(export.get("exclude_seen", True)),
        chunk_size=int(export.get("chunk_size", 1000)),
        shard=shard,
        num_shards=num_shards,
        ingest_options=ingest_options,
    )


def run(config_path: Path, shard: int, num_shards: int) -> None:
    from recvae.export import export_top_n
    from recvae.lock import JobLock

    request = build_request(config_path, load_config(config_path), shard, num_shards)
    with JobLock(request.dest.parent / f".{request.dest.name}.lock"):
        result = export_top_n(request, show_progress=sys.stderr.isatty())
    rate = result.users / max(result.seconds, 1e-9)
    console.print(
        f"wrote {result.summary.rows:,} rows for {result.users:,} users "
        f"({result.fallback_users:,} popularity fallback) with model {result.model_version} "
        f"to {result.summary.path} in {result.seconds:.1f}s ({rate:,.0f} users/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="recvae top-N export job")
    parser.add_argument("--config", type=Path, required=True, help="TOML config file")
    parser.add_argument("--shard", type=int, default=0, help="this shard, 0-based")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards")
    args = parser.parse_args()
    try:
        run(args.config.resolve(), args.shard, args.num_shards)
    except RecvaeError as error:
        console.print(f"[bold red]export failed:[/] {escape(str(error))}")
        console.print("the previous export is unchanged")
        sys.exit(1)


if __name__ == "__main__":
    main()
