"""Crash harness: SIGKILL `recvae train`, `recvae recommend` and the nightly job at random moments,
rerun each, and check that nothing was lost or left behind.

    .venv/bin/python benchmarks/crash_harness.py --kills-per-target 20

On a small synthetic log (`recvae synth` -> `recvae ingest`), for each target it first runs the
command once uninterrupted (the reference, and its duration D), then N times: start the command,
SIGKILL its process group after a delay drawn uniformly from (0, D) (train: every other kill
from the training window, between the reference run's first and last checkpoint; redrawn
shorter when the command finished first, so every kill lands in a live run), rerun the same
command to completion, and check the invariants:

- train (`recvae train --checkpoint-dir`): the output model loads; the rerun resumed from the
  killed run's last checkpoint (the epochs before it keep the killed run's own timings in the
  log: they were not trained again) and its weights equal the uninterrupted run's bit for bit;
  no temporary file is left.
- recommend (`recvae recommend STORE --history LOG`): between kill and rerun the export is absent
  or the previous complete one; after the rerun it is readable, every row and the file's recvae
  metadata name the store's current version; no temporary file (beside the export, nor a spill
  directory in the run's TMPDIR) is left.
- nightly (`recvae nightly --config`, or the command given with --nightly-command): after the
  rerun (exit 0 promoted or 3 refused by the gate) the store's current model loads, the export's
  rows name the current version, and no temporary file is left in the store, work directory,
  export directory or TMPDIR.

Every child runs with TMPDIR set to a directory of the harness, so scratch files of killed runs
are seen (torch's own compile cache, torchinductor_*, is not a temporary and is not counted).
Writes benchmarks/reports/crash-YYYY-MM-DD/{report.md,results.json} (atomically) and exits 1
when any invariant broke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMP_NAME = re.compile(r"\.tmp-|\.old-|__recvae_tmp")
# caches libraries keep in TMPDIR across runs on purpose (not temporaries of a run)
LIBRARY_CACHES = re.compile(r"^torchinductor_")
TARGETS = ("train", "recommend", "nightly")


@dataclass
class Kill:
    """One kill and the checks after its rerun."""

    target: str
    index: int
    delay_s: float
    fraction_of_run: float  # delay / uninterrupted duration
    attempts: int  # draws until the kill landed in a live run
    rerun_exit: int | None = None
    rerun_s: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def broken(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]


# ---- processes ------------------------------------------------------------------------------


def child_env(tmpdir: Path) -> dict[str, str]:
    env = dict(os.environ, TMPDIR=str(tmpdir), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, float]:
    """Run to completion; returns (exit code, seconds). Output is appended to `log`."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(command)}\n".encode())
        out.flush()
        done = subprocess.run(command, env=env, cwd=cwd, stdout=out, stderr=out)
    return done.returncode, time.perf_counter() - started


def run_and_kill(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, delay: float
) -> bool:
    """Start `command`, SIGKILL its whole process group after `delay` s; False if it ended first."""
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(command)}   # SIGKILL after {delay:.2f}s\n".encode())
        out.flush()
        child = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=out, start_new_session=True
        )
        try:
            child.wait(timeout=delay)
            return False  # finished before the kill
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            out.write(b"[killed]\n")
            return True


def kill_at_random(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    duration: float,
    rng: Any,
    window: tuple[float, float] | None = None,
) -> tuple[float, int]:
    """Kill a run at a random moment of (0, duration), or of `window`; returns (delay, attempts)."""
    low, upper = window or (0.02 * duration, duration)
    for attempt in range(1, 6):
        delay = rng.uniform(low, upper)
        if run_and_kill(command, env, cwd, log, delay):
            return delay, attempt
        low, upper = min(low, 0.5 * delay), delay  # it ended sooner than measured: draw earlier
    raise RuntimeError(f"could not kill {command[:3]} in a live run after 5 attempts")


