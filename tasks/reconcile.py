"""Points reconciliation: per channel account, per unified member, and the discrepancies.

Each channel keeps its own ledger and reports its own balances; nobody trusts
the totals. This stage recomputes every account's balance from its ledger
(de-duplicated, cut off at the end of `as_of`), compares it with what the
channel reports, and lists every discrepancy a person should look at, one kind
per check (docs/discrepancies.md explains each kind and its rule).

Everything is a polars expression over sorted partitions: running balances are
`cum_sum().over(account)`, cross-channel checks are joins through the xref.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import polars as pl

from tasks.schema import FLAGS, POINTS_SCHEMA, SOURCE_FILE, SOURCE_ROW
from tasks.settings import ReconcileSettings

ACCOUNT: list[str] = ["channel", "member_id"]

# `task` points (earned by completing tasks) are earned points like an order's:
# they count in `earned`, can double-credit nothing (no order) and can expire.
EARNED_TYPES: tuple[str, ...] = ("earn", "task")

# An order credited again in another channel to an identity the linkage kept
# apart is a double credit only within this long of its first credit (and with
# the same points); further apart, two platforms' order numbers collided.

DISCREPANCY_KINDS: tuple[str, ...] = (
    "balance_mismatch",
    "duplicate_txn",
    "double_credit",
    "negative_balance",
    "orphan_txn",
    "over_redemption",
    "unexpired_points",
)

# One line per kind for reports; docs/discrepancies.md has the full rules.
DISCREPANCY_DESCRIPTIONS: dict[str, str] = {
    "balance_mismatch": "the reported balance differs from the de-duplicated ledger "
    "(amount: reported minus ledger)",
    "duplicate_txn": "one txn_id exported more than once; counted once "
    "(amount: what the extra copies would add)",
    "double_credit": "one order earned points in two channels for one person: the same "
    "unified member, or another with the same points within [reconcile] "
    "unlinked_recredit_days (amount: the extra credit)",
    "negative_balance": "the running balance went below zero (amount: the low point)",
    "orphan_txn": "ledger rows for a member the channel does not list (amount: their points)",
    "over_redemption": "a redemption larger than the balance just before it "
    "(amount: the shortfall)",
    "unexpired_points": "earned points past their expiry still on the balance "
    "(amount: points still to expire)",
}

POINTS_BALANCES_SCHEMA: dict[str, pl.DataType] = {
    "unified_id": pl.Utf8(),
    "channel": pl.Utf8(),
    "member_id": pl.Utf8(),
    "earned": pl.Int64(),            # earn + task points
    "redeemed": pl.Int64(),          # positive magnitude of redeem rows
    "expired": pl.Int64(),           # positive magnitude of expire rows
    "adjusted": pl.Int64(),          # signed sum of adjust rows
    "ledger_balance": pl.Int64(),    # earned - redeemed - expired + adjusted, up to as_of
    "reported_balance": pl.Int64(),  # latest balance the channel reported on or before as_of
    "reported_as_of": pl.Date(),
    "ledger_at_report": pl.Int64(),  # ledger balance at the end of reported_as_of
    "difference": pl.Int64(),        # reported_balance - ledger_at_report
    "n_txns": pl.Int64(),
    "last_txn_time": pl.Datetime("us"),
}

MEMBER_POINTS_SCHEMA: dict[str, pl.DataType] = {
    "unified_id": pl.Utf8(),
    "channels": pl.Utf8(),           # sorted, comma-separated
    "ledger_balance": pl.Int64(),
    "reported_balance": pl.Int64(),
    "difference": pl.Int64(),
    "n_accounts": pl.Int64(),
}

DISCREPANCY_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "member_id": pl.Utf8(),
    "unified_id": pl.Utf8(),
    "kind": pl.Utf8(),
    "detail": pl.Utf8(),
    "amount": pl.Int64(),
    "reference": pl.Utf8(),          # txn_id or order_id the row is about
}

# The ledger as reconciliation reads it: the normalized points without their flags.
_LEDGER_COLUMNS: dict[str, pl.DataType] = {
    name: dtype for name, dtype in POINTS_SCHEMA.items() if name != FLAGS
}

_TIME_FORMAT = "%Y-%m-%d %H:%M"

_RECREDIT_COLUMNS = (
    "credit", "account", "channel", "txn_id", "points", "order_id",
    "first_channel", "first_txn", "first_points",
)


@dataclass(frozen=True)
class Reconciliation:
    """The three published frames of this stage."""

    points_balances: pl.DataFrame
    member_points: pl.DataFrame
    points_discrepancies: pl.DataFrame


def reconcile_points(
    points: pl.DataFrame,
    balances: pl.DataFrame,
    members: pl.DataFrame,
    xref: pl.DataFrame,
    as_of: date,
    settings: ReconcileSettings,
) -> Reconciliation:
    """Recompute balances from the ledgers and list what disagrees, as of the end of `as_of`."""
    cutoff = ledger_cutoff(as_of)
    rows = ledger_up_to(points, cutoff)
    reported = latest_reported_balances(balances, as_of)
    accounts = account_index(rows, reported, members, xref)
    key = accounts.select(*ACCOUNT, "account")
    # nulls_equal: a row without member_id still belongs to its channel's "no id" account
    rows = rows.join(key, on=ACCOUNT, how="left", nulls_equal=True, maintain_order="left")
    reported = reported.join(key, on=ACCOUNT, how="left", nulls_equal=True)
    ledger = with_running_balance(rows.filter(~pl.col("is_copy")))

    balances_table = points_balances_table(ledger, rows, reported, accounts)
    found = [
        balance_mismatches(balances_table, settings.balance_tolerance),
        duplicate_txns(rows),
        double_credits(ledger, accounts, timedelta(days=settings.unlinked_recredit_days)),
        negative_balances(ledger),
        orphan_txns(ledger, accounts),
        over_redemptions(ledger),
        unexpired_points(ledger, cutoff, settings.expiry_grace_days),
    ]
    discrepancies = (
        pl.concat(found, how="vertical")
        .join(accounts.select("account", *ACCOUNT, "unified_id"), on="account", how="left")
        .select(list(DISCREPANCY_SCHEMA))
        .sort(["kind", "channel", "member_id", "reference"], nulls_last=True)
    )
    return Reconciliation(
        points_balances=balances_table.select(list(POINTS_BALANCES_SCHEMA)),
        member_points=member_points_table(balances_table),
        points_discrepancies=discrepancies.cast(DISCREPANCY_SCHEMA),
    )


def ledger_cutoff(as_of: date) -> datetime:
    """First instant after `as_of`: a ledger row counts when its txn_time is before it."""
    return datetime.combine(as_of + timedelta(days=1), time())


def ledger_up_to(points: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """Ledger rows before `cutoff`; `is_copy` marks every export of a txn_id but the first.

    "First" is input order, which is the order the files were read in. Rows
    without a txn_time cannot be placed in time and are left out (validation
    quarantines them); rows without a txn_id are never copies of each other.
    """
    frame = _conform(points, _LEDGER_COLUMNS).filter(pl.col("txn_time") < cutoff)
    first = pl.struct("channel", "txn_id").is_first_distinct()
    return frame.with_columns(is_copy=pl.col("txn_id").is_not_null() & ~first)


def account_index(
    rows: pl.DataFrame, reported: pl.DataFrame, members: pl.DataFrame, xref: pl.DataFrame
) -> pl.DataFrame:
    """Every account in a ledger or a reported balance, with an integer key.

    Sorting, windows and joins on one UInt32 are several times cheaper than on
    two string columns, and a ledger has millions of rows but far fewer
    accounts. Also carries the account's unified_id and whether its channel's
    member list knows it (orphans).
    """
    known = _conform(members, {"channel": pl.Utf8(), "member_id": pl.Utf8()}).unique()
    return (
        pl.concat([rows.select(ACCOUNT), reported.select(ACCOUNT)], how="vertical")
        .unique(maintain_order=True)
        .with_row_index("account")
        .join(_identity(xref), on=ACCOUNT, how="left")
        .join(known.with_columns(known=pl.lit(True)), on=ACCOUNT, how="left")
        .with_columns(pl.col("known").fill_null(False))
    )


def with_running_balance(ledger: pl.DataFrame) -> pl.DataFrame:
    """Each row's running balance in time order, and the balance available just before it.

    Rows at the same instant are applied credits first: a channel that books an
    earn and its immediate redemption with one timestamp has not overdrawn.
    One cumulative sum over the sorted frame minus each account's starting
    offset: linear, where a window per account costs a hash per row.
    """
    ordered = ledger.sort(
        ["account", "txn_time", "points"], descending=[False, False, True],
        nulls_last=True, maintain_order=True,
    )
    total = pl.col("points").cum_sum()
    starts = (pl.col("account") != pl.col("account").shift(1)).fill_null(True)
    offset = pl.when(starts).then(total - pl.col("points")).forward_fill()
    return ordered.with_columns(running_balance=total - offset).with_columns(
        balance_before=pl.col("running_balance") - pl.col("points")
    )


def latest_reported_balances(balances: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Per account, the latest balance the channel reported on or before `as_of`.

    A balance without a date is taken as current, i.e. reported as of `as_of`.
    """
    frame = _conform(
        balances,
        {"channel": pl.Utf8(), "member_id": pl.Utf8(), "balance": pl.Int64(),
         "as_of": pl.Date(), SOURCE_FILE: pl.Utf8(), SOURCE_ROW: pl.Int64()},
    )
    return (
        frame.with_columns(pl.col("as_of").fill_null(as_of))
        .filter(pl.col("as_of") <= as_of, pl.col("balance").is_not_null())
        .sort([*ACCOUNT, "as_of", SOURCE_FILE, SOURCE_ROW], nulls_last=False)
        .unique(ACCOUNT, keep="last", maintain_order=True)
        .select(*ACCOUNT, reported_balance="balance", reported_as_of="as_of")
    )


