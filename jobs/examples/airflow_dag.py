"""An Airflow DAG for the nightly job (a snippet: copy it into your dags/ folder).

`recvae nightly` holds the whole job; Airflow only schedules it and alerts on its exit code.
Exit code 3 (refused by the quality gate) is skipped rather than failed; the JSON run report is
WORK_DIR/last-run.json.
"""

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

CONFIG = "/etc/recvae/nightly.toml"
RECVAE = "/srv/recvae/.venv/bin/recvae"

with DAG(
    "recvae_nightly",
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
):
    check = BashOperator(
        task_id="check", bash_command=f"{RECVAE} nightly --config {CONFIG} --check"
    )
    train = BashOperator(
        task_id="nightly",
        bash_command=f"{RECVAE} nightly --config {CONFIG}",
        skip_on_exit_code=3,
    )
    check >> train
