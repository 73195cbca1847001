"""Validation and quarantine: real GX suites from expectations/*.json on hand-built frames.

The normalized frames are made here by hand (the normalizer has its own tests): raw text
is cast to the stage schema, and `flags` are whatever a test says normalization found.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.errors import ValidationFailed
from tasks.schema import (
    BALANCE_SCHEMA,
    MEMBER_SCHEMA,
    POINTS_SCHEMA,
    QUARANTINE_SCHEMA,
    SOURCE_COLUMNS,
)
from tasks.validate import (
    DATA_QUALITY_COLUMNS,
    SUITES_DIR,
    build_data_docs,
    load_suite,
    validate_dataset,
)

SCHEMAS = {"members": MEMBER_SCHEMA, "points": POINTS_SCHEMA, "balances": BALANCE_SCHEMA}
RAW_PHONE = "13912345678"
RAW_ID_CARD = "11010519491231002X"
RAW_HASH = "a" * 64


def frames(dataset: str, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None,
           channel: str = "pos") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw, normalized) for `rows`: each a dict of raw text, plus optional `flags`."""
    columns = columns or SOURCE_COLUMNS[dataset]
    raw = pl.DataFrame(
        {
            **{c: [r.get(c) for r in rows] for c in columns},
            "source_row": list(range(len(rows))),
            "source_file": [f"{channel}_{dataset}.csv"] * len(rows),
        },
        schema={**dict.fromkeys(columns, pl.Utf8), "source_row": pl.Int64, "source_file": pl.Utf8},
    )
    schema = SCHEMAS[dataset]
    normalized = pl.DataFrame({
        name: _normalized(raw, rows, name, dtype, channel) for name, dtype in schema.items()
    })
    return raw, normalized


def _normalized(raw: pl.DataFrame, rows: list[dict[str, Any]], name: str, dtype: pl.DataType,
                channel: str) -> pl.Series:
    if name == "flags":
        return pl.Series(name, [r.get("flags", []) for r in rows], pl.List(pl.Utf8))
    if name == "channel":
        return pl.Series(name, [channel] * len(rows), pl.Utf8)
    if name not in raw.columns:
        return pl.Series(name, [None] * len(rows), dtype)
    text = raw[name]
    if dtype == pl.Date:
        return text.str.to_date("%Y-%m-%d", strict=False)
    if dtype == pl.Datetime("us"):
        return text.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us")
    return text.cast(dtype, strict=False)


def member(member_id: str | None, **values: Any) -> dict[str, Any]:
    return {"member_id": member_id, "unionid": f"u-{member_id}", **values}


def txn(txn_id: str | None, member_id: str | None = "M1", **values: Any) -> dict[str, Any]:
    return {"txn_id": txn_id, "member_id": member_id, "txn_time": "2025-03-01 10:00",
            "points": "10", "txn_type": "earn", **values}


def reasons_by_row(quarantine: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["source_row"], quarantine["reasons"], strict=True))


def count_of(summary: pl.DataFrame, expectation: str) -> int:
    return summary.filter(pl.col("expectation") == expectation)["unexpected_count"].item()


@pytest.fixture
def suites(tmp_path: Path):
    """A writable copy of expectations/, edited by a test to see the behaviour follow."""
    folder = tmp_path / "expectations"
    shutil.copytree(SUITES_DIR, folder)

    def edit(dataset: str, change) -> Path:
        path = folder / f"{dataset}.json"
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))
        return folder

    return edit


# --- critical rules --------------------------------------------------------------------------


def test_member_without_id_is_quarantined_with_its_origin():
    raw, normalized = frames("members", [member("M1"), member(None), member("M3"), member("M4")])
    result = validate_dataset(raw, normalized, "members", "pos")
    assert reasons_by_row(result.quarantine) == {1: "member_id missing"}
    row = result.quarantine.row(0, named=True)
    assert row["channel"] == "pos" and row["dataset"] == "members"
    assert row["source_file"] == "pos_members.csv" and row["record_id"] is None
    assert result.valid["member_id"].to_list() == ["M1", "M3", "M4"]


