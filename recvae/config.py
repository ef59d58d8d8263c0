"""Typed model configs <-> TOML / JSON dictionaries, shared by every model.

A config is a plain frozen dataclass of scalars and tuples. It is saved inside `model.json`,
read back without unpickling, and can be written by hand as TOML:

    # multvae.toml
    hidden_dims = [600]
    latent_dim = 200
    epochs = 100

`load_config(MultVAEConfig, "multvae.toml", {"seed": 3})` checks every key and type and names
the offending key in the error, so a typo in a nightly job's config fails at start, not after
hours of training.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from recvae.errors import RecvaeError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON/TOML-ready dict of the config (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
    }


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build `cls` from a dict, converting lists to tuples and checking names and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecvaeError(
            f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    converted = {
        key: _convert(hints[key], value, f"{source}: {key}") for key, value in values.items()
    }
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise RecvaeError(f"{source}: {error}") from error


def load_config(
    cls: type[C], path: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> C:
    """Defaults of `cls`, updated by a TOML file (optional), then by `overrides` (None skipped)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values.update(tomllib.loads(path.read_text()))
        except FileNotFoundError as error:
            raise RecvaeError(f"config file {path} does not exist") from error
        except tomllib.TOMLDecodeError as error:
            raise RecvaeError(f"config file {path} is not valid TOML: {error}") from error
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, values, source=str(path) if path is not None else "config")


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Coerce a TOML/JSON value to the annotated type; refuse anything that does not fit."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except RecvaeError as error:
                errors.append(str(error))
        raise RecvaeError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecvaeError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(hint) or (Any,)
        return tuple(_convert(item_type, item, where) for item in value)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise RecvaeError(
                f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecvaeError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecvaeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecvaeError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RecvaeError(f"{where}: expected a string, got {value!r}")
        return value
    return value
