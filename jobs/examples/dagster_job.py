"""A Dagster job for the nightly run (a snippet: add it to your Definitions).

The op runs `recvae nightly` and reads its JSON run report, so the status, gate numbers and
timings show up as Dagster metadata; a refused run (exit 3) is reported without failing.
"""

import json
import subprocess
from pathlib import Path

from dagster import Definitions, MetadataValue, Output, ScheduleDefinition, job, op

CONFIG = "/etc/recvae/nightly.toml"
WORK_DIR = Path("/srv/recvae/var/nightly")  # [paths] work_dir of the config


@op
def recvae_nightly(context):
    done = subprocess.run(["recvae", "nightly", "--config", CONFIG], check=False)
    report_file = WORK_DIR / "last-run.json"  # absent when --config itself was refused (exit 2)
    report = json.loads(report_file.read_text()) if report_file.is_file() else {"status": "?"}
    context.log.info(f"recvae nightly: {report['status']} (exit {done.returncode})")
    if done.returncode not in (0, 3):
        raise RuntimeError(
            f"recvae nightly failed with exit {done.returncode}: {report.get('error')}"
        )
    return Output(report["status"], metadata={"report": MetadataValue.json(report)})


@job
def recvae_nightly_job():
    recvae_nightly()


defs = Definitions(
    jobs=[recvae_nightly_job],
    schedules=[ScheduleDefinition(job=recvae_nightly_job, cron_schedule="30 2 * * *")],
)
