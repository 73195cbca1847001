"""Publishing a run's tables to the warehouse, all or nothing.

A run's tables are only useful together (an xref without its unified members,
or balances of another run, would mislead a reviewer), so every write of a run
happens in one transaction and a failure leaves the warehouse exactly as it
was. Two engines share one behaviour: DuckDB (an embedded file, the default)
and PostgreSQL (production). Frames are conformed to the table's column types
in polars first, so both engines accept or reject the same data and read back
the same frame.

Write modes follow docs/internals.md ("Published tables and how a run writes
them"); a table not listed there is replaced.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import polars as pl

from tasks.errors import MemberlinkError, WarehouseError
from tasks.privacy import redact_url

WriteMode = Literal["replaced", "partitioned", "appended", "upserted"]

WRITE_MODES: dict[str, WriteMode] = {
    "member_xref": "replaced",
    "unified_members": "replaced",
    "hub_values": "replaced",
    "review_queue": "replaced",
    "linkage_model": "replaced",
    "points_balances": "partitioned",
    "member_points": "partitioned",
    "points_discrepancies": "partitioned",
    "quarantine": "partitioned",
    "data_quality": "partitioned",
    "ingest_counts": "partitioned",
    "identity_changes": "appended",
    "runs": "upserted",
}

URL_ENV = "MEMBERLINK_WAREHOUSE_URL"
DEFAULT_URL = "warehouse.duckdb"
RUN_ID = "run_id"
AS_OF = "as_of"
RUNS_TABLE = "runs"

# The runs row: `config` and `counts` are JSON text so that a new count or a
# new config key never needs a schema change.
RUN_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8(),
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "as_of": pl.Date(),
    "status": pl.Utf8(),
    "config": pl.Utf8(),
    "warehouse": pl.Utf8(),
    "channels": pl.List(pl.Utf8()),
    "counts": pl.Utf8(),
    "error": pl.Utf8(),
}

# One SQL spelling that both engines accept, and the polars dtype a column of
# that type holds on the way in and on the way back.
STORAGE_DTYPES: dict[str, pl.DataType] = {
    "TEXT": pl.Utf8(),
    "SMALLINT": pl.Int16(),
    "INTEGER": pl.Int32(),
    "BIGINT": pl.Int64(),
    "REAL": pl.Float32(),
    "DOUBLE PRECISION": pl.Float64(),
    "BOOLEAN": pl.Boolean(),
    "DATE": pl.Date(),
    "TIMESTAMP": pl.Datetime("us"),
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
    "TEXT[]": pl.List(pl.Utf8()),
}

# information_schema spellings of both engines -> the shared spelling above.
_CATALOG_TYPES: dict[str, str] = {
    "VARCHAR": "TEXT", "TEXT": "TEXT", "CHARACTER VARYING": "TEXT",
    "SMALLINT": "SMALLINT", "INTEGER": "INTEGER", "BIGINT": "BIGINT",
    "FLOAT": "REAL", "REAL": "REAL",
    "DOUBLE": "DOUBLE PRECISION", "DOUBLE PRECISION": "DOUBLE PRECISION",
    "BOOLEAN": "BOOLEAN", "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "VARCHAR[]": "TEXT[]", "_TEXT": "TEXT[]", "_VARCHAR": "TEXT[]",
}

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LONG_DIGITS = re.compile(r"\d{6,}[0-9Xx]?")


# --------------------------------------------------------------------------- URLs


def open_warehouse(url: str | None = None) -> Warehouse:
    """Open the warehouse a run publishes to, checking now that it can be reached.

    Failing here, before hours of matching, is cheaper than failing at publish.
    """
    resolved = resolve_url(url)
    scheme = urlsplit(resolved).scheme.lower() if "://" in resolved else ""
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        warehouse: Warehouse = PostgresWarehouse(resolved)
    elif scheme == "duckdb":
        warehouse = DuckDBWarehouse(_duckdb_path(resolved[len("duckdb://"):]))
    elif not scheme and resolved.endswith(".duckdb"):
        warehouse = DuckDBWarehouse(_duckdb_path(resolved))
    else:
        raise WarehouseError(
            f"warehouse URL {redact_url(resolved)!r} is not recognised: use a path ending "
            "in .duckdb, duckdb:///abs/path.duckdb, postgresql://user:pass@host:port/db, "
            "env:VARNAME or secret:BLOCK_NAME"
        )
    warehouse.check()
    return warehouse


def resolve_url(url: str | None) -> str:
    """The connection URL behind `url`, following env: and secret: indirections.

    Indirection keeps passwords out of sources.toml, deployment parameters and
    the Prefect UI.
    """
    if url is None:
        url = os.environ.get(URL_ENV) or DEFAULT_URL
    url = url.strip()
    if url.startswith("env:"):
        name = url[len("env:"):]
        value = os.environ.get(name)
        if not value:
            raise WarehouseError(
                f"warehouse URL names environment variable {name!r}, which is not set: "
                f"export {name}=postgresql://user:pass@host:port/db (or a .duckdb path)"
            )
        return value.strip()
    if url.startswith("secret:"):
        return _secret_block_value(url[len("secret:"):])
    return url


def _secret_block_value(name: str) -> str:
    """Read a Prefect Secret block; imported lazily because Prefect is slow to import."""
    try:
        from prefect.blocks.system import Secret

        # _sync: called from an async flow, load() would otherwise return a coroutine.
        value = Secret.load(name, _sync=True).get()
    except Exception as exc:
        raise WarehouseError(
            f"cannot read the warehouse URL from Prefect Secret block {name!r} "
            f"({type(exc).__name__}): create it with "
            f"`Secret(value='postgresql://...').save('{name}')` or check PREFECT_API_URL"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise WarehouseError(
            f"Prefect Secret block {name!r} does not hold a warehouse URL string: "
            "save the postgresql://... URL (or a .duckdb path) as its value"
        )
    return value.strip()


def _duckdb_path(text: str) -> Path:
    """Relative paths resolve against the working directory at open time, once."""
    return Path(text).expanduser().absolute()


def write_mode(table: str) -> WriteMode:
    """How a run writes `table`; an unknown table holds the latest run's view."""
    return WRITE_MODES.get(table, "replaced")