def test_duplicate_member_id_keeps_the_first_and_names_it():
    rows = [member("M0"), member("M1"), member("M2"), member("M3"), member("M1"),
            member("M5"), member("M1"), member("M7")]
    raw, normalized = frames("members", rows)
    result = validate_dataset(raw, normalized, "members", "pos")
    assert reasons_by_row(result.quarantine) == {
        4: "duplicate member_id (first at row 1)",
        6: "duplicate member_id (first at row 1)",
    }
    assert result.quarantine["record_id"].to_list() == ["M1", "M1"]
    assert result.valid.filter(pl.col("member_id") == "M1")["source_row"].to_list() == [1]


def test_each_critical_points_rule_and_all_reasons_of_a_row():
    rows = [
        txn("T0"), txn("T1"), txn("T2"), txn("T3"), txn("T4"), txn("T5"), txn("T6"),
        txn(None),                                                        # 7 txn_id missing
        txn("T8", member_id=None),                                        # 8 member_id missing
        txn("T9", points="1.5", flags=["points_not_integer"]),            # 9
        txn("T10", txn_type=None),                                        # 10 type missing
        txn("T11", txn_time="yesterday", flags=["txn_time_unparseable"]),  # 11
        txn("T12", txn_time=None),                                        # 12 time missing
        txn(None, member_id=None, points="x", flags=["points_not_integer"]),  # 13 three reasons
        txn("T1"),                                                        # 14 duplicate txn_id
        txn("T15", txn_type="task"),                                      # 15 valid type
        *(txn(f"T{i}") for i in range(16, 24)),
    ]
    raw, normalized = frames("points", rows, channel="tmall")
    # Normalization nulls a type it does not know and flags it.
    normalized = normalized.with_columns(
        pl.when(pl.col("source_row") == 6).then(None).otherwise(pl.col("txn_type"))
        .alias("txn_type"),
        pl.when(pl.col("source_row") == 6).then(pl.lit(["txn_type_unknown"]))
        .otherwise(pl.col("flags")).alias("flags"),
    )
    result = validate_dataset(raw, normalized, "points", "tmall")
    assert reasons_by_row(result.quarantine) == {
        6: "txn_type missing or unknown",
        7: "txn_id missing",
        8: "member_id missing",
        9: "points not an integer",
        10: "txn_type missing or unknown",
        11: "txn_time missing or unparseable",
        12: "txn_time missing or unparseable",
        13: "txn_id missing; member_id missing; points not an integer",
    }
    assert 14 in result.valid["source_row"].to_list()  # duplicate_txn is reconciliation's


def test_txn_type_outside_the_suite_set_is_quarantined():
    """A normalizer that keeps an unknown type (not null) is still caught by the value set."""
    raw, normalized = frames("points", [txn(f"T{i}") for i in range(5)] + [txn("T5")])
    normalized = normalized.with_columns(
        pl.when(pl.col("source_row") == 5).then(pl.lit("bonus")).otherwise(pl.col("txn_type"))
        .alias("txn_type"))
    result = validate_dataset(raw, normalized, "points", "pos")
    assert reasons_by_row(result.quarantine) == {5: "txn_type unknown"}


def test_balances_rules_and_duplicates_per_as_of():
    rows = [
        {"member_id": "M1", "balance": "10", "as_of": "2025-03-01"},
        {"member_id": "M1", "balance": "12", "as_of": "2025-03-02"},   # other day: kept
        {"member_id": "M1", "balance": "11", "as_of": "2025-03-01"},   # 2 duplicate
        {"member_id": None, "balance": "5", "as_of": "2025-03-01"},    # 3
        {"member_id": "M4", "balance": "abc", "as_of": "2025-03-01",
         "flags": ["balance_not_integer"]},                             # 4
        {"member_id": "M5", "balance": "1", "as_of": "2025-03-01"},
        {"member_id": "M6", "balance": "1", "as_of": "2025-03-01"},
    ]
    raw, normalized = frames("balances", rows)
    result = validate_dataset(raw, normalized, "balances", "pos")
    assert reasons_by_row(result.quarantine) == {
        2: "duplicate member_id for the same as_of (first at row 0)",
        3: "member_id missing",
        4: "balance not an integer",
    }


