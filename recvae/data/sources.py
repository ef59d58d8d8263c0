"""Log readers: each source file becomes rows (user, item, rating, time, bad) through DuckDB SQL.

Every format is read by DuckDB so that typing, bad-row detection and the filters that follow all
run in one engine without a Python loop per row. A reader never drops a row silently: rows it
cannot use carry a reason in `bad` (or, for CSV parse and type errors, land in DuckDB's rejects
table) so that the caller can either stop with the first example or count and skip them.

Formats: csv (any delimiter, header detected or given), parquet, ndjson, duckdb (a table or a
query in a database file), movielens (ratings.dat with '::', u.data, ratings.csv) and lightgcn
(one line per user: `user item item ...`). Gzip is read transparently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from recvae.data.dialect import Detected, detect_text
from recvae.data.reader import (
    FORMATS,
    ROLE_NAMES,
    ROLE_OPTIONS,
    ROLES,
    ReaderOptions,
    normalise_name,
)
from recvae.errors import RecvaeError

MOVIELENS_NAMES = ["user_id", "item_id", "rating", "timestamp"]

INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}


def is_integer_type(duck_type: str) -> bool:
    return duck_type in INTEGER_TYPES


def is_numeric_type(duck_type: str) -> bool:
    return (
        duck_type in INTEGER_TYPES
        or duck_type in {"FLOAT", "DOUBLE"}
        or duck_type.startswith("DECIMAL")
    )


def is_time_type(duck_type: str) -> bool:
    return duck_type.startswith("TIMESTAMP") or duck_type == "DATE"


def sql_literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class ColumnChoice:
    """Which of a source's columns play user, item, rating and time (None: absent)."""

    user: str
    item: str
    rating: str | None = None
    time: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"user": self.user, "item": self.item, "rating": self.rating, "time": self.time}


@dataclass
class Source:
    """One input file, resolved: its format, columns, their DuckDB types and its split role."""

    path: Path
    format: str
    role: str | None
    columns: ColumnChoice
    types: dict[str, str]  # every column of the file -> DuckDB type
    csv: dict[str, object] = field(default_factory=dict)  # delimiter, header, skip, names
    relation: str = ""  # table function or attached table/query the rows come from
    attach_alias: str | None = None
    use_database: str | None = None  # a --query runs with its database file as the default
    detected: Detected | None = None  # how the format (and a text dialect) was decided, and why

    @property
    def label(self) -> str:
        return str(self.path)


def strip_compression(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in {".gz", ".gzip", ".zst"} else path


def format_from_name(path: Path, requested: str) -> str:
    """The reader for `path`: the requested one, or one chosen from the file name.

    A .txt file is `csv` here; `detect_source` then looks inside it for LightGCN rows."""
    if requested not in FORMATS:
        raise RecvaeError(f"unknown format '{requested}'; expected one of {', '.join(FORMATS)}")
    if requested != "auto":
        return requested
    plain = strip_compression(path)
    name, suffix = plain.name.lower(), plain.suffix.lower()
    if name in {"ratings.dat", "u.data"}:
        return "movielens"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".json", ".jsonl", ".ndjson"}:
        return "ndjson"
    if suffix in {".duckdb", ".ddb", ".db"}:
        return "duckdb"
    if suffix in {".csv", ".tsv", ".txt", ".dat", ".data"}:
        return "csv"
    raise RecvaeError(
        f"{path}: cannot tell the format from the name '{path.name}'; expected a .csv, .tsv, "
        ".txt, .parquet, .ndjson/.jsonl, .duckdb file (optionally .gz), or pass --format "
        f"({', '.join(FORMATS[1:])})"
    )


