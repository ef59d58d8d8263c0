from dataclasses import dataclass
from typing import Literal

import pytest

from recvae.config import config_from_dict, config_to_dict, load_config
from recvae.errors import RecvaeError


@dataclass(frozen=True)
class Example:
    hidden_dims: tuple[int, ...] = (600,)
    lr: float = 1e-3
    epochs: int = 10
    likelihood: Literal["multinomial", "gaussian"] = "multinomial"
    name: str | None = None
    verbose: bool = False


def test_toml_then_overrides_with_types_converted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('hidden_dims = [300, 100]\nlr = 1\nepochs = 5\nlikelihood = "gaussian"\n')
    config = load_config(Example, path, {"epochs": 7, "name": None})
    assert config == Example(hidden_dims=(300, 100), lr=1.0, epochs=7, likelihood="gaussian")
    assert isinstance(config.lr, float)
    assert config_from_dict(Example, config_to_dict(config)) == config
    assert config_to_dict(config)["hidden_dims"] == [300, 100]


def test_errors_name_the_key_and_what_was_expected(tmp_path):
    with pytest.raises(RecvaeError, match=r"unknown key.*epoch\b"):
        config_from_dict(Example, {"epoch": 3})
    with pytest.raises(RecvaeError, match="epochs: expected an integer"):
        config_from_dict(Example, {"epochs": 2.5})
    with pytest.raises(RecvaeError, match="likelihood: expected one of"):
        config_from_dict(Example, {"likelihood": "poisson"})
    with pytest.raises(RecvaeError, match="verbose: expected true or false"):
        config_from_dict(Example, {"verbose": 1})
    with pytest.raises(RecvaeError, match="does not exist"):
        load_config(Example, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(RecvaeError, match="not valid TOML"):
        load_config(Example, bad)


def test_partial_loop_settings_keep_the_models_own_loop_defaults() -> None:
    """A `loop` table given in part (or a flat loop key) is laid over the model's defaults:
    RecVAE keeps its lr 5e-4 and 50 rounds instead of LoopConfig's 1e-3 and 200 epochs."""
    from recvae.models.configs import make_config

    for settings in ({"seed": 1}, {"loop": {"seed": 1}}):
        config = make_config("recvae", settings)
        assert (config.loop.lr, config.loop.epochs, config.loop.seed) == (5e-4, 50, 1)
    assert make_config("multvae", {"epochs": 3}).loop.epochs == 3
