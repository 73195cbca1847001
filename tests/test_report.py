"""The HTML/Markdown report: the numbers it shows are the input tables' numbers, and it is
self-contained and free of raw phones and id numbers."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from tasks.errors import WarehouseError
from tasks.reconcile import reconcile_points
from tasks.report import build_report, load_report_tables, mask_pii_text
from tasks.schema import BALANCE_SCHEMA, POINTS_SCHEMA
from tasks.settings import ReconcileSettings

RAW_PHONE = re.compile(r"1[3-9]\d{9}")
RAW_ID_CARD = re.compile(r"\d{17}[\dXx]")
AS_OF = date(2026, 3, 1)
RUN_ID = "run-2026-03-02"


class Tables(HTMLParser):
    """Every <table id=...> as rows of cell texts, plus all text and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def body(self, table: str) -> list[list[str]]:
        return self.tables[table][1:]


def _ledger() -> pl.DataFrame:
    rows = [
        ("pos", "a1", "P001", datetime(2026, 1, 1), 100, "earn", "O-1"),
        ("pos", "a1", "P001", datetime(2026, 1, 1), 100, "earn", "O-1"),
        ("pos", "a2", "P001", datetime(2026, 1, 5), -150, "redeem", None),
        ("tmall", "b1", "T001", datetime(2026, 1, 2), 100, "earn", "O-1"),
        ("tmall", "b2", "13912345678", datetime(2026, 1, 2), 70, "earn", None),
        ("tmall", "b3", "T002", datetime(2026, 2, 2), 1234, "earn", None),
    ]
    columns = ["channel", "txn_id", "member_id", "txn_time", "points", "txn_type", "order_id"]
    return pl.DataFrame(rows, schema=columns, orient="row").with_columns(
        expires_at=pl.lit(None, pl.Datetime("us")), source_row=pl.int_range(pl.len()),
        source_file=pl.lit("points.csv"), flags=pl.lit([], pl.List(pl.Utf8)),
    ).cast(POINTS_SCHEMA)


@pytest.fixture(scope="module")
def example() -> tuple[dict[str, pl.DataFrame], dict]:
    xref = pl.DataFrame({
        "channel": ["pos", "tmall", "tmall", "jd", "wechat"],
        "member_id": ["P001", "T001", "T002", "J001", "W001"],
        "unified_id": ["U0000000001", "U0000000001", "U0000000002", "U0000000002", "U0000000003"],
        "match_rule": ["phone", "phone", "unionid", "unionid", "singleton"],
        "match_score": [1.0] * 5,
        "run_id": [RUN_ID] * 5,
    })
    balances = pl.DataFrame({
        "channel": ["pos", "tmall"], "member_id": ["P001", "T002"], "balance": [-50, 1000],
        "as_of": [AS_OF, AS_OF], "source_row": [0, 0], "source_file": ["b.csv"] * 2,
        "flags": [[], []],
    }, schema=BALANCE_SCHEMA)
    result = reconcile_points(
        _ledger(), balances, xref.select("channel", "member_id"), xref, AS_OF, ReconcileSettings()
    )
    quarantine = pl.DataFrame({
        "channel": ["pos", "pos", "jd"],
        "dataset": ["members", "members", "points"],
        "source_file": ["m.csv"] * 3,
        "source_row": [4, 9, 2],
        "record_id": ["P009", "P010", "x9"],
        "reasons": [
            "phone: not a mainland mobile (13800001111)",
            "手机号为空; birth_date: in the future",
            "points: not an integer",
        ],
        "original_row": ['{"phone": "13912345678", "id_card": "110101199003071234"}'] * 3,
    })
    ingest = pl.DataFrame({
        "channel": ["jd", "pos", "pos", "tmall", "tmall", "wechat"],
        "dataset": ["points", "members", "points", "members", "points", "members"],
        "rows_read": [11, 3, 3, 2, 3, 1],
        "rows_valid": [10, 1, 3, 2, 3, 1],
        "rows_quarantined": [1, 2, 0, 0, 0, 0],
    })
    data_quality = pl.DataFrame({
        "channel": ["pos", "tmall"], "dataset": ["members", "members"],
        "expectation": ["expect_column_values_to_match_regex(phone)",
                        "expect_column_values_to_be_unique(member_id)"],
        "severity": ["warning", "critical"], "unexpected_count": [2, 0],
        "unexpected_percent": [66.67, 0.0], "success": [False, True],
    })
    unified = pl.DataFrame({
        "unified_id": ["U0000000001", "U0000000002", "U0000000003"],
        "phone": ["13912345678", "13700001234", None],          # raw PII must never show
        "id_card": ["110101199003071234", None, None],
        "channels": ["pos,tmall", "jd,tmall", "wechat"],
    })
    tables = {
        "member_xref": xref, "unified_members": unified,
        "points_balances": result.points_balances, "member_points": result.member_points,
        "points_discrepancies": result.points_discrepancies, "quarantine": quarantine,
        "data_quality": data_quality, "ingest_counts": ingest,
        "identity_changes": pl.DataFrame({"change": ["new", "new", "merge"]}),
        "review_queue": pl.DataFrame({"left": [1, 2]}),
        "hub_values": pl.DataFrame({"identifier": ["phone"], "value": ["13800138000"]}),
    }
    run = {
        "run_id": RUN_ID, "started_at": datetime(2026, 3, 2, 2, 0, 0, tzinfo=UTC),
        "finished_at": datetime(2026, 3, 2, 2, 1, 30, tzinfo=UTC), "as_of": AS_OF,
        "status": "completed", "counts": json.dumps({"member_xref": 5}),
    }
    return tables, run