# --------------------------------------------------------------------------- frames


def sql_type(dtype: pl.DataType, table: str, column: str) -> str:
    """The shared SQL type of a new column holding `dtype`."""
    if dtype in (pl.Utf8, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        return "TEXT"
    if dtype in (pl.Int8, pl.Int16, pl.UInt8):
        return "SMALLINT"
    if dtype in (pl.Int32, pl.UInt16):
        return "INTEGER"
    if dtype in (pl.Int64, pl.UInt32, pl.UInt64):
        return "BIGINT"
    if dtype == pl.Float32:
        return "REAL"
    if dtype == pl.Float64:
        return "DOUBLE PRECISION"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Date:
        return "DATE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP" if dtype.time_zone is None else "TIMESTAMPTZ"
    if isinstance(dtype, pl.List) and sql_type(dtype.inner, table, column) == "TEXT":
        return "TEXT[]"
    raise WarehouseError(
        f"table {table!r} column {column!r} has type {dtype}, which the warehouse cannot "
        "store: cast it to a string, integer, float, boolean, date, datetime or list of "
        "strings before publishing"
    )


def _to_storage(column: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Cast one column to the dtype its table column holds; strict, so bad data fails here."""
    expr = pl.col(column)
    if isinstance(target, pl.Datetime) and isinstance(source, pl.Datetime):
        if source.time_zone is None and target.time_zone is not None:
            expr = expr.dt.replace_time_zone("UTC")
        elif source.time_zone is not None:
            expr = expr.dt.convert_time_zone("UTC")
            if target.time_zone is None:
                expr = expr.dt.replace_time_zone(None)
        return expr.dt.cast_time_unit("us")
    return expr.cast(target, strict=True)


def conform(frame: pl.DataFrame, column_types: Mapping[str, str | None]) -> pl.DataFrame:
    """The frame cast to its table's column types, identically for both engines.

    Strict casts raise polars errors on data that does not fit (text in a number
    column), before anything reaches the engine.
    """
    casts = []
    for column, dtype in frame.schema.items():
        target = STORAGE_DTYPES.get(column_types.get(column) or "")
        if target is not None and dtype != target:
            casts.append(_to_storage(column, dtype, target))
    return frame.with_columns(casts) if casts else frame


def stamp(frame: pl.DataFrame, mode: WriteMode, run_id: str, as_of: dt.date | None) -> pl.DataFrame:
    """Add run_id (and as_of for partitioned tables) where the frame lacks them."""
    extra = []
    if RUN_ID not in frame.columns:
        extra.append(pl.lit(run_id, pl.Utf8).alias(RUN_ID))
    if mode == "partitioned" and AS_OF not in frame.columns:
        extra.append(pl.lit(as_of, pl.Date).alias(AS_OF))
    return frame.with_columns(extra) if extra else frame


def run_frame(run: Mapping[str, Any]) -> pl.DataFrame:
    """The one-row frame of the runs table; JSON for structured values, URLs redacted."""
    if not run.get("run_id"):
        raise WarehouseError("the run has no run_id: pass run={'run_id': ..., ...} to publish")
    row: dict[str, Any] = {}
    schema: dict[str, pl.DataType] = {}
    for key, value in run.items():
        if key in RUN_SCHEMA:
            row[key] = _run_value(key, value)
            schema[key] = RUN_SCHEMA[key]
        else:
            row[key] = json.dumps(value, default=str) if isinstance(value, dict | list) else value
    for key, dtype in RUN_SCHEMA.items():
        row.setdefault(key, None)
        schema[key] = dtype
    return pl.DataFrame([row], schema_overrides=schema).select(
        [*RUN_SCHEMA, *(k for k in row if k not in RUN_SCHEMA)]
    )


def _run_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in ("started_at", "finished_at"):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.astimezone(dt.UTC)  # a naive time is the machine's local time
    if key == AS_OF:
        return _as_date(value)
    if key == "channels":
        return [value] if isinstance(value, str) else [str(v) for v in value]
    if key in ("config", "counts") and not isinstance(value, str):
        return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
    if key in ("warehouse", "error"):
        return _scrub(redact_url(str(value)))
    return str(value)


def _as_date(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value))


def _scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A database message made safe to show: no password, no phone or id-card digits.

    Engines echo offending values ("could not convert string '1381234...'"),
    which may be personal information.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _LONG_DIGITS.sub(lambda m: f"<{len(m[0])} digits>", text)
    return " ".join(text.split())


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _check_table_name(table: str) -> None:
    if not _TABLE_NAME.match(table):
        raise WarehouseError(
            f"table name {table!r} is not a plain identifier: use letters, digits and "
            "underscores, starting with a letter"
        )


# --------------------------------------------------------------------------- warehouse


class _Session(ABC):
    """One open transaction on one engine: the few statements publishing needs."""

    @abstractmethod
    def column_types(self, table: str) -> dict[str, str | None] | None:
        """Shared SQL type of each column (None when unknown), or None without the table."""

    @abstractmethod
    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None: ...

    @abstractmethod
    def insert(self, table: str, frame: pl.DataFrame) -> None: ...

    @abstractmethod
    def delete_in(self, table: str, column: str, values: list[Any]) -> None: ...

    def delete_all(self, table: str) -> None:
        self.execute(f"DELETE FROM {_quote(table)}")

    @abstractmethod
    def lock(self) -> None:
        """Serialise publishers, so two runs' replacements never interleave."""


class Warehouse(ABC):
    """A DuckDB file or a PostgreSQL database holding memberlink's published tables.

    Holds no open connection between calls, so the object pickles (Prefect
    tasks) and a DuckDB file is not locked while the run is matching.
    """

    display_url: str

    # ------------------------------------------------------------------ public

    def publish(self, tables: Mapping[str, pl.DataFrame], run: Mapping[str, Any]) -> None:
        """Write every table of a run and its runs row in one transaction."""
        run_row = run_frame(run)
        run_id: str = run_row[RUN_ID][0]
        as_of: dt.date | None = run_row[AS_OF][0]
        with self._transaction("publish run " + run_id) as session:
            session.lock()
            for table, frame in tables.items():
                if table == RUNS_TABLE:
                    continue
                self._write(session, table, frame, run_id, as_of)
            self._write(session, RUNS_TABLE, run_row, run_id, as_of)

    def record_run(self, run: Mapping[str, Any]) -> None:
        """Upsert only the runs row: how a failed run leaves its trace."""
        run_row = run_frame(run)
        with self._transaction("record run " + run_row[RUN_ID][0]) as session:
            self._write(session, RUNS_TABLE, run_row, run_row[RUN_ID][0], run_row[AS_OF][0])

    def read_table(self, name: str, where_run_id: str | None = None) -> pl.DataFrame | None:
        """The table as a frame (rows in no particular order), or None when it does not exist."""
        _check_table_name(name)
        with self._transaction("read table " + name) as session:
            types = session.column_types(name)
            if types is None:
                return None
            return self._read(session, name, types, where_run_id)

    def last_issued_unified_id(self) -> int:
        """The largest unified_id number ever issued, so new ids are never reused."""
        best = 0
        with self._transaction("read issued unified ids") as session:
            for table in ("member_xref", "identity_changes"):
                for column, kind in (session.column_types(table) or {}).items():
                    if "unified_id" in column and kind == "TEXT":
                        best = max(best, self._max_id_number(session, table, column) or 0)
        return best

    def check(self) -> None:
        """Connect once, so a wrong URL fails at open time."""
        with self._transaction("connect"):
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r})"

    # ------------------------------------------------------------------ engine hooks

    @abstractmethod
    def _connect_transaction(self) -> Any:
        """A context manager yielding a _Session inside BEGIN ... COMMIT/ROLLBACK."""

    @abstractmethod
    def _read(
        self, session: _Session, table: str, types: dict[str, str | None], where_run_id: str | None
    ) -> pl.DataFrame: ...

    @abstractmethod
    def _max_id_number(self, session: _Session, table: str, column: str) -> int | None: ...

    @abstractmethod
    def _engine_errors(self) -> tuple[type[BaseException], ...]: ...

    def _secrets(self) -> tuple[str, ...]:
        return ()

    # ------------------------------------------------------------------ shared logic

    @contextmanager
    def _transaction(self, what: str) -> Iterator[_Session]:
        """Run `what` in one transaction; any failure rolls back and is reported redacted."""
        try:
            with self._connect_transaction() as session:
                yield session
        except MemberlinkError:
            raise
        except (*self._engine_errors(), pl.exceptions.PolarsError, OSError) as exc:
            raise WarehouseError(
                f"cannot {what} in warehouse {self.display_url}: "
                f"{_scrub(str(exc), self._secrets())}; nothing was changed"
            ) from None

    def _write(
        self, session: _Session, table: str, frame: pl.DataFrame, run_id: str,
        as_of: dt.date | None,
    ) -> None:
        _check_table_name(table)
        mode = write_mode(table)
        if mode == "partitioned" and as_of is None and AS_OF not in frame.columns:
            raise WarehouseError(
                f"table {table!r} is partitioned by as_of but the run has none: pass "
                "run['as_of'] (the reconciliation date) to publish"
            )
        frame = stamp(frame, mode, run_id, as_of)
        try:
            types = self._ensure_columns(session, table, frame)
            frame = conform(frame, types)
            self._clear(session, table, frame, mode, run_id, as_of)
            if frame.height:
                session.insert(table, frame)
        except MemberlinkError:
            raise
        except pl.exceptions.PolarsError as exc:
            raise WarehouseError(
                f"table {table!r} does not fit the column types of warehouse "
                f"{self.display_url} ({_scrub(str(exc))}); the whole run was rolled back, "
                "nothing was changed: fix the stage that produced it, or drop the table "
                "so that it is recreated"
            ) from None
        except self._engine_errors() as exc:
            raise WarehouseError(
                f"cannot write table {table!r} to warehouse {self.display_url}: "
                f"{_scrub(str(exc), self._secrets())}; the whole run was rolled back, "
                "nothing was changed"
            ) from None

    def _ensure_columns(
        self, session: _Session, table: str, frame: pl.DataFrame
    ) -> dict[str, str | None]:
        """Create the table, or add the frame's new columns, from the frame's schema."""
        wanted = {c: sql_type(d, table, c) for c, d in frame.schema.items()}
        existing = session.column_types(table)
        if existing is None:
            columns = ", ".join(f"{_quote(c)} {t}" for c, t in wanted.items())
            session.execute(f"CREATE TABLE {_quote(table)} ({columns})")
            return dict(wanted)
        for column, kind in wanted.items():
            if column not in existing:
                session.execute(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(column)} {kind}")
                existing[column] = kind
        return existing

    @staticmethod
    def _clear(
        session: _Session, table: str, frame: pl.DataFrame, mode: WriteMode, run_id: str,
        as_of: dt.date | None,
    ) -> None:
        """Remove what this run's rows replace; appends drop only a retry's earlier rows."""
        if mode == "replaced":
            session.delete_all(table)
        elif mode == "partitioned":
            dates = set(frame[AS_OF].unique().drop_nulls().to_list()) | {as_of}
            session.delete_in(table, AS_OF, sorted(d for d in dates if d is not None))
        else:  # appended, upserted: one run's rows are keyed by its run_id
            ids = set(frame[RUN_ID].unique().drop_nulls().to_list()) | {run_id}
            session.delete_in(table, RUN_ID, sorted(ids))


