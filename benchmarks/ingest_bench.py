"""Ingest speed: a synthetic MovieLens-20M-sized CSV, DuckDB's bare scan vs recvae's full ingest.

    nice -n 5 python benchmarks/ingest_bench.py       # 20M rows, 3 repetitions, under reports/
    python benchmarks/ingest_bench.py --rows 200000 --repeat 1 --out-dir /tmp/quick   # a look

The CSV is generated once with recvae's synthetic log (cached under benchmarks/work/, which git
ignores). Each measurement runs in its own child process so that its peak RSS is its own. Each
repetition (--repeat) runs: bare scan, ingest, bare scan again, and divides the ingest time by
the faster of its two scans, so both sides see the same page cache and machine load; the report
gives the median over repetitions. CPU seconds (all threads) are reported beside wall seconds:
on a shared, overloaded box their ratio is the steadier of the two.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure_scan(csv: str) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    start, cpu = time.perf_counter(), time.process_time()
    rows = con.execute(f"SELECT count(*) FROM read_csv('{csv}')").fetchall()[0][0]
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "rows": int(rows),
    }


def measure_typed_scan(csv: str) -> dict:
    """The floor under any ingest: DuckDB parsing all four columns to their types."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    columns = (
        "{'user_id': 'BIGINT', 'item_id': 'BIGINT', 'rating': 'DOUBLE', 'timestamp': 'DOUBLE'}"
    )
    start, cpu = time.perf_counter(), time.process_time()
    rows = con.execute(
        "SELECT count(*), max(user_id), max(item_id), max(rating), max(timestamp) "
        f"FROM read_csv('{csv}', header=true, columns={columns})"
    ).fetchall()[0][0]
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "rows": int(rows),
    }


def measure_ingest(csv: str, min_rating: float, min_user_count: int, save_to: str) -> dict:
    from recvae.data.ingest import IngestOptions, ingest

    options = IngestOptions(min_rating=min_rating, min_user_count=min_user_count)
    start, cpu = time.perf_counter(), time.process_time()
    dataset = ingest([csv], options)
    ingest_seconds, ingest_cpu = time.perf_counter() - start, time.process_time() - cpu
    dataset.save(Path(save_to))
    return {
        "seconds": ingest_seconds,
        "cpu_seconds": ingest_cpu,
        "seconds_with_save": time.perf_counter() - start,
        "rows": int(dataset.manifest["rows_read"]),
        "users": len(dataset.users),
        "items": len(dataset.items),
        "nnz": int(dataset.matrix.nnz),
        "filters": dataset.manifest["filters"],
        "phase_seconds": dataset.manifest["seconds"],
    }


def child(kind: str, args: argparse.Namespace, code: Path | None = None) -> dict:
    """Run one measurement in a fresh interpreter; its peak RSS comes back with the result.

    `code`: a directory holding another version of the `recvae` package (e.g. from
    `git archive`), imported instead of this checkout's, to time it against this one."""
    command = [sys.executable, __file__, "--child", kind, "--csv", str(args.csv_path)]
    command += ["--min-rating", str(args.min_rating), "--min-user-count", str(args.min_user_count)]
    command += ["--save-to", str(args.work / "dataset")]
    env = {**os.environ, "PYTHONPATH": str(code.resolve())} if code else None
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def ensure_csv(args: argparse.Namespace) -> float | None:
    """Generate the CSV unless the cached one exists; returns generation seconds or None."""
    if args.csv_path.is_file():
        return None
    from recvae.data.synth import SynthConfig, write_synthetic_log

    config = SynthConfig(n_users=args.users, n_items=args.items, n_interactions=args.rows, seed=0)
    print(f"generating {args.rows:,} rows into {args.csv_path} ...", flush=True)
    start = time.perf_counter()
    write_synthetic_log(config, args.csv_path)
    return time.perf_counter() - start