def detect_source(path: Path, requested: str, reader: ReaderOptions) -> Detected:
    """How to read `path`: its format and, for text, delimiter and header, each with its reason.

    Only a .txt file in `auto` format can turn out to be LightGCN rows, and only on evidence
    (see recvae.data.dialect); anything else textual is a table.
    """
    if not path.exists():
        raise RecvaeError(f"{path}: no such file")
    if path.is_dir():
        raise RecvaeError(f"{path}: is a directory; expected a log file")
    if path.stat().st_size == 0:
        raise RecvaeError(f"{path}: the file is empty; expected an interaction log")
    fmt = format_from_name(path, requested)
    source = "given by --format" if requested != "auto" else "from the file name"
    if fmt == "lightgcn":
        return Detected("lightgcn", reason=f"LightGCN rows {source}")
    if fmt not in {"csv", "movielens"}:
        return Detected(fmt, reason=f"{fmt} {source}")
    plain = strip_compression(path).name.lower()
    if fmt == "movielens" and not plain.endswith(".csv"):
        if plain == "ratings.dat" or plain.endswith(".dat"):
            return Detected(fmt, "::", False, "MovieLens ratings.dat: '::', no header")
        if plain == "u.data":
            return Detected(fmt, "\t", False, "MovieLens u.data: tab, no header")
        raise RecvaeError(
            f"{path}: not a MovieLens ratings file; expected ratings.dat, u.data or "
            "ratings.csv (optionally .gz)"
        )
    delimiter, header = reader.delimiter, reader.header
    delimiter_from = "given"
    if delimiter is None and strip_compression(path).suffix.lower() == ".tsv":
        delimiter, delimiter_from = "\t", "from the .tsv name"
    if fmt == "movielens" and header is None:
        header = True
    given = [name for name in reader.columns.values() if name]
    lightgcn_allowed = requested == "auto" and strip_compression(path).suffix.lower() == ".txt"
    detected = detect_text(
        path, str(path), delimiter, header, given, lightgcn_allowed, delimiter_from
    )
    detected.format = "lightgcn" if detected.format == "lightgcn" else fmt
    return detected


def detect_sources(paths: list[Path], reader: ReaderOptions) -> list[Detected]:
    """`detect_source` for files read as one log (or side by side), with the sibling rule."""
    detected = [detect_source(path, reader.format, reader) for path in paths]
    lightgcn_siblings(paths, detected, reader.format)
    return detected


def lightgcn_siblings(paths: list[Path], detected: list[Detected], requested: str) -> None:
    """Read all-integer .txt siblings of a LightGCN file (train.txt, valid.txt) as LightGCN too.

    A valid.txt whose users all happen to hold two items has lines of three integers, which alone
    read as a table (user, item, weight); beside a train.txt that is LightGCN by evidence, the
    same lines are LightGCN rows. The reason says so. Changes `detected` in place.
    """
    if requested != "auto":
        return
    evidence = next(
        (p for p, d in zip(paths, detected, strict=True) if d.format == "lightgcn"), None
    )
    if evidence is None:
        return
    for path, found in zip(paths, detected, strict=True):
        suffix = strip_compression(path).suffix.lower()
        if found.format == "csv" and found.integer_rows and suffix == ".txt":
            found.format, found.delimiter, found.header = "lightgcn", None, None
            found.reason = (
                f"LightGCN rows like {evidence.name} (its field counts vary), read the same way"
            )


def choose_columns(
    names: list[str], explicit: dict[str, str | None], label: str, positional: bool
) -> ColumnChoice:
    """Pick the user/item/rating/time columns: given names first, then detection.

    Headerless files (`positional`) are read as user, item, rating, timestamp in that order.
    """
    found = ", ".join(names) if names else "(none)"
    chosen: dict[str, str | None] = {}
    for role in ROLES:
        given = explicit.get(role)
        if given:
            if given not in names:
                raise RecvaeError(
                    f"{label}: no column '{given}' (given by {ROLE_OPTIONS[role]}); "
                    f"columns found: {found}"
                )
            chosen[role] = given
        elif positional:
            position = ROLES.index(role)
            chosen[role] = names[position] if position < len(names) else None
        else:
            by_norm = {normalise_name(name): name for name in reversed(names)}
            chosen[role] = next(
                (
                    by_norm[c]
                    for c in ROLE_NAMES[role]
                    if c in by_norm and by_norm[c] not in chosen.values()
                ),
                None,
            )
    for role in ("user", "item"):
        if chosen[role] is None:
            raise RecvaeError(
                f"{label}: cannot find the {role} id column; columns found: {found}; "
                f"name it with {ROLE_OPTIONS[role]}"
            )
    if chosen["user"] == chosen["item"]:
        raise RecvaeError(f"{label}: user and item are the same column '{chosen['user']}'")
    return ColumnChoice(**chosen)


