"""The command-line options that say how to read a log, declared once for every command.

`recvae ingest`, `recvae evaluate` (--history/--heldout) and `recvae recommend` (a log given as
--history) read logs the same way, so they take the same group of options: --format,
--delimiter, --header/--no-header, --user-col, --item-col, --rating-col, --time-col. A command
decorated with `@reader_options()` gets the group (shown under one heading in --help) and
receives it as one `reader: ReaderOptions` argument; the nightly job's [data.ingest] table sets
the same fields by name, since IngestOptions extends ReaderOptions.

The group is added to the command's signature rather than written into each command, so the
names, help texts and defaults cannot drift apart between commands.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from recvae.data.reader import FORMATS, ReaderOptions

PANEL = "Reading the log"
Command = TypeVar("Command", bound=Callable[..., Any])


PREFIX = "reader_"  # the parameters' Python names, clear of the command's own (recommend's format)


def _option(field: str, kind: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
    option = typer.Option(*decls, help=help, rich_help_panel=PANEL)
    return inspect.Parameter(
        PREFIX + field,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, option],
    )


def _parameters(format_flag: str) -> list[inspect.Parameter]:
    return [
        _option(
            "format", str, "auto", format_flag,
            help=f"Log format: {'|'.join(FORMATS)}. auto goes by the file name; a .txt file is "
            "read as LightGCN rows (user item item ...) only when its lines' field counts vary, "
            "e.g. csv",
        ),
        _option(
            "delimiter", str | None, None, "--delimiter",
            help="Field separator of a text log (detected if omitted; 'tab' and 'space' "
            "accepted), e.g. ';'",
        ),
        _option(
            "header", bool | None, None, "--header/--no-header",
            help="A text log's first line names its columns (detected if omitted)",
        ),
        _option("user_col", str | None, None, "--user-col", help="User id column, e.g. user_id"),
        _option("item_col", str | None, None, "--item-col", help="Item id column, e.g. movie_id"),
        _option("rating_col", str | None, None, "--rating-col", help="Rating column, e.g. stars"),
        _option(
            "time_col", str | None, None, "--time-col",
            help="Event time column (unix seconds or date-time), e.g. ts",
        ),
    ]  # fmt: skip


def reader_options(format_flag: str = "--format") -> Callable[[Command], Command]:
    """Give a typer command the reader options; it receives them as `reader: ReaderOptions`.

    `format_flag` renames --format where a command already uses it for something else (recommend
    writes --format parquet|csv|duckdb, so its log format is --history-format).
    """

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "reader"]
        added = _parameters(format_flag)

        @functools.wraps(command)
        def with_reader(**kwargs: Any) -> Any:
            reader = ReaderOptions(**{p.name[len(PREFIX) :]: kwargs.pop(p.name) for p in added})
            return command(reader=reader, **kwargs)

        parameters = [*own, *added]
        with_reader.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_reader.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_reader  # type: ignore[return-value]

    return decorate
