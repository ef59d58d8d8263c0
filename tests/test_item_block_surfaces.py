"""Item-chunked top-K (`item_block`) reached from the Python API's recommend and the nightly
job's [export] table, as `recvae recommend --item-block` reaches it."""

from __future__ import annotations

import polars as pl
import pytest

import recvae
import recvae.api
from recvae.errors import RecvaeError
from recvae.nightly import export_target
from recvae.nightly_config import load_nightly_config


def _log() -> pl.DataFrame:
    users, items = [], []
    for u in range(40):
        for j in range(5):
            users.append(f"u{u}")
            items.append(f"i{(3 * u + j) % 23}")
    return pl.DataFrame({"user_id": users, "item_id": items})


@pytest.mark.parametrize(("name", "settings"), [("ease", {"l2": 1.0}), ("popularity", {})])
def test_api_recommend_with_item_blocks_gives_the_same_rows(name, settings):
    model = recvae.api.MODELS[name](**settings).fit(recvae.ingest(_log()))
    users = [f"u{u}" for u in range(0, 40, 3)]
    whole = model.recommend(users, k=7)
    for block in (1, 4, 50):
        blocked = model.recommend(users, k=7, item_block=block)
        # the same rows; a blocked product may round the last bit of a score differently
        assert blocked.drop("score").equals(whole.drop("score"))
        assert (blocked["score"] - whole["score"]).abs().max() < 1e-6


def test_api_recommend_refuses_a_bad_item_block():
    model = recvae.api.MODELS["popularity"]().fit(recvae.ingest(_log()))
    with pytest.raises(RecvaeError, match="item block must be at least 1, got 0"):
        model.recommend(["u1"], k=3, item_block=0)


def _config(tmp_path, export: str):
    path = tmp_path / "nightly.toml"
    path.write_text(
        '[paths]\nstore = "store"\nwork_dir = "work"\nexport = "recs.parquet"\n'
        f'[data]\nsources = ["log.parquet"]\n[export]\nk = 10\n{export}\n'
    )
    return path


def test_nightly_export_item_block_reaches_the_export_target(tmp_path):
    config = load_nightly_config(_config(tmp_path, "item_block = 5000"))
    assert config.item_block == 5000
    target = export_target(config)
    assert target.item_block == 5000
    assert type(target).from_json(target.to_json()) == target
    assert export_target(load_nightly_config(_config(tmp_path, ""))).item_block is None


def test_nightly_item_block_out_of_range_is_one_clear_error(tmp_path):
    with pytest.raises(RecvaeError, match=r"\[export\] item_block = 0: expected an integer >= 1"):
        load_nightly_config(_config(tmp_path, "item_block = 0"))
