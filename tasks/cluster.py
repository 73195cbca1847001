"""Connected components of the identity graph, named by stable unified ids.

A unified_id is what the rest of the brand (points, CRM, campaigns) holds on
to, so it must survive re-runs: a member whose records did not change keeps
it, a merge keeps the oldest of the merged ids, a split leaves the old id with
the largest part. Fresh ids continue from the largest id ever issued, so a
retired id is never handed to somebody else. Every change is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tasks.errors import WarehouseError
from tasks.graph import component_labels
from tasks.schema import MATCH_RULES

ID_PREFIX = "U"
ID_DIGITS = 10

XREF_SCHEMA: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "member_id": pl.Utf8(),
    "unified_id": pl.Utf8(),
    "match_rule": pl.Utf8(),
    "match_score": pl.Float64(),
    "match_weights": pl.Utf8(),
    "linked_to": pl.Utf8(),
    "run_id": pl.Utf8(),
}

IDENTITY_CHANGES_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8(),
    "unified_id": pl.Utf8(),
    "change": pl.Utf8(),  # created | merged | split | retired
    "related_ids": pl.Utf8(),  # comma-separated unified ids
    "n_records": pl.Int64(),
    "detail": pl.Utf8(),
}


@dataclass(frozen=True)
class Identity:
    """The run's identity: xref per record, what changed since last run, the id high-water mark."""

    xref: pl.DataFrame
    identity_changes: pl.DataFrame
    last_issued: int


def unified_id(number: pl.Expr) -> pl.Expr:
    """U0000000042 from 42."""
    return pl.lit(ID_PREFIX) + number.cast(pl.Utf8).str.zfill(ID_DIGITS)


def assign_unified_ids(
    members: pl.DataFrame,
    edges: pl.DataFrame,
    previous_xref: pl.DataFrame | None,
    run_id: str,
    last_issued: int = 0,
) -> Identity:
    """Name each component of the identity graph, keeping last run's ids where they still fit."""
    records = _records_with_components(members, edges)
    previous = _previous_ids(previous_xref)
    records = records.join(previous, on=["channel", "member_id"], how="left")

    parts = (
        records.filter(pl.col("old_number").is_not_null())
        .group_by("old_number", "component")
        .agg(pl.len().alias("n_part"), pl.col("order").min().alias("part_order"))
    )
    inherited = _inherit_old_ids(parts)
    start = max(last_issued, int(previous["old_number"].max() or 0)) + 1
    numbers = _number_components(records, inherited, start)

    records = records.join(numbers.select("component", "number"), on="component", how="left")
    xref = _xref(records, edges, run_id)
    changes = _identity_changes(records, parts, numbers, previous, run_id)
    issued = int(numbers["number"].max() or 0) if numbers.height else 0
    return Identity(
        xref=xref,
        identity_changes=changes,
        last_issued=max(start - 1, issued),
    )


