"""Points reconciliation on small hand-built ledgers whose answers are worked out by hand."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from tasks.reconcile import (
    DISCREPANCY_KINDS,
    DISCREPANCY_SCHEMA,
    MEMBER_POINTS_SCHEMA,
    POINTS_BALANCES_SCHEMA,
    reconcile_points,
)
from tasks.schema import BALANCE_SCHEMA, POINTS_SCHEMA, empty_frame
from tasks.settings import ReconcileSettings

AS_OF = date(2026, 3, 1)
T = datetime  # brevity in the ledgers below


def ledger(*rows: tuple) -> pl.DataFrame:
    """Rows of (channel, txn_id, member_id, txn_time, points, txn_type[, order_id, expires_at])."""
    columns = ("channel", "txn_id", "member_id", "txn_time", "points", "txn_type", "order_id",
               "expires_at")
    records = [
        dict(zip(columns, (*row, None, None)[:8], strict=True))
        | {"source_row": i, "source_file": f"{row[0]}_points.csv", "flags": []}
        for i, row in enumerate(rows)
    ]
    return pl.DataFrame(records, schema=POINTS_SCHEMA)


def reported(*rows: tuple) -> pl.DataFrame:
    """Rows of (channel, member_id, balance, as_of)."""
    records = [
        {"channel": c, "member_id": m, "balance": b, "as_of": d, "source_row": i,
         "source_file": f"{c}_balances.csv", "flags": []}
        for i, (c, m, b, d) in enumerate(rows)
    ]
    return pl.DataFrame(records, schema=BALANCE_SCHEMA)


def identity(*rows: tuple[str, str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(members, xref) for (channel, member_id, unified_id) rows."""
    xref = pl.DataFrame(rows, schema=["channel", "member_id", "unified_id"], orient="row")
    return xref.select("channel", "member_id"), xref


MEMBERS, XREF = identity(
    ("pos", "p1", "U0000000001"),
    ("tmall", "t1", "U0000000001"),
    ("jd", "j1", "U0000000001"),
    ("pos", "p2", "U0000000002"),
    ("tmall", "t2", "U0000000003"),
)


def run(points: pl.DataFrame, balances: pl.DataFrame | None = None, as_of: date = AS_OF,
        **settings: int):
    balances = empty_frame(BALANCE_SCHEMA) if balances is None else balances
    return reconcile_points(points, balances, MEMBERS, XREF, as_of, ReconcileSettings(**settings))


def kinds(result, kind: str) -> pl.DataFrame:
    return result.points_discrepancies.filter(pl.col("kind") == kind)


def test_duplicate_txn_is_counted_once_and_a_matching_balance_is_no_mismatch():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2026, 1, 1), 100, "earn"),
            ("pos", "a1", "p1", T(2026, 1, 1), 100, "earn"),
            ("pos", "a2", "p1", T(2026, 1, 2), -30, "redeem"),
        ),
        reported(("pos", "p1", 70, AS_OF)),
    )
    account = result.points_balances.row(0, named=True)
    assert (account["ledger_balance"], account["n_txns"], account["difference"]) == (70, 2, 0)
    duplicates = kinds(result, "duplicate_txn")
    assert duplicates.select("channel", "member_id", "amount", "reference").rows() == [
        ("pos", "p1", 100, "a1")
    ]
    assert "2 times" in duplicates["detail"][0]
    assert kinds(result, "balance_mismatch").is_empty()


def test_a_channel_that_counted_its_duplicate_is_a_balance_mismatch_that_says_so():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2026, 1, 1), 100, "earn"),
            ("pos", "a1", "p1", T(2026, 1, 1), 100, "earn"),
        ),
        reported(("pos", "p1", 200, AS_OF)),
    )
    mismatch = kinds(result, "balance_mismatch")
    assert mismatch.select("member_id", "unified_id", "amount").rows() == [
        ("p1", "U0000000001", 100)
    ]
    assert "200" in mismatch["detail"][0] and "duplicate" in mismatch["detail"][0]
    assert kinds(result, "duplicate_txn").height == 1


@pytest.mark.parametrize(("tolerance", "expected"), [(5, 0), (4, 1)])
def test_balance_tolerance_is_inclusive(tolerance: int, expected: int):
    result = run(
        ledger(("pos", "a1", "p1", T(2026, 1, 1), 100, "earn")),
        reported(("pos", "p1", 95, AS_OF)),
        balance_tolerance=tolerance,
    )
    assert kinds(result, "balance_mismatch").height == expected
    assert result.points_balances["difference"].to_list() == [-5]


