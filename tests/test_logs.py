"""Logging: the `recvae` logger hierarchy in human or JSON-lines form, and the events it carries."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recvae import logs
from recvae.cli import app
from recvae.errors import RecvaeError


@pytest.fixture(autouse=True)
def restore_recvae_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures logging afresh; leave the logger as it was for the others."""
    logger = logging.getLogger(logs.LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    monkeypatch.setattr(logs, "_current_format", logs.current_format())
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_carry_message_level_logger_and_extra_fields() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    logging.getLogger("recvae.data.ingest").info(
        "ingested %d users", 3, extra={"event": "ingest", "users": 3, "loss": float("nan")}
    )
    logging.getLogger("recvae.train").debug("not shown at INFO")
    (line,) = json_lines(stream.getvalue())
    assert line["message"] == "ingested 3 users"
    assert line["level"] == "info" and line["logger"] == "recvae.data.ingest"
    assert line["event"] == "ingest" and line["users"] == 3
    assert line["loss"] == "nan"  # JSON has no NaN: written as a string, still one valid line
    assert line["ts"].endswith("+00:00")


def test_human_output_skips_what_a_progress_bar_shows_json_keeps_it() -> None:
    record = {"event": "epoch", "epoch": 1, "metrics": {"loss": 1.5}, "_on_progress_bar": True}
    human = io.StringIO()
    logs.configure("human", "info", stream=human)
    logging.getLogger("recvae.train").info("epoch 1/1 loss 1.5", extra=record)
    logging.getLogger("recvae.train").info("saved model")
    assert "saved model" in human.getvalue() and "epoch 1/1" not in human.getvalue()
    machine = io.StringIO()
    logs.configure("json", stream=machine)
    logging.getLogger("recvae.train").info("epoch 1/1 loss 1.5", extra=record)
    (line,) = json_lines(machine.getvalue())
    assert line["metrics"] == {"loss": 1.5} and "_on_progress_bar" not in line
    assert logs.progress_bars(True) is False  # no bars between JSON lines
    logs.configure("human", stream=io.StringIO())
    assert logs.progress_bars(True) is True and logs.progress_bars(False) is False


def test_format_and_level_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECVAE_LOG_FORMAT", "json")
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    stream = io.StringIO()
    logs.configure(stream=stream)
    logging.getLogger("recvae.x").info("hidden")
    logging.getLogger("recvae.x").warning("shown")
    assert [line["message"] for line in json_lines(stream.getvalue())] == ["shown"]
    with pytest.raises(RecvaeError, match="unknown log format 'xml'"):
        logs.configure("xml")
    with pytest.raises(RecvaeError, match="unknown log level 'loud'"):
        logs.configure("json", "loud")


def test_configure_replaces_its_own_handler_only() -> None:
    logger = logging.getLogger(logs.LOGGER_NAME)
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    logs.configure("json", stream=io.StringIO())
    logs.configure("human", stream=io.StringIO())
    ours = [h for h in logger.handlers if getattr(h, "_recvae", False)]
    assert len(ours) == 1 and foreign in logger.handlers


def test_cli_json_logs_cover_ingest_training_saving_promotion_and_export(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    rows = [(f"u{u}", f"i{(u + j) % 12}") for u in range(30) for j in range(4)]
    pl.DataFrame(rows, schema=["user", "item"], orient="row").write_csv(log)
    runner = CliRunner()
    commands = [
        ["ingest", str(log), "--out", str(tmp_path / "ds")],
        ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "multvae",
         "--epochs", "2", "--set", "metric=ndcg@10", "--batch-size", "16", "--threads", "1"],
        ["models", "add", str(tmp_path / "store"), str(tmp_path / "m"), "--promote"],
        ["recommend", str(tmp_path / "store"), "--history", str(tmp_path / "ds"), "--k", "3",
         "--out", str(tmp_path / "recs.parquet")],
    ]  # fmt: skip
    records = []
    for command in commands:
        result = runner.invoke(app, ["--log-format", "json", *command])
        assert result.exit_code == 0, result.output
        lines = result.stderr.splitlines()
        assert all(line.startswith("{") for line in lines), result.stderr  # pure JSON lines
        records += json_lines(result.stderr)
    events = [r["event"] for r in records if r.get("event") not in (None, "status")]
    # a memory estimate starts the training and the export's scoring (recvae.models.memory)
    expected = ["ingest", "memory_estimate", "epoch", "epoch", "model_saved", "promote",
                "memory_estimate", "export"]  # fmt: skip
    assert events == expected
    status = [r["message"] for r in records if r.get("event") == "status"]
    assert any(message.startswith("training multvae on ") for message in status), status
    assert any(message.startswith("saved ") for message in status), status


def test_cli_json_logs_report_an_error_as_one_json_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from recvae.cli import main

    monkeypatch.setattr(
        sys, "argv", ["recvae", "--log-format", "json", "train", str(tmp_path / "nope"),
                      "--out", str(tmp_path / "m")],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["event"] == "error"
    assert str(tmp_path / "nope") in record["message"]


def test_cli_refuses_an_unknown_log_format() -> None:
    result = CliRunner().invoke(app, ["--log-format", "xml", "version"])
    assert result.exit_code != 0 and "unknown log format 'xml'" in str(result.exception)


def test_human_default_shows_warnings_not_the_steps_the_commands_already_print() -> None:
    human = io.StringIO()
    logs.configure("human", stream=human)
    logging.getLogger("recvae.data.ingest").info("ingested 3 users")
    logging.getLogger("recvae.tracking").warning("MLflow log_metrics failed")
    assert "ingested" not in human.getvalue() and "MLflow log_metrics failed" in human.getvalue()
    # the loggers still pass INFO events on, for listeners such as the MLflow sink
    assert logging.getLogger("recvae.train").isEnabledFor(logging.INFO)
