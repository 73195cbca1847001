"""Read one dataset of one channel into an all-Utf8 frame with canonical column names.

Nothing is coerced here: every value arrives as text, so normalization can flag a
malformed phone or date instead of a reader silently turning it into null or a
float. Headers are mapped to canonical names (explicit `[sources.columns]` first,
then common Chinese and English aliases), and every row keeps where it came
from (`source_row`, `source_file`) for error messages and the quarantine.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from tasks.config import SourceConfig, is_url
from tasks.errors import SourceError
from tasks.privacy import redact_url
from tasks.schema import SOURCE_COLUMNS, SOURCE_FILE, SOURCE_ROW, Dataset

# Columns without which a dataset means nothing; every other column may be absent.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id",),
    "points": ("txn_id", "member_id", "points"),
    "balances": ("member_id", "balance"),
}

# Header names channels commonly use, by their `header_key`, used when
# `[sources.columns]` does not name the column.
HEADER_ALIASES: dict[str, str] = {
    **dict.fromkeys(["会员号", "会员编号", "会员id", "会员卡号", "member_no", "memberid",
                     "member_code", "customer_id", "user_id"], "member_id"),
    **dict.fromkeys(["手机号", "手机", "手机号码", "mobile", "mobile_phone", "cellphone",
                     "tel", "phone_number"], "phone"),
    **dict.fromkeys(["手机号sha256", "phone_hash", "mobile_sha256"], "phone_sha256"),
    **dict.fromkeys(["邮箱", "电子邮箱", "e_mail", "mail"], "email"),
    **dict.fromkeys(["身份证号", "身份证", "身份证号码", "idcard", "id_no", "id_number"],
                    "id_card"),
    **dict.fromkeys(["姓名", "昵称", "full_name", "nickname", "nick_name"], "name"),
    **dict.fromkeys(["性别", "sex"], "gender"),
    **dict.fromkeys(["生日", "出生日期", "birthday", "dob"], "birth_date"),
    **dict.fromkeys(["城市", "city_name"], "city"),
    **dict.fromkeys(["地址", "联系地址", "addr"], "address"),
    **dict.fromkeys(["union_id"], "unionid"),
    **dict.fromkeys(["注册时间", "注册日期", "reg_time", "register_time", "created_at"],
                    "registered_at"),
    **dict.fromkeys(["流水号", "交易流水号", "交易号", "transaction_id", "txn_no"], "txn_id"),
    **dict.fromkeys(["积分", "积分变动", "point", "points_change"], "points"),
    **dict.fromkeys(["交易时间", "变动时间", "transaction_time", "txn_at"], "txn_time"),
    **dict.fromkeys(["类型", "交易类型", "变动类型", "type", "transaction_type"], "txn_type"),
    **dict.fromkeys(["订单号", "订单编号", "order_no"], "order_id"),
    **dict.fromkeys(["过期时间", "到期时间", "expire_time", "expiry"], "expires_at"),
    **dict.fromkeys(["余额", "积分余额", "points_balance"], "balance"),
    **dict.fromkeys(["统计日期", "余额日期", "balance_date"], "as_of"),
}

FORMATS: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson",
}
UTF8_ENCODINGS = ("utf-8", "utf-8-sig")
UTF8_BOM = b"\xef\xbb\xbf"


def read_dataset(source: SourceConfig, dataset: Dataset) -> pl.DataFrame | None:
    """A channel's dataset as Utf8 columns + source_row/source_file; None if not configured."""
    if (location := source.location(dataset)) is not None:
        frames = [
            _canonical_frame(_read_file(source, fs, path, shown), source, dataset, shown)
            .with_columns(pl.lit(shown, pl.Utf8).alias(SOURCE_FILE))
            for fs, path, shown in _matching_files(source, location)
        ]
    elif (query := source.query(dataset)) is not None:
        frame = _read_query(source, dataset, query)
        frames = [_canonical_frame(frame, source, dataset, f"its {dataset} query")
                  .with_columns(pl.lit("sql", pl.Utf8).alias(SOURCE_FILE))]
    else:
        return None
    return _numbered(frames, dataset)


def _numbered(frames: Sequence[pl.DataFrame], dataset: Dataset) -> pl.DataFrame:
    """One frame in file order, columns in contract order, rows numbered across files."""
    combined = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    columns = [column for column in SOURCE_COLUMNS[dataset] if column in combined.columns]
    return combined.select(
        *columns,
        pl.int_range(pl.len(), dtype=pl.Int64).alias(SOURCE_ROW),
        SOURCE_FILE,
    )


# -- columns -----------------------------------------------------------------------------