# --- warnings, summary ---------------------------------------------------------------------


def test_warnings_are_counted_not_quarantined():
    rows = [
        member("M1", phone="12345", flags=["phone_invalid"]),
        member("M2", id_card="123", flags=["id_card_invalid"]),
        member("M3", email="x@", flags=["email_invalid"]),
        member("M4", birth_date="soon", flags=["birth_date_unparseable"]),
        member("M5", phone_sha256="zz", flags=["phone_sha256_invalid"]),
        member("M6", flags=["birth_date_conflicts_id_card"]),
        {"member_id": "M7"},                                   # no identifier at all
        member("M8"),
    ]
    raw, normalized = frames("members", rows)
    result = validate_dataset(raw, normalized, "members", "pos")
    assert result.rows_quarantined == 0 and result.valid.height == 8
    summary = result.summary
    assert summary.schema == pl.Schema(DATA_QUALITY_COLUMNS)
    for flag in ("phone_invalid", "id_card_invalid", "email_invalid", "birth_date_unparseable",
                 "phone_sha256_invalid", "birth_date_conflicts_id_card"):
        assert count_of(summary, f"expect_column_values_to_be_in_set(flag_{flag})") == 1, flag
    assert count_of(summary, "expect_column_values_to_be_between(identifier_count)") == 1
    warnings = summary.filter(pl.col("severity") == "warning")
    assert warnings.filter(pl.col("unexpected_count") > 0)["success"].to_list() == [False] * 7
    phone = summary.filter(pl.col("expectation").str.contains("flag_phone_invalid")).row(
        0, named=True)
    assert phone["sample"] == "phone is not a mainland mobile number: row 0 (M1)"
    assert phone["unexpected_percent"] == pytest.approx(12.5)


def test_summary_sample_masks_member_ids_that_are_phone_numbers():
    rows = [member(f"M{i}") for i in range(6)] + [member(RAW_PHONE), member(RAW_PHONE)]
    raw, normalized = frames("members", rows)
    result = validate_dataset(raw, normalized, "members", "pos")
    sample = result.summary.filter(pl.col("severity") == "critical")["sample"].drop_nulls()
    assert sample.to_list() == ["row 7 (139****5678): duplicate member_id (first at row 6)"]


# --- the invariant on messy frames ---------------------------------------------------------

member_ids = st.one_of(st.none(), st.sampled_from(["M1", "M2", "M3", " ", "M1 "]),
                       st.text(alphabet="MN0123", min_size=1, max_size=3))
flag_sets = st.lists(st.sampled_from(["phone_invalid", "email_invalid", "id_card_invalid"]),
                     max_size=2, unique=True)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(member_ids, flag_sets, st.booleans()), min_size=1, max_size=25))
def test_every_row_ends_in_exactly_one_place(suites, rows):
    folder = suites("members", lambda d: d["meta"].update(max_quarantined_share=1.01))
    specs = [
        {"member_id": mid, "flags": flags, **({"phone": RAW_PHONE} if phone else {})}
        for mid, flags, phone in rows
    ]
    raw, normalized = frames("members", specs)
    result = validate_dataset(raw, normalized, "members", "pos", suites_dir=folder)

    assert result.rows_read == len(rows) == result.rows_valid + result.rows_quarantined
    valid_rows = set(result.valid["source_row"])
    quarantined_rows = set(result.quarantine["source_row"])
    assert not valid_rows & quarantined_rows
    assert valid_rows | quarantined_rows == set(range(len(rows)))
    assert result.valid.schema == normalized.schema
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    # An oracle in plain Python: missing ids and every repeat after the first.
    seen: set[str] = set()
    expected = set()
    for row, (mid, _, _) in enumerate(rows):
        if mid is None or mid in seen:
            expected.add(row)
        seen.add(mid)
    assert quarantined_rows == expected
    assert RAW_PHONE not in "".join(result.quarantine["original_row"])


