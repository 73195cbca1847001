"""Canonical column names and types shared by every stage.

The names are the data contract (`shared/spec/data-contract.md`): outside tools
rely on them, so they live in one place and every stage imports them from here.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

Dataset = Literal["members", "points", "balances"]
DATASETS: tuple[Dataset, ...] = ("members", "points", "balances")

# Columns a source may provide, by dataset, after `[sources.columns]` renames.
# Readers deliver every one of them as Utf8 so that nothing is coerced before
# normalization has had a chance to flag it.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": (
        "member_id", "phone", "phone_sha256", "email", "id_card", "name", "gender",
        "birth_date", "city", "address", "unionid", "registered_at",
    ),
    "points": ("txn_id", "member_id", "txn_time", "points", "txn_type", "order_id", "expires_at"),
    "balances": ("member_id", "balance", "as_of"),
}

# The column that identifies a row inside its channel, per dataset.
RECORD_ID: dict[str, str] = {"members": "member_id", "points": "txn_id", "balances": "member_id"}

# Columns every reader adds: where the row came from, for error messages and
# for the quarantine's "offending row".
SOURCE_ROW = "source_row"      # 0-based row number across the dataset's files
SOURCE_FILE = "source_file"    # the file (or "sql") the row was read from
FLAGS = "flags"                # list[str]: normalization warnings on a kept row

# Normalized member frame, the input of matching. Invalid values are null and
# named in `flags`; the row itself is never dropped by normalization.
MEMBER_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "member_id": pl.Utf8(),
    "phone": pl.Utf8(),             # 11-digit mainland mobile
    "phone_sha256": pl.Utf8(),      # lower-case hex SHA-256 of `phone` (or as given)
    "email": pl.Utf8(),             # trimmed, lower-case
    "id_card": pl.Utf8(),           # 18 characters, valid GB 11643 check character
    "name": pl.Utf8(),              # usable name (null for placeholders)
    "name_kind": pl.Utf8(),         # hanzi | pinyin | masked | placeholder | other
    "surname": pl.Utf8(),           # first hanzi of hanzi or masked names
    "gender": pl.Utf8(),            # M | F
    "birth_date": pl.Date(),
    "city": pl.Utf8(),
    "address": pl.Utf8(),
    "unionid": pl.Utf8(),
    "registered_at": pl.Datetime("us"),
    "trust": pl.Int32(),
    SOURCE_ROW: pl.Int64(),
    SOURCE_FILE: pl.Utf8(),
    FLAGS: pl.List(pl.Utf8()),
}

TXN_TYPES: tuple[str, ...] = ("earn", "redeem", "expire", "adjust", "task")

POINTS_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "txn_id": pl.Utf8(),
    "member_id": pl.Utf8(),
    "txn_time": pl.Datetime("us"),
    "points": pl.Int64(),
    "txn_type": pl.Utf8(),
    "order_id": pl.Utf8(),
    "expires_at": pl.Datetime("us"),
    SOURCE_ROW: pl.Int64(),
    SOURCE_FILE: pl.Utf8(),
    FLAGS: pl.List(pl.Utf8()),
}

BALANCE_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "member_id": pl.Utf8(),
    "balance": pl.Int64(),
    "as_of": pl.Date(),
    SOURCE_ROW: pl.Int64(),
    SOURCE_FILE: pl.Utf8(),
    FLAGS: pl.List(pl.Utf8()),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "dataset": pl.Utf8(),
    "source_file": pl.Utf8(),
    "source_row": pl.Int64(),
    "record_id": pl.Utf8(),
    "reasons": pl.Utf8(),          # "; "-joined, readable
    "original_row": pl.Utf8(),     # JSON of the row as read, PII masked
}

# Matching rules, strongest first; `match_rule` in member_xref is one of these.
MATCH_RULES: tuple[str, ...] = (
    "phone", "unionid", "email", "id_card", "probabilistic", "review_accepted", "singleton",
)

# Identifiers that are personal information: never published raw, nor as a
# plain hash, unless the run asks for raw PII.
PII_COLUMNS: tuple[str, ...] = ("phone", "phone_sha256", "id_card")


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame of a stage's schema, so absent datasets flow like present ones."""
    return pl.DataFrame(schema=schema)