def account_totals(ledger: pl.DataFrame) -> pl.DataFrame:
    """Per account sums by transaction type; redeemed and expired as positive magnitudes."""
    points, kind = pl.col("points"), pl.col("txn_type")
    return ledger.group_by("account").agg(
        earned=points.filter(kind.is_in(EARNED_TYPES)).sum(),
        redeemed=-points.filter(kind == "redeem").sum(),
        expired=-points.filter(kind == "expire").sum(),
        adjusted=points.filter(kind == "adjust").sum(),
        ledger_balance=points.sum(),
        n_txns=pl.len().cast(pl.Int64),
        last_txn_time=pl.col("txn_time").max(),
    )


def ledger_at_reported_date(ledger: pl.DataFrame, reported: pl.DataFrame) -> pl.DataFrame:
    """Each reported account's running balance at the end of the day its balance was reported.

    A balance reported on the 28th is compared with the ledger of the 28th, not
    with transactions the channel had not seen yet. An as-of join picks the
    last ledger row before that day's end (the last of equal times, so every
    row of that instant is in).
    """
    return (
        reported.select("account", cut=_end_of_day(pl.col("reported_as_of")))
        .sort("cut")
        .join_asof(
            ledger.select("account", "txn_time", "running_balance"),
            left_on="cut", right_on="txn_time", by="account",
            strategy="backward", allow_exact_matches=False, check_sortedness=False,
        )
        .select("account", ledger_at_report=pl.col("running_balance").fill_null(0))
    )


