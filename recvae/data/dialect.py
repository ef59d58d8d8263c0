"""What a text log looks like: LightGCN rows or a table, its delimiter, whether it has a header.

Detection reads a sample (the first 1,000 non-blank lines, at most 1 MiB) and decides only on
evidence; where the evidence is missing or contradicts itself it stops and names the option that
settles the question. Every decision comes with a sentence saying why, which the manifest records
and the CLI prints, so a file is never misread silently. The rules (docs/ingest.md):

- LightGCN rows (`user item item ...`) only when a .txt file's lines are whitespace-separated
  integers whose field counts vary: no one count covers 90% of the sampled lines. A file whose
  lines all have the same number of fields, such as `0 17 1` (user, item, weight), is a table.
- Delimiter: of tab, comma, semicolon, pipe and space, the one that splits the most sampled lines
  into the same number (2 or more) of fields; ties go in that order. When the lines it does not
  fit are split by another candidate instead, the file mixes delimiters and is refused.
- Header: the first line is a header when it names a role (user_id, item, rating, ...) or a column
  given by --user-col etc., or when a column is numeric below it but not in it; it is data when
  one of its fields is a number (no one names a column "17"). Otherwise (every field text, none a
  known name) the file is refused until --header or --no-header says which.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from recvae.data.reader import ROLE_NAMES, normalise_name
from recvae.errors import RecvaeError

SAMPLE_BYTES = 1 << 20
SAMPLE_LINES = 1000
DELIMITERS = ("\t", ",", ";", "|", " ")  # preference order when several fit equally well
LIGHTGCN_MAX_MODAL_SHARE = 0.9
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Detected:
    """A text log's reading: format, delimiter, header, and the evidence for each."""

    format: str  # "csv" (a table) or "lightgcn"
    delimiter: str | None = None
    header: bool | None = None
    reason: str = ""
    integer_rows: bool = False  # every sampled line is whitespace-separated integers

    def as_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "delimiter": self.delimiter,
            "header": self.header,
            "reason": self.reason,
        }


def show_delimiter(delimiter: str | None) -> str:
    names = {"\t": "tab", " ": "space"}
    return names.get(delimiter or "", repr(delimiter))


