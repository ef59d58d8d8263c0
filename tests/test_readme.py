"""The README's Python example runs as written, on a small generated log in a temporary dir."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

README = Path(__file__).parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one `## ` section of the README."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)


def write_events(path: Path) -> None:
    """200 users (u0..u199) with 8 of 40 items each (i0..i39), users in two taste groups."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(200):
        group = np.arange(20) + 20 * (user % 2)
        for item in rng.choice(group, 8, replace=False):
            users.append(f"u{user}")
            items.append(f"i{item}")
    pl.DataFrame({"user_id": users, "item_id": items}).write_parquet(path)


def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = python_blocks("Python API")
    code = [line for line in block.splitlines() if line.strip()]
    first_top10 = next(n for n, line in enumerate(code, 1) if ".recommend(" in line)
    assert first_top10 <= 6  # the bar: from a Polars frame to top-10 in at most 6 lines
    monkeypatch.chdir(tmp_path)
    # one torch thread (the default is every core): on a busy shared box, threads on a tiny
    # matrix mostly wait for each other
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    write_events(tmp_path / "events.parquet")
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    recs, sims, model = namespace["recs"], namespace["sims"], namespace["model"]
    assert recs.columns == ["rank", "item_id", "score"] and recs.height == 10
    assert not {"i9", "i4"} & set(recs["item_id"])
    assert sims.height == 10 and "i9" not in sims["item_id"].to_list()
    assert (tmp_path / "m" / "model.json").is_file() and (tmp_path / "m" / "history").is_dir()
    top = model.recommend(["u1", "u2"], k=10)
    assert top.height == 20 and set(top["user_id"]) == {"u1", "u2"}