def copies_before_report(rows: pl.DataFrame, reported: pl.DataFrame) -> pl.DataFrame:
    """Points of extra txn copies up to each account's report day (few rows: copies are rare)."""
    return (
        rows.filter(pl.col("is_copy"))
        .join(reported.select("account", "reported_as_of"), on="account", how="inner")
        .filter(pl.col("txn_time") < _end_of_day(pl.col("reported_as_of")))
        .group_by("account")
        .agg(copies_points=pl.col("points").sum())
    )


def points_balances_table(
    ledger: pl.DataFrame,
    rows: pl.DataFrame,
    reported: pl.DataFrame,
    accounts: pl.DataFrame,
) -> pl.DataFrame:
    """One row per channel account seen in a ledger or a reported balance.

    Also carries `ledger_with_copies`, the reported-date sum counting duplicate
    exports, so a mismatch can say when the channel itself counted a duplicate.
    """
    counts = ["earned", "redeemed", "expired", "adjusted", "ledger_balance", "n_txns"]
    has_report = pl.col("reported_balance").is_not_null()
    return (
        accounts.join(account_totals(ledger), on="account", how="left")
        .join(reported.drop(ACCOUNT), on="account", how="left")
        .join(ledger_at_reported_date(ledger, reported), on="account", how="left")
        .join(copies_before_report(rows, reported), on="account", how="left")
        .with_columns(pl.col(counts).fill_null(0))
        .with_columns(
            ledger_at_report=pl.when(has_report).then(pl.col("ledger_at_report").fill_null(0)),
            ledger_with_copies=pl.when(has_report).then(
                pl.col("ledger_at_report").fill_null(0) + pl.col("copies_points").fill_null(0)
            ),
        )
        .with_columns(difference=pl.col("reported_balance") - pl.col("ledger_at_report"))
        .cast(POINTS_BALANCES_SCHEMA | {"ledger_with_copies": pl.Int64()})
        .sort(ACCOUNT)
    )