def test_double_credit_reports_each_extra_credit_of_one_order_for_one_member():
    result = run(ledger(
        ("pos", "a1", "p1", T(2026, 1, 1, 10), 120, "earn", "O-77"),
        ("tmall", "b1", "t1", T(2026, 1, 1, 12), 120, "earn", "O-77"),
        ("jd", "c1", "j1", T(2026, 1, 2), 60, "earn", "O-77"),
        # two platforms' order numbers colliding for two different unified members:
        # months apart and different points, so no double credit
        ("pos", "a2", "p2", T(2025, 6, 1), 50, "earn", "O-88"),
        ("tmall", "b2", "t2", T(2026, 1, 1), 80, "earn", "O-88"),
    ))
    double = kinds(result, "double_credit").sort("channel")
    assert double.select("channel", "member_id", "unified_id", "amount", "reference").rows() == [
        ("jd", "j1", "U0000000001", 60, "O-77"),
        ("tmall", "t1", "U0000000001", 120, "O-77"),
    ]
    assert all("pos" in d and "a1" in d for d in double["detail"])


def test_an_order_recredited_to_an_unlinked_identity_is_a_double_credit():
    """Regression (bench_reconcile: a third of injected double credits were missed).

    Identity resolution cannot link every person's accounts; an order first
    earned by U2 in pos and earned again a day later, same points, by U3 in
    tmall is the order paid twice, and so is a credit to an account no member
    list knows.
    """
    result = run(ledger(
        ("pos", "a1", "p2", T(2026, 1, 1, 10), 120, "earn", "O-5"),
        ("tmall", "b1", "t2", T(2026, 1, 2, 9), 120, "earn", "O-5"),
        ("jd", "c1", "ghost", T(2026, 1, 3), 120, "earn", "O-5"),
    ))
    double = kinds(result, "double_credit").sort("channel")
    assert double.select("channel", "member_id", "unified_id", "amount", "reference").rows() == [
        ("jd", "ghost", None, 120, "O-5"),
        ("tmall", "t2", "U0000000003", 120, "O-5"),
    ]
    assert all("another unified member" in d and "a1" in d for d in double["detail"])


@pytest.mark.parametrize(
    ("later", "points", "flagged"),
    [
        (T(2026, 1, 31, 10), 120, True),    # exactly the window after the first credit
        (T(2026, 1, 31, 10, 1), 120, False),  # one minute past it: an order-number collision
        (T(2026, 1, 2), 119, False),        # different points: a collision, not a re-credit
    ],
)
def test_an_unlinked_recredit_needs_the_same_points_within_the_window(
    later: datetime, points: int, flagged: bool
):
    result = run(ledger(
        ("pos", "a1", "p2", T(2026, 1, 1, 10), 120, "earn", "O-5"),
        ("tmall", "b1", "t2", later, points, "earn", "O-5"),
    ))
    assert kinds(result, "double_credit").height == int(flagged)


def test_a_linked_recredit_is_found_whatever_its_points_and_delay():
    result = run(ledger(
        ("pos", "a1", "p1", T(2025, 1, 1), 120, "earn", "O-9"),
        ("tmall", "b1", "t1", T(2026, 2, 1), 40, "earn", "O-9"),
    ))
    double = kinds(result, "double_credit")
    assert double.select("channel", "member_id", "amount").rows() == [("tmall", "t1", 40)]
    assert "for the same member" in double["detail"][0]


def test_an_order_earning_once_per_channel_is_not_double_credited():
    result = run(ledger(
        ("pos", "a1", "p1", T(2026, 1, 1), 120, "earn", "O-1"),
        ("tmall", "b1", "t1", T(2026, 1, 2), 80, "earn", "O-2"),
        ("tmall", "b2", "t1", T(2026, 1, 3), -50, "redeem", "O-1"),  # a redemption is no credit
    ))
    assert kinds(result, "double_credit").is_empty()