@pytest.fixture(scope="module")
def built(example, tmp_path_factory):
    """The example's report, built once: matplotlib takes about a second per report."""
    tables, run = example
    return tables, run, build_report(tables, run, tmp_path_factory.mktemp("report"))


def _parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _n(value: int) -> str:
    return f"{value:,}"


def test_report_shows_the_numbers_of_the_input_tables(built):
    tables, _, paths = built
    page = _parse(paths.html)

    discrepancies = tables["points_discrepancies"]
    expected_kinds = {
        kind: [_n(rows.height), _n(int(rows["amount"].abs().sum()))]
        for (kind,), rows in discrepancies.group_by("kind")
    }
    shown = {row[0]: row[1:] for row in page.body("discrepancies-by-kind")}
    assert shown == expected_kinds
    assert set(shown) >= {"duplicate_txn", "double_credit", "balance_mismatch", "orphan_txn"}

    quality = {tuple(row[:2]): row[2:5] for row in page.body("data-quality-counts")}
    for row in tables["ingest_counts"].iter_rows(named=True):
        assert quality[(row["channel"], row["dataset"])] == [
            _n(row["rows_read"]), _n(row["rows_valid"]), _n(row["rows_quarantined"])
        ]

    funnel = dict(page.body("funnel"))
    assert funnel["records read"] == "6"           # 3 + 2 + 1 member rows read
    assert funnel["quarantined"] == "2"
    assert funnel["valid records"] == "5"
    assert funnel["linked by phone"] == "2" and funnel["linked by unionid"] == "2"
    assert funnel["unified members"] == "3"

    balances = tables["points_balances"]
    points = {row[0]: row[1:] for row in page.body("points-by-channel")}
    for (channel,), rows in balances.group_by("channel"):
        assert points[channel][0] == _n(rows.height)
        assert points[channel][1] == _n(int(rows["earned"].sum()))
        assert points[channel][5] == _n(int(rows["ledger_balance"].sum()))
    assert points["tmall"][5] == "1,404"

    combos = dict(page.body("channel-combinations"))
    assert combos == {"pos + tmall": "1", "jd + tmall": "1", "wechat": "1"}

    top = page.body("top-discrepancies")
    assert len(top) == discrepancies.height
    assert {row[5] for row in top} >= {"a1", "O-1"}

    text = " ".join(page.text)
    for needle in (RUN_ID, "2026-03-01", "completed", "90.0 s"):
        assert needle in text


def test_report_is_self_contained(built):
    paths = built[2]
    html = paths.html.read_text(encoding="utf-8")
    page = _parse(paths.html)
    assert "<script" not in html.lower()
    assert not re.search(r"https?://", html)
    assert not re.search(r"@import|url\((?!#)", html)   # only in-document clip paths
    assert not [tag for tag, attrs in page.tags if tag in ("link", "img", "iframe", "object")]
    assert not [attrs for _, attrs in page.tags if attrs.get("src") or
                (attrs.get("href") or "#").startswith(("http", "//"))]
    assert html.count("<svg") == 5                 # funnel, overlap, points, kinds, quality


def test_report_never_shows_raw_phones_or_id_cards(built):
    paths = built[2]
    html = paths.html.read_text(encoding="utf-8")
    markdown = paths.markdown.read_text(encoding="utf-8")
    for document in (html, markdown):
        assert not RAW_PHONE.search(document)
        assert not RAW_ID_CARD.search(document)
    # the phone-shaped member id of the orphan account is shown masked, not dropped
    assert "139****5678" in html
    assert "手机号为空" in html                     # non-PII Chinese text passes through


def test_markdown_summary_has_headline_kinds_and_quality(built):
    tables, _, paths = built
    markdown = paths.markdown.read_text(encoding="utf-8")
    discrepancies = tables["points_discrepancies"]
    assert f"| discrepancies | {discrepancies.height} |" in markdown
    assert "| unified members | 3 |" in markdown
    for (kind,), rows in discrepancies.group_by("kind"):
        assert f"| {kind} | {rows.height} | {int(rows['amount'].abs().sum()):,} |" in markdown
    assert "| pos | members | 3 | 1 | 2 | 66.7% |" in markdown
    assert len(markdown.splitlines()) < 60


