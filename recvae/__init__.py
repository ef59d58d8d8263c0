"""recvae: a collaborative-filtering recommender engine built around the Mult-VAE.

Data flows one way: ingest -> matrices -> split -> model -> scores -> top-N -> export.

The Python API (recvae.api) is re-exported here and imported on first use, so `import recvae`
stays quick (no torch, DuckDB or Polars until a model or `ingest` is touched):

    import recvae
    model = recvae.EASE(l2=200.0).fit(recvae.ingest("events.parquet"))
    model.recommend(["u1"], k=10)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recvae.errors import RecvaeError

__version__ = "0.1.0"

__all__ = [
    "ALS", "BPR", "EASE", "GFCF", "Blend", "Joint", "Model", "MultDAE", "MultVAE", "Popularity",
    "RecVAE", "RecvaeError", "SparseEASE", "__version__", "auto", "ingest", "load",
]  # fmt: skip
_API = frozenset(__all__) - {"RecvaeError", "__version__"}

if TYPE_CHECKING:
    from recvae.api import (
        ALS,
        BPR,
        EASE,
        GFCF,
        Blend,
        Joint,
        Model,
        MultDAE,
        MultVAE,
        Popularity,
        RecVAE,
        auto,
        ingest,
        load,
    )


def __getattr__(name: str) -> Any:
    """Import recvae.api on first use of one of its names (PEP 562)."""
    if name in _API:
        return getattr(importlib.import_module("recvae.api"), name)
    raise AttributeError(f"module 'recvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