def test_negative_balance_reports_the_first_time_and_the_low_point():
    result = run(ledger(
        ("pos", "a1", "p1", T(2026, 1, 1), 100, "earn"),
        ("pos", "a2", "p1", T(2026, 1, 2), -150, "redeem"),
        ("pos", "a3", "p1", T(2026, 1, 3), -30, "adjust"),
        ("pos", "a4", "p1", T(2026, 1, 4), 200, "earn"),
        ("pos", "a5", "p1", T(2026, 1, 5), -150, "redeem"),
        ("pos", "a6", "p1", T(2026, 1, 6), -10, "redeem"),
    ))
    negative = kinds(result, "negative_balance")
    assert negative.select("member_id", "amount", "reference").rows() == [("p1", -80, "a2")]
    detail = negative["detail"][0]
    assert "2026-01-02" in detail and "-50" in detail and "-80" in detail and "a3" in detail
    # 150 with 100 available; 150 with 120 available; 10 with -30 available
    over = kinds(result, "over_redemption")
    assert over.select("reference", "amount").rows() == [("a2", 50), ("a5", 30), ("a6", 40)]


@pytest.mark.parametrize(("redeemed", "over"), [(100, False), (101, True)])
def test_redeeming_exactly_the_available_balance_is_allowed(redeemed: int, over: bool):
    result = run(ledger(
        ("pos", "a1", "p1", T(2026, 1, 1), 60, "earn"),
        ("pos", "a2", "p1", T(2026, 1, 2), 40, "task"),
        ("pos", "a3", "p1", T(2026, 1, 3), -redeemed, "redeem"),
    ))
    over_rows = kinds(result, "over_redemption")
    assert over_rows["amount"].to_list() == ([1] if over else [])
    assert kinds(result, "negative_balance")["amount"].to_list() == ([-1] if over else [])


def test_an_earn_and_a_redemption_at_the_same_instant_apply_the_credit_first():
    result = run(ledger(
        ("pos", "a2", "p1", T(2026, 1, 1, 9), -100, "redeem"),
        ("pos", "a1", "p1", T(2026, 1, 1, 9), 100, "earn"),
    ))
    assert kinds(result, "over_redemption").is_empty()
    assert kinds(result, "negative_balance").is_empty()


def test_orphan_txn_for_a_member_unknown_to_its_channel():
    result = run(ledger(
        ("tmall", "b1", "ghost", T(2026, 1, 1), 30, "earn"),
        ("tmall", "b2", "ghost", T(2026, 1, 2), 20, "earn"),
        ("pos", "a1", "t1", T(2026, 1, 2), 20, "earn"),  # t1 is a tmall member, not a pos one
        ("tmall", "b3", "t1", T(2026, 1, 2), 20, "earn"),
    ))
    orphans = kinds(result, "orphan_txn").sort("channel")
    assert orphans.select("channel", "member_id", "unified_id", "amount", "reference").rows() == [
        ("pos", "t1", None, 20, "a1"),
        ("tmall", "ghost", None, 50, "b1"),
    ]
    assert "2 ledger rows" in orphans["detail"][1]
    assert result.points_balances.filter(pl.col("unified_id").is_null()).height == 2
    assert result.member_points["unified_id"].to_list() == ["U0000000001"]


def test_unexpired_points_lower_bound_counts_redemptions_and_expiries():
    result = run(ledger(
        # p1: 100 expired on 2026-02-01, 30 redeemed since, never expired: 70 outstanding
        ("pos", "a1", "p1", T(2025, 2, 1), 100, "earn", None, T(2026, 2, 1)),
        ("pos", "a2", "p1", T(2025, 6, 1), -30, "redeem"),
        ("pos", "a3", "p1", T(2025, 7, 1), 500, "earn", None, T(2026, 7, 1)),  # not yet due
        # t1: 100 expired and the channel booked the expiry: nothing outstanding
        ("tmall", "b1", "t1", T(2025, 2, 1), 100, "earn", None, T(2026, 2, 1)),
        ("tmall", "b2", "t1", T(2026, 2, 1), -100, "expire"),
        # p2: expired points were all spent before they expired
        ("pos", "c1", "p2", T(2025, 2, 1), 100, "earn", None, T(2026, 2, 1)),
        ("pos", "c2", "p2", T(2025, 3, 1), -100, "redeem"),
    ))
    unexpired = kinds(result, "unexpired_points")
    assert unexpired.select("channel", "member_id", "amount", "reference").rows() == [
        ("pos", "p1", 70, "a1")
    ]
    assert "100" in unexpired["detail"][0] and "30" in unexpired["detail"][0]


def test_unexpired_points_never_exceed_the_balance():
    result = run(ledger(
        ("pos", "a1", "p1", T(2025, 2, 1), 100, "earn", None, T(2026, 2, 1)),
        ("pos", "a2", "p1", T(2025, 6, 1), -60, "adjust"),
    ))
    assert kinds(result, "unexpired_points")["amount"].to_list() == [40]