def run_watching(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, watched: Path
) -> tuple[int, float, float | None, float | None]:
    """Run to completion, noting when `watched` first appeared and when it last changed
    (seconds from the start): the training window, from the first checkpoint to the last."""
    started = time.perf_counter()
    first = last = None
    seen: float | None = None
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(command)}\n".encode())
        out.flush()
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=out)
        while child.poll() is None:
            try:
                mtime = watched.stat().st_mtime
            except OSError:
                mtime = None
            if mtime is not None and mtime != seen:
                seen, last = mtime, time.perf_counter() - started
                first = last if first is None else first
            time.sleep(0.05)
    return child.returncode, time.perf_counter() - started, first, last


# ---- checks ---------------------------------------------------------------------------------


def temp_leftovers(*roots: Path) -> list[str]:
    """Temporary names (`.X.tmp-*`, `.X.old-*`) anywhere under `roots`."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if TEMP_NAME.search(path.name):
                found.append(str(path))
    return found


def tmpdir_leftovers(tmpdir: Path) -> list[str]:
    """Whatever the children left in their TMPDIR (no child is alive when this is called)."""
    if not tmpdir.exists():
        return []
    return sorted(str(p) for p in tmpdir.iterdir() if not LIBRARY_CACHES.match(p.name))


def model_loads(path: Path) -> tuple[bool, str]:
    from recvae.artifact import load_artifact
    from recvae.errors import RecvaeError

    try:
        load_artifact(path)
    except (RecvaeError, OSError) as error:
        return False, str(error)
    return True, ""


def export_versions(export: Path) -> tuple[set[str], str | None]:
    """The model versions in an export's rows, and the one in its recvae metadata (if any)."""
    import pyarrow.parquet as pq

    table = pq.read_table(export, columns=["model_version"])
    versions = set(table.column("model_version").to_pylist())
    metadata = pq.read_schema(export).metadata or {}
    marker = metadata.get(b"recvae")
    return versions, (json.loads(marker).get("model_version") if marker else None)


def current_version(store: Path) -> str | None:
    link = store / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


# ---- the targets ----------------------------------------------------------------------------


