"""`recvae train --model auto`: budget parsing, the choice, the metadata, the CLI, the API and
the nightly job, on tiny synthetic data with tiny candidates (each test runs in seconds)."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import recvae
from recvae.artifact import load_artifact
from recvae.cli import app
from recvae.data.dataset import Dataset
from recvae.data.split import ProtocolSpec
from recvae.data.vocab import Vocabulary
from recvae.errors import RecvaeError
from recvae.workflow import auto
from recvae.workflow.auto import AutoConfig, Candidate, default_budget, fit_auto, parse_budget

runner = CliRunner()
METRIC = "ndcg@5"
TINY = (
    Candidate("ease-strong", "ease", {"l2": 500.0}, "linear"),
    Candidate("ease-weak", "ease", {"l2": 1.0}, "linear"),
    Candidate("als-tiny", "als", {"factors": 4, "iterations": 2}, "linear"),
    Candidate("dae-tiny", "multdae", {"latent_dim": 4, "epochs": 8, "batch_size": 32}, "deep"),
)


def block_dataset(n_users: int = 150) -> Dataset:
    """Three taste groups over 8 items each: any personal model beats popularity."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for user in range(n_users):
        items = rng.choice(8, size=5, replace=False) + 8 * (user % 3)
        rows += [user] * 5
        cols += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, 24))
    users = Vocabulary([f"u{i}" for i in range(n_users)], name="user")
    return Dataset(matrix, users, Vocabulary(list(range(100, 124)), name="item"))


def run_tiny(budget: str = "60s", candidates=TINY, **settings) -> auto.AutoResult:
    config = AutoConfig(budget=budget, metric=METRIC, threads=1, **settings)
    return fit_auto(block_dataset(), config, candidates=candidates)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("2h", 7200), ("90s", 90), ("1h30m", 5400), (45, 45)]
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["30", "thirty minutes", "", "0m", "5d", "m"])
def test_a_bad_budget_is_one_clear_error(text):
    with pytest.raises(RecvaeError, match=r"budget .*(expected a duration|more than 0)"):
        parse_budget(text)


def test_default_budget_scales_with_the_data():
    assert default_budget(100_000) == 240  # ml-100k: 4 minutes
    assert default_budget(1_000_000) == 780
    assert default_budget(10**9) == 7200  # at most 2 hours


def test_winner_is_the_best_candidate_and_every_candidate_is_recorded():
    result = run_tiny()
    rows = {row["label"]: row for row in result.rows}
    assert list(rows) == ["ease-strong", "ease-weak", "als-tiny", "dae-tiny", "blend"]
    fitted = [row for row in result.rows if row["status"] == "fitted"]
    assert len(fitted) == 5
    best = max(fitted, key=lambda row: row["metrics"][METRIC])
    assert result.winner == best["label"]
    # the blend pairs the best of the three families (ease, als, multdae) with each other one
    # family's best, and keeps the best pair
    ease = max((rows["ease-strong"], rows["ease-weak"]), key=lambda row: row["metrics"][METRIC])
    bests = sorted([ease, rows["als-tiny"], rows["dae-tiny"]], key=lambda r: -r["metrics"][METRIC])
    pairs = rows["blend"]["pairs"]
    assert [pair["members"] for pair in pairs] == [
        [bests[0]["label"], bests[1]["label"]],
        [bests[0]["label"], bests[2]["label"]],
    ]
    pair = max(pairs, key=lambda pair: pair[METRIC])
    # then the best pair with the third family's best: kept only when strictly better
    thirds = rows["blend"]["thirds"]
    third_family = next(b["label"] for b in bests if b["label"] not in pair["members"])
    assert [t["members"] for t in thirds] == [[*pair["members"], third_family]]
    assert thirds[0][METRIC] >= pair[METRIC]  # its grid holds the pair's weights
    chosen = thirds[0] if thirds[0][METRIC] > pair[METRIC] else pair
    assert rows["blend"]["members"] == chosen["members"]
    assert len(rows["blend"]["weights"]) == len(chosen["members"])
    assert sum(rows["blend"]["weights"]) == pytest.approx(1.0)
    assert rows["blend"]["metrics"][METRIC] == pytest.approx(chosen[METRIC])
    members = [rows[label] for label in chosen["members"]]
    assert rows["blend"]["metrics"][METRIC] >= max(
        m["metrics"][METRIC] for m in members
    )  # the grid holds each member alone
    assert rows["dae-tiny"]["settings"]["time_limit"] > 0
    epochs = rows["dae-tiny"]["fold_best_epochs"]  # the mean of the folds' best epochs
    assert epochs[0] == rows["dae-tiny"]["best_epoch"]
    assert rows["dae-tiny"]["refit_epochs"] == int(sum(epochs) / len(epochs) + 0.5)
    for row in fitted:
        assert row["fit_seconds"] >= 0 and row["settings"] is not None
    # the metadata carries every candidate, and the winner's validation numbers
    meta = result.fit.metadata
    assert [row["label"] for row in meta["auto"]["candidates"]] == list(rows)
    assert meta["candidates"] == meta["auto"]["candidates"]
    assert meta["auto"]["winner"] == result.winner
    assert meta["metrics"][METRIC] == pytest.approx(best["metrics"][METRIC])