# --------------------------------------------------------------------------- DuckDB


class _DuckDBSession(_Session):
    def __init__(self, con: Any) -> None:
        self.con = con

    def column_types(self, table: str) -> dict[str, str | None] | None:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: _CATALOG_TYPES.get(kind.upper()) for name, kind in rows} or None

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        self.con.execute(statement, list(params))

    def insert(self, table: str, frame: pl.DataFrame) -> None:
        """Arrow hands DuckDB the frame's buffers without a copy."""
        columns = ", ".join(_quote(c) for c in frame.columns)
        self.con.register("memberlink_incoming", frame.to_arrow())
        try:
            self.con.execute(
                f"INSERT INTO {_quote(table)} ({columns}) SELECT {columns} FROM memberlink_incoming"
            )
        finally:
            self.con.unregister("memberlink_incoming")

    def delete_in(self, table: str, column: str, values: list[Any]) -> None:
        if values:
            marks = ", ".join("?" for _ in values)
            where = f"{_quote(column)} IN ({marks})"
            self.con.execute(f"DELETE FROM {_quote(table)} WHERE {where}", values)

    def lock(self) -> None:
        """Nothing to do: DuckDB lets one process at a time open the file for writing."""


class DuckDBWarehouse(Warehouse):
    """A DuckDB file: no server, the default for a first run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display_url = f"duckdb://{path}"

    @contextmanager
    def _connect_transaction(self) -> Iterator[_Session]:
        import duckdb

        if not self.path.parent.is_dir():
            raise WarehouseError(
                f"cannot open warehouse {self.display_url}: folder {self.path.parent} does not "
                "exist; create it or choose another --warehouse path"
            )
        con = duckdb.connect(str(self.path))
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.begin()
            try:
                yield _DuckDBSession(con)
            except BaseException:
                con.rollback()
                raise
            con.commit()
        finally:
            con.close()

    def _read(
        self, session: _Session, table: str, types: dict[str, str | None], where_run_id: str | None
    ) -> pl.DataFrame:
        con = session.con  # type: ignore[attr-defined]
        query = f"SELECT * FROM {_quote(table)}"
        if where_run_id is None:
            return con.sql(query).pl()
        return con.sql(query + f" WHERE {_quote(RUN_ID)} = ?", params=[where_run_id]).pl()

    def _max_id_number(self, session: _Session, table: str, column: str) -> int | None:
        con = session.con  # type: ignore[attr-defined]
        digits = f"NULLIF(regexp_extract({_quote(column)}, '[0-9]+'), '')"
        query = f"SELECT max(CAST({digits} AS BIGINT)) FROM {_quote(table)}"
        return con.execute(query).fetchone()[0]

    def _engine_errors(self) -> tuple[type[BaseException], ...]:
        import duckdb

        return (duckdb.Error,)


# --------------------------------------------------------------------------- PostgreSQL

# COPY chunk size: bounds the CSV text held in memory at once.
_COPY_ROWS = 100_000
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"


def _pg_array_literal(column: str) -> pl.Expr:
    """A list of strings as PostgreSQL's array input text ({"a","b",NULL}), vectorized."""
    element = pl.element()
    escaped = element.str.replace_all("\\", "\\\\", literal=True)
    escaped = escaped.str.replace_all('"', '\\"', literal=True)
    quoted = pl.lit('"') + escaped + pl.lit('"')
    items = pl.col(column).list.eval(
        pl.when(element.is_null()).then(pl.lit("NULL")).otherwise(quoted)
    )
    return (pl.lit("{") + items.list.join(",") + pl.lit("}")).alias(column)