class Harness:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmpdir = work / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.env = child_env(self.tmpdir)
        self.log = work / "commands.log"
        self.recvae = [str(BIN / "recvae")]
        self.kills: list[Kill] = []
        self.durations: dict[str, float] = {}
        self.notes: dict[str, Any] = {}

    def sh(self, *args: str) -> None:
        code, _ = run([*self.recvae, *args], self.env, self.work, self.log)
        if code != 0:
            raise RuntimeError(
                f"setup step failed ({code}): recvae {shlex.join(args)}; see {self.log}"
            )

    def setup(self) -> None:
        a = self.args
        self.sh("synth", "--out", "log.parquet", "--users", str(a.users), "--items", str(a.items),
                "--interactions", str(a.interactions), "--seed", str(a.seed))  # fmt: skip
        self.sh("ingest", "log.parquet", "--out", "ds", "--min-user-count", "3")

    # -- train --

    def train_command(self, index: int | str) -> list[str]:
        return [*self.recvae, "train", "ds", "--model", "multvae", "--out", f"train/model-{index}",
                "--checkpoint-dir", f"train/ckpt-{index}", "--epochs", str(self.args.epochs),
                "--seed", "0", "--threads", "1", "--batch-size", "100", "--no-progress",
                "--set", "hidden_dims=[64]", "--set", "latent_dim=16",
                "--set", "metric='ndcg@20'"]  # fmt: skip

    def train_target(self, kills: int) -> None:
        """Odd kills land anywhere in (0, D); even ones inside the training window (between the
        first and the last checkpoint of the reference run), so resuming is really exercised."""
        watched = self.work / "train/ckpt-ref/last/state.json"
        code, seconds, first, last = run_watching(
            self.train_command("ref"), self.env, self.work, self.log, watched
        )
        if code != 0:
            raise RuntimeError(f"reference training failed; see {self.log}")
        self.durations["train"] = seconds
        window = (first, last) if first is not None and last is not None and last > first else None
        self.notes["train_window_s"] = window
        reference = (self.work / "train/model-ref/weights.safetensors").read_bytes()
        for index in range(kills):
            command = self.train_command(index)
            delay, attempts = kill_at_random(
                command, self.env, self.work, self.log, seconds, self.rng,
                window if index % 2 == 0 else None,
            )  # fmt: skip
            kill = Kill("train", index, delay, delay / seconds, attempts)
            ckpt = self.work / f"train/ckpt-{index}"
            history = _checkpoint_history(ckpt / "last")
            kill.notes["checkpoint_epoch_at_kill"] = len(history)
            out = self.work / f"train/model-{index}"
            kill.checks["no half-written model after kill"] = (not out.exists()) or model_loads(
                out
            )[0]
            kill.rerun_exit, kill.rerun_s = run(command, self.env, self.work, self.log)
            kill.checks["rerun exit 0"] = kill.rerun_exit == 0
            ok, why = model_loads(out)
            kill.checks["model loads"] = ok
            if why:
                kill.notes["load_error"] = why
            kill.checks["resumed from the checkpoint"] = _resumed(ckpt / "log.jsonl", history)
            kill.checks["weights equal the uninterrupted run"] = (
                ok and (out / "weights.safetensors").read_bytes() == reference
            )
            left = temp_leftovers(self.work / "train") + tmpdir_leftovers(self.tmpdir)
            kill.checks["no temporary file left"] = not left
            kill.notes["leftovers"] = left
            self.kills.append(kill)
            shutil.rmtree(ckpt, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            self._clear_tmpdir()

    # -- recommend --

    def recommend_command(self) -> list[str]:
        return [*self.recvae, "recommend", "store", "--history", "log.parquet",
                "--out", "exports/recs.parquet", "--k", "50", "--chunk-size", "50"]  # fmt: skip

    def recommend_target(self, kills: int) -> None:
        self.sh("train", "ds", "--model", "multvae", "--out", "rec-model", "--epochs", "2",
                "--threads", "1",
                "--no-progress", "--set", "hidden_dims=[64]", "--set", "latent_dim=16",
                "--set", "metric='ndcg@20'")  # fmt: skip
        self.sh("models", "add", "store", "rec-model", "--promote")
        code, seconds = run(self.recommend_command(), self.env, self.work, self.log)
        if code != 0:
            raise RuntimeError(f"reference export failed; see {self.log}")
        self.durations["recommend"] = seconds
        export = self.work / "exports/recs.parquet"
        for index in range(kills):
            before = export.read_bytes()
            delay, attempts = kill_at_random(
                self.recommend_command(), self.env, self.work, self.log, seconds, self.rng
            )
            kill = Kill("recommend", index, delay, delay / seconds, attempts)
            kill.checks["export intact after kill"] = export.is_file() and (
                export.read_bytes() == before
            )
            kill.notes["temps_after_kill"] = len(
                temp_leftovers(export.parent) + tmpdir_leftovers(self.tmpdir)
            )
            kill.rerun_exit, kill.rerun_s = run(
                self.recommend_command(), self.env, self.work, self.log
            )
            kill.checks["rerun exit 0"] = kill.rerun_exit == 0
            current = current_version(self.work / "store")
            ok, _ = model_loads(self.work / "store" / "current")
            kill.checks["current model loads"] = ok
            self._check_export(kill, export, current)
            left = temp_leftovers(export.parent, self.work / "store") + tmpdir_leftovers(
                self.tmpdir
            )
            kill.checks["no temporary file left"] = not left
            kill.notes["leftovers"] = left
            self.kills.append(kill)
            self._clear_tmpdir()

    def _check_export(self, kill: Kill, export: Path, current: str | None) -> None:
        try:
            versions, marker = export_versions(export)
        except Exception as error:  # an unreadable export is exactly what this looks for
            kill.checks["export belongs to current"] = False
            kill.notes["export_error"] = str(error)
            return
        kill.notes["export_versions"] = sorted(versions)
        kill.notes["export_marker"] = marker
        kill.notes["current"] = current
        kill.checks["export belongs to current"] = versions == {current} and marker in (
            None,
            current,
        )

    # -- nightly --

    def nightly_command(self) -> list[str]:
        template = self.args.nightly_command or default_nightly_command()
        return [part.replace("{config}", "nightly.toml") for part in shlex.split(template)]

    def nightly_target(self, kills: int) -> None:
        (self.work / "nightly.toml").write_text(NIGHTLY_CONFIG.format(epochs=self.args.epochs))
        command = self.nightly_command()
        code, seconds = run(command, self.env, self.work, self.log)
        if code not in (0, 3):
            raise RuntimeError(f"reference nightly run failed ({code}); see {self.log}")
        self.durations["nightly"] = seconds
        store, export = self.work / "nightly/store", self.work / "nightly/out/recs.parquet"
        for index in range(kills):
            delay, attempts = kill_at_random(
                command, self.env, self.work, self.log, seconds, self.rng
            )
            kill = Kill("nightly", index, delay, delay / seconds, attempts)
            current = current_version(store)
            self._check_export(kill, export, current)
            kill.checks["export belongs to current after kill"] = kill.checks.pop(
                "export belongs to current"
            )
            kill.rerun_exit, kill.rerun_s = run(command, self.env, self.work, self.log)
            kill.checks["rerun exit 0 or 3"] = kill.rerun_exit in (0, 3)
            current = current_version(store)
            ok, why = model_loads(store / "current")
            kill.checks["current model loads"] = ok
            if why:
                kill.notes["load_error"] = why
            self._check_export(kill, export, current)
            left = temp_leftovers(store, self.work / "nightly/work", export.parent)
            left += tmpdir_leftovers(self.tmpdir)
            kill.checks["no temporary file left"] = not left
            kill.notes["leftovers"] = left
            self.kills.append(kill)
            self._clear_tmpdir()

    def _clear_tmpdir(self) -> None:
        """Start the next kill with an empty TMPDIR, so each leftover is counted once."""
        for path in self.tmpdir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


NIGHTLY_CONFIG = """\
[paths]
store = "nightly/store"
work_dir = "nightly/work"
export = "nightly/out/recs.parquet"
[data]
sources = ["log.parquet"]
[data.ingest]
min_user_count = 3
[split]
valid_users = 100
[train]
model = "multvae"
[train.config]
epochs = {epochs}
batch_size = 100
hidden_dims = [64]
latent_dim = 16
threads = 1
metric = "ndcg@20"
[gate]
metric = "ndcg@20"
tolerance = 1.0
[export]
k = 50
chunk_size = 50
"""


def default_nightly_command() -> str:
    """The packaged nightly job of this checkout's environment."""
    return f"{BIN / 'recvae'} nightly --config {{config}}"
    return f"{sys.executable} {ROOT / 'jobs' / 'nightly_train.py'} --config {{config}}"


def _checkpoint_history(last: Path) -> list[dict[str, Any]]:
    state = last / "state.json"
    if not state.is_file():
        return []
    return json.loads(state.read_text())["loop"].get("history", [])


def _resumed(log: Path, history: list[dict[str, Any]]) -> bool:
    """The epochs of the killed run's last checkpoint appear in the final log with their own
    timings: they were carried over, not trained again (a retrained epoch gets new timings)."""
    if not history:
        return True  # killed before the first checkpoint: nothing to resume
    if not log.is_file():
        return False
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if len(records) < len(history):
        return False
    timing = [k for k in history[0] if k.endswith("seconds")]
    return bool(timing) and all(
        records[i][key] == history[i][key] for i in range(len(history)) for key in timing
    )


# ---- report ---------------------------------------------------------------------------------


def write_report(harness: Harness, args: argparse.Namespace, started: str) -> Path:
    from recvae.io import atomic_dir, check_output
    from recvae.provenance import run_info

    date = dt.date.today().isoformat()
    dest = Path(args.out) / f"crash-{date}"
    check_output(dest, "bench report")
    kills = harness.kills
    payload = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "started": started,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "nightly_command": shlex.join(harness.nightly_command()),
        "uninterrupted_seconds": harness.durations,
        "notes": harness.notes,
        "kills": len(kills),
        "broken_invariants": sum(len(k.broken) for k in kills),
        "results": [asdict(k) | {"broken": k.broken} for k in kills],
        "run": run_info(),
    }
    with atomic_dir(dest) as tmp:
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, default=str))
        (tmp / "report.md").write_text(render_markdown(payload, kills))
    return dest


