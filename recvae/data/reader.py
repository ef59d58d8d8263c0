"""How to read a log: the options every reader of interaction logs shares, in one place.

`recvae ingest`, `recvae evaluate` (--history/--heldout), `recvae recommend` (a log as --history)
and the nightly job's [data.ingest] table all say how to read a log with these fields; the CLI
declares them once (recvae/cli/reader_options.py) and `IngestOptions` extends this class, so a
job config sets them by the same names. Left unset, each is detected from the file, and what was
detected is recorded in the dataset manifest and printed.

This module imports nothing heavy, so the CLI can use it while `recvae --help` stays quick.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from recvae.errors import RecvaeError

FORMATS = ("auto", "csv", "parquet", "ndjson", "duckdb", "movielens", "lightgcn")
ROLES = ("user", "item", "rating", "time")
ROLE_OPTIONS = {
    "user": "--user-col",
    "item": "--item-col",
    "rating": "--rating-col",
    "time": "--time-col",
}

# Normalised names (lower case, alphanumerics only, RecBole ':type' suffix removed) that detection
# accepts for each role, best first.
ROLE_NAMES = {
    "user": ("userid", "user", "uid", "users", "customerid", "customer", "visitorid", "memberid"),
    "item": (
        "itemid",
        "item",
        "iid",
        "items",
        "movieid",
        "movie",
        "productid",
        "product",
        "trackid",
        "articleid",
        "sku",
    ),
    "rating": ("rating", "ratings", "score", "stars", "preference", "weight", "value"),
    "time": ("timestamp", "time", "ts", "datetime", "eventtime", "unixtime", "date", "createdat"),
}

# Spellings of delimiters that are awkward to type on a command line or in TOML.
DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "space": " ", "comma": ",", "semicolon": ";"}


@dataclass
class ReaderOptions:
    """What a log file is: its format, its CSV dialect and which columns play which role."""

    format: str = "auto"  # auto|csv|parquet|ndjson|duckdb|movielens|lightgcn
    delimiter: str | None = None  # field separator of a text log; detected when None
    header: bool | None = None  # a text log's first line names its columns; detected when None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None

    def validate(self) -> None:
        """Check the reader fields; spell-outs like 'tab' become the delimiter itself."""
        if self.format not in FORMATS:
            raise RecvaeError(
                f"unknown format '{self.format}'; expected one of {', '.join(FORMATS)}"
            )
        if self.delimiter is not None:
            self.delimiter = DELIMITER_NAMES.get(self.delimiter, self.delimiter)
            if not self.delimiter or len(self.delimiter.encode()) > 4 or "\n" in self.delimiter:
                raise RecvaeError(
                    f"--delimiter must be 1 to 4 characters (or tab, space), got "
                    f"{self.delimiter!r}"
                )

    def reader_fields(self) -> dict[str, object]:
        """Only the reader fields (also of a subclass such as IngestOptions)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ReaderOptions)}

    @property
    def columns(self) -> dict[str, str | None]:
        """Role -> the column named for it (None: detect)."""
        return {
            "user": self.user_col,
            "item": self.item_col,
            "rating": self.rating_col,
            "time": self.time_col,
        }


def normalise_name(name: str) -> str:
    """Lower case, alphanumerics only, a ':type' suffix dropped: 'User_ID:token' -> userid."""
    return re.sub(r"[^a-z0-9]", "", name.split(":")[0].lower())
