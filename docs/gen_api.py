"""Write docs/api.md, the Python API reference, from the docstrings (`python docs/gen_api.py`).

The page is generated, never edited by hand: tests/test_docs_api.py fails when the committed
page differs from what this script writes, so a docstring change must come with a regenerated
page. `--check` exits 1 (without writing) when the page is stale.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

PAGE = Path(__file__).with_name("api.md")

# (module, names documented in this order); classes list their public methods and properties.
SECTIONS: list[tuple[str, list[str]]] = [
    ("recvae.api", ["ingest", "load", "auto", "Model", "MultVAE", "MultDAE", "RecVAE", "Joint",
                    "EASE", "SparseEASE", "ALS", "BPR", "Popularity", "Blend"]),
    ("recvae.logs", ["configure", "LOGGER_NAME"]),
    ("recvae.tracking", ["start_run", "TrackingSink", "NullSink", "MlflowSink"]),
    ("recvae.errors", ["RecvaeError"]),
]  # fmt: skip


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else ""


class _Unquoted(str):
    """An annotation written as source text (`from __future__ import annotations`) shows as
    `int | None`, not `'int | None'`."""

    def __repr__(self) -> str:
        return str(self)


def _signature(name: str, obj: object) -> str:
    """`name(params) -> return`, without `self`/`cls` and without quotes around annotations."""
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return name

    def unquoted(annotation: object) -> object:
        return _Unquoted(annotation) if isinstance(annotation, str) else annotation

    params = [
        p.replace(annotation=unquoted(p.annotation))
        for p in signature.parameters.values()
        if p.name not in ("self", "cls")
    ]
    shown = signature.replace(
        parameters=params, return_annotation=unquoted(signature.return_annotation)
    )
    return f"{name}{shown}"


def _members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined on `cls` itself; inherited ones, and overrides
    without a docstring of their own, are documented on the base class."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, classmethod | staticmethod):
            value = value.__func__
        overrides_documented = not value.__doc__ and any(hasattr(b, name) for b in cls.__bases__)
        if (inspect.isfunction(value) or isinstance(value, property)) and not overrides_documented:
            members.append((name, value))
    return members


def render() -> str:
    lines = [
        "# Python API reference",
        "",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.",
        "`import recvae` exposes `ingest`, `load`, the model classes and `RecvaeError`.",
        "",
    ]
    for module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", _doc(module), ""]
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                bases = [b.__name__ for b in obj.__bases__ if b is not object]
                title = f"{name}({', '.join(bases)})" if bases else name
                lines += [f"### class `{title}`", "", _doc(obj), ""]
                for member_name, member in _members(obj):
                    if isinstance(member, property):
                        lines += [f"#### `{name}.{member_name}` (property)", "", _doc(member), ""]
                    else:
                        signature = _signature(member_name, member)
                        lines += [f"#### `{name}.{signature}`", "", _doc(member), ""]
            elif callable(obj):
                lines += [f"### `{_signature(name, obj)}`", "", _doc(obj), ""]
            else:
                lines += [f"### `{name} = {obj!r}`", ""]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