def header_key(header: str) -> str:
    """A header as compared with canonical names and aliases: no BOM, spacing or case."""
    return re.sub(r"[\s\-]+", "_", header.replace("\ufeff", "").strip().lower())


def canonical_headers(
    headers: Sequence[str], source: SourceConfig, dataset: Dataset
) -> dict[str, str]:
    """Which header of a file feeds which canonical column of `dataset`.

    An explicit `[sources.columns]` mapping wins, then a header that already is the
    canonical name, then a known alias; each header feeds at most one column.
    """
    wanted = SOURCE_COLUMNS[dataset]
    by_key = {header_key(header): header for header in reversed(headers)}
    chosen: dict[str, str] = {}

    def claim(header: str | None, canonical: str | None) -> None:
        if header and canonical in wanted and header not in chosen \
                and canonical not in chosen.values():
            chosen[header] = canonical

    for canonical in wanted:
        for name in source.column_names(canonical):
            claim(by_key.get(header_key(name)), canonical)
    for canonical in wanted:
        claim(by_key.get(canonical), canonical)
    for header in headers:
        claim(header, HEADER_ALIASES.get(header_key(header)))
    return chosen


def _canonical_frame(
    frame: pl.DataFrame, source: SourceConfig, dataset: Dataset, shown: str
) -> pl.DataFrame:
    renames = canonical_headers(frame.columns, source, dataset)
    found = set(renames.values())
    for required in REQUIRED_COLUMNS[dataset]:
        if required not in found:
            raise SourceError(
                f'channel "{source.channel}": {shown} has no {required} column '
                f"(found: {_listed(frame.columns)}); name it under [sources.columns]: "
                f'{required} = "<its column name>"'
            )
    return frame.select(pl.col(header).alias(name) for header, name in renames.items())


def _listed(headers: Sequence[str], limit: int = 15) -> str:
    shown = ", ".join(header.strip() for header in headers[:limit])
    return shown + (", ..." if len(headers) > limit else "") if headers else "no columns"


# -- files -------------------------------------------------------------------------------

def _matching_files(
    source: SourceConfig, location: str
) -> list[tuple[fsspec.AbstractFileSystem, str, str]]:
    """(filesystem, path, name shown to people) of each file of a path, glob or URL, sorted."""
    try:
        fs, path = fsspec.core.url_to_fs(location)
        paths = sorted(fs.glob(path)) if glob.has_magic(path) else [path]
        paths = [found for found in paths if fs.isfile(found)]
    except (OSError, ValueError, ImportError) as exc:
        raise SourceError(f'channel "{source.channel}": cannot list {redact_url(location)}: '
                          f"{_first_line(exc)}") from None
    if not paths:
        kind = "no file matches" if glob.has_magic(location) else "no file at"
        raise SourceError(f'channel "{source.channel}": {kind} {redact_url(location)}; '
                          "check the path in its [[sources]] entry")
    if is_url(location):
        return [(fs, found, redact_url(fs.unstrip_protocol(found))) for found in paths]
    return [(fs, found, found) for found in paths]


def file_format(path: str) -> str | None:
    """csv, tsv, parquet or ndjson from the extension (a .gz suffix is transparent)."""
    name = path.lower().removesuffix(".gz")
    return next((fmt for ext, fmt in FORMATS.items() if name.endswith(ext)), None)


def _read_file(
    source: SourceConfig, fs: fsspec.AbstractFileSystem, path: str, shown: str
) -> pl.DataFrame:
    fmt = file_format(path)
    where = f'channel "{source.channel}": {shown}'
    if fmt is None:
        raise SourceError(f"{where} has an unknown extension; "
                          "use .csv, .tsv, .parquet, .ndjson or .jsonl")
    payload = _payload(source, fs, path, fmt, where)
    try:
        frame = _parse(payload, fmt)
    except pl.exceptions.NoDataError:
        raise SourceError(f"{where} is empty; it needs at least a header line") from None
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower() and fmt != "parquet":
            raise _not_utf8(_bytes(fs, path), where) from None
        if "more fields" in str(exc) and fmt in ("csv", "tsv"):
            raise _ragged(payload, fmt, where) from None
        raise SourceError(f"{where} cannot be read as {fmt}: {_first_line(exc)}") from None
    return frame if fmt in ("csv", "tsv") else _all_text(frame, where)


