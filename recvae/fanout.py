"""Fan-out scoring under torchrun: `torchrun --nproc-per-node N -m recvae recommend ...` scores
one shard of the users per process and publishes ONE export, atomically.

Each rank runs today's sharded export (`--shard r --num-shards N`, contiguous user ranges) into
a Parquet part file in a staging directory beside the destination; after every rank is done
(a collective that also carries each rank's success), rank 0 streams the parts, in rank order,
into the destination with the ordinary atomic writer (Parquet, CSV or a DuckDB table) and
removes the staging directory. Contiguous shards in order are the unsharded export row for
row. If any rank fails, no rank publishes: the previous export stays in place.
For other schedulers `--shard/--num-shards` remain: each job writes its own file.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import polars as pl

from recvae import distributed
from recvae.errors import RecvaeError
from recvae.export import ExportRequest, ExportResult, ExportSummary, infer_format, write_export
from recvae.io import check_output, temp_name


def export_across_ranks(request: ExportRequest, show_progress: bool = False) -> ExportResult:
    """Score this rank's shard, then (rank 0) publish every rank's rows as one export. Returns
    the whole export's result (users and rows of every rank) on every rank."""
    import torch

    if request.num_shards != 1 or request.shard != 0:
        raise RecvaeError(
            "under torchrun every process scores one shard of the users already; "
            "drop --shard/--num-shards (or run without torchrun)"
        )
    distributed.init_from_env(torch.device("cpu"))  # gloo: the collectives here are tiny
    group = distributed.ranks()
    staging = distributed.from_main(_prepare(request) if group.is_main else None)
    if staging.startswith("error: "):
        raise RecvaeError(staging.removeprefix("error: "))
    part = Path(staging) / f"part-{group.rank:05d}.parquet"
    shard = dataclasses.replace(
        request, dest=part, fmt="parquet", shard=group.rank, num_shards=group.world,
        overwrite=False,
    )  # fmt: skip
    from recvae.export import export_top_n

    result, failure = None, ""
    try:
        result = export_top_n(shard, show_progress=show_progress and group.is_main)
    except Exception as error:  # every rank must reach the collective below
        failure = f"rank {group.rank}: {error}"
    counts = [0.0 if result is None else 1.0, 0.0, 0.0]
    if result is not None:
        counts[1:] = [float(result.users), float(result.fallback_users)]
    ok, users, fallback = distributed.sum_across_ranks(counts)
    failures = [f for f in distributed.gather_strings(failure) if f]
    if ok < group.world:
        if group.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise RecvaeError(f"fan-out export failed, nothing published: {'; '.join(failures)}")
    assert result is not None
    published = _publish(request, Path(staging), group.world, result) if group.is_main else None
    summary = distributed.from_main(published)
    distributed.shutdown()
    if isinstance(summary, str):
        raise RecvaeError(summary)
    return dataclasses.replace(
        result, summary=summary, users=int(users), fallback_users=int(fallback)
    )


def _prepare(request: ExportRequest) -> str:
    """Rank 0: check the destination as a one-process export would, make the staging dir."""
    try:
        infer_format(request.dest, request.fmt)
        inputs = [request.model, request.history, request.users_file, request.allow_items_file,
                  request.deny_items_file]  # fmt: skip
        check_output(request.dest, "export", [p for p in inputs if p is not None],
                     overwrite=request.overwrite)  # fmt: skip
    except RecvaeError as error:
        return f"error: {error}"
    staging = temp_name(Path(request.dest))
    staging.mkdir(parents=True)
    return str(staging)


def _publish(
    request: ExportRequest, staging: Path, world: int, result: ExportResult
) -> ExportSummary | str:
    """Rank 0: the parts, in rank order, streamed into the destination; staging removed.
    A failure is returned as its message, for every rank to raise."""
    import pyarrow.parquet as pq

    parts = [staging / f"part-{rank:05d}.parquet" for rank in range(world)]
    schema = pl.read_parquet(parts[0], n_rows=0).schema

    def frames():
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=1_000_000):
                yield pl.from_arrow(batch)

    try:
        return write_export(
            frames(), Path(request.dest), schema, request.fmt, request.table, request.overwrite,
            marker={"model_version": result.model_version, "shard": 0, "num_shards": 1,
                    "ranks": world},
        )  # fmt: skip
    except (RecvaeError, OSError) as error:
        return f"publishing the fan-out export failed, the previous one is kept: {error}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