def test_the_winner_is_refitted_on_all_data_with_its_chosen_epochs():
    result = run_tiny(candidates=TINY[3:])  # the deep model alone: no blend, it wins
    assert result.winner == "dae-tiny"
    row = result.rows[0]
    assert result.rows[1]["status"] == "skipped"
    assert result.rows[1]["reason"] == (
        "fewer than two model families were fitted (dae-tiny): nothing to blend"
    )
    final = result.fit
    assert final.split.train.shape[0] == 150 and final.split.valid is None  # every user
    assert len(final.model.history) == row["refit_epochs"]
    assert final.metadata["auto"]["validation_split"]["train_users"] < 150
    assert final.metadata["evaluation"]["means"][METRIC] == row["metrics"][METRIC]


def test_without_refit_the_winner_is_the_fit_it_was_scored_as():
    result = run_tiny(candidates=TINY[:2], refit=False)
    assert result.fit.split.valid is not None
    assert result.fit.metadata["auto"]["refit"] is False
    assert result.fit.model.config.l2 in (500.0, 1.0)


def test_too_small_a_budget_skips_with_reasons_or_fails_clearly():
    # 1 second: 0.7s to choose, less than a deep model needs to start, so it is skipped
    result = run_tiny(budget="1s")
    rows = {row["label"]: row for row in result.rows}
    assert rows["dae-tiny"]["status"] == "skipped"
    assert "a deep model needs to start" in rows["dae-tiny"]["reason"]
    assert rows["blend"]["status"] == "fitted"  # the linear families still pair up
    assert set(rows["blend"]["members"]) <= {"ease-strong", "ease-weak", "als-tiny"}
    assert result.winner in ("ease-strong", "ease-weak", "als-tiny", "blend")
    with pytest.raises(RecvaeError, match="no candidate could be fitted within the budget 1s"):
        run_tiny(budget="1s", candidates=TINY[3:])


def test_exact_ease_is_skipped_when_its_matrices_do_not_fit_in_memory(monkeypatch):
    def no_room(n_items):
        raise RecvaeError(f"ease: {n_items} items need more memory than available")

    stand_in = Candidate("als-for-ease", "als", {"factors": 2, "iterations": 1}, "linear", "ease")
    assert run_tiny(candidates=(TINY[0], stand_in)).rows[1]["reason"] == (
        "not needed: ease was fitted"
    )
    monkeypatch.setattr("recvae.models.ease.check_fits_in_memory", no_room)
    result = run_tiny(candidates=(*TINY[:3], stand_in))
    rows = {row["label"]: row for row in result.rows}
    assert rows["ease-strong"]["status"] == rows["ease-weak"]["status"] == "skipped"
    assert rows["ease-strong"]["reason"].startswith("memory: ease: 24 items need more memory")
    assert rows["als-for-ease"]["status"] == "fitted"  # the stand-in runs instead
    assert result.winner in ("als-tiny", "als-for-ease")


def test_unknown_candidate_labels_are_refused():
    with pytest.raises(ValueError, match="unknown candidate"):
        AutoConfig(candidates=("ease-l2-7",))


