"""Typed configs <-> TOML / JSON dictionaries, shared by every model, job and study.

A config is a plain frozen dataclass of scalars, tuples and nested config tables (a model's
`[loop]`). It is saved inside `model.json`, read back without unpickling, and can be written by
hand as TOML:

    # multvae.toml
    hidden_dims = [600]
    latent_dim = 200
    [loop]
    epochs = 100

`load_config(MultVAEConfig, "multvae.toml", {"seed": 3})` checks every key and type and names
the offending key in the error, so a typo in a nightly job's config fails at start, not after
hours of training. A key of a nested table may also be given flat (`epochs = 100` at the top,
`seed` in the overrides): it is moved into the one nested table that has it.

`read_toml` is the one place a TOML file is read (model configs, search spaces, suites, jobs), and
`to_toml` writes any such dict back, so a config round-trips.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from recvae.errors import RecvaeError

C = TypeVar("C")


def read_toml(path: Path | str, what: str = "config file") -> dict[str, Any]:
    """The TOML file at `path` as a dict; a missing or malformed file is one clear error."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise RecvaeError(f"{what} {path} does not exist") from error
    except IsADirectoryError as error:
        raise RecvaeError(f"{what} {path} is a directory, expected a TOML file") from error
    except tomllib.TOMLDecodeError as error:
        raise RecvaeError(f"{what} {path} is not valid TOML: {error}") from error


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON/TOML-ready dict of the config (nested tables as dicts, tuples as lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def _nested_tables(cls: type) -> dict[str, type]:
    """Fields of `cls` that are themselves config dataclasses (e.g. `loop`)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def nest_flat_keys(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Move keys that belong to a nested table (the loop's `epochs`) into that table; keys of
    `cls` itself win, and unknown keys stay for `config_from_dict` to report."""
    own = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    nested = _nested_tables(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        table = key if key in nested else None
        if key not in own:
            owners = [n for n, t in nested.items() if key in _field_names(t)]
            table = owners[0] if owners else None
            if table is not None:
                value = {key: value}
        if table is None:
            out[key] = value
            continue
        before = out.get(table, {})
        before = config_to_dict(before) if dataclasses.is_dataclass(before) else dict(before)
        value = config_to_dict(value) if dataclasses.is_dataclass(value) else dict(value)
        out[table] = {**before, **value}
    return out


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build `cls` from a dict, converting lists to tuples and checking names and types."""
    values = nest_flat_keys(cls, values)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        nested = _nested_tables(cls)
        extra = "".join(
            f"; [{name}] keys: {', '.join(f.name for f in dataclasses.fields(table))}"
            for name, table in nested.items()
        )
        raise RecvaeError(
            f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(known))}{extra}"
        )
    converted = {
        key: _convert(hints[key], value, f"{source}: {key}") for key, value in values.items()
    }
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise RecvaeError(f"{source}: {error}") from error


def update_config(config: C, overrides: Mapping[str, Any], source: str = "config") -> C:
    """`config` with `overrides` applied (None values skipped; nested keys may be flat)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return config_from_dict(type(config), merged_settings(config, given), source=source)


def merged_settings(config: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`config` as a dict with `overrides` laid over it: a nested table given in part (a `loop`
    table with only `seed`, say) keeps the config's other keys in that table."""
    values = config_to_dict(config)
    for key, value in nest_flat_keys(type(config), overrides).items():
        if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def load_config(
    cls: type[C], path: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> C:
    """Defaults of `cls`, updated by a TOML file (optional), then by `overrides` (None skipped)."""
    source = str(path) if path is not None else "config"
    config = config_from_dict(cls, read_toml(path) if path is not None else {}, source=source)
    return update_config(config, overrides or {}, source=source)


def to_toml(values: Mapping[str, Any]) -> str:
    """TOML text for a config dict: keys first, then `[table]`s and `[[array of tables]]`;
    None values are left out (TOML has no null: a missing key means the default)."""
    return _toml_table(values, [])


def _toml_table(values: Mapping[str, Any], path: list[str]) -> str:
    def is_tables(value: Any) -> bool:
        return (
            isinstance(value, list | tuple)
            and bool(value)
            and all(isinstance(v, Mapping) for v in value)
        )

    lines = [
        f"{_toml_key(key)} = {_toml_value(value)}\n"
        for key, value in values.items()
        if value is not None and not isinstance(value, Mapping) and not is_tables(value)
    ]
    text = "".join(lines)
    for key, value in values.items():
        name = ".".join(_toml_key(k) for k in [*path, key])
        if isinstance(value, Mapping):
            body = _toml_table(value, [*path, key])
            text += f"\n[{name}]\n{body}" if body.strip() or not value else ""
        elif is_tables(value):
            for table in value:
                text += f"\n[[{name}]]\n{_toml_table(table, [*path, key])}"
    return text


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 1e-05, 0.5, inf, nan: all valid TOML floats
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Coerce a TOML/JSON value to the annotated type; refuse anything that does not fit."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise RecvaeError(f"{where}: expected a table, got {value!r}")
        return config_from_dict(hint, value, source=where)
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
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecvaeError(f"{where}: expected a table, got {value!r}")
        return dict(value)
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