def test_gx_and_polars_find_the_same_rows():
    rows = [txn(f"T{i}") for i in range(10)] + [
        txn(None), txn("T11", member_id=None), txn("T12", txn_time=None),
        txn("T13", points="x", flags=["points_not_integer"]),
    ]
    raw, normalized = frames("points", rows)
    by_polars = validate_dataset(raw, normalized, "points", "pos", row_finder="polars")
    by_gx = validate_dataset(raw, normalized, "points", "pos", row_finder="gx")
    assert by_gx.quarantine.equals(by_polars.quarantine)
    assert by_gx.summary.equals(by_polars.summary)
    assert by_gx.rows_quarantined == 4


# --- errors a person must fix --------------------------------------------------------------


def test_missing_required_column_names_channel_dataset_and_column():
    columns = tuple(c for c in SOURCE_COLUMNS["points"] if c != "txn_type")
    raw, normalized = frames("points", [txn("T1")], columns=columns, channel="jd")
    with pytest.raises(ValidationFailed) as error:
        validate_dataset(raw, normalized, "points", "jd")
    message = str(error.value)
    assert "\n" not in message
    assert "'jd'" in message and "points" in message and "'txn_type'" in message
    assert "expect_column_to_exist(txn_type)" in message and "jd_points.csv" in message
    assert "[sources.columns]" in message


def test_channel_where_most_rows_fail_stops_the_run():
    rows = [txn(f"T{i}", member_id=None) for i in range(6)] + [txn("T6"), txn("T7"), txn("T8")]
    raw, normalized = frames("points", rows, channel="app")
    with pytest.raises(ValidationFailed) as error:
        validate_dataset(raw, normalized, "points", "app")
    message = str(error.value)
    assert "\n" not in message
    assert "'app'" in message and "6 of 9 rows" in message
    assert "column 'member_id'" in message and "expect_column_values_to_not_be_null" in message


def test_message_names_the_source_column_behind_a_flag():
    rows = [txn(f"T{i}", points="x", flags=["points_not_integer"]) for i in range(3)]
    raw, normalized = frames("points", rows)
    with pytest.raises(ValidationFailed, match=r"column 'points'.*not an integer in 3 rows"):
        validate_dataset(raw, normalized, "points", "pos")


# --- suites are data -----------------------------------------------------------------------


def test_quarantine_limit_comes_from_the_suite_file(suites):
    rows = [member(None)] * 3 + [member("M1"), member("M2")]
    raw, normalized = frames("members", rows)
    with pytest.raises(ValidationFailed):
        validate_dataset(raw, normalized, "members", "pos")
    folder = suites("members", lambda d: d["meta"].update(max_quarantined_share=0.9))
    result = validate_dataset(raw, normalized, "members", "pos", suites_dir=folder)
    assert result.rows_quarantined == 3


def test_value_set_comes_from_the_suite_file(suites):
    def without_task(document: dict[str, Any]) -> None:
        for spec in document["expectations"]:
            if spec["kwargs"].get("value_set") and spec["kwargs"]["column"] == "txn_type":
                spec["kwargs"]["value_set"].remove("task")

    rows = [txn(f"T{i}") for i in range(5)] + [txn("T5", txn_type="task")]
    raw, normalized = frames("points", rows)
    assert validate_dataset(raw, normalized, "points", "pos").rows_quarantined == 0
    folder = suites("points", without_task)
    result = validate_dataset(raw, normalized, "points", "pos", suites_dir=folder)
    assert reasons_by_row(result.quarantine) == {5: "txn_type unknown"}


def test_severity_comes_from_the_suite_file(suites):
    def phone_is_critical(document: dict[str, Any]) -> None:
        for spec in document["expectations"]:
            if spec["kwargs"]["column"] == "flag_phone_invalid":
                spec["meta"]["severity"] = "critical"

    rows = [member(f"M{i}") for i in range(4)] + [member("M4", flags=["phone_invalid"])]
    raw, normalized = frames("members", rows)
    assert validate_dataset(raw, normalized, "members", "pos").rows_quarantined == 0
    folder = suites("members", phone_is_critical)
    result = validate_dataset(raw, normalized, "members", "pos", suites_dir=folder)
    assert reasons_by_row(result.quarantine) == {4: "phone is not a mainland mobile number"}