def test_cli_auto_trains_saves_and_reports_every_candidate(tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "CANDIDATES", TINY)
    block_dataset().save(tmp_path / "ds")
    (tmp_path / "auto.toml").write_text(f'metric = "{METRIC}"\nthreads = 1\n')
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--model", "auto",
            "--budget", "1m", "--config", str(tmp_path / "auto.toml")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "m")
    meta = artifact.metadata
    assert artifact.model.name == meta["auto"]["winner_model"]
    assert meta["auto"]["budget"] == "1m" and meta["auto"]["metric"] == METRIC
    assert len(meta["auto"]["candidates"]) == 5
    saved = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert saved["auto"]["winner"] == meta["auto"]["winner"]
    assert len(saved["auto"]["fold_users"]) == saved["auto"]["folds"] >= 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--budget", "soon"], "budget 'soon': expected a duration such as 90s, 30m, 2h"),
        (["--budget", "30m", "--epochs", "3"], "--epochs cannot be used with --model auto"),
        (["--model", "ease", "--budget", "30m"], "--budget is for --model auto"),
    ],
)
def test_cli_auto_refuses_bad_options(tmp_path, monkeypatch, extra, words):
    monkeypatch.setenv("RECVAE_LOG_LEVEL", "warning")
    block_dataset().save(tmp_path / "ds")
    model = [] if "--model" in extra else ["--model", "auto"]
    args = ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), *model, *extra]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, RecvaeError)
    assert words in str(result.exception)
    assert not (tmp_path / "m").exists()


def test_python_api_auto_returns_the_winner_fitted():
    data = block_dataset()
    model = recvae.auto(data, budget=60, metric=METRIC, candidates=["ease-l2-100", "ease-l2-500"])
    assert isinstance(model, recvae.EASE)
    assert model.metadata["auto"]["winner"] in ("ease-l2-100", "ease-l2-500")
    recs = model.recommend(["u0"], k=3)
    assert recs.height == 3
    with pytest.raises(RecvaeError, match="budget 'later'"):
        recvae.auto(data, budget="later")


def test_nightly_job_runs_auto(tmp_path):
    from test_nightly import last_report, nightly, synth_log, write_config

    synth_log(tmp_path / "log.parquet")
    train = (
        '[train]\nmodel = "auto"\nbudget = "2m"\n[train.config]\n'
        'candidates = ["ease-l2-100", "ease-l2-500", "als-reg-10"]\nthreads = 1\n'
    )
    done = nightly(write_config(tmp_path, train=train))
    assert done.exit_code == 0, done.output
    report = last_report(tmp_path)
    assert report["status"] == "promoted" and report["model"] == "auto"
    labels = [row["label"] for row in report["auto"]["candidates"]]
    assert labels == ["ease-l2-100", "ease-l2-500", "als-reg-10", "blend"]
    winner = report["auto"]["winner"]
    assert winner in labels
    metadata = json.loads((tmp_path / "store" / "current" / "metadata.json").read_text())
    assert metadata["auto"]["winner"] == winner and metadata["auto"]["refit"] is False
    markdown = next((tmp_path / "work" / "runs").iterdir()) / "report.md"
    assert f"**auto:** winner {winner}" in markdown.read_text()


@pytest.mark.parametrize(
    ("train", "words"),
    [
        (
            '[train]\nmodel = "auto"\nbudget = "soon"',
            "[train] budget = 'soon': expected a duration",
        ),
        ('[train]\nmodel = "ease"\nbudget = "30m"', '[train] budget is for model = "auto"'),
        ('[train]\nmodel = "auto"\n[train.config]\nl2 = 5.0', 'l2: model = "auto" takes only'),
    ],
)
def test_nightly_check_refuses_bad_auto_settings(tmp_path, train, words):
    from test_nightly import nightly, synth_log, write_config

    synth_log(tmp_path / "log.parquet", n_users=50)
    done = nightly(write_config(tmp_path, train=train), "--check")
    assert done.exit_code == 2 and words in done.output


def test_candidate_settings_keep_the_model_own_loop_defaults():
    """RecVAE's loop defaults (lr 5e-4, 50 rounds) survive auto's loop keys."""
    config = auto._config("recvae", {"seed": 0, "threads": 1, "time_limit": 5.0}, "recvae")
    assert (config.loop.lr, config.loop.epochs, config.loop.time_limit) == (5e-4, 50, 5.0)


def test_a_failing_candidate_is_recorded_and_the_others_still_compete(monkeypatch):
    from recvae.models.als import ALS

    def broken(self, *args, **kwargs):
        raise TypeError("a bug in one model")

    monkeypatch.setattr(ALS, "fit", broken)
    result = run_tiny(candidates=TINY[:3])
    rows = {row["label"]: row for row in result.rows}
    assert rows["als-tiny"]["status"] == "failed"
    assert rows["als-tiny"]["reason"] == "TypeError: a bug in one model"
    assert result.winner in ("ease-strong", "ease-weak")


