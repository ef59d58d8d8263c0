"""Model registry: name -> class, imported lazily so `recvae --help` stays fast, and the one
factory, `build_model(name, settings)`, that every command, job and benchmark builds models with.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recvae.errors import RecvaeError
from recvae.models.base import DAMAGED, Recommender, read_model_json

# name -> "module:Class"
MODEL_CLASSES: dict[str, str] = {
    "multvae": "recvae.models.vae:MultVAE",
    "multdae": "recvae.models.vae:MultDAE",
    "recvae": "recvae.models.recvae_model:RecVAE",
    "als": "recvae.models.als:ALS",
    "bpr": "recvae.models.bpr:BPR",
    "ease": "recvae.models.ease:EASE",
    "sparse_ease": "recvae.models.sparse_ease:SparseEASE",
    "gfcf": "recvae.models.gfcf:GFCF",
    "blend": "recvae.models.blend:Blend",
    "popularity": "recvae.models.popularity:Popularity",
    "joint": "recvae.models.joint:Joint",
}


def model_class(name: str) -> type[Recommender]:
    """The class registered under `name`, with a clear error listing the known names."""
    if name not in MODEL_CLASSES:
        known = ", ".join(sorted(MODEL_CLASSES))
        raise RecvaeError(f"unknown model {name!r}: expected one of {known}")
    module_name, class_name = MODEL_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_model(path: Path) -> Recommender:
    """Load any saved model from its directory (reads model.json to find the class).

    Each model's `load` checks its own files (recvae.models.base helpers); what still slips
    through (a config that does not fit the class, say) becomes one RecvaeError line here too.
    """
    path = Path(path)
    name = read_model_json(path)["model"]
    if name not in MODEL_CLASSES:
        known = ", ".join(sorted(MODEL_CLASSES))
        raise RecvaeError(
            f"{path / 'model.json'} names an unknown model {name!r} (known: {known}); {DAMAGED}"
        )
    cls = model_class(name)
    try:
        return cls.load(path)
    except RecvaeError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise RecvaeError(
            f"cannot load the {name} model in {path}: {type(error).__name__}: {first}; {DAMAGED}"
        ) from error


def build_model(name: str, settings: Any = None, source: str = "") -> Recommender:
    """The model `name` with `settings`: its typed config (recvae.models.configs), a dict (the
    model's keys, a `loop` table or flat loop keys), or None for the defaults.

    The settings are checked before the model's module (torch, implicit) is imported, so a bad
    key fails fast and names `source` (e.g. the TOML file) in its one-line error.
    """
    from recvae.models.configs import make_config

    config = make_config(name, settings, source or name)
    return model_class(name)(config)  # type: ignore[call-arg]
