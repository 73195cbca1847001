"""Stable unified ids across runs, on hand-built members frames and edges."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.cluster import assign_unified_ids
from tasks.errors import WarehouseError
from tasks.match import EDGE_SCHEMA
from tasks.schema import MEMBER_SCHEMA


def members_frame(keys: list[str]) -> pl.DataFrame:
    """Members frame from "channel:member_id" keys (only identity columns matter here)."""
    rows = []
    for key in keys:
        channel, member_id = key.split(":")
        row = {column: None for column in MEMBER_SCHEMA}
        row.update(channel=channel, member_id=member_id, trust=1, source_row=0, flags=[])
        rows.append(row)
    frame = pl.DataFrame(rows, schema=MEMBER_SCHEMA).sort("channel", "member_id")
    return frame.with_row_index("record_idx").with_columns(pl.col("record_idx").cast(pl.UInt32))


def edges_between(
    members: pl.DataFrame, pairs: list[tuple[str, str, str]], score: float = 1.0
) -> pl.DataFrame:
    """Edges from ("channel:member_id", "channel:member_id", rule) triples."""
    index = dict(
        zip(
            (members["channel"] + ":" + members["member_id"]).to_list(),
            members["record_idx"].to_list(),
            strict=True,
        )
    )
    rows = []
    for a, b, rule in pairs:
        left, right = sorted((index[a], index[b]))
        weights = '{"name": 3.2}' if rule == "probabilistic" else None
        rows.append((left, right, rule, score if rule == "probabilistic" else 1.0, weights))
    return pl.DataFrame(rows, schema=EDGE_SCHEMA, orient="row")


def ids(identity) -> dict[str, str]:
    xref = identity.xref
    return dict(
        zip(
            (xref["channel"] + ":" + xref["member_id"]).to_list(),
            xref["unified_id"].to_list(),
            strict=True,
        )
    )


KEYS = ["pos:p1", "tmall:t1", "app:a1", "app:a2", "crm:c1"]


def first_run():
    members = members_frame(KEYS)
    edges = edges_between(members, [("pos:p1", "tmall:t1", "phone"), ("app:a1", "pos:p1", "email")])
    return members, edges, assign_unified_ids(members, edges, None, "run-1")


def test_first_run_creates_ids_in_channel_member_order() -> None:
    _, _, identity = first_run()
    assert ids(identity) == {
        "app:a1": "U0000000001",
        "pos:p1": "U0000000001",
        "tmall:t1": "U0000000001",
        "app:a2": "U0000000002",
        "crm:c1": "U0000000003",
    }
    changes = identity.identity_changes
    assert changes["change"].to_list() == ["created"] * 3
    assert changes.filter(pl.col("unified_id") == "U0000000001")["n_records"].item() == 3
    assert identity.last_issued == 3
    assert set(identity.xref["run_id"]) == {"run-1"}


def test_xref_names_the_strongest_rule_and_the_record_it_linked_to() -> None:
    members = members_frame(["pos:p1", "tmall:t1", "app:a1", "crm:c1"])
    edges = pl.concat(
        [
            edges_between(
                members, [("pos:p1", "tmall:t1", "email"), ("pos:p1", "app:a1", "phone")]
            ),
            edges_between(members, [("crm:c1", "app:a1", "probabilistic")], score=0.97),
        ]
    )
    xref = assign_unified_ids(members, edges, None, "r").xref
    by_key = {f"{r['channel']}:{r['member_id']}": r for r in xref.iter_rows(named=True)}
    assert by_key["pos:p1"]["match_rule"] == "phone"
    assert by_key["pos:p1"]["linked_to"] == "app:a1"
    assert by_key["tmall:t1"]["match_rule"] == "email"
    assert by_key["crm:c1"]["match_rule"] == "probabilistic"
    assert by_key["crm:c1"]["match_score"] == 0.97
    assert by_key["crm:c1"]["match_weights"] == '{"name": 3.2}'

    lonely = assign_unified_ids(
        members_frame(["pos:x"]), pl.DataFrame(schema=EDGE_SCHEMA), None, "r"
    )
    row = lonely.xref.row(0, named=True)
    assert row["match_rule"] == "singleton" and row["linked_to"] is None


def test_rerun_on_same_input_keeps_every_id_and_records_no_change() -> None:
    members, edges, first = first_run()
    again = assign_unified_ids(members, edges, first.xref, "run-2", first.last_issued)
    assert ids(again) == ids(first)
    assert again.identity_changes.is_empty()
    assert again.last_issued == first.last_issued


def test_new_record_joining_keeps_the_id_and_a_new_one_gets_a_fresh_id() -> None:
    _, _, first = first_run()
    members = members_frame([*KEYS, "jd:j1", "jd:j2"])
    edges = edges_between(
        members,
        [
            ("pos:p1", "tmall:t1", "phone"),
            ("app:a1", "pos:p1", "email"),
            ("jd:j1", "tmall:t1", "phone"),
        ],
    )
    second = assign_unified_ids(members, edges, first.xref, "run-2", first.last_issued)
    assert ids(second)["jd:j1"] == "U0000000001"
    assert ids(second)["jd:j2"] == "U0000000004"
    assert second.identity_changes.select("unified_id", "change").rows() == [
        ("U0000000004", "created")
    ]


def test_merge_keeps_the_oldest_id_and_retires_the_other() -> None:
    members, _, first = first_run()
    edges = edges_between(
        members,
        [
            ("pos:p1", "tmall:t1", "phone"),
            ("app:a1", "pos:p1", "email"),
            ("crm:c1", "app:a2", "id_card"),
        ],
    )
    edges = pl.concat([edges, edges_between(members, [("crm:c1", "pos:p1", "unionid")])])
    second = assign_unified_ids(members, edges, first.xref, "run-2", first.last_issued)
    assert set(ids(second).values()) == {"U0000000001"}
    changes = second.identity_changes.select("unified_id", "change", "related_ids").rows()
    assert ("U0000000002", "retired", "U0000000001") in changes
    assert ("U0000000003", "retired", "U0000000001") in changes
    assert ("U0000000001", "merged", "U0000000002,U0000000003") in changes
    assert second.last_issued == 3


def test_split_gives_the_larger_part_the_old_id() -> None:
    members, _, first = first_run()
    # pos:p1 + tmall:t1 stay together; app:a1 (the smallest key of U1) leaves
    edges = edges_between(members, [("pos:p1", "tmall:t1", "phone")])
    second = assign_unified_ids(members, edges, first.xref, "run-2", first.last_issued)
    assert ids(second)["pos:p1"] == ids(second)["tmall:t1"] == "U0000000001"
    assert ids(second)["app:a1"] == "U0000000004"
    changes = second.identity_changes.select("unified_id", "change", "related_ids").rows()
    assert changes == [
        ("U0000000001", "split", "U0000000004"),
        ("U0000000004", "created", "U0000000001"),
    ]


def test_split_in_equal_halves_gives_the_old_id_to_the_part_with_smallest_key() -> None:
    members = members_frame(["pos:p1", "tmall:t1"])
    linked = edges_between(members, [("pos:p1", "tmall:t1", "phone")])
    first = assign_unified_ids(members, linked, None, "run-1")
    second = assign_unified_ids(members, pl.DataFrame(schema=EDGE_SCHEMA), first.xref, "run-2", 1)
    assert ids(second) == {"pos:p1": "U0000000001", "tmall:t1": "U0000000002"}


def test_fresh_ids_never_reuse_a_retired_id() -> None:
    _, edges, first = first_run()
    links = [("pos:p1", "tmall:t1", "phone"), ("app:a1", "pos:p1", "email")]

    # an earlier run issued up to U0000000009 whose members have since disappeared
    grown = members_frame([*KEYS, "jd:j9"])
    second = assign_unified_ids(
        grown, edges_between(grown, links), first.xref, "run-2", last_issued=9
    )
    assert ids(second)["jd:j9"] == "U0000000010"
    assert second.last_issued == 10

    # crm:c1 leaves: its id retires, and when it comes back it gets a new one
    shrunk = members_frame(["pos:p1", "tmall:t1", "app:a1", "app:a2"])
    gone = assign_unified_ids(
        shrunk, edges_between(shrunk, links), first.xref, "run-2", first.last_issued
    )
    assert gone.identity_changes.select("unified_id", "change").rows() == [
        ("U0000000003", "retired")
    ]
    back = assign_unified_ids(members_frame(KEYS), edges, gone.xref, "run-3", gone.last_issued)
    assert ids(back)["crm:c1"] == "U0000000004"


def test_fresh_ids_are_reproducible_whatever_the_row_order() -> None:
    members, edges, _ = first_run()
    shuffled_edges = edges.reverse()
    assert ids(assign_unified_ids(members, shuffled_edges, None, "r")) == ids(
        assign_unified_ids(members, edges, None, "r")
    )


def test_malformed_previous_id_is_a_warehouse_error() -> None:
    members, edges, first = first_run()
    broken = first.xref.with_columns(pl.lit("X12").alias("unified_id"))
    with pytest.raises(WarehouseError, match="is not U \\+ 10 digits"):
        assign_unified_ids(members, edges, broken, "run-2")