def test_blend_pairs_after_the_first_wait_for_selection_time():
    dataset = block_dataset()
    config = AutoConfig(budget="60s", metric=METRIC, threads=1)
    runner = auto._Runner(dataset, ProtocolSpec("auto", seed=0), config, METRIC,
                          lambda line: None, None, 3)  # fmt: skip
    for candidate in TINY[1:]:  # ease-weak, als-tiny, dae-tiny: three families
        if candidate.kind == "deep":
            runner.run_deep(candidate, 60.0)
        else:
            runner.run_linear(candidate, float("inf"))
    runner.run_blend(deadline=0.0)  # the selection time is long gone
    blend = runner.rows[-1]
    assert blend["status"] == "fitted"
    assert len(blend["pairs"]) == 1  # the two best families still pair up
    assert len(blend["pairs_not_tried"]) == 1
    assert blend["pairs_not_tried"][0][0] == blend["pairs"][0]["members"][0]
    assert blend["thirds"] == []  # no third member either: it too waits for the time
    assert len(blend["thirds_not_tried"]) == 1
    assert blend["members"] == blend["pairs"][0]["members"]


@pytest.mark.parametrize(
    ("users", "held_out"),
    [(150, 37), (738, 184), (2_499, 624), (6_039, 1_000), (29_858, 2_985), (500_000, 10_000)],
)
def test_auto_chooses_on_more_users_than_a_training_run_holds_out(users, held_out):
    # 10%, but at least 1,000 where a quarter of the users is not more than that; at most 10,000
    assert auto.selection_valid_users(users) == held_out


def test_auto_holds_out_its_selection_users_unless_told():
    result = run_tiny(candidates=TINY[:1], refit=False)
    assert result.fit.metadata["split"]["valid_users"] == 37  # a quarter of 150, not 15
    config = AutoConfig(budget="60s", metric=METRIC, threads=1, refit=False)
    told = fit_auto(block_dataset(), config, ProtocolSpec("auto", valid_users=20),
                    candidates=TINY[:1])  # fmt: skip
    assert told.fit.metadata["split"]["valid_users"] == 20


# ---- repeated validation folds -------------------------------------------------------------


def test_validation_folds_are_disjoint_and_fold_0_is_the_single_hold_out():
    from recvae.data.split import strong_generalization
    from recvae.workflow.folds import fold_split

    matrix = block_dataset().matrix
    folds = [fold_split(matrix, 37, fold, seed=3) for fold in range(4)]
    users = [set(split.valid.users.tolist()) for split in folds]
    assert all(len(u) == 37 for u in users)
    assert len(set().union(*users)) == 4 * 37  # disjoint
    for split, held in zip(folds, users, strict=True):
        assert split.train.shape[0] == 150 - 37  # everyone else trains
        assert split.valid.history.nnz + split.valid.heldout.nnz == matrix[sorted(held)].nnz
    single = strong_generalization(matrix, 37, 0, seed=3)
    assert np.array_equal(folds[0].valid.users, single.valid.users)
    assert (folds[0].valid.heldout != single.valid.heldout).nnz == 0
    with pytest.raises(ValueError, match="fold 4 of 37 users needs 185 users"):
        fold_split(matrix, 37, 4)


@pytest.mark.parametrize(
    ("first_pass", "selection", "users", "held_out", "folds"),
    [
        (523.0, 428.0, 29_858, 2_985, 1),  # Gowalla: the first pass overran: one fold
        (91.0, 139.0, 1_999, 624, 1),  # gowalla-2k: a second pass does not fit
        (90.0, 374.0, 6_033, 1_000, 4),  # ml-1m-lightgcn: 4 passes fit
        (11.0, 144.0, 738, 184, 4),  # ml-100k: 13 would fit, 738 users give 4 disjoint folds
        (1.0, 1000.0, 100_000, 1_000, 5),  # at most MAX_FOLDS
    ],
)
def test_fold_count_follows_the_time_of_the_first_pass(first_pass, selection, users,
                                                       held_out, folds):  # fmt: skip
    from recvae.workflow.folds import fold_count

    assert fold_count(first_pass, selection, users, held_out) == folds