def _payload(
    source: SourceConfig, fs: fsspec.AbstractFileSystem, path: str, fmt: str, where: str
) -> str | io.BytesIO:
    """What polars parses: a local path when it can map the file itself, else bytes.

    Text in another encoding is decoded once, whole, in Python and handed on as UTF-8,
    which polars requires.
    """
    text_format = fmt != "parquet"
    in_other_encoding = text_format and source.encoding not in UTF8_ENCODINGS
    polars_maps_it = fmt in ("csv", "tsv", "parquet") and not path.endswith(".gz")
    if isinstance(fs, LocalFileSystem) and polars_maps_it and not in_other_encoding:
        if os.path.getsize(path) == 0:
            raise SourceError(f"{where} is empty; it needs at least a header line")
        return path
    data = _bytes(fs, path)
    if not data:
        raise SourceError(f"{where} is empty; it needs at least a header line")
    if in_other_encoding:
        data = _recoded(data, source.encoding, where)
    return io.BytesIO(data.removeprefix(UTF8_BOM) if text_format else data)


def _bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    with fs.open(path, "rb", compression="infer") as handle:
        return handle.read()


def _parse(payload: str | io.BytesIO, fmt: str) -> pl.DataFrame:
    if fmt in ("csv", "tsv"):
        return pl.read_csv(payload, separator="\t" if fmt == "tsv" else ",", infer_schema=False)
    if fmt == "parquet":
        return pl.read_parquet(payload)
    return pl.read_ndjson(payload, infer_schema_length=None)


def _all_text(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Typed formats are cast to text so every source reaches normalization alike."""
    try:
        return frame.select(pl.all().cast(pl.Utf8))
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{where} has a column that cannot be read as text "
                          f"(nested or binary?): {_first_line(exc)}") from None


def _ragged(payload: str | io.BytesIO, fmt: str, where: str) -> SourceError:
    """Find the first line with more fields than the header (polars does not say which)."""
    data = Path(payload).read_bytes() if isinstance(payload, str) else payload.getvalue()
    text = io.StringIO(data.decode("utf-8", errors="replace"), newline="")
    rows = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
    width = len(next(rows, []))
    line = next((rows.line_num for row in rows if len(row) > width), None)
    at = f" (line {line})" if line else ""
    return SourceError(f"{where} has a row with more fields than its header{at}; quote values "
                       "that contain the separator, or fix the row")


def _recoded(data: bytes, encoding: str, where: str) -> bytes:
    try:
        return data.decode(encoding).removeprefix("\ufeff").encode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(
            f"{where} is not {encoding} (invalid byte 0x{data[exc.start]:02x} on line {line}); "
            'set encoding = "<its encoding>" in its [[sources]] entry'
        ) from None


def _not_utf8(data: bytes, where: str) -> SourceError:
    """Name the first bad byte and its line, and the encoding the file most likely has."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"{where} is not UTF-8 (invalid byte 0x{data[exc.start]:02x} on line {line})"
        guess = _likely_encoding(data)
        if guess:
            return SourceError(f"{problem}; it looks like {guess.upper()} — "
                               f'add encoding = "{guess}" to its [[sources]] entry')
        return SourceError(f'{problem}; add encoding = "<its encoding>" to its [[sources]] entry')
    return SourceError(f"{where} cannot be read: its text is UTF-8 but polars rejected it")


def _likely_encoding(data: bytes) -> str | None:
    """GB18030 (a superset of GBK and GB2312) is what Chinese POS and CRM exports use."""
    try:
        data.decode("gb18030")
    except UnicodeDecodeError:
        return None
    return "gb18030"


# -- SQL ---------------------------------------------------------------------------------

def database_url(source: SourceConfig) -> str:
    """The connection URL of a SQL source, from the config or the environment variable."""
    assert source.sql is not None
    if source.sql.url is not None:
        return source.sql.url.get_secret_value()
    url = os.environ.get(source.sql.url_env or "")
    if not url:
        raise SourceError(f'channel "{source.channel}": environment variable '
                          f"{source.sql.url_env} (url_env of its [sources.sql]) is not set")
    return url


def sqlalchemy_url(url: str) -> str:
    """postgresql:// means psycopg 3 here, the driver memberlink installs."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def _read_query(source: SourceConfig, dataset: Dataset, query: str) -> pl.DataFrame:
    url = database_url(source)
    try:
        engine = create_engine(sqlalchemy_url(url))
        try:
            with engine.connect() as connection:
                frame = pl.read_database(query, connection, infer_schema_length=None)
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, pl.exceptions.PolarsError) as exc:
        raise SourceError(
            f'channel "{source.channel}": the {dataset} query on {redact_url(url)} failed: '
            f"{redact_url(_first_line(exc))}"
        ) from None
    return _all_text(frame, f'channel "{source.channel}": its {dataset} query')


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

