"""Golden records: one row per unified member, each attribute from its best source.

Survivorship is per attribute, because the best phone and the best address
often live in different channels: among records holding a valid value, the
channel the brand trusts most wins, then the most recently registered record
(people update what they touch last), then the most complete one. Names rank
their kind first: a real hanzi name beats pinyin, which beats a masked name.
Phones and id cards leave this stage masked and tokenized unless the run asks
for raw PII.
"""

from __future__ import annotations

import polars as pl

from tasks.privacy import keyed_token, mask_email, mask_id_card, mask_phone

# Name kinds in order of preference; placeholders never survive.
NAME_KIND_RANK: dict[str, int] = {"hanzi": 0, "pinyin": 1, "masked": 2, "other": 3}

# Attributes chosen independently by survivorship (name is chosen with its kind).
SURVIVING_ATTRIBUTES: tuple[str, ...] = (
    "gender",
    "birth_date",
    "phone_sha256",
    "email",
    "id_card",
    "city",
    "address",
    "unionid",
)

# Columns counted for "most complete record".
_COMPLETENESS_COLUMNS: tuple[str, ...] = (
    "phone_sha256",
    "email",
    "id_card",
    "name",
    "gender",
    "birth_date",
    "city",
    "address",
    "unionid",
    "registered_at",
)

UNIFIED_MEMBERS_SCHEMA: dict[str, pl.DataType] = {
    "unified_id": pl.Utf8(),
    "name": pl.Utf8(),
    "name_kind": pl.Utf8(),
    "gender": pl.Utf8(),
    "birth_date": pl.Date(),
    "phone_masked": pl.Utf8(),
    "phone_token": pl.Utf8(),
    "email_masked": pl.Utf8(),
    "id_card_masked": pl.Utf8(),
    "id_card_token": pl.Utf8(),
    "city": pl.Utf8(),
    "address": pl.Utf8(),
    "unionid": pl.Utf8(),
    "registered_at": pl.Datetime("us"),
    "channels": pl.Utf8(),
    "n_records": pl.UInt32(),
}


def golden_records(
    members: pl.DataFrame, xref: pl.DataFrame, raw_pii: bool = False
) -> pl.DataFrame:
    """unified_members: the surviving value of every attribute per unified member.

    `phone_token` is keyed on the phone's SHA-256, so members known only by a
    hashed phone get one too, and it equals the `value_token` of a phone in
    `hub_values`. With `raw_pii` the raw `phone` and `id_card` are added.
    """
    ranked = _in_survivorship_order(
        members.join(xref.select("channel", "member_id", "unified_id"), on=["channel", "member_id"])
    )
    golden = ranked.group_by("unified_id").agg(
        *(pl.col(attribute).drop_nulls().first() for attribute in SURVIVING_ATTRIBUTES),
        _best_name().alias("best_name"),
        pl.col("registered_at").min(),
        pl.col("channel").unique().sort().str.join(",").alias("channels"),
        pl.len().cast(pl.UInt32).alias("n_records"),
    )
    golden = golden.unnest("best_name").join(
        _raw_phones(ranked), on=["unified_id", "phone_sha256"], how="left"
    )
    golden = golden.with_columns(
        mask_phone("phone").alias("phone_masked"),
        keyed_token(golden["phone_sha256"]).alias("phone_token"),
        mask_email("email").alias("email_masked"),
        mask_id_card("id_card").alias("id_card_masked"),
        keyed_token(golden["id_card"]).alias("id_card_token"),
    ).sort("unified_id")
    columns = list(UNIFIED_MEMBERS_SCHEMA)
    if raw_pii:
        columns += ["phone", "id_card"]
    return golden.select(columns).cast(UNIFIED_MEMBERS_SCHEMA)


def _in_survivorship_order(records: pl.DataFrame) -> pl.DataFrame:
    """Best record first: trust, then recency, then completeness, then (channel, member_id)."""
    completeness = pl.sum_horizontal(
        pl.col(c).is_not_null().cast(pl.Int32) for c in _COMPLETENESS_COLUMNS
    )
    return records.with_columns(completeness.alias("_completeness")).sort(
        ["trust", "registered_at", "_completeness", "channel", "member_id"],
        descending=[True, True, True, False, False],
        nulls_last=True,
    )


def _best_name() -> pl.Expr:
    """Name and its kind from one record: best kind first, survivorship order within a kind.

    The sort is stable, so records of one kind keep the survivorship order.
    """
    kind_rank = pl.col("name_kind").replace_strict(
        NAME_KIND_RANK, default=None, return_dtype=pl.Int32
    )
    usable = pl.col("name").is_not_null() & kind_rank.is_not_null()
    return (
        pl.struct("name", "name_kind")
        .filter(usable)
        .sort_by(kind_rank.filter(usable), maintain_order=True)
        .first()
    )


def _raw_phones(ranked: pl.DataFrame) -> pl.DataFrame:
    """The raw phone behind each member's surviving phone hash, where a channel gave it."""
    return (
        ranked.filter(pl.col("phone").is_not_null())
        .group_by("unified_id", "phone_sha256")
        .agg(pl.col("phone").first())
    )