def test_auto_chooses_by_the_metric_pooled_over_the_folds():
    from dataclasses import replace

    from recvae.workflow.fit import TrainSpec, fit_model
    from recvae.workflow.folds import fold_split

    result = run_tiny()  # a cheap first pass: 150 users give 4 folds of 37
    summary = result.summary
    assert summary["folds"] == summary["folds_planned"] == 4
    assert summary["fold_users"] == [37, 37, 37, 37] and summary["fold_note"] is None
    rows = {row["label"]: row for row in result.rows}
    # each candidate's score is the per-user mean over the union of the folds' users:
    # refit EASE (deterministic) on every fold here and pool the per-user values by hand
    data, values = block_dataset(), []
    for fold in range(4):
        split = fold_split(data.matrix, 37, fold, seed=0)
        fit = fit_model(replace(data, split=split), TrainSpec.of("ease", {"l2": 500.0}),
                        ProtocolSpec("presplit"), metric=METRIC)  # fmt: skip
        values.append(fit.evaluation.per_user[METRIC])
        assert rows["ease-strong"]["fold_metrics"][fold] == pytest.approx(values[-1].mean())
    assert rows["ease-strong"]["metrics"][METRIC] == pytest.approx(np.concatenate(values).mean())
    for row in result.rows:
        assert len(row["fold_metrics"]) == 4
        assert row["metrics"][METRIC] == pytest.approx(np.mean(row["fold_metrics"]))
    # the winner is the best pooled score; the blend's pairs are pooled the same way
    best = max(result.rows, key=lambda row: row["metrics"][METRIC])
    assert result.winner == best["label"]
    blend = rows["blend"]
    chosen = max(blend["pairs"] + blend["thirds"], key=lambda pair: pair[METRIC])
    assert blend["members"] == chosen["members"]
    assert chosen[METRIC] == pytest.approx(np.mean(chosen["fold_metrics"]))
    assert blend["metrics"][METRIC] == pytest.approx(chosen[METRIC])
    # the metadata: the pooled numbers, from every fold's users
    meta = result.fit.metadata
    assert meta["auto"]["folds"] == 4 and meta["evaluation"]["users"] == 148
    assert meta["metrics"][METRIC] == pytest.approx(best["metrics"][METRIC])
    assert "pooled over all of them" in meta["auto"]["metrics_from"]


def test_one_fold_when_a_second_pass_does_not_fit_in_the_selection_time():
    dataset = block_dataset()
    config = AutoConfig(budget="60s", metric=METRIC, threads=1)
    protocol = ProtocolSpec("auto", valid_users=37, seed=0)
    lines: list[str] = []
    runner = auto._Runner(dataset, protocol, config, METRIC, lines.append, None, 2)
    for candidate in TINY[:3]:
        runner.run_linear(candidate, float("inf"))
    runner.run_blend(float("inf"))
    assert runner.plan_folds(first_pass=30.0, selection_seconds=42.0) == 1
    assert lines[-1].endswith("to choose: one fold")
    assert runner.plan_folds(first_pass=10.0, selection_seconds=42.0) == 4
    # planned 4, but the passes so far say the next one would overrun: no more folds
    runner.run_folds(4, deadline=0.0, first_pass=10.0)
    summary = runner.fold_summary(4)
    assert summary["folds"] == 1 and summary["folds_planned"] == 4
    assert summary["fold_note"].startswith("fold 2 of 4 not run: a pass takes about 10s")


def test_a_data_set_split_of_its_own_gives_one_fold():
    from recvae.data.split import make_split

    data = block_dataset()
    data = Dataset(data.matrix, data.users, data.items,
                   split=make_split(data, ProtocolSpec("weak", seed=0)))  # fmt: skip
    result = fit_auto(data, AutoConfig(budget="60s", metric=METRIC, threads=1, refit=False),
                      candidates=TINY[:2])  # fmt: skip
    assert result.summary["folds"] == 1 and result.summary["fold_users"] == [150]
    assert all(len(row["fold_metrics"]) == 1 for row in result.rows if "fold_metrics" in row)


def test_a_candidate_failing_on_a_later_fold_is_out_of_the_running(monkeypatch):
    from recvae.models.als import ALS

    real, calls = ALS.fit, []

    def second_time_broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise TypeError("broke on fold 2")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ALS, "fit", second_time_broken)
    result = run_tiny(candidates=TINY[:3])
    rows = {row["label"]: row for row in result.rows}
    assert result.summary["folds"] == 4
    assert rows["als-tiny"]["status"] == "failed"
    assert rows["als-tiny"]["reason"] == "fold 2: TypeError: broke on fold 2"
    assert result.winner in ("ease-strong", "ease-weak")  # one family left: no blend
    assert rows["blend"]["status"] == "skipped"
