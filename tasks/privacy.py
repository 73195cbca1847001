"""Hashing, tokenizing and masking of personal information.

Phones and id cards are matched on normalized values, but published and logged
only as keyed tokens or masks (PIPL). A plain SHA-256 of an 11-digit mobile is
reversible by enumeration, so published identifiers use a secret key.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import duckdb
import polars as pl

KEY_ENV = "MEMBERLINK_PII_KEY"
KEY_FILE_ENV = "MEMBERLINK_PII_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/memberlink/pii.key")


def sha256_hex(values: pl.Series) -> pl.Series:
    """Lower-case hex SHA-256 of each string, null stays null.

    polars has no cryptographic hash; DuckDB's vectorized `sha256` reads the
    column through Arrow without a per-row Python call.
    """
    with duckdb.connect() as con:  # one connection per call: stages hash from several threads
        con.register("input", pl.DataFrame({"v": values.cast(pl.Utf8)}))
        hashed = con.sql("select sha256(v) as h from input").pl()["h"]
    return hashed.alias(values.name)


def pii_key() -> str:
    """The secret that keys published tokens, stable across runs.

    Taken from $MEMBERLINK_PII_KEY, else from a key file created on first use
    (mode 0600) so that tokens stay stable between runs on one machine.
    """
    if key := os.environ.get(KEY_ENV):
        return key
    path = Path(os.environ.get(KEY_FILE_ENV, DEFAULT_KEY_FILE)).expanduser()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def keyed_token(values: pl.Series, key: str | None = None) -> pl.Series:
    """A keyed, irreversible token of each value (first 24 hex of SHA-256(key:value))."""
    key = key or pii_key()
    keyed = pl.select((pl.lit(key + ":") + values.cast(pl.Utf8)).alias(values.name)).to_series()
    return sha256_hex(keyed).str.slice(0, 24)


def mask_phone(col: str | pl.Expr) -> pl.Expr:
    """138****5678: enough for a person to recognise a number, not to dial it."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.str.slice(0, 3) + pl.lit("****") + expr.str.slice(-4)


def mask_email(col: str | pl.Expr) -> pl.Expr:
    """z***@example.com: the domain stays readable for data-quality review."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.str.replace(r"^(.)[^@]*@", "$1***@")


def mask_id_card(col: str | pl.Expr) -> pl.Expr:
    """110***********123X keeps the region prefix and the last four characters."""
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.str.slice(0, 3) + pl.lit("*" * 11) + expr.str.slice(-4)


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@]*)(:[^@/]*)?@", re.I)


def redact_url(url: str) -> str:
    """postgresql://crm:secret@db/crm -> postgresql://crm:***@db/crm, for anything printed."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