def sample_lines(path: Path) -> list[str]:
    """The first non-blank lines of a text file (gzip read transparently), BOM and CR removed."""
    opener = gzip.open if path.suffix.lower() in {".gz", ".gzip"} else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read(SAMPLE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise RecvaeError(f"{path}: cannot read: {error}") from error
    truncated = len(data) > SAMPLE_BYTES
    if truncated:  # a cut line (or UTF-8 character) at the end of the sample is not evidence
        data = data[: data.rfind(b"\n", 0, SAMPLE_BYTES) + 1] or data[:SAMPLE_BYTES]
    if b"\x00" in data:
        raise RecvaeError(
            f"{path}: not a text file (it holds binary data); expected a delimited text log, "
            "or pass --format for a Parquet/DuckDB file"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RecvaeError(
            f"{path}: not UTF-8 text (byte {error.start}); expected a delimited text log"
        ) from error
    return [line for line in text.splitlines() if line.strip()][:SAMPLE_LINES]


def integer_rows(lines: list[str]) -> bool:
    """Every line is integers separated by spaces (no tabs or commas): LightGCN-shaped."""
    return bool(lines) and all(
        "\t" not in line and all(token.isdigit() for token in line.split()) for line in lines
    )


def lightgcn_evidence(lines: list[str]) -> str | None:
    """Why these lines are LightGCN rows, or None when they are not (or not clearly)."""
    if not integer_rows(lines):
        return None
    counts = Counter(len(line.split()) for line in lines)
    modal_share = counts.most_common(1)[0][1] / len(lines)
    if len(counts) < 2 or modal_share >= LIGHTGCN_MAX_MODAL_SHARE:
        return None
    return (
        f"the field counts of the first {len(lines):,} lines vary from {min(counts)} to "
        f"{max(counts)}"
    )


def split_rows(lines: list[str], delimiter: str) -> list[list[str]]:
    """The lines split into fields as a CSV reader would (quotes respected)."""
    if len(delimiter) == 1:
        return list(csv.reader(lines, delimiter=delimiter))
    return [line.split(delimiter) for line in lines]


def detect_delimiter(lines: list[str], label: str) -> tuple[str, str]:
    """The delimiter that splits the sample evenly, and why; mixed delimiters are refused."""
    fits = {}
    for candidate in DELIMITERS:
        counts = Counter(len(row) for row in split_rows(lines, candidate))
        fields, lines_fitting = max(
            ((n, c) for n, c in counts.items() if n >= 2), key=lambda x: x[1], default=(1, 0)
        )
        fits[candidate] = (lines_fitting, fields)
    best = max(DELIMITERS, key=lambda d: (fits[d][0], -DELIMITERS.index(d)))
    fitting, fields = fits[best]
    if fitting == 0:
        raise RecvaeError(
            f"{label}: cannot find a field delimiter: the first lines hold one field each; "
            "expected user and item columns separated by comma, tab, semicolon, pipe or space "
            "(or pass --delimiter)"
        )
    rows = split_rows(lines, best)
    misfits = [i for i, row in enumerate(rows) if len(row) != fields]
    for other in DELIMITERS:
        if other == best or not misfits:
            continue
        split_by_other = [len(split_rows([lines[i]], other)[0]) >= 2 for i in misfits]
        if all(split_by_other):
            raise RecvaeError(
                f"{label}: mixed delimiters: {fitting:,} of the first {len(lines):,} lines are "
                f"separated by {show_delimiter(best)} but line {misfits[0] + 1} by "
                f"{show_delimiter(other)}; fix the file or pass --delimiter"
            )
    share = "each" if not misfits else f"in {fitting:,} of them"
    reason = (
        f"{show_delimiter(best)} splits the first {len(lines):,} lines into {fields} fields "
        f"{share}"
    )
    return best, reason


def detect_header(
    rows: list[list[str]], given_columns: list[str], label: str
) -> tuple[bool, str]:
    """Whether the first row names the columns, and why (see the module docstring)."""
    first = [field.strip() for field in rows[0]]
    known = {name for names in ROLE_NAMES.values() for name in names}
    named = [f for f in first if f in given_columns or normalise_name(f) in known]
    if named:
        return True, f"the first line names column(s) {', '.join(named)}"
    below = rows[1:]
    for index, value in enumerate(first):
        column = [row[index].strip() for row in below if index < len(row)]
        if column and all(NUMBER.match(v) for v in column) and not NUMBER.match(value):
            return True, f"column {index + 1} holds numbers below its first line {value!r}"
    numbers = [f for f in first if NUMBER.match(f)]
    if numbers:
        return False, f"the first line holds data (the number {numbers[0]}), not column names"
    raise RecvaeError(
        f"{label}: cannot tell whether the first line ({', '.join(first)}) is a header: it "
        "names no known column and every field is text; pass --header or --no-header"
    )


def detect_text(
    path: Path, label: str, delimiter: str | None, header: bool | None, given_columns: list[str],
    lightgcn_allowed: bool, delimiter_from: str = "given",
) -> Detected:
    """Read a sample of a text log and decide how to read it (LightGCN rows or a table).

    `delimiter_from` says where a preset delimiter came from (given, or the .tsv name)."""
    lines = sample_lines(path)
    if not lines:
        raise RecvaeError(f"{label}: the file holds only blank lines; expected an interaction log")
    if lightgcn_allowed and delimiter is None and header is None:
        evidence = lightgcn_evidence(lines)
        if evidence:
            return Detected("lightgcn", reason=evidence, integer_rows=True)
    reasons = []
    if delimiter is None:
        delimiter, why = detect_delimiter(lines, label)
        reasons.append(f"delimiter {why}")
    else:
        reasons.append(f"delimiter {show_delimiter(delimiter)} {delimiter_from}")
    if header is None:
        header, why = detect_header(split_rows(lines, delimiter), given_columns, label)
        reasons.append(f"{'header' if header else 'no header'}: {why}")
    else:
        reasons.append(f"{'header' if header else 'no header'} given")
    return Detected("csv", delimiter, header, "; ".join(reasons), integer_rows(lines))
