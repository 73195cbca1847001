"""Golden-record survivorship, on hand-built members frames and xref."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tasks.golden import golden_records
from tasks.privacy import keyed_token, sha256_hex
from tasks.schema import MEMBER_SCHEMA

CARD = "11010519491231002X"


@pytest.fixture(autouse=True)
def _pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERLINK_PII_KEY", "test-key")


def members_frame(rows: list[dict]) -> pl.DataFrame:
    full = []
    for row in rows:
        record = {column: None for column in MEMBER_SCHEMA}
        record.update(trust=1, source_row=0, source_file="f.csv", flags=[])
        record.update(row)
        full.append(record)
    frame = pl.DataFrame(full, schema=MEMBER_SCHEMA)
    frame = frame.with_columns(
        pl.coalesce("phone_sha256", sha256_hex(frame["phone"])).alias("phone_sha256")
    )
    return (
        frame.sort("channel", "member_id")
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )


def xref_for(members: pl.DataFrame, unified: dict[str, str]) -> pl.DataFrame:
    keys = (members["channel"] + ":" + members["member_id"]).to_list()
    return members.select("channel", "member_id").with_columns(
        pl.Series("unified_id", [unified[k] for k in keys]),
        pl.lit("singleton").alias("match_rule"),
        pl.lit(None, dtype=pl.Float64).alias("match_score"),
    )


def two_members() -> tuple[pl.DataFrame, pl.DataFrame]:
    members = members_frame(
        [
            # the store knows the real person; trusted most, registered long ago
            {
                "channel": "pos",
                "member_id": "p1",
                "trust": 3,
                "phone": "13912345678",
                "name": "Zhang Wei",
                "name_kind": "pinyin",
                "id_card": CARD,
                "city": "北京",
                "email": "old@example.com",
                "registered_at": dt.datetime(2019, 5, 1),
            },
            # the app is less trusted but has a hanzi name and a newer e-mail and address
            {
                "channel": "app",
                "member_id": "a1",
                "trust": 1,
                "phone": "13700000000",
                "name": "张伟",
                "name_kind": "hanzi",
                "city": "上海",
                "address": "长宁路 1 号",
                "email": "new@example.com",
                "gender": "M",
                "registered_at": dt.datetime(2023, 1, 1),
            },
            {
                "channel": "mini",
                "member_id": "m1",
                "trust": 1,
                "name": "张*",
                "name_kind": "masked",
                "email": "newest@example.com",
                "birth_date": dt.date(1949, 12, 31),
                "registered_at": dt.datetime(2024, 1, 1),
            },
            # a member known only by a hashed phone and a placeholder name
            {
                "channel": "tmall",
                "member_id": "t1",
                "trust": 2,
                "phone_sha256": sha256_hex(pl.Series(["13600001111"]))[0],
                "name": None,
                "name_kind": "placeholder",
            },
        ]
    )
    xref = xref_for(
        members,
        {
            "pos:p1": "U0000000001",
            "app:a1": "U0000000001",
            "mini:m1": "U0000000001",
            "tmall:t1": "U0000000002",
        },
    )
    return members, xref


def test_survivorship_per_attribute() -> None:
    members, xref = two_members()
    golden = golden_records(members, xref)
    one = golden.filter(pl.col("unified_id") == "U0000000001").row(0, named=True)
    assert (one["name"], one["name_kind"]) == ("张伟", "hanzi")  # hanzi beats trusted pinyin
    assert one["phone_masked"] == "139****5678"  # trust 3 beats recency
    assert one["city"] == "北京"  # trust 3
    assert one["email_masked"] == "o***@example.com"  # trust 3 beats newer e-mails
    assert one["address"] == "长宁路 1 号"  # only valid value
    assert one["gender"] == "M" and one["birth_date"] == dt.date(1949, 12, 31)
    assert one["registered_at"] == dt.datetime(2019, 5, 1)  # earliest
    assert one["channels"] == "app,mini,pos" and one["n_records"] == 3
    assert one["id_card_masked"] == "110***********002X"
    assert one["id_card_token"] == keyed_token(pl.Series([CARD]))[0]


def test_recency_then_completeness_break_ties_in_trust() -> None:
    members = members_frame(
        [
            {
                "channel": "a",
                "member_id": "1",
                "email": "older@x.cn",
                "city": "杭州",
                "registered_at": dt.datetime(2020, 1, 1),
            },
            {
                "channel": "b",
                "member_id": "2",
                "email": "newer@x.cn",
                "registered_at": dt.datetime(2022, 1, 1),
            },
            {
                "channel": "c",
                "member_id": "3",
                "city": "苏州",
                "address": "观前街",
                "gender": "F",
                "registered_at": None,
            },
            {"channel": "d", "member_id": "4", "city": "南京", "registered_at": None},
        ]
    )
    xref = xref_for(members, dict.fromkeys(["a:1", "b:2", "c:3", "d:4"], "U0000000007"))
    one = golden_records(members, xref).row(0, named=True)
    assert one["email_masked"] == "n***@x.cn"  # most recent registration
    assert one["city"] == "杭州"  # dated record before undated ones
    members = members.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("registered_at"))
    one = golden_records(members, xref).row(0, named=True)
    assert one["city"] == "苏州"  # no dates: the most complete record


def test_masked_name_survives_only_without_a_better_one_and_placeholder_never() -> None:
    members, xref = two_members()
    only_masked = members.filter(pl.col("channel").is_in(["mini", "tmall"]))
    golden = golden_records(only_masked, xref)
    assert golden.filter(pl.col("unified_id") == "U0000000001")["name"].item() == "张*"
    hashed_only = golden.filter(pl.col("unified_id") == "U0000000002").row(0, named=True)
    assert hashed_only["name"] is None and hashed_only["name_kind"] is None


def test_no_raw_phone_or_id_card_unless_raw_pii() -> None:
    members, xref = two_members()
    golden = golden_records(members, xref)
    assert "phone" not in golden.columns and "id_card" not in golden.columns
    text = str(golden.rows())
    for secret in [
        "13912345678",
        "13700000000",
        "13600001111",
        CARD,
        *members["phone_sha256"].drop_nulls().to_list(),
    ]:
        assert secret not in text
    hashed_only = golden.filter(pl.col("unified_id") == "U0000000002").row(0, named=True)
    assert hashed_only["phone_masked"] is None
    assert (
        hashed_only["phone_token"]
        == keyed_token(members["phone_sha256"].filter(members["channel"] == "tmall"))[0]
    )

    raw = golden_records(members, xref, raw_pii=True)
    one = raw.filter(pl.col("unified_id") == "U0000000001").row(0, named=True)
    assert (one["phone"], one["id_card"]) == ("13912345678", CARD)
    assert raw.filter(pl.col("unified_id") == "U0000000002")["phone"].item() is None