def member_points_table(points_balances: pl.DataFrame) -> pl.DataFrame:
    """Per unified member: the sum of its accounts; accounts of unknown members are left out.

    `reported_balance` and `difference` sum only the accounts that report a
    balance, and are null when none does.
    """
    reported = pl.col("reported_balance").is_not_null()
    return (
        points_balances.filter(pl.col("unified_id").is_not_null())
        .group_by("unified_id")
        .agg(
            channels=pl.col("channel").unique().sort().str.join(","),
            ledger_balance=pl.col("ledger_balance").sum(),
            reported_balance=pl.when(reported.any()).then(pl.col("reported_balance").sum()),
            difference=pl.when(reported.any()).then(pl.col("difference").sum()),
            n_accounts=pl.len().cast(pl.Int64),
        )
        .sort("unified_id")
        .cast(MEMBER_POINTS_SCHEMA)
    )


# --- discrepancy checks: each returns account, kind, detail, amount, reference ---


def balance_mismatches(points_balances: pl.DataFrame, tolerance: int) -> pl.DataFrame:
    """Reported balance differs from the de-duplicated ledger by more than the tolerance.

    Compared with the ledger up to the day of the report; `amount` is reported
    minus ledger. A duplicate the channel did not count is no mismatch.
    """
    counted_copy = pl.col("ledger_with_copies") != pl.col("ledger_at_report")
    counted_copy &= pl.col("ledger_with_copies") == pl.col("reported_balance")
    return points_balances.filter(pl.col("difference").abs() > tolerance).select(
        "account",
        kind=pl.lit("balance_mismatch"),
        detail=pl.format(
            "channel reports {} points as of {}, the de-duplicated ledger sums to {}: "
            "reported is {} {}{}",
            "reported_balance",
            pl.col("reported_as_of").dt.strftime("%Y-%m-%d"),
            "ledger_at_report",
            pl.col("difference").abs(),
            pl.when(pl.col("difference") > 0).then(pl.lit("higher")).otherwise(pl.lit("lower")),
            pl.when(counted_copy)
            .then(pl.lit(" (it equals the ledger with duplicate exports counted twice)"))
            .otherwise(pl.lit("")),
        ),
        amount="difference",
        reference=pl.lit(None, pl.Utf8),
    )