def test_an_empty_run_still_renders(tmp_path):
    run = {"run_id": "r0", "as_of": AS_OF, "status": "failed", "error": "source pos: no such file"}
    paths = build_report({}, run, tmp_path)
    page = _parse(paths.html)
    text = " ".join(page.text)
    assert "No discrepancies" in text and "source pos: no such file" in text
    assert "<svg" not in paths.html.read_text(encoding="utf-8")   # no charts of nothing
    assert "failed-expectations" not in page.tables and "channel-members" not in page.tables
    assert "No discrepancies." in paths.markdown.read_text(encoding="utf-8")


class FakeWarehouse:
    """Only the method the report relies on: read_table(name) -> frame | None."""

    def __init__(self, tables: dict[str, pl.DataFrame]) -> None:
        self.tables = tables
        self.reads: list[str] = []

    def read_table(self, name: str) -> pl.DataFrame | None:
        self.reads.append(name)
        return self.tables.get(name)


def _warehouse() -> FakeWarehouse:
    runs = pl.DataFrame({
        "run_id": ["r1", "r2", "r3"],
        "started_at": [datetime(2026, 3, 1, 2), datetime(2026, 3, 2, 2), datetime(2026, 3, 3, 2)],
        "as_of": [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)],
        "status": ["completed", "completed", "failed"],
    })
    discrepancies = pl.DataFrame({
        "run_id": ["r1", "r2", "r2"], "kind": ["duplicate_txn", "orphan_txn", "balance_mismatch"],
        "channel": ["pos"] * 3, "member_id": ["a", "b", "c"], "amount": [1, 2, 3],
    })
    xref = pl.DataFrame({"run_id": ["r1", "r2"], "channel": ["pos", "pos"],
                         "member_id": ["a", "b"], "unified_id": ["U1", "U2"]})
    return FakeWarehouse({"runs": runs, "points_discrepancies": discrepancies,
                          "member_xref": xref})


def test_load_report_tables_takes_the_latest_run_and_its_rows():
    warehouse = _warehouse()
    tables, run = load_report_tables(warehouse, None)
    assert run["run_id"] == "r3" and run["status"] == "failed"
    assert tables["points_discrepancies"].is_empty()
    assert tables["member_xref"].is_empty()       # a failed run published no identity
    assert "points_balances" not in tables         # absent in the warehouse: left out


def test_load_report_tables_for_a_named_run():
    tables, run = load_report_tables(_warehouse(), "r2")
    assert run["as_of"] == date(2026, 3, 1)
    assert tables["points_discrepancies"]["kind"].to_list() == ["orphan_txn", "balance_mismatch"]
    # the replaced identity tables are the latest successful run's: r2's report shows all of it
    assert tables["member_xref"]["member_id"].to_list() == ["a", "b"]
    older, _ = load_report_tables(_warehouse(), "r1")
    assert older["member_xref"]["member_id"].to_list() == ["a"]


def test_load_report_tables_names_an_unknown_run():
    with pytest.raises(WarehouseError, match="run r9 is not in the warehouse"):
        load_report_tables(_warehouse(), "r9")
    with pytest.raises(WarehouseError, match="no runs"):
        load_report_tables(FakeWarehouse({}), None)


def test_report_from_loaded_tables(tmp_path):
    tables, run = load_report_tables(_warehouse(), "r2")
    page = _parse(build_report(tables, run, tmp_path).html)
    assert {row[0]: row[1] for row in page.body("discrepancies-by-kind")} == {
        "orphan_txn": "1", "balance_mismatch": "1"
    }


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("phone 13912345678.", "phone 139****5678."),
        ("+86 139-1234-5678", "139****5678"),
        ("0086 13912345678", "139****5678"),
        ("id 11010119900307123x here", "id 110***********123x here"),
        ("order 202601131234567890", "order 202601131234567890"),   # not a phone or an id
        ("txn 1391234567", "txn 1391234567"),                         # ten digits: not a mobile
    ],
)
def test_mask_pii_text(text: str, masked: str):
    assert mask_pii_text(text) == masked


def test_report_from_a_real_duckdb_warehouse(example, tmp_path):
    """Publish with tasks/warehouse.py, read back with load_report_tables, render."""
    from tasks.warehouse import open_warehouse

    tables, run = example
    published = {k: v for k, v in tables.items() if k != "ingest_counts"}
    published["unified_members"] = published["unified_members"].drop("phone", "id_card")
    counts = {"channels": {"pos": {"members": {"rows_read": 3, "rows_valid": 1,
                                               "rows_quarantined": 2}}}}
    warehouse = open_warehouse(str(tmp_path / "warehouse.duckdb"))
    warehouse.publish(published, {**run, "counts": json.dumps(counts)})

    loaded, run_row = load_report_tables(warehouse, None)
    assert run_row["run_id"] == RUN_ID
    assert loaded["points_discrepancies"].height == tables["points_discrepancies"].height
    page = _parse(build_report(loaded, run_row, tmp_path / "out").html)
    assert page.body("data-quality-counts") == [["pos", "members", "3", "1", "2", "66.7%"]]
    assert {row[0]: row[1] for row in page.body("discrepancies-by-kind")} == {
        kind: str(rows.height)
        for (kind,), rows in tables["points_discrepancies"].group_by("kind")
    }