def _pg_csv_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with the columns polars' CSV writer cannot spell for COPY made into text."""
    exprs = []
    for column, dtype in frame.schema.items():
        if isinstance(dtype, pl.List):
            exprs.append(_pg_array_literal(column))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            utc = pl.col(column).dt.convert_time_zone("UTC")
            exprs.append(utc.dt.strftime(_TIMESTAMP_FORMAT + "+00:00").alias(column))
    return frame.with_columns(exprs) if exprs else frame


def _pg_select(column: str, kind: str | None) -> str:
    """How a column is spelled in COPY ... TO so that polars decodes it exactly."""
    name = _quote(column)
    if kind in ("TIMESTAMP", "TIMESTAMPTZ"):
        return f"(extract(epoch FROM {name}) * 1000000)::bigint AS {name}"
    if kind == "DATE":
        return f"({name} - DATE '1970-01-01') AS {name}"
    if kind == "TEXT[]":
        return f"array_to_json({name})::text AS {name}"
    if kind is None:
        return f"{name}::text AS {name}"
    return name


def _pg_decode(column: str, kind: str | None) -> pl.Expr:
    text = pl.col(column)
    if kind in (None, "TEXT"):
        return text
    if kind == "BOOLEAN":
        return (text == "t").alias(column)
    if kind == "DATE":
        return text.cast(pl.Int32).cast(pl.Date)
    if kind in ("TIMESTAMP", "TIMESTAMPTZ"):
        return text.cast(pl.Int64).cast(STORAGE_DTYPES[kind])
    if kind == "TEXT[]":
        return text.str.json_decode(pl.List(pl.Utf8))
    return text.cast(STORAGE_DTYPES[kind])


