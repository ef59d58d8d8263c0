"""MLflow tracking (recvae.tracking) against a fake `mlflow` module that records every call."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import recvae
from recvae import logs, tracking
from recvae.cli import app


class FakeMlflow(types.ModuleType):
    """The slice of mlflow's fluent API that recvae calls, recording (name, args, kwargs)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail = fail or set()
        for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params",
                     "log_metrics", "log_artifact", "log_artifacts", "end_run"):  # fmt: skip
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str):
        def record(*args, **kwargs):
            if name in self.fail:
                raise ConnectionError(f"tracking server down ({name})")
            self.calls.append((name, args, kwargs))
            return object()

        return record

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]

    def params(self) -> dict:
        merged: dict = {}
        for (params,), _ in self.named("log_params"):
            merged.update(params)
        return merged


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return fake


@pytest.fixture(autouse=True)
def restore_recvae_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    logger = logging.getLogger(logs.LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    monkeypatch.setattr(logs, "_current_format", logs.current_format())
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def events_log(path: Path) -> Path:
    rows = [(f"u{u}", f"i{(u * 3 + j) % 12}") for u in range(40) for j in range(4)]
    pl.DataFrame(rows, schema=["user", "item"], orient="row").write_parquet(path)
    return path


def test_no_uri_or_no_mlflow_means_no_tracking(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert type(tracking.start_run()) is tracking.NullSink
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importing it raises ImportError
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    with caplog.at_level(logging.WARNING, logger="recvae"):
        assert type(tracking.start_run()) is tracking.NullSink
    assert "mlflow is not installed" in caplog.text
    with pytest.raises(recvae.RecvaeError, match=r"--mlflow-uri needs the mlflow package"):
        tracking.start_run(uri="http://mlflow:5000")


def test_params_metrics_and_run_status(fake_mlflow: FakeMlflow) -> None:
    uri = "file:///tmp/mlruns"
    with tracking.start_run(uri, "nightly", run_name="n1", tags={"a": "b"}) as sink:
        sink.log_params({"model": "ease", "config": {"l2": 200.0}, "unset": None})
        sink.log_params({"model": "multvae"})  # a key keeps its first value: MLflow refuses changes
        sink.log_metrics({"ndcg@100": 0.25, "loss": float("nan"), "stopped": "epochs"}, step=3)
    assert fake_mlflow.named("set_tracking_uri") == [(("file:///tmp/mlruns",), {})]
    assert fake_mlflow.named("set_experiment") == [(("nightly",), {})]
    assert fake_mlflow.named("start_run") == [((), {"run_name": "n1", "tags": {"a": "b"}})]
    assert fake_mlflow.params() == {"model": "ease", "config.l2": "200.0"}
    assert fake_mlflow.named("log_metrics") == [(({"ndcg_at_100": 0.25},), {"step": 3})]
    assert fake_mlflow.named("end_run") == [((), {"status": "FINISHED"})]
    with pytest.raises(ValueError), tracking.start_run("file:///tmp/mlruns"):
        raise ValueError("the job failed")
    assert fake_mlflow.named("end_run")[-1] == ((), {"status": "FAILED"})
    assert fake_mlflow.named("set_experiment")[-1] == (("recvae",), {})


def test_a_run_follows_epochs_saved_models_and_reports(fake_mlflow: FakeMlflow, tmp_path) -> None:
    data = recvae.ingest(events_log(tmp_path / "events.parquet"))
    with tracking.start_run("file:///tmp/mlruns") as sink:
        model = recvae.MultDAE(epochs=3, batch_size=16, metric="ndcg@10", threads=1)
        model.fit(data, validation=True)
        model.save(tmp_path / "m")
        report = tmp_path / "report.json"
        report.write_text("{}")
        logging.getLogger("recvae.nightly").info(
            "wrote %s", report, extra={"event": "report", "path": str(report)}
        )
        assert isinstance(sink, tracking.MlflowSink)
    per_epoch = [kw["step"] for _, kw in fake_mlflow.named("log_metrics") if kw.get("step")]
    assert per_epoch == [1, 2, 3]
    first_epoch = fake_mlflow.named("log_metrics")[0][0][0]
    assert {"loss", "ndcg_at_10", "lr"} <= set(first_epoch)
    params = fake_mlflow.params()
    assert params["model"] == "multdae" and params["config.loop.epochs"] == "3"
    assert params["dataset.fingerprint"] == data.fingerprint()
    best = [args[0] for args, kw in fake_mlflow.named("log_metrics") if kw["step"] is None]
    assert "best_ndcg_at_10" in best[0]
    model_dir = str(tmp_path / "m")
    assert fake_mlflow.named("log_artifacts") == [((model_dir,), {"artifact_path": "model"})]
    assert fake_mlflow.named("log_artifact") == [((str(report),), {"artifact_path": "report"})]
    # after the run, library events no longer reach mlflow
    calls = len(fake_mlflow.calls)
    model.save(tmp_path / "m2")
    assert len(fake_mlflow.calls) == calls


def test_a_failing_tracking_server_does_not_fail_the_job(monkeypatch, caplog) -> None:
    fake = FakeMlflow(fail={"log_metrics", "log_artifacts"})
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    with caplog.at_level(logging.WARNING, logger="recvae"), tracking.start_run("http://x") as sink:
        sink.log_metrics({"loss": 1.0}, step=1)
        sink.log_artifacts("/nowhere")
    assert "MLflow log_metrics failed: tracking server down" in caplog.text
    assert fake.named("end_run") == [((), {"status": "FINISHED"})]


def test_cli_train_is_one_run_finished_or_failed(fake_mlflow: FakeMlflow, tmp_path: Path) -> None:
    runner = CliRunner()
    log = events_log(tmp_path / "events.parquet")
    assert runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "ds")]).exit_code == 0
    assert fake_mlflow.calls == []  # ingest is not a tracked command
    train = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "multvae",
             "--epochs", "2", "--set", "metric=ndcg@10", "--no-progress",
             "--threads", "1"]  # fmt: skip
    result = runner.invoke(
        app, ["--mlflow-uri", "file:///tmp/mlruns", "--mlflow-experiment", "exp", *train]
    )
    assert result.exit_code == 0, result.output
    assert fake_mlflow.named("start_run")[0][1]["run_name"] == "train"
    assert fake_mlflow.named("set_experiment") == [(("exp",), {})]
    assert [kw["step"] for _, kw in fake_mlflow.named("log_metrics") if kw.get("step")] == [1, 2]
    assert fake_mlflow.named("log_artifacts")[0][1] == {"artifact_path": "model"}
    assert fake_mlflow.named("end_run") == [((), {"status": "FINISHED"})]
    result = runner.invoke(app, ["--mlflow-uri", "file:///tmp/mlruns", *train[:-1], "--lr", "x"])
    assert result.exit_code != 0
    bad = ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "m3")]
    runner.invoke(app, ["--mlflow-uri", "file:///tmp/mlruns", *bad])
    assert fake_mlflow.named("end_run")[-1] == ((), {"status": "FAILED"})


def test_metric_names_are_mlflow_safe() -> None:
    assert tracking.metric_name("recall_lightgcn@20") == "recall_lightgcn_at_20"
    assert tracking.metric_name("a:b") == "a_b"
