"""Logging: one `recvae` logger hierarchy, written for people (rich) or machines (JSON lines).

Library modules log to `logging.getLogger(__name__)` (recvae.data.ingest, recvae.train,
recvae.registry, ...) and never install handlers, so an application that embeds recvae keeps
control of its logging. The `recvae` command calls `configure` once, from its global options
(`recvae --log-format json ...`) or the RECVAE_LOG_FORMAT environment variable:

- "human" (default): rich's handler on stderr, aligned and coloured, showing warnings and errors
  by default: the commands' own summaries and progress bars already tell people each step, so
  the INFO events would repeat them (`--log-level info` shows them too);
- "json": one JSON object per line on stderr (time, level, logger, message, and every field
  passed in `extra=`), INFO and up by default, for a scheduler or log shipper; progress bars
  are off.

Structured fields go in `extra`, with an `event` name that machines can select on:

    log.info("ingested %d users", n, extra={"event": "ingest", "users": n})

Events the library emits: ingest, epoch (per-epoch metrics), fit, model_saved (path), export,
promote (model store promotions), report (path of a run report). `recvae.tracking` listens to
these to fill an MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from recvae.errors import RecvaeError

if TYPE_CHECKING:
    from rich.console import Console

LOGGER_NAME = "recvae"
FORMATS = ("human", "json")
ENV_FORMAT = "RECVAE_LOG_FORMAT"
ENV_LEVEL = "RECVAE_LOG_LEVEL"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_current_format = "human"


class JsonLinesFormatter(logging.Formatter):
    """A record as one JSON object: ts (UTC ISO 8601), level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(_finite(payload), default=str)


def _finite(value: Any) -> Any:
    """NaN and infinities (a diverged loss, say) become strings: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _LiveStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (test runners and rich's live
    display swap it), not to the stream that was there at configure time."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


class _NotOnProgressBar(logging.Filter):
    """Human output only: drop records a live progress bar already shows (epoch lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "_on_progress_bar", False)


def configure(
    format: str | None = None, level: str | int | None = None, stream: IO[str] | None = None
) -> logging.Logger:
    """Send the `recvae` loggers' records to `stream` (stderr) in `format`, at `level`.

    `format` defaults to $RECVAE_LOG_FORMAT, else "human"; `level` to $RECVAE_LOG_LEVEL, else
    INFO for json and WARNING for human. The level filters what this handler writes; the
    loggers themselves pass INFO on, so event listeners (recvae.tracking) still get every
    event. Calling it again replaces the handler it installed before (not anyone else's).
    """
    global _current_format
    chosen = (format or os.environ.get(ENV_FORMAT) or "human").strip().lower()
    if chosen not in FORMATS:
        raise RecvaeError(f"unknown log format {chosen!r}: expected one of {', '.join(FORMATS)}")
    default = "INFO" if chosen == "json" else "WARNING"
    wanted = level if level is not None else os.environ.get(ENV_LEVEL, default)
    numeric = logging.getLevelName(wanted.upper()) if isinstance(wanted, str) else wanted
    if not isinstance(numeric, int):
        raise RecvaeError(f"unknown log level {wanted!r}: expected debug, info or warning")
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, "_recvae", False)]:
        logger.removeHandler(handler)
    handler: logging.Handler
    if chosen == "json":
        handler = logging.StreamHandler(stream) if stream else _LiveStderrHandler()
        handler.setFormatter(JsonLinesFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=stream, stderr=stream is None)
        handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%X")
        handler.addFilter(_NotOnProgressBar())
    handler._recvae = True  # type: ignore[attr-defined]
    handler.setLevel(numeric)
    logger.addHandler(handler)
    logger.setLevel(min(numeric, logging.INFO))
    _current_format = chosen
    return logger


class _StatusLines:
    """A file for a rich Console that turns each printed line into one log record, so a
    command's status lines come out as JSON records under `--log-format json`."""

    def __init__(self, event: str) -> None:
        self._logger = logging.getLogger(f"{LOGGER_NAME}.cli")
        self._event = event
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                self._logger.info(line.rstrip(), extra={"event": self._event})
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self._logger.info(self._pending.rstrip(), extra={"event": self._event})
        self._pending = ""

    def isatty(self) -> bool:
        return False


def status_console(event: str = "status", **options: Any) -> Console:
    """The Console a command prints its status lines to: stderr for people, or one JSON log
    record per line (event `event`) when the logs are JSON, so stderr stays pure JSON lines."""
    from rich.console import Console

    if _current_format == "json":
        options.pop("stderr", None)
        return Console(file=_StatusLines(event), soft_wrap=True, highlight=False, **options)
    return Console(stderr=True, **options)


def current_format() -> str:
    """The format `configure` chose last ("human" until it is called)."""
    return _current_format


def progress_bars(requested: bool) -> bool:
    """Whether to draw a progress bar: only when asked for and the logs are for people (a bar
    would interleave with JSON lines on a machine's stream)."""
    return requested and _current_format != "json"