def _records_with_components(members: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    """record_idx, channel, member_id, component, and `order`: rank of (channel, member_id).

    `order` makes every tie-break and every fresh id independent of row order.
    """
    labels = component_labels(members.height, edges)
    return (
        members.select("record_idx", "channel", "member_id")
        .sort("record_idx")
        .with_columns(pl.Series("component", labels))
        .sort("channel", "member_id")
        .with_row_index("order")
    )


def _previous_ids(previous_xref: pl.DataFrame | None) -> pl.DataFrame:
    """(channel, member_id, old_number) from last run's xref; empty on a first run."""
    schema = {"channel": pl.Utf8(), "member_id": pl.Utf8(), "old_number": pl.Int64()}
    if previous_xref is None or previous_xref.is_empty():
        return pl.DataFrame(schema=schema)
    previous = previous_xref.select(
        "channel",
        "member_id",
        pl.col("unified_id")
        .str.strip_prefix(ID_PREFIX)
        .cast(pl.Int64, strict=False)
        .alias("old_number"),
    )
    bad = previous.filter(pl.col("old_number").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise WarehouseError(
            f"member_xref: unified_id of {row['channel']}:{row['member_id']} is not "
            f"{ID_PREFIX} + {ID_DIGITS} digits; restore the table from the last good run "
            "or drop it to start ids afresh"
        )
    return previous.unique(subset=["channel", "member_id"], keep="first")


def _inherit_old_ids(parts: pl.DataFrame) -> pl.DataFrame:
    """Which component keeps which old id: (component, old_number).

    Each old id goes to its largest part (ties: the part with the smallest
    (channel, member_id)); a component offered several keeps the oldest. An old
    id that lost its largest part to an older id tries its next part, so a
    member that merely split off keeps its id too. A few rounds of joins.
    """
    inherited = pl.DataFrame(schema={"component": pl.Int64(), "old_number": pl.Int64()})
    remaining = parts
    while remaining.height:
        offers = remaining.sort(
            ["old_number", "n_part", "part_order"], descending=[False, True, False]
        ).unique(subset="old_number", keep="first", maintain_order=True)
        accepted = (
            offers.sort("old_number")
            .unique(subset="component", keep="first", maintain_order=True)
            .select("component", "old_number")
        )
        inherited = pl.concat([inherited, accepted])
        remaining = remaining.join(accepted, on="old_number", how="anti").join(
            accepted, on="component", how="anti"
        )
    return inherited


def _number_components(records: pl.DataFrame, inherited: pl.DataFrame, start: int) -> pl.DataFrame:
    """component, number, inherited flag; fresh numbers in (channel, member_id) order."""
    components = records.group_by("component").agg(
        pl.len().alias("n_records"), pl.col("order").min().alias("first_order")
    )
    components = components.join(inherited, on="component", how="left")
    fresh = (
        components.filter(pl.col("old_number").is_null())
        .sort("first_order")
        .with_row_index("fresh_rank")
        .select("component", (pl.col("fresh_rank").cast(pl.Int64) + start).alias("fresh_number"))
    )
    return components.join(fresh, on="component", how="left").with_columns(
        pl.coalesce("old_number", "fresh_number").alias("number"),
        pl.col("old_number").is_not_null().alias("inherited"),
    )


# --- xref --------------------------------------------------------------------------------


def _xref(records: pl.DataFrame, edges: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """Per record: its unified id and the strongest link that put it there."""
    rule_rank = {rule: i for i, rule in enumerate(MATCH_RULES)}
    columns = ["rule", "score", "weights"]
    incident = pl.concat(
        [
            edges.select(
                pl.col("left").alias("record_idx"), pl.col("right").alias("other"), *columns
            ),
            edges.select(
                pl.col("right").alias("record_idx"), pl.col("left").alias("other"), *columns
            ),
        ]
    ).with_columns(
        pl.col("record_idx").cast(pl.UInt32),
        pl.col("other").cast(pl.UInt32),
        pl.col("rule").replace_strict(rule_rank, return_dtype=pl.Int32).alias("rule_rank"),
    )
    strongest = incident.sort(
        ["record_idx", "rule_rank", "score", "other"], descending=[False, False, True, False]
    ).unique(subset="record_idx", keep="first", maintain_order=True)
    names = records.select(
        pl.col("record_idx").cast(pl.UInt32).alias("other"),
        (pl.col("channel") + ":" + pl.col("member_id")).alias("linked_to"),
    )
    strongest = strongest.join(names, on="other", how="left")
    size = pl.len().over("component")
    return (
        records.with_columns(pl.col("record_idx").cast(pl.UInt32))
        .join(strongest, on="record_idx", how="left")
        .sort("order")
        .select(
            "channel",
            "member_id",
            unified_id(pl.col("number")).alias("unified_id"),
            pl.when(size == 1)
            .then(pl.lit("singleton"))
            .otherwise(pl.col("rule"))
            .alias("match_rule"),
            pl.when(size == 1).then(None).otherwise(pl.col("score")).alias("match_score"),
            pl.when(size == 1).then(None).otherwise(pl.col("weights")).alias("match_weights"),
            pl.when(size == 1).then(None).otherwise(pl.col("linked_to")).alias("linked_to"),
            pl.lit(run_id).alias("run_id"),
        )
        .cast(XREF_SCHEMA)
    )


# --- identity changes --------------------------------------------------------------------


def _id_list(numbers: str, separator: str = ",") -> pl.Expr:
    """A list column of id numbers as readable, joined unified ids."""
    return pl.col(numbers).list.eval(unified_id(pl.element())).list.join(separator)


def _identity_changes(
    records: pl.DataFrame,
    parts: pl.DataFrame,
    numbers: pl.DataFrame,
    previous: pl.DataFrame,
    run_id: str,
) -> pl.DataFrame:
    """created / merged / split / retired rows; none at all when nothing changed.

    - created: a component with a fresh id (related_ids: old ids it split off from);
    - merged: a kept id that absorbed retired ids (related_ids: those ids);
    - split: a kept id that lost records to other members (related_ids: where they went);
    - retired: an old id no component keeps (related_ids: where its records went).
    """
    kept = numbers.filter(pl.col("inherited")).select(pl.col("old_number").alias("kept"))
    placed = parts.join(numbers.select("component", "number", "n_records"), on="component")
    moved = placed.filter(pl.col("old_number") != pl.col("number"))
    retired_moves = moved.join(kept, left_on="old_number", right_on="kept", how="anti")
    split_moves = moved.join(kept, left_on="old_number", right_on="kept", how="semi")

    created = (
        numbers.filter(~pl.col("inherited"))
        .join(
            moved.group_by("component").agg(pl.col("old_number").unique().sort().alias("sources")),
            on="component",
            how="left",
        )
        .select(
            pl.col("number"),
            pl.lit("created").alias("change"),
            _id_list("sources").alias("related_ids"),
            pl.col("n_records").cast(pl.Int64),
            pl.when(pl.col("sources").is_null())
            .then(pl.lit("new member"))
            .otherwise(
                pl.format(
                    "new member of {} records, split off from {}",
                    pl.col("n_records"),
                    _id_list("sources", ", "),
                )
            )
            .alias("detail"),
        )
    )
    merged = (
        retired_moves.group_by("number")
        .agg(
            pl.col("old_number").sort().alias("absorbed"),
            pl.col("n_part").sum().alias("n_moved"),
            pl.col("n_records").first(),
        )
        .select(
            "number",
            pl.lit("merged").alias("change"),
            _id_list("absorbed").alias("related_ids"),
            pl.col("n_records").cast(pl.Int64),
            pl.format(
                "absorbed {} ({} records); now {} records",
                _id_list("absorbed", ", "),
                pl.col("n_moved"),
                pl.col("n_records"),
            ).alias("detail"),
        )
    )
    split = (
        split_moves.group_by("old_number")
        .agg(pl.col("number").sort().alias("parts"), pl.col("n_part").sum().alias("n_moved"))
        .join(numbers.select(pl.col("number").alias("old_number"), "n_records"), on="old_number")
        .select(
            pl.col("old_number").alias("number"),
            pl.lit("split").alias("change"),
            _id_list("parts").alias("related_ids"),
            pl.col("n_records").cast(pl.Int64),
            pl.format(
                "{} records moved to {}; {} records remain",
                pl.col("n_moved"),
                _id_list("parts", ", "),
                pl.col("n_records"),
            ).alias("detail"),
        )
    )
    old_ids = previous.group_by("old_number").agg(pl.len().alias("n_before"))
    retired = (
        old_ids.join(kept, left_on="old_number", right_on="kept", how="anti")
        .join(
            placed.group_by("old_number").agg(pl.col("number").unique().sort().alias("successors")),
            on="old_number",
            how="left",
        )
        .select(
            pl.col("old_number").alias("number"),
            pl.lit("retired").alias("change"),
            _id_list("successors").alias("related_ids"),
            pl.lit(0, dtype=pl.Int64).alias("n_records"),
            pl.when(pl.col("successors").is_null())
            .then(pl.format("none of its {} records remain", pl.col("n_before")))
            .otherwise(
                pl.format(
                    "merged into {}",
                    _id_list("successors", ", "),
                )
            )
            .alias("detail"),
        )
    )
    change_rank = {"retired": 0, "merged": 1, "split": 2, "created": 3}
    changes = pl.concat([retired, merged, split, created])
    return (
        changes.sort(pl.col("change").replace_strict(change_rank, return_dtype=pl.Int32), "number")
        .select(
            pl.lit(run_id).alias("run_id"),
            unified_id(pl.col("number")).alias("unified_id"),
            "change",
            "related_ids",
            "n_records",
            "detail",
        )
        .cast(IDENTITY_CHANGES_SCHEMA)
    )