@pytest.mark.parametrize(
    ("expires_at", "grace_days", "flagged"),
    [
        (T(2026, 3, 1, 23, 59), 0, True),   # expired on the as_of day itself
        (T(2026, 3, 2, 0, 0), 0, False),    # expires after the cut-off
        (T(2026, 3, 1, 23, 59), 1, False),  # the channel still has a day to book it
        (T(2026, 2, 28, 12, 0), 1, True),
    ],
)
def test_expiry_boundary_and_grace(expires_at: datetime, grace_days: int, flagged: bool):
    result = run(
        ledger(("pos", "a1", "p1", T(2025, 2, 1), 100, "earn", None, expires_at)),
        expiry_grace_days=grace_days,
    )
    assert kinds(result, "unexpired_points").height == int(flagged)


def test_as_of_cut_off_excludes_later_transactions_and_balances():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2026, 3, 1, 23, 59, 59), 100, "earn"),
            ("pos", "a2", "p1", T(2026, 3, 2, 0, 0, 0), 1000, "earn"),
            ("pos", "a3", "p1", T(2026, 3, 2, 0, 0, 0), -5000, "redeem"),
        ),
        reported(
            ("pos", "p1", 100, date(2026, 3, 1)),
            ("pos", "p1", 1100, date(2026, 3, 2)),  # after the cut-off: ignored
            ("pos", "p1", 7, date(2026, 2, 1)),     # older than the latest: ignored
        ),
    )
    account = result.points_balances.row(0, named=True)
    assert account["ledger_balance"] == 100
    assert account["n_txns"] == 1
    assert account["last_txn_time"] == T(2026, 3, 1, 23, 59, 59)
    assert (account["reported_balance"], account["reported_as_of"]) == (100, date(2026, 3, 1))
    assert result.points_discrepancies.is_empty()


def test_a_balance_reported_earlier_is_compared_with_the_ledger_of_that_day():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2026, 2, 10), 100, "earn"),
            ("pos", "a2", "p1", T(2026, 2, 25), 40, "earn"),
        ),
        reported(("pos", "p1", 100, date(2026, 2, 20))),
    )
    account = result.points_balances.row(0, named=True)
    assert (account["ledger_balance"], account["ledger_at_report"], account["difference"]) == (
        140, 100, 0
    )
    assert kinds(result, "balance_mismatch").is_empty()


def test_points_balances_split_by_type_and_add_up():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2025, 1, 1), 500, "earn"),
            ("pos", "a2", "p1", T(2025, 1, 2), 50, "task"),
            ("pos", "a3", "p1", T(2025, 1, 3), -200, "redeem"),
            ("pos", "a4", "p1", T(2025, 1, 4), -100, "expire"),
            ("pos", "a5", "p1", T(2025, 1, 5), -25, "adjust"),
            ("pos", "a6", "p1", T(2025, 1, 6), 5, "adjust"),
            ("tmall", "b1", "t1", T(2025, 1, 1), 80, "earn"),
        ),
        reported(("pos", "p1", 230, AS_OF), ("tmall", "t1", 90, AS_OF), ("jd", "j1", 10, AS_OF)),
    )
    balances = result.points_balances
    assert balances.schema == pl.Schema(POINTS_BALANCES_SCHEMA)
    pos = balances.filter(pl.col("channel") == "pos").row(0, named=True)
    assert (pos["earned"], pos["redeemed"], pos["expired"], pos["adjusted"]) == (550, 200, 100, -20)
    assert pos["ledger_balance"] == 550 - 200 - 100 - 20 == 230
    assert pos["unified_id"] == "U0000000001"
    jd = balances.filter(pl.col("channel") == "jd").row(0, named=True)
    assert (jd["ledger_balance"], jd["n_txns"], jd["reported_balance"], jd["difference"]) == (
        0, 0, 10, 10
    )
    member = result.member_points.row(0, named=True)
    assert member == {
        "unified_id": "U0000000001", "channels": "jd,pos,tmall", "ledger_balance": 310,
        "reported_balance": 330, "difference": 20, "n_accounts": 3,
    }
    assert sorted(kinds(result, "balance_mismatch")["amount"].to_list()) == [10, 10]


