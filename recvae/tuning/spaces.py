"""Search spaces: which settings a study varies, over which ranges, and which it holds fixed.

Each tunable model has a default space (ranges from the literature, wide enough to contain the
paper defaults). A TOML file overrides it per parameter and can fix settings:

    # space.toml
    [params.lr]              # replaces the default range of `lr`
    low = 1e-4
    high = 3e-3
    log = true
    [params.hidden_dim]      # Mult-VAE/DAE: one hidden layer of this size (hidden_dims = [n])
    low = 400
    high = 1200
    step = 200
    [params.likelihood]
    choices = ["multinomial", "logistic"]
    [fixed]                  # settings every trial uses; a fixed name leaves the search
    epochs = 60
    patience = 10

A parameter's kind follows the model config's field type: float and int fields take
low/high (+ `log`, `step`), text/bool fields take `choices`; any field may use `choices`.
`grid = [...]` lists the values the grid sampler tries (default: low, middle, high; or choices).
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recvae.config import config_to_dict, read_toml
from recvae.errors import RecvaeError
from recvae.models.configs import config_class, uses_loop
from recvae.models.configs import setting_types as model_setting_types

TUNABLE_MODELS = (
    "multvae", "multdae", "recvae", "als", "bpr", "ease", "sparse_ease", "popularity", "blend"
)  # fmt: skip
# trained by the epoch loop: pruned on per-epoch metrics
EPOCH_MODELS = tuple(name for name in TUNABLE_MODELS if uses_loop(name))

# Mult-VAE/DAE take `hidden_dims` (a list); a study varies one hidden layer's size instead
# (RecVAE's `hidden_dim` is its own setting: the width of every encoder layer).
HIDDEN_DIM = "hidden_dim"
BATCH_SIZES = [100, 250, 500, 1000]
LIKELIHOODS = ["multinomial", "gaussian", "logistic"]

# Ranges: Liang et al. 2018 and later re-tunings (e.g. Rendle et al. 2019/2022, Steck 2019).
DEFAULT_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "multvae": {
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        HIDDEN_DIM: {"low": 400, "high": 1200, "step": 100},
        "latent_dim": {"low": 100, "high": 400, "step": 50},
        "dropout": {"low": 0.3, "high": 0.7},
        "beta_cap": {"low": 0.05, "high": 0.5},
        "anneal_steps": {"low": 1_000, "high": 200_000, "log": True},
        "batch_size": {"choices": BATCH_SIZES},
        "l2": {"low": 1e-8, "high": 1e-4, "log": True},
        "likelihood": {"choices": LIKELIHOODS},
    },
    "multdae": {
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "latent_dim": {"low": 100, "high": 600, "step": 50},
        "dropout": {"low": 0.2, "high": 0.8},
        "batch_size": {"choices": BATCH_SIZES},
        "l2": {"low": 1e-5, "high": 1e-1, "log": True},
        "likelihood": {"choices": LIKELIHOODS},
    },
    # RecVAE: Shenbin et al. 2020 tuned lr, the KL weight (gamma, or a fixed beta) and widths;
    # n_enc_epochs trades quality per round against time per round.
    "recvae": {
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "hidden_dim": {"low": 300, "high": 1200, "step": 100},
        "latent_dim": {"low": 100, "high": 400, "step": 50},
        "dropout": {"low": 0.3, "high": 0.7},
        "per_user_beta": {"choices": [True, False]},
        "gamma": {"low": 1e-3, "high": 2e-2, "log": True},  # used when per_user_beta is on
        "beta": {"low": 0.02, "high": 1.0, "log": True},  # used when per_user_beta is off
        "n_enc_epochs": {"low": 1, "high": 3},
        "batch_size": {"choices": BATCH_SIZES},
    },
    "als": {
        "factors": {"low": 16, "high": 512, "log": True},
        # implicit adds regularization * I unscaled: tuned values reach 100 on ml-1m
        "regularization": {"low": 1e-2, "high": 1000.0, "log": True},
        "alpha": {"low": 0.5, "high": 100.0, "log": True},
        "iterations": {"low": 5, "high": 30},
    },
    "bpr": {
        "factors": {"low": 16, "high": 256, "log": True},
        "learning_rate": {"low": 1e-3, "high": 0.1, "log": True},
        "regularization": {"low": 1e-5, "high": 0.1, "log": True},
        "iterations": {"low": 20, "high": 200, "step": 10},
    },
    "ease": {
        "l2": {"low": 1.0, "high": 10_000.0, "log": True},
    },
    "sparse_ease": {
        "l2": {"low": 1.0, "high": 10_000.0, "log": True},
        "neighbours": {"choices": [50, 100, 200, 500]},
    },
    "popularity": {},  # nothing to tune: a study scores the one setting there is
    # A blend tunes its weights itself on validation; a study searches the normalisation and
    # members' settings, named MODEL.SETTING (e.g. ease.l2) for the member of that model.
    "blend": {
        "normalise": {"choices": ["zscore", "softmax"]},
        "ease.l2": {"low": 1.0, "high": 10_000.0, "log": True},
    },
}

# An epoch cap and early stopping so one trial cannot take the whole budget.
DEFAULT_FIXED: dict[str, dict[str, Any]] = {
    "multvae": {"epochs": 100, "patience": 10},
    "multdae": {"epochs": 100, "patience": 10},
    "recvae": {"epochs": 50, "patience": 10},
    "als": {},
    "bpr": {},
    "ease": {},
    "sparse_ease": {},
    "popularity": {},
    "blend": {},
}

SPEC_KEYS = {"low", "high", "log", "step", "choices", "grid"}


@dataclass(frozen=True)
class ParamSpec:
    """One searched setting: a numeric range (float or int) or a list of choices."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """Values tried by the grid sampler: `grid`, else the choices, else low/middle/high."""
        if self.grid:
            return list(self.grid)
        if self.kind == "categorical":
            return list(self.choices)
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        middle = math.sqrt(low * high) if self.log else (low + high) / 2
        if self.step:
            middle = low + round((middle - low) / self.step) * self.step
        values = [low, middle, high]
        if self.kind == "int":
            return sorted({round(v) for v in values})
        return sorted(set(values))

    def describe(self) -> str:
        """Short human text for reports, e.g. '0.0001 .. 0.003 (log)'."""
        if self.kind == "categorical":
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = f"{self.low:g} .. {self.high:g}"
            text += " (log)" if self.log else ""
            text += f" step {self.step:g}" if self.step else ""
        return text + (f"; grid {list(self.grid)}" if self.grid else "")

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            values: dict[str, Any] = {"choices": list(self.choices)}
        else:
            values = {"low": self.low, "high": self.high, "log": self.log}
            if self.step:
                values["step"] = self.step
        if self.grid:
            values["grid"] = list(self.grid)
        return values


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters of one model and the settings every trial shares."""

    model: str
    params: tuple[ParamSpec, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Model settings for one trial: fixed settings, then the trial's values."""
        settings = dict(self.fixed)
        alias = "hidden_dims" in config_fields(self.model)
        for name, value in values.items():
            if "." in name:  # a blend member's setting: MODEL.SETTING
                settings["members"] = _set_member(self.model, settings, name, value)
            elif name == HIDDEN_DIM and alias:
                settings["hidden_dims"] = [int(value)]
            else:
                settings[name] = value
        return settings

    def grid(self) -> dict[str, list[Any]]:
        return {spec.name: spec.grid_values() for spec in self.params}

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready; the same shape `parse_space` reads."""
        return {"params": {s.name: s.to_dict() for s in self.params}, "fixed": dict(self.fixed)}


def setting_types(model: str, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Setting name -> annotated type, as a study names them: flat loop keys, `hidden_dim` for
    Mult-VAE/DAE, and for a blend each member's settings as MODEL.SETTING (members from
    `fixed`, else the default blend's). An optional setting (`int | None`) is searched as its
    non-None type."""
    hints = {name: _without_none(hint) for name, hint in model_setting_types(model).items()}
    if "hidden_dims" in hints:
        hints[HIDDEN_DIM] = int
    if model == "blend":
        for member in _members(model, fixed or {}):
            name = member["model"]
            for key, hint in setting_types(name).items():
                hints[f"{name}.{key}"] = hint
    return hints


def _without_none(hint: Any) -> Any:
    options = [option for option in typing.get_args(hint) if option is not type(None)]
    is_optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and len(options) == 1
    return options[0] if is_optional else hint


def _members(model: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    members = settings.get("members") or config_to_dict(config_class(model)())["members"]
    return [dict(member) for member in members]


def _set_member(model: str, settings: dict[str, Any], name: str, value: Any) -> list[dict]:
    """The blend's members with `value` set on the member named by MODEL.SETTING."""
    member_model, _, key = name.partition(".")
    members = _members(model, settings)
    matches = [m for m in members if m["model"] == member_model]
    if len(matches) != 1:
        raise RecvaeError(
            f"{name}: the blend needs exactly one {member_model!r} member to set {key!r} on"
        )
    if key == HIDDEN_DIM and "hidden_dims" in model_setting_types(member_model):
        matches[0]["hidden_dims"] = [int(value)]  # Mult-VAE/DAE: one hidden layer of this size
    else:
        matches[0][key] = value
    return members


def default_space(model: str) -> SearchSpace:
    check_model(model)
    return parse_space(model, {"params": {}, "fixed": {}}, "default space")


def load_space(model: str, path: Path | None = None) -> SearchSpace:
    """The model's default space, overridden by the TOML file at `path` (if given)."""
    check_model(model)
    if path is None:
        return default_space(model)
    raw = read_toml(path, "search space file")
    return parse_space(model, raw, str(path))


def check_model(model: str) -> None:
    if model not in TUNABLE_MODELS:
        raise RecvaeError(f"recvae tune supports {', '.join(TUNABLE_MODELS)}; got {model!r}")


def parse_space(model: str, raw: dict[str, Any], source: str) -> SearchSpace:
    """Default params and fixed settings of `model`, updated by `raw` ({params, fixed})."""
    unknown = sorted(set(raw) - {"params", "fixed"})
    if unknown:
        raise RecvaeError(
            f"{source}: unknown table(s) {unknown}; expected [params.NAME] and [fixed]"
        )
    fixed = {**DEFAULT_FIXED[model], **_table(raw, "fixed", source)}
    types = setting_types(model, fixed)
    alias = "hidden_dims" in types  # hidden_dim stands for hidden_dims = [n]: search only
    for name in fixed:
        if name not in types or (alias and name == HIDDEN_DIM):
            raise RecvaeError(
                f"{source}: [fixed] {name!r} is not a {model} setting; known: "
                + ", ".join(sorted(k for k in types if not (alias and k == HIDDEN_DIM)))
            )
    defaults = {k: v for k, v in DEFAULT_PARAMS[model].items() if k in types}  # blend: members
    entries = {**defaults, **_table(raw, "params", source)}
    params = tuple(
        _param(name, entry, types, source)
        for name, entry in entries.items()
        if name not in fixed and not (name == HIDDEN_DIM and "hidden_dims" in fixed)
    )
    if not params and types:
        raise RecvaeError(f"{source}: nothing left to search (every parameter is fixed)")
    return SearchSpace(model, params, fixed)


def _table(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise RecvaeError(f"{source}: {key} must be a table, e.g. [{key}]")
    return value


def _param(name: str, entry: Any, types: dict[str, Any], source: str) -> ParamSpec:
    where = f"{source}: [params.{name}]"
    if name not in types:
        known = ", ".join(sorted(types))
        raise RecvaeError(f"{where}: not a setting of this model; known: {known}")
    if not isinstance(entry, dict):
        raise RecvaeError(f"{where}: expected a table with low/high or choices")
    unknown = sorted(set(entry) - SPEC_KEYS)
    if unknown:
        raise RecvaeError(f"{where}: unknown key(s) {unknown}; expected {sorted(SPEC_KEYS)}")
    grid = tuple(entry.get("grid", ()))
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise RecvaeError(f"{where}: choices must be a non-empty list")
        if not all(isinstance(c, str | int | float | bool) for c in choices):
            raise RecvaeError(f"{where}: choices must be numbers, text or true/false")
        return ParamSpec(name, "categorical", choices=tuple(choices), grid=grid)
    hint = types[name]
    if hint not in (int, float):
        raise RecvaeError(f"{where}: {name} is not numeric; give choices = [...]")
    if "low" not in entry or "high" not in entry:
        raise RecvaeError(f"{where}: give low and high (or choices)")
    low, high, log, step = (
        entry["low"],
        entry["high"],
        bool(entry.get("log", False)),
        entry.get("step"),
    )
    for key, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RecvaeError(f"{where}: {key} must be a number, got {value!r}")
        if hint is int and value is not None and not float(value).is_integer():
            raise RecvaeError(f"{where}: {name} is an integer setting; {key} = {value} is not")
    if not low < high:
        raise RecvaeError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise RecvaeError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise RecvaeError(f"{where}: step and log cannot be combined")
    if step is not None and step <= 0:
        raise RecvaeError(f"{where}: step must be positive, got {step}")
    for value in grid:
        if not low <= value <= high:
            raise RecvaeError(f"{where}: grid value {value} is outside low..high")
    if hint is int:
        return ParamSpec(name, "int", int(low), int(high), log, int(step) if step else None,
                         grid=grid)  # fmt: skip
    return ParamSpec(name, "float", float(low), float(high), log, step, grid=grid)


def config_fields(model: str) -> set[str]:
    return set(model_setting_types(model))