def test_suites_that_would_leak_or_silently_drop_a_rule_are_refused(suites):
    def reads_phone(document: dict[str, Any]) -> None:
        document["expectations"][1]["kwargs"]["column"] = "phone"

    with pytest.raises(ValueError, match="must not read 'phone'"):
        load_suite("members", suites("members", reads_phone))

    def misspelled(document: dict[str, Any]) -> None:
        document["expectations"][1]["kwargs"]["column"] = "member_id"
        document["expectations"][1]["type"] = "expect_column_values_to_not_be_nul"

    with pytest.raises(ValueError, match="no polars counterpart"):
        load_suite("members", suites("members", misspelled))

    def set_without_values(document: dict[str, Any]) -> None:
        document["expectations"][1]["type"] = "expect_column_values_to_not_be_null"
        del document["expectations"][3]["kwargs"]["value_set"]

    raw, normalized = frames("members", [member("M1")])
    with pytest.raises(ValueError, match="value_set"):
        validate_dataset(raw, normalized, "members", "pos",
                         suites_dir=suites("members", set_without_values))


def test_every_expectation_carries_severity_and_reason():
    for dataset in SCHEMAS:
        suite = load_suite(dataset)
        assert suite.rules and all(r.reason and r.severity in ("critical", "warning")
                                   for r in suite.rules)
        assert suite.max_quarantined_share == 0.5


# --- personal data stays out ---------------------------------------------------------------


def pii_rows() -> list[dict[str, Any]]:
    return [
        member("M1", phone=RAW_PHONE, id_card=RAW_ID_CARD, phone_sha256=RAW_HASH),
        member("M2", phone=f"+86 {RAW_PHONE}", flags=["phone_invalid"]),
        member("M3", id_card=RAW_ID_CARD.lower() + "9", flags=["id_card_invalid"]),
        member("M4"), member("M5"), member("M6"),
        member("M1", phone=RAW_PHONE, id_card=RAW_ID_CARD, phone_sha256=RAW_HASH),
        member(None, phone=RAW_PHONE, id_card=RAW_ID_CARD),
    ]


def test_original_row_is_the_raw_row_with_identifiers_masked():
    raw, normalized = frames("members", pii_rows())
    result = validate_dataset(raw, normalized, "members", "pos")
    assert result.rows_quarantined == 2
    originals = [json.loads(text) for text in result.quarantine["original_row"]]
    duplicate = originals[0]
    assert duplicate["member_id"] == "M1" and duplicate["unionid"] == "u-M1"
    assert duplicate["phone"] == "139****5678"
    assert duplicate["id_card"] == "110***********002X"
    assert duplicate["phone_sha256"] == "aaaaaaaa…"
    everything = "".join(result.quarantine["original_row"]) + str(result.summary.rows())
    assert RAW_PHONE not in everything and RAW_ID_CARD not in everything
    assert RAW_HASH not in everything


def test_data_docs_are_built_without_personal_data(tmp_path: Path):
    docs = tmp_path / "data-docs"
    raw, normalized = frames("members", pii_rows())
    first = validate_dataset(raw, normalized, "members", "pos", docs_dir=docs)
    raw, normalized = frames("points", [txn("T1"), txn("T2"), txn("T3"), txn(None)],
                             channel="app")
    second = validate_dataset(raw, normalized, "points", "app", docs_dir=docs)

    assert first.docs_index == second.docs_index == docs.resolve() / "index.html"
    assert build_data_docs(docs) == docs.resolve() / "index.html"
    pages = {p: p.read_text(encoding="utf-8", errors="replace") for p in docs.rglob("*.html")}
    index = pages[docs.resolve() / "index.html"]
    assert "pos-members" in index and "app-points" in index        # both channels listed
    text = "".join(pages.values())
    assert "flag_phone_invalid" in text and "member_id_occurrence" in text  # results rendered
    stored = "".join(p.read_text(errors="replace") for p in docs.rglob("*")
                     if p.is_file() and p.suffix in {".html", ".json", ".yml"})
    for secret in (RAW_PHONE, RAW_ID_CARD, RAW_ID_CARD.lower(), RAW_HASH, "139****5678"):
        assert secret not in stored, secret