def _seconds(step: dict) -> str:
    """A step's time; the per-event filters and dedupe share the read pass's time."""
    seconds = step.get("seconds")
    return "(in the read pass)" if seconds is None else f"{seconds:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(args: argparse.Namespace, results: dict) -> None:
    from recvae.provenance import run_info

    args.out_dir.mkdir(parents=True, exist_ok=True)
    results["run"] = run_info()
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    reps, typed = results["repetitions"], results["typed_scan"]
    ingests = [rep["ingest"] for rep in reps]
    last = ingests[-1]
    scans = [scan for rep in reps for scan in rep["scans"]]
    machine = results["run"]["machine"]
    lines = [
        f"# Ingest benchmark, {results['run']['time'][:10]}",
        "",
        f"Input: synthetic CSV, {last['rows']:,} rows ({args.users:,} users x {args.items:,} "
        f"items, seed 0), {results['csv_bytes'] / 2**20:,.0f} MiB, generated by `recvae synth`.",
        f"Ingest options: `--min-rating {args.min_rating} --min-user-count "
        f"{args.min_user_count}` (the Mult-VAE paper's preprocessing).",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        "shared with other jobs (timings are noisy: each ratio is taken within one repetition,",
        f"and the table gives medians over {len(reps)} repetitions).",
        "",
        "| measurement (median) | wall s | CPU s | rows/s (wall) | peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def row(name: str, items: list[dict]) -> str:
        wall = median([item["seconds"] for item in items])
        cpu = median([item["cpu_seconds"] for item in items])
        rss = max(item["peak_rss_mib"] for item in items)
        return f"| {name} | {wall:.2f} | {cpu:.2f} | {items[0]['rows'] / wall:,.0f} | {rss:,.0f} |"

    lines.append(row("DuckDB bare `SELECT count(*)`", scans))
    lines.append(row("DuckDB typed scan of all 4 columns (the floor)", [typed]))
    lines.append(row("recvae ingest (read, filter, CSR)", ingests))
    save = median([item["seconds_with_save"] - item["seconds"] for item in ingests])
    lines.append(f"| ... then Dataset.save of the result | {save:.2f} | | | |")
    baselines = [rep["baseline_ingest"] for rep in reps if "baseline_ingest" in rep]
    if baselines:
        lines.append(row(f"baseline: ingest by `{results['baseline_code']}`", baselines))
        save = median([item["seconds_with_save"] - item["seconds"] for item in baselines])
        lines.append(f"| ... then its Dataset.save | {save:.2f} | | | |")
    wall_ratios = [rep["ratio_ingest_to_scan"] for rep in reps]
    cpu_ratios = [rep["cpu_ratio_ingest_to_scan"] for rep in reps]
    typed_ratio = typed["seconds"] / min(scan["seconds"] for scan in scans)
    lines += [
        "",
        f"**Ingest / bare scan: {median(wall_ratios):.2f}x** wall-clock, median of "
        f"{', '.join(f'{r:.2f}' for r in wall_ratios)} (target: within 3x); "
        f"{median(cpu_ratios):.2f}x in CPU seconds "
        f"({', '.join(f'{r:.2f}' for r in cpu_ratios)}).",
        f"Peak memory of the ingest process: {max(i['peak_rss_mib'] for i in ingests) / 1024:.2f} "
        "GiB (target: under 4 GB).",
        "",
    ]
    if baselines:
        ratios = [rep["baseline_ratio_ingest_to_scan"] for rep in reps]
        cpu = [rep["baseline_cpu_ratio_ingest_to_scan"] for rep in reps]
        lines += [
            f"Baseline, timed in the same repetitions: {median(ratios):.2f}x wall-clock "
            f"({', '.join(f'{r:.2f}' for r in ratios)}), {median(cpu):.2f}x in CPU seconds "
            f"({', '.join(f'{r:.2f}' for r in cpu)}); peak memory "
            f"{max(i['peak_rss_mib'] for i in baselines) / 1024:.2f} GiB.",
            "",
        ]
    lines += [
        f"Result: {last['users']:,} users x {last['items']:,} items, {last['nnz']:,} interactions.",
        "",
        f"Typed scan / bare scan: {typed_ratio:.2f}x. Where the ingest time went (seconds, "
        "median): "
        + ", ".join(
            f"{key} {median([i['phase_seconds'][key] for i in ingests]):.1f}"
            for key in last["phase_seconds"]
        )
        + ".",
        "",
        "The read pass parses the file, checks every row, applies the per-event filters (here",
        "min_rating) and dedupes in one DuckDB group-by, so those steps share its time.",
        "",
        "| step | rows before | rows after | seconds |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {s['step']} | {s['rows_before']:,} | {s['rows_after']:,} | {_seconds(s)} |"
        for s in last["filters"]
    ]
    lines += [
        "",
        "Reproduce: `nice -n 5 python benchmarks/ingest_bench.py "
        f"--rows {args.rows} --users {args.users} --items {args.items} --repeat {args.repeat}"
        + (f" --baseline-code {args.baseline_code}" if args.baseline_code else "")
        + "`",
        "",
    ]
    (args.out_dir / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians reported")
    parser.add_argument(
        "--baseline-code",
        type=Path,
        default=None,
        help="directory with an older recvae package (git archive COMMIT recvae | tar -x -C DIR) "
        "to time in the same repetitions",
    )
    parser.add_argument("--min-rating", type=float, default=3.5)
    parser.add_argument("--min-user-count", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--child", choices=["scan", "typed", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--save-to", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "scan":
            result = measure_scan(args.csv)
        elif args.child == "typed":
            result = measure_typed_scan(args.csv)
        else:
            result = measure_ingest(args.csv, args.min_rating, args.min_user_count, args.save_to)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result, default=str))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    args.csv_path = args.work / f"synth-{args.rows}-{args.users}-{args.items}-seed0.csv"
    if args.out_dir is None:
        today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        args.out_dir = ROOT / "benchmarks" / "reports" / f"ingest-{today}"
    generation = ensure_csv(args)
    repetitions = []
    for index in range(args.repeat):
        print(f"repetition {index + 1} of {args.repeat} ...", flush=True)
        scans = [child("scan", args)]
        ingest = child("ingest", args)
        baseline = child("ingest", args, args.baseline_code) if args.baseline_code else None
        scans.append(child("scan", args))
        wall, cpu = min(s["seconds"] for s in scans), min(s["cpu_seconds"] for s in scans)
        repetition = {
            "scans": scans,
            "ingest": ingest,
            "ratio_ingest_to_scan": ingest["seconds"] / wall,
            "cpu_ratio_ingest_to_scan": ingest["cpu_seconds"] / cpu,
        }
        if baseline:
            repetition["baseline_ingest"] = baseline
            repetition["baseline_ratio_ingest_to_scan"] = baseline["seconds"] / wall
            repetition["baseline_cpu_ratio_ingest_to_scan"] = baseline["cpu_seconds"] / cpu
        repetitions.append(repetition)
    results = {
        "rows": args.rows,
        "csv_path": str(args.csv_path),
        "csv_bytes": args.csv_path.stat().st_size,
        "generation_seconds": generation,
        "repetitions": repetitions,
        "typed_scan": child("typed", args),
        "baseline_code": str(args.baseline_code) if args.baseline_code else None,
        "ratio_ingest_to_scan_median": median([r["ratio_ingest_to_scan"] for r in repetitions]),
        "cpu_ratio_ingest_to_scan_median": median(
            [r["cpu_ratio_ingest_to_scan"] for r in repetitions]
        ),
    }
    report(args, results)


if __name__ == "__main__":
    main()