def describe(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> dict[str, str]:
    """Column name -> DuckDB type of a relation, with DuckDB's errors turned into RecvaeErrors."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as error:
        raise RecvaeError(f"{label}: cannot read: {first_line(error)}") from error
    return {row[0]: row[1] for row in rows}


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def resolve_source(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    detected: Detected,
    role: str | None,
    reader: ReaderOptions,
    table: str | None = None,
    query: str | None = None,
    index: int = 0,
) -> Source:
    """Open `path` (as `detect_source` found it) far enough to know its columns and types."""
    fmt = detected.format
    explicit_columns = reader.columns
    if (table or query) and fmt != "duckdb":
        raise RecvaeError(f"{path}: --table/--query only apply to DuckDB database files")
    if fmt in {"csv", "movielens"}:
        return _resolve_csv(con, path, detected, role, explicit_columns)
    if fmt == "lightgcn":
        relation = (
            f"read_csv({sql_literal(path)}, columns={{'line': 'VARCHAR'}}, header=false, "
            "delim='\\x1f', quote='', escape='', auto_detect=false)"
        )
        columns = ColumnChoice(user="user", item="item")
        types = {"user": "BIGINT", "item": "BIGINT"}
        return Source(path, fmt, role, columns, types, {}, relation, detected=detected)
    if fmt == "parquet":
        relation = f"read_parquet({sql_literal(path)}, file_row_number=true)"
    elif fmt == "ndjson":
        relation = f"read_json({sql_literal(path)}, format='newline_delimited')"
    else:
        alias = f"recvae_src{index}"
        try:
            con.execute(f"ATTACH {sql_literal(path)} AS {alias} (READ_ONLY)")
        except duckdb.Error as error:
            raise RecvaeError(
                f"{path}: not a readable DuckDB database: {first_line(error)}"
            ) from error
        relation = _duckdb_relation(con, path, alias, table, query)
        use = alias if query else None
        if use:
            con.execute(f"USE {alias}")
        try:
            types = describe(con, relation, str(path))
        finally:
            con.execute("USE memory")
        columns = choose_columns(list(types), explicit_columns, str(path), positional=False)
        return Source(path, fmt, role, columns, types, {}, relation, alias, use, detected)
    types = describe(con, relation, str(path))
    types.pop("file_row_number", None)
    columns = choose_columns(list(types), explicit_columns, str(path), positional=False)
    return Source(path, fmt, role, columns, types, {}, relation, detected=detected)


def read_only_select(query: str, label: str) -> str:
    """`query` if it is exactly one SELECT (or WITH ... SELECT), else one line saying why not.

    DuckDB's own parser splits and types the statements, so `) ; COPY (...) TO 'file'` is two
    statements and refused before anything runs, as are COPY, ATTACH, INSERT, PRAGMA, SET, CALL.
    """
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        raise RecvaeError(f"{label}: the --query does not parse: {first_line(error)}") from error
    if len(statements) != 1:
        raise RecvaeError(
            f"{label}: the --query must be exactly one SELECT statement; it holds "
            f"{len(statements)} statements"
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise RecvaeError(
            f"{label}: the --query must be one read-only SELECT (or WITH ... SELECT); "
            f"got a {kind.name} statement"
        )
    return statements[0].query.strip().rstrip(";")


def _duckdb_relation(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, table: str | None, query: str | None
) -> str:
    if query:
        query = read_only_select(query, str(path))
        con.execute(f"USE {alias}")
        try:
            con.execute(f"DESCRIBE ({query})")
        except duckdb.Error as error:
            raise RecvaeError(f"{path}: the --query failed: {first_line(error)}") from error
        finally:
            con.execute("USE memory")
        return f"(SELECT * FROM ({query}))"
    tables = [
        row[0]
        for row in con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = ?",
            [alias],
        ).fetchall()
    ]
    if table is None:
        if len(tables) != 1:
            raise RecvaeError(
                f"{path}: holds {len(tables)} tables ({', '.join(tables) or 'none'}); "
                "choose one with --table or give --query"
            )
        table = tables[0]
    parts = table.split(".")
    full = table if len(parts) == 2 else f"main.{table}"
    if full not in tables:
        raise RecvaeError(
            f"{path}: no table '{table}'; tables found: {', '.join(tables) or 'none'}"
        )
    schema, name = full.split(".")
    return f"{alias}.{sql_ident(schema)}.{sql_ident(name)}"


def _resolve_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    detected: Detected,
    role: str | None,
    explicit_columns: dict[str, str | None],
) -> Source:
    """Column names and types of a text log whose delimiter and header are already decided."""
    fmt = detected.format
    plain = strip_compression(path).name.lower()
    names_override = MOVIELENS_NAMES if fmt == "movielens" and not plain.endswith(".csv") else None
    # ignore_errors lets the sniffer see past a ragged or mistyped row in its sample; those rows
    # are then caught, with their line numbers, by the typed read.
    args = [
        sql_literal(path),
        "ignore_errors=true",
        f"delim={sql_literal(detected.delimiter or ',')}",
        f"header={str(bool(detected.header)).lower()}",
        "skip=0",
    ]
    try:
        sniffed = con.execute(
            f"SELECT Delimiter, HasHeader, SkipRows, Columns FROM sniff_csv({', '.join(args)})"
        ).fetchall()[0]
    except duckdb.Error as error:
        raise RecvaeError(f"{path}: cannot read as delimited text: {first_line(error)}") from error
    delim, has_header, skip, sniffed_columns = sniffed
    names = [column["name"] for column in sniffed_columns]
    types = {column["name"]: column["type"] for column in sniffed_columns}
    if names_override is not None:
        if len(names) != len(names_override):
            raise RecvaeError(
                f"{path}: a MovieLens ratings file has 4 fields per line "
                f"(user, item, rating, timestamp); found {len(names)}"
            )
        types = dict(zip(names_override, types.values(), strict=True))
        names = list(names_override)
    positional = not has_header and names_override is None
    columns = choose_columns(names, explicit_columns, str(path), positional=positional)
    dialect = {"delimiter": delim, "header": bool(has_header), "skip": int(skip), "names": names}
    return Source(path, fmt, role, columns, types, dialect, detected=detected)


def csv_relation(source: Source, id_types: IdTypes, rejects: str) -> str:
    """read_csv with explicit types: ids as `id_types`, rating DOUBLE, time DOUBLE or TIMESTAMP.

    Rows whose fields do not parse as those types, or that have too many or too few fields, go
    to DuckDB's rejects table (`rejects`) with their line number instead of failing the read.
    """
    chosen = source.columns.as_dict()
    role_of = {name: role for role, name in chosen.items() if name}
    declared = {}
    for name in source.csv["names"]:
        role = role_of.get(name)
        if role in ("user", "item"):
            declared[name] = getattr(id_types, role)
        elif role == "rating":
            declared[name] = "DOUBLE"
        elif role == "time":
            sniffed = source.types.get(name, "VARCHAR")
            declared[name] = sniffed if is_time_type(sniffed) else "DOUBLE"
        else:
            declared[name] = "VARCHAR"
    columns = ", ".join(f"{sql_literal(n)}: {sql_literal(t)}" for n, t in declared.items())
    source.types = {**source.types, **declared}
    return (
        f"read_csv({sql_literal(source.path)}, delim={sql_literal(source.csv['delimiter'])}, "
        f"header={str(source.csv['header']).lower()}, skip={source.csv['skip']}, "
        f"columns={{{columns}}}, store_rejects=true, rejects_table={sql_literal(rejects)}, "
        f"rejects_scan={sql_literal(rejects + '_scan')}, ignore_errors=true, null_padding=false)"
    )


SIGNED_FITS_BIGINT = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                      "UINTEGER"}  # fmt: skip
UNSIGNED = {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


@dataclass(frozen=True)
class IdTypes:
    """The DuckDB type each id role is read as, the same for every source of one log."""

    user: str
    item: str


def id_type_of(sources: list[Source]) -> IdTypes:
    """The types user ids and item ids are read as, each decided over every source.

    BIGINT when every column of that role is an integer type that fits it; UBIGINT when every
    one is an unsigned integer and some are UBIGINT (uint64 hashes, e.g. a Parquet UInt64
    column); text otherwise, which keeps any id as written (a CSV's ids of 2^63 and above sniff
    as HUGEINT and become text).
    """

    def common(role: str) -> str:
        kinds = [
            "BIGINT" if s.format == "lightgcn" else s.types.get(getattr(s.columns, role), "VARCHAR")
            for s in sources
        ]
        if all(kind in SIGNED_FITS_BIGINT for kind in kinds):
            return "BIGINT"
        if all(kind in UNSIGNED for kind in kinds):
            return "UBIGINT"
        return "VARCHAR"

    return IdTypes(user=common("user"), item=common("item"))


def rows_sql(
    source: Source,
    id_types: IdTypes,
    use_rating: bool,
    use_time: bool,
    rejects: str,
    numbered: bool = False,
) -> str:
    """SELECT user, item, rating, time, bad: the source's rows in the standard shape.

    `bad` is NULL for a usable row and otherwise says what is wrong with it (and where, when the
    format gives row numbers), e.g. 'row 17: empty user id (column user_id)'. A text log's rows
    are numbered only when `numbered` (quoting bad rows): the numbering costs a window over the
    whole file, which the main pass does not pay.
    """
    if source.format == "lightgcn":
        return _lightgcn_sql(source)
    if source.format in {"csv", "movielens"}:
        relation = csv_relation(source, id_types, rejects)
    else:
        relation = source.relation
    where = "''"
    if source.format == "parquet":
        where = "'row ' || (file_row_number + 1) || ': '"
    elif numbered and source.format in {"csv", "movielens"}:
        relation = f"(SELECT *, row_number() OVER () AS recvae_row FROM {relation})"
        where = "'data row ' || recvae_row || ': '"
    cols = source.columns
    exprs = {
        "user": f"CAST({sql_ident(cols.user)} AS {id_types.user})",
        "item": f"CAST({sql_ident(cols.item)} AS {id_types.item})",
        "rating": _rating_expr(source) if use_rating else "CAST(NULL AS DOUBLE)",
        "time": _time_expr(source) if use_time else "CAST(NULL AS BIGINT)",
    }
    checks = [
        f"WHEN user IS NULL THEN {where} || 'empty user id (column {_q(cols.user)})'",
        f"WHEN item IS NULL THEN {where} || 'empty item id (column {_q(cols.item)})'",
    ]
    raw = []
    if use_rating:
        raw.append(f"{sql_ident(cols.rating)} AS raw_rating")
        checks.append(
            f"WHEN rating IS NULL AND raw_rating IS NULL THEN {where} || "
            f"'empty rating (column {_q(cols.rating)})' "
            f"WHEN rating IS NULL THEN {where} || 'rating ''' || CAST(raw_rating AS VARCHAR) || "
            f"''' is not a number (column {_q(cols.rating)})' "
            f"WHEN NOT isfinite(rating) THEN {where} || 'rating ' || CAST(rating AS VARCHAR) || "
            f"' is not a finite number (column {_q(cols.rating)}); NaN and infinite ratings are "
            "refused'"
        )
    if use_time:
        raw.append(f"{sql_ident(cols.time)} AS raw_time")
        checks.append(
            f"WHEN time IS NULL AND raw_time IS NULL THEN {where} || "
            f"'empty timestamp (column {_q(cols.time)})' "
            f"WHEN time IS NULL THEN {where} || 'timestamp ''' || CAST(raw_time AS VARCHAR) || "
            f"''' is neither unix seconds nor a date-time (column {_q(cols.time)})'"
        )
    extra = ", file_row_number" if source.format == "parquet" else ""
    extra += ", recvae_row" if "recvae_row" in relation else ""
    inner = ", ".join([f"{expr} AS {role}" for role, expr in exprs.items()] + raw) + extra
    return (
        f"SELECT user, item, rating, time, CASE {' '.join(checks)} END AS bad "
        f"FROM (SELECT {inner} FROM {relation})"
    )


def _q(name: str | None) -> str:
    return (name or "").replace("'", "''")


def _rating_expr(source: Source) -> str:
    name = source.columns.rating
    kind = source.types.get(name, "VARCHAR")
    cast = "CAST" if is_numeric_type(kind) else "TRY_CAST"
    return f"{cast}({sql_ident(name)} AS DOUBLE)"


def _time_expr(source: Source) -> str:
    """Unix seconds (BIGINT) from numeric seconds, a timestamp/date column, or text of either."""
    column = sql_ident(source.columns.time)
    kind = source.types.get(source.columns.time, "VARCHAR")
    if is_time_type(kind):
        return f"CAST(epoch({column}) AS BIGINT)"
    if is_integer_type(kind):
        return f"CAST({column} AS BIGINT)"
    if is_numeric_type(kind):  # NaN or inf seconds: not a time (a bad row, not a crash)
        return f"TRY_CAST({column} AS BIGINT)"
    return (
        f"coalesce(TRY_CAST(TRY_CAST({column} AS DOUBLE) AS BIGINT), "
        f"CAST(epoch(TRY_CAST({column} AS TIMESTAMP)) AS BIGINT))"
    )


def _lightgcn_sql(source: Source) -> str:
    """`user item item ...` lines: split on whitespace and unnest; line numbers kept for errors."""
    return (
        "SELECT TRY_CAST(u AS BIGINT) AS user, TRY_CAST(i AS BIGINT) AS item, "
        "CAST(NULL AS DOUBLE) AS rating, CAST(NULL AS BIGINT) AS time, "
        "CASE WHEN TRY_CAST(u AS BIGINT) IS NULL THEN 'line ' || line_no || ': user id ''' || u "
        "|| ''' is not an integer' WHEN TRY_CAST(i AS BIGINT) IS NULL THEN 'line ' || line_no || "
        "': item id ''' || i || ''' is not an integer' END AS bad "
        "FROM (SELECT line_no, parts[1] AS u, unnest(parts[2:]) AS i FROM ("
        "SELECT line_no, regexp_split_to_array(trim(line), '\\s+') AS parts FROM ("
        f"SELECT row_number() OVER () AS line_no, line FROM {source.relation}) "
        "WHERE trim(line) <> ''))"
    )