def duplicate_txns(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per txn_id exported more than once; it is counted once.

    `amount` is what counting every copy would have added to the balance.
    """
    copied = rows.filter(pl.col("is_copy")).select("channel", "txn_id").unique()
    groups = (
        rows.join(copied, on=["channel", "txn_id"], how="semi", maintain_order="left")
        .group_by(["channel", "txn_id"], maintain_order=True)
        .agg(
            account=pl.col("account").first(),
            points=pl.col("points").first(),
            copies=pl.len().cast(pl.Int64),
            differing=(pl.col("points").n_unique() > 1) | (pl.col("member_id").n_unique() > 1),
            rows=pl.concat_str(
                pl.col(SOURCE_FILE).fill_null("?"), pl.lit(":"), pl.col(SOURCE_ROW).cast(pl.Utf8)
            ).str.join(", "),
        )
    )
    return groups.select(
        "account",
        kind=pl.lit("duplicate_txn"),
        detail=pl.format(
            "txn {} exported {} times (rows {}); counted once with {} points{}",
            "txn_id",
            "copies",
            "rows",
            _signed(pl.col("points")),
            pl.when(pl.col("differing"))
            .then(pl.lit("; the copies disagree, the first one is kept"))
            .otherwise(pl.lit("")),
        ),
        amount=pl.col("points") * (pl.col("copies") - 1),
        reference="txn_id",
    )


def double_credits(
    ledger: pl.DataFrame, accounts: pl.DataFrame, window: timedelta = timedelta(days=30)
) -> pl.DataFrame:
    """One order earning points in two channels for one person.

    The earliest credit of an order stands. A later credit in another channel is
    the order paid twice when it is *linked* (the same unified member earned the
    order before, however long ago) or, failing that, *unlinked* but a re-credit
    (see `unlinked_recredits`): identity resolution cannot link every person's
    accounts, and an order is placed by one person. `amount` is the extra
    credit's points.
    """
    credits = cross_channel_credits(ledger, accounts)
    linked = linked_recredits(credits)
    unlinked = unlinked_recredits(credits, window).join(
        linked.select("credit"), on="credit", how="anti"
    )
    found = pl.concat([linked, unlinked], how="vertical").sort("credit")
    whom = pl.when(pl.col("linked")).then(pl.lit("for the same member")).otherwise(
        pl.format(
            "for another unified member, with the same points within {} days: one person under "
            "two identities, or the order credited to someone else",
            pl.lit(window.days),
        )
    )
    return found.select(
        "account",
        kind=pl.lit("double_credit"),
        detail=pl.format(
            "order {} earned {} points in {} (txn {}) after already earning {} in {} (txn {}) {}",
            "order_id",
            "points",
            "channel",
            pl.col("txn_id").fill_null("?"),
            "first_points",
            "first_channel",
            pl.col("first_txn").fill_null("?"),
            whom,
        ),
        amount="points",
        reference="order_id",
    )


def cross_channel_credits(ledger: pl.DataFrame, accounts: pl.DataFrame) -> pl.DataFrame:
    """Earn/task credits of orders credited in more than one channel, with their unified_id.

    One cheap group-by narrows millions of credits to the few the ordered
    windows of the two rules need; `credit` numbers them so the rules' results
    can be told apart. unified_id is null for accounts no member list knows.
    """
    credits = ledger.filter(
        pl.col("txn_type").is_in(EARNED_TYPES),
        pl.col("points") > 0,
        pl.col("order_id").is_not_null(),
    ).select("account", "channel", "txn_id", "txn_time", "points", "order_id")
    cross_channel = (
        credits.group_by("order_id").agg(pl.col("channel").n_unique()).filter(pl.col("channel") > 1)
    )
    return (
        credits.join(cross_channel.select("order_id"), on="order_id", how="semi")
        .join(accounts.select("account", "unified_id"), on="account", how="left")
        .sort(["order_id", "txn_time", "channel", "txn_id"], nulls_last=True)
        .with_row_index("credit")
    )


def linked_recredits(credits: pl.DataFrame) -> pl.DataFrame:
    """Later credits of an order the same unified member earned in another channel.

    Per (unified member, order) spanning two or more channels, every credit but
    the earliest.
    """
    group = ["unified_id", "order_id"]
    return (
        credits.filter(pl.col("unified_id").is_not_null())
        .with_columns(
            credit_rank=pl.int_range(pl.len()).over(group),
            n_channels=pl.col("channel").n_unique().over(group),
            first_channel=pl.col("channel").first().over(group),
            first_txn=pl.col("txn_id").first().over(group),
            first_points=pl.col("points").first().over(group),
        )
        .filter(pl.col("n_channels") > 1, pl.col("credit_rank") > 0)
        .select(_RECREDIT_COLUMNS, linked=pl.lit(True))
    )


def unlinked_recredits(
    credits: pl.DataFrame, window: timedelta = timedelta(days=30)
) -> pl.DataFrame:
    """Later credits of an order first earned in another channel by another identity.

    Counted when they carry the same points as the order's first credit and came
    within `window` of it: the signature of an order paid
    twice (a receipt shown in store, a platform order re-imported). A collision
    of two platforms' order numbers, which is why different members are not
    enough on their own, would have to land within days and on the same amount.
    """
    group = "order_id"
    first_uid = pl.col("unified_id").first().over(group)
    same_member = (pl.col("unified_id") == first_uid).fill_null(False)
    return (
        credits.with_columns(
            credit_rank=pl.int_range(pl.len()).over(group),
            first_channel=pl.col("channel").first().over(group),
            first_txn=pl.col("txn_id").first().over(group),
            first_points=pl.col("points").first().over(group),
            first_time=pl.col("txn_time").first().over(group),
        )
        .filter(
            pl.col("credit_rank") > 0,
            pl.col("channel") != pl.col("first_channel"),
            ~same_member,
            pl.col("points") == pl.col("first_points"),
            pl.col("txn_time") - pl.col("first_time") <= window,
        )
        .select(_RECREDIT_COLUMNS, linked=pl.lit(False))
    )


def negative_balances(ledger: pl.DataFrame) -> pl.DataFrame:
    """Accounts whose running balance fell below zero: when it first did, and the low point."""
    below = ledger.filter(pl.col("running_balance") < 0)
    lows = below.group_by("account", maintain_order=True).agg(
        first_time=pl.col("txn_time").first(),
        first_txn=pl.col("txn_id").first(),
        first_balance=pl.col("running_balance").first(),
        low=pl.col("running_balance").min(),
        low_time=pl.col("txn_time").sort_by("running_balance", maintain_order=True).first(),
        low_txn=pl.col("txn_id").sort_by("running_balance", maintain_order=True).first(),
    )
    return lows.select(
        "account",
        kind=pl.lit("negative_balance"),
        detail=pl.format(
            "running balance first fell below zero at {} (txn {}, balance {}); "
            "lowest {} at {} (txn {})",
            pl.col("first_time").dt.strftime(_TIME_FORMAT),
            pl.col("first_txn").fill_null("?"),
            "first_balance",
            "low",
            pl.col("low_time").dt.strftime(_TIME_FORMAT),
            pl.col("low_txn").fill_null("?"),
        ),
        amount="low",
        reference="first_txn",
    )


def orphan_txns(ledger: pl.DataFrame, accounts: pl.DataFrame) -> pl.DataFrame:
    """Ledger accounts whose member_id is not in their channel's valid member list.

    One row per account (a deleted member can have hundreds of rows); `amount`
    is the points those rows carry, `reference` the first txn_id.
    """
    unknown = accounts.filter(~pl.col("known")).select("account")
    orphans = (
        ledger.join(unknown, on="account", how="semi", maintain_order="left")
        .group_by("account", maintain_order=True)
        .agg(
            member_id=pl.col("member_id").first(),
            n_rows=pl.len(),
            points=pl.col("points").sum(),
            first_txn=pl.col("txn_id").first(),
            txn_ids=pl.col("txn_id").fill_null("?").head(3).str.join(", "),
        )
    )
    return orphans.select(
        "account",
        kind=pl.lit("orphan_txn"),
        detail=pl.format(
            "{} ledger {} ({}{}) carrying {} points belong to member {}, "
            "who is not in the channel's member list",
            "n_rows",
            pl.when(pl.col("n_rows") == 1).then(pl.lit("row")).otherwise(pl.lit("rows")),
            "txn_ids",
            pl.when(pl.col("n_rows") > 3).then(pl.lit(", ...")).otherwise(pl.lit("")),
            _signed(pl.col("points")),
            "member_id",
        ),
        amount="points",
        reference="first_txn",
    )


def over_redemptions(ledger: pl.DataFrame) -> pl.DataFrame:
    """Redemptions larger than the balance available just before them.

    Redeeming exactly the available balance is fine; `amount` is the shortfall.
    """
    over = ledger.filter(
        pl.col("txn_type") == "redeem", -pl.col("points") > pl.col("balance_before")
    )
    return over.select(
        "account",
        kind=pl.lit("over_redemption"),
        detail=pl.format(
            "redeemed {} points at {} (txn {}) with {} available",
            -pl.col("points"),
            pl.col("txn_time").dt.strftime(_TIME_FORMAT),
            pl.col("txn_id").fill_null("?"),
            "balance_before",
        ),
        amount=-pl.col("points") - pl.col("balance_before"),
        reference="txn_id",
    )


def unexpired_points(ledger: pl.DataFrame, cutoff: datetime, grace_days: int) -> pl.DataFrame:
    """Earned points past their expiry that no redemption or expiry row can account for.

    FIFO-free lower bound: outstanding = expired earned points - everything
    redeemed - everything expired, capped at the ledger balance. Any allocation
    of redemptions to earn rows leaves at least this much expired but undeducted,
    so a flagged account is wrong whichever order the channel consumes points in.
    """
    due = pl.col("txn_type").is_in(EARNED_TYPES) & (
        pl.col("expires_at") + pl.duration(days=grace_days) < cutoff
    ).fill_null(False)
    due_rows = ledger.filter(due).sort("account", "expires_at", maintain_order=True)
    due_by_account = due_rows.group_by("account", maintain_order=True).agg(
        expired_earned=pl.col("points").sum(),
        n_due=pl.len(),
        first_due_txn=pl.col("txn_id").first(),
        first_expiry=pl.col("expires_at").first(),
    )
    points, kind = pl.col("points"), pl.col("txn_type")
    per_account = (
        ledger.join(due_by_account.select("account"), on="account", how="semi")
        .group_by("account")
        .agg(
            consumed=-points.filter(kind.is_in(("redeem", "expire"))).sum(),
            balance=points.sum(),
        )
        .join(due_by_account, on="account")
        .with_columns(
            outstanding=pl.min_horizontal(
                pl.col("expired_earned") - pl.col("consumed"), pl.col("balance")
            )
        )
    )
    return per_account.filter(pl.col("outstanding") > 0).select(
        "account",
        kind=pl.lit("unexpired_points"),
        detail=pl.format(
            "{} earned points in {} rows expired by the cut-off (earliest {}, txn {}) but only {} "
            "were redeemed or expired since; {} points are still on the balance",
            "expired_earned",
            "n_due",
            pl.col("first_expiry").dt.strftime(_TIME_FORMAT),
            pl.col("first_due_txn").fill_null("?"),
            "consumed",
            "outstanding",
        ),
        amount="outstanding",
        reference="first_due_txn",
    )


def _identity(xref: pl.DataFrame) -> pl.DataFrame:
    frame = _conform(xref, {"channel": pl.Utf8(), "member_id": pl.Utf8(), "unified_id": pl.Utf8()})
    return frame.unique(ACCOUNT, keep="first", maintain_order=True)


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The columns a check needs, typed; a column the source did not have is null."""
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.items()
    )


def _end_of_day(day: pl.Expr) -> pl.Expr:
    """First instant after `day`, as a datetime comparable with txn_time."""
    return day.cast(pl.Datetime("us")) + pl.duration(days=1)


def _signed(expr: pl.Expr) -> pl.Expr:
    """+100 / -40: the sign a reader expects on a points movement."""
    text = expr.cast(pl.Utf8)
    return pl.when(expr > 0).then(pl.lit("+") + text).otherwise(text)