def test_accounts_without_a_reported_balance_are_not_mismatches():
    result = run(ledger(("pos", "a1", "p2", T(2026, 1, 1), 100, "earn")))
    account = result.points_balances.row(0, named=True)
    assert account["reported_balance"] is None and account["difference"] is None
    assert result.member_points.row(0, named=True)["reported_balance"] is None
    assert result.points_discrepancies.is_empty()


def test_empty_inputs_give_empty_tables_of_the_published_schema():
    result = reconcile_points(
        empty_frame(POINTS_SCHEMA), empty_frame(BALANCE_SCHEMA),
        pl.DataFrame(schema={"channel": pl.Utf8, "member_id": pl.Utf8}),
        pl.DataFrame(schema={"channel": pl.Utf8, "member_id": pl.Utf8, "unified_id": pl.Utf8}),
        AS_OF, ReconcileSettings(),
    )
    assert result.points_balances.is_empty() and result.member_points.is_empty()
    assert result.points_discrepancies.schema == pl.Schema(DISCREPANCY_SCHEMA)
    assert result.member_points.schema == pl.Schema(MEMBER_POINTS_SCHEMA)


def test_every_kind_found_at_once_and_each_is_documented():
    result = run(
        ledger(
            ("pos", "a1", "p1", T(2025, 1, 1), 100, "earn", "O-1", T(2025, 6, 1)),
            ("pos", "a1", "p1", T(2025, 1, 1), 100, "earn", "O-1", T(2025, 6, 1)),
            ("tmall", "b1", "t1", T(2025, 1, 2), 100, "earn", "O-1"),
            ("tmall", "b2", "t1", T(2025, 1, 3), -150, "redeem"),
            ("jd", "c1", "nobody", T(2025, 1, 1), 5, "earn"),
        ),
        reported(("pos", "p1", 0, AS_OF)),
    )
    found = set(result.points_discrepancies["kind"])
    assert found == set(DISCREPANCY_KINDS)
    docs = (Path(__file__).parents[1] / "docs" / "discrepancies.md").read_text(encoding="utf-8")
    for kind in DISCREPANCY_KINDS:
        assert f"## `{kind}`" in docs


def test_running_balance_matches_a_plain_replay_of_each_account():
    """The linear cum_sum-minus-offset trick against a straightforward replay in Python."""
    import random

    rng = random.Random(3)
    rows = []
    for i in range(400):
        channel, member = rng.choice(["pos", "tmall"]), rng.choice(["p1", "p2", "t1", "t2", "x"])
        kind = rng.choice(["earn", "earn", "redeem", "expire", "adjust", "task"])
        points = rng.randint(1, 60) * (-1 if kind in ("redeem", "expire") else 1)
        when = T(2026, 1, 1 + rng.randint(0, 20), rng.choice([9, 12]))
        rows.append((channel, f"x{i}", member, when, points, kind))
    result = run(ledger(*rows))

    replay: dict[tuple[str, str], list[tuple]] = {}
    for row in rows:
        replay.setdefault((row[0], row[2]), []).append(row)
    expected_over, expected_low = set(), {}
    for account, txns in replay.items():
        balance = 0
        for _, txn_id, _, _, points, kind in sorted(txns, key=lambda r: (r[3], -r[4])):
            if kind == "redeem" and -points > balance:
                expected_over.add((*account, txn_id, -points - balance))
            balance += points
            if balance < 0:
                expected_low[account] = min(expected_low.get(account, 0), balance)
    over = kinds(result, "over_redemption").select("channel", "member_id", "reference", "amount")
    assert set(over.rows()) == expected_over
    negative = kinds(result, "negative_balance").select("channel", "member_id", "amount")
    assert {(c, m): a for c, m, a in negative.rows()} == expected_low
    balances = {(r["channel"], r["member_id"]): r["ledger_balance"]
                for r in result.points_balances.iter_rows(named=True)}
    assert balances == {a: sum(r[4] for r in txns) for a, txns in replay.items()}



@pytest.mark.parametrize(("window_days", "flagged"), [(30, True), (10, True), (9, False)])
def test_the_unlinked_recredit_window_is_a_setting(window_days: int, flagged: bool):
    result = run(ledger(
        ("pos", "a1", "p2", T(2026, 1, 1, 10), 120, "earn", "O-5"),
        ("tmall", "b1", "t2", T(2026, 1, 11, 10), 120, "earn", "O-5"),
    ), unlinked_recredit_days=window_days)
    assert kinds(result, "double_credit").height == int(flagged)
