"""Limits shared by the commands' numeric options, checked by typer at the door.

Counts, sizes and cut-offs use typer's own `min=` / `max=`: a value out of range stops with one
usage line and exit code 2 before any work. Thread counts above the machine's cores are refused,
not clamped: oversubscription silently slows a run tenfold, and a refusal says so at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import typer

#: The most threads a command accepts (0 means "all cores").
CPU_COUNT = os.cpu_count() or 1


def strictly_between(low: float, high: float) -> Callable[[float | None], float | None]:
    """A typer callback refusing values outside the open interval (low, high).

    typer's `min=` / `max=` are inclusive; a learning rate or a fraction of 0 is not a value.
    """

    def check(value: float | None) -> float | None:
        if value is not None and not (low < value < high):
            upper = "" if high == math.inf else f" and below {high:g}"
            raise typer.BadParameter(f"{value:g} must be above {low:g}{upper}")
        return value

    return check
