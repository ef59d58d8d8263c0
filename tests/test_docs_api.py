"""docs/api.md is generated from the docstrings and must match them (regenerate, don't edit)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def test_api_reference_page_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    committed = (DOCS / "api.md").read_text()
    assert committed == gen_api.render(), "docs/api.md is stale: run python docs/gen_api.py"
    for name in ("Model.recommend(", "Model.similar_items(", "class `Blend(Model)`", "start_run("):
        assert name in committed