class _PostgresSession(_Session):
    def __init__(self, con: Any) -> None:
        self.con = con
        self.cur = con.cursor()

    def column_types(self, table: str) -> dict[str, str | None] | None:
        self.cur.execute(
            "SELECT column_name, data_type, udt_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        rows = self.cur.fetchall()
        return {
            name: _CATALOG_TYPES.get((udt if kind == "ARRAY" else kind).upper())
            for name, kind, udt in rows
        } or None

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        self.cur.execute(statement, params or None)

    def insert(self, table: str, frame: pl.DataFrame) -> None:
        """COPY FROM STDIN in CSV, written by polars in chunks: no per-row Python."""
        columns = ", ".join(_quote(c) for c in frame.columns)
        statement = f"COPY {_quote(table)} ({columns}) FROM STDIN (FORMAT csv)"
        with self.cur.copy(statement) as copy:
            for chunk in frame.iter_slices(_COPY_ROWS):
                text = _pg_csv_frame(chunk).write_csv(
                    include_header=False, datetime_format=_TIMESTAMP_FORMAT
                )
                copy.write(text.encode())

    def delete_in(self, table: str, column: str, values: list[Any]) -> None:
        if values:
            self.cur.execute(
                f"DELETE FROM {_quote(table)} WHERE {_quote(column)} = ANY(%s)", (values,)
            )

    def delete_all(self, table: str) -> None:
        """TRUNCATE: transactional in PostgreSQL, and unlike DELETE it leaves no dead rows.

        Readers of the table wait for the publish to commit instead of seeing the
        old rows meanwhile; a nightly batch accepts that for a publish several
        times faster.
        """
        self.execute(f"TRUNCATE {_quote(table)}")

    def lock(self) -> None:
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtext('memberlink.publish'))")


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database: where production runs publish."""

    def __init__(self, url: str) -> None:
        scheme, rest = url.split("://", 1)
        self.conninfo = "postgresql://" + rest if scheme.lower() == "postgresql+psycopg" else url
        self.display_url = redact_url(url)
        password = urlsplit(self.conninfo).password or ""
        self._password = (password, unquote(password))

    def _secrets(self) -> tuple[str, ...]:
        return self._password

    @contextmanager
    def _connect_transaction(self) -> Iterator[_Session]:
        import psycopg

        try:
            con = psycopg.connect(
                self.conninfo, connect_timeout=10, application_name="memberlink"
            )
        except psycopg.Error as exc:
            raise WarehouseError(
                f"cannot connect to warehouse {self.display_url}: "
                f"{_scrub(str(exc), self._secrets())}; check that the server runs and the "
                "URL's host, port, user, password and database are right"
            ) from None
        try:
            with con.transaction():
                session = _PostgresSession(con)
                session.execute("SET LOCAL TimeZone = 'UTC'")
                session.execute("SET LOCAL DateStyle = 'ISO, YMD'")
                session.execute("SET LOCAL client_encoding = 'UTF8'")
                yield session
        finally:
            con.close()

    def _read(
        self, session: _Session, table: str, types: dict[str, str | None], where_run_id: str | None
    ) -> pl.DataFrame:
        from psycopg import sql

        cur = session.cur  # type: ignore[attr-defined]
        select = ", ".join(_pg_select(c, k) for c, k in types.items())
        query = sql.SQL(f"COPY (SELECT {select} FROM {_quote(table)}")
        if where_run_id is not None:
            query += sql.SQL(f" WHERE {_quote(RUN_ID)} = ") + sql.Literal(where_run_id)
        query += sql.SQL(") TO STDOUT (FORMAT csv, HEADER true, FORCE_QUOTE *)")
        buffer = io.BytesIO()
        with cur.copy(query) as copy:
            for block in copy:
                buffer.write(block)
        buffer.seek(0)
        text = pl.read_csv(buffer, schema={c: pl.Utf8 for c in types}, has_header=True)
        return text.with_columns(_pg_decode(c, k) for c, k in types.items())

    def _max_id_number(self, session: _Session, table: str, column: str) -> int | None:
        cur = session.cur  # type: ignore[attr-defined]
        cur.execute(
            f"SELECT max(substring({_quote(column)} FROM '[0-9]+')::bigint) FROM {_quote(table)}"
        )
        return cur.fetchone()[0]

    def _engine_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)