def render_markdown(payload: dict[str, Any], kills: list[Kill]) -> str:
    lines = [
        f"# Crash harness, {payload['started'][:10]}",
        "",
        f"**{payload['kills']} kills, {payload['broken_invariants']} broken invariants.**",
        "",
        f"Command: `{payload['command']}`  ",
        f"Nightly command: `{payload['nightly_command']}`  ",
        f"git {payload['run'].get('git_commit')}, {payload['run'].get('time')}",
        "",
        "Each kill is a SIGKILL of the command's process group after a delay drawn uniformly from",
        "(0, D), D = the uninterrupted run's duration (train: every other kill from the training",
        f"window {_window(payload['notes'].get('train_window_s'))} s, between the reference run's",
        "first and last checkpoint); then the same command is rerun to the end and the",
        "invariants below are checked (see benchmarks/crash_harness.py).",
        "",
        "| target | kills | uninterrupted D (s) | delay range (s) | invariant | held |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        mine = [k for k in kills if k.target == target]
        if not mine:
            continue
        names = list(dict.fromkeys(name for k in mine for name in k.checks))
        delays = [k.delay_s for k in mine]
        for n, name in enumerate(names):
            held = sum(k.checks.get(name, False) for k in mine)
            head = (
                [target, str(len(mine)), f"{payload['uninterrupted_seconds'].get(target, 0):.1f}",
                 f"{min(delays):.2f}-{max(delays):.2f}"]
                if n == 0 else ["", "", "", ""]
            )  # fmt: skip
            lines.append("| " + " | ".join([*head, name, f"{held}/{len(mine)}"]) + " |")
    resumed = [k for k in kills if k.target == "train"]
    if resumed:
        epochs = [k.notes.get("checkpoint_epoch_at_kill", 0) for k in resumed]
        lines += ["", f"train: checkpoint epoch at kill time per kill: {epochs}"]
    broken = [k for k in kills if k.broken]
    lines += ["", "## Broken invariants", ""]
    if not broken:
        lines.append("None.")
    for k in broken:
        notes = {key: value for key, value in k.notes.items() if value}
        lines.append(
            f"- {k.target} #{k.index} (killed at {k.delay_s:.2f}s, "
            f"{k.fraction_of_run:.0%} of D): {', '.join(k.broken)}; {json.dumps(notes)}"
        )
    return "\n".join(lines) + "\n"


def _window(window: Any) -> str:
    return f"{window[0]:.1f}-{window[1]:.1f}" if window else "(not measured)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills-per-target", type=int, default=20)
    parser.add_argument("--targets", default=",".join(TARGETS), help="e.g. train,recommend")
    parser.add_argument(
        "--nightly-command",
        default=None,
        help="command line with {config}; default: `recvae nightly --config {config}`",
    )
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--interactions", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports")
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    if args.kills_per_target < 1:
        parser.error("--kills-per-target must be at least 1")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recvae-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    harness = Harness(work, args)
    print(f"crash harness in {work}; commands logged to {harness.log}", flush=True)
    try:
        harness.setup()
        for target in targets:
            getattr(harness, f"{target}_target")(args.kills_per_target)
            mine = [k for k in harness.kills if k.target == target]
            broken = sum(len(k.broken) for k in mine)
            print(f"{target}: {len(mine)} kills, {broken} broken invariants", flush=True)
    finally:
        if harness.kills:
            dest = write_report(harness, args, started)
            print(f"report: {dest}", flush=True)
        if not args.keep_workdir and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(k.broken for k in harness.kills) else 0


if __name__ == "__main__":
    sys.exit(main())
