"""Deterministic matching on shared identifiers, with guards against false merges.

A shared phone, unionid, e-mail or id card is the cheapest strong link between
two channel records, and also the most dangerous one: a clerk types the store's
phone for every walk-in customer, a family shares one mobile, a test number is
everywhere. Gluing those records together merges points of different people,
which a brand pays for; refusing every shared value loses real members, which a
brand also pays for. So each value links only the records that strong evidence
(id card, hanzi name with birth date) says belong to one person:

1. blocked values link nobody;
2. a value whose records hold more than `hub_max_people` distinct people (a hub)
   links nobody;
3. inside any other value, records are partitioned into people ("sub-groups")
   and only records of one sub-group are linked;
4. across values and rules, no component may end up holding two id cards.

Everything is a polars join or window over the long (record, identifier) frame;
the only Python loop is over the handful of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tasks.errors import ConfigError
from tasks.graph import component_labels
from tasks.privacy import keyed_token, sha256_hex
from tasks.settings import MatchSettings

# Which column of the members frame carries each rule's identifier. Phones are
# matched on their hash, so a channel that only hands over a hash still links.
RULE_COLUMNS: dict[str, str] = {
    "phone": "phone_sha256",
    "unionid": "unionid",
    "email": "email",
    "id_card": "id_card",
}

EDGE_SCHEMA: dict[str, pl.DataType] = {
    "left": pl.UInt32(),
    "right": pl.UInt32(),
    "rule": pl.Utf8(),
    "score": pl.Float64(),
    "weights": pl.Utf8(),
}

HUB_SCHEMA: dict[str, pl.DataType] = {
    "key_type": pl.Utf8(),
    "value_token": pl.Utf8(),
    "n_records": pl.UInt32(),
    "n_people": pl.UInt32(),
    "n_channels": pl.UInt32(),
    "reason": pl.Utf8(),
}

_VALUE = ["key_type", "value"]
_SIGNATURE = ["key_type", "value", "hanzi_name", "birth"]
_HEX64 = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class DeterministicLinks:
    """What deterministic matching decided, and what its guards refused.

    `guarded` counts (record, value) memberships the guards kept from linking,
    by guard, so a run report can show how much each guard held back.
    """

    edges: pl.DataFrame
    hub_values: pl.DataFrame
    guarded: dict[str, int] = field(default_factory=dict)


def deterministic_links(members: pl.DataFrame, settings: MatchSettings) -> DeterministicLinks:
    """Link records that share an identifier, unless the guards say they are different people."""
    _check_rules(settings.rules)
    evidence = strong_evidence(members)
    keyed = identifier_values(members, settings.rules).join(evidence, on="record_idx", how="left")

    blocked_mask = _is_blocked(keyed, settings)
    blocked = keyed.filter(blocked_mask)
    # A value held by one record links nobody and cannot be a hub: most values are
    # like that, and dropping them here keeps every later join small.
    keyed = keyed.filter(~blocked_mask).filter(pl.len().over(_VALUE) > 1)

    people = people_within_values(keyed, settings.hub_max_people)
    hub_keys = people.values.filter(pl.col("n_people") > settings.hub_max_people).select(_VALUE)
    hubs = keyed.join(hub_keys, on=_VALUE, how="semi")
    linkable = people.memberships.join(hub_keys, on=_VALUE, how="anti")

    memberships = sub_group_memberships(linkable)
    edges, n_cut = edges_without_id_card_conflicts(memberships, members, settings.rules)

    hub_values = _hub_report(blocked, hubs, people.values, settings.rules)
    guarded = {
        "blocked_values": blocked.select(_VALUE).unique().height,
        "blocked_records": blocked.height,
        "hub_values": hub_keys.height,
        "hub_records": hubs.height,
        "conflict_unlinked": people.n_conflict_unlinked,
        "ambiguous_unlinked": people.n_ambiguous_unlinked,
        "id_card_conflict_cut": n_cut,
    }
    return DeterministicLinks(edges=edges, hub_values=hub_values, guarded=guarded)


def _check_rules(rules: tuple[str, ...]) -> None:
    unknown = [rule for rule in rules if rule not in RULE_COLUMNS]
    if unknown:
        raise ConfigError(
            f"[matching] rules: unknown rule {unknown[0]!r}; "
            f"use any of {', '.join(RULE_COLUMNS)}, strongest first"
        )


# --- evidence --------------------------------------------------------------------------


def id_card_birth_date(col: str = "id_card") -> pl.Expr:
    """Birth date encoded in a GB 11643 id card (characters 7-14)."""
    return pl.col(col).str.slice(6, 8).str.to_date("%Y%m%d", strict=False)


def strong_evidence(members: pl.DataFrame) -> pl.DataFrame:
    """Per record, what tells one person from another.

    An id card is the person; its own birth date outranks a typed one. Without
    one, a hanzi name together with a birth date is the next best thing; pinyin
    and nicknames are too unreliable to separate people. `kind` is `id`,
    `name_birth` or `weak` (nothing strong: attaches only where unambiguous).
    """
    hanzi_name = pl.when(pl.col("name_kind") == "hanzi").then(pl.col("name"))
    birth = (
        pl.when(pl.col("id_card").is_not_null())
        .then(pl.coalesce(id_card_birth_date(), pl.col("birth_date")))
        .otherwise(pl.col("birth_date"))
    )
    return members.select(
        "record_idx",
        "channel",
        "id_card",
        hanzi_name.alias("hanzi_name"),
        birth.alias("birth"),
    ).with_columns(
        pl.when(pl.col("id_card").is_not_null())
        .then(pl.lit("id"))
        .when(pl.col("hanzi_name").is_not_null() & pl.col("birth").is_not_null())
        .then(pl.lit("name_birth"))
        .otherwise(pl.lit("weak"))
        .alias("kind")
    )


def identifier_values(members: pl.DataFrame, rules: tuple[str, ...]) -> pl.DataFrame:
    """Long frame of (record_idx, key_type, value): one row per identifier a record holds."""
    frames = [
        members.select(
            "record_idx",
            pl.lit(rule).alias("key_type"),
            pl.col(RULE_COLUMNS[rule]).cast(pl.Utf8).alias("value"),
        ).filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
        for rule in rules
    ]
    if not frames:
        return pl.DataFrame(
            schema={"record_idx": pl.UInt32(), "key_type": pl.Utf8(), "value": pl.Utf8()}
        )
    return pl.concat(frames)


def _is_blocked(keyed: pl.DataFrame, settings: MatchSettings) -> pl.Series:
    """Blocked values as they appear in the keyed frame: phones by their hash.

    A blocked phone may be listed as the 11 digits or as its SHA-256 already.
    """
    raw = pl.Series("value", [v.strip() for v in settings.blocked_values], dtype=pl.Utf8)
    lowered = raw.str.to_lowercase()
    phone_forms = pl.concat([sha256_hex(raw), lowered.filter(lowered.str.contains(_HEX64))])
    other_forms = pl.concat([raw, lowered])
    blocked = (
        pl.when(pl.col("key_type") == "phone")
        .then(pl.col("value").is_in(phone_forms.implode()))
        .otherwise(pl.col("value").is_in(other_forms.implode()))
        .fill_null(False)
    )
    return keyed.select(blocked).to_series()


# --- people within one value -------------------------------------------------------------


@dataclass(frozen=True)
class PeopleWithinValues:
    """Each (record, value) membership labelled with the person it belongs to.

    `memberships.person` is null where the record is left unlinked by that value
    (ambiguous or conflicting); `values` holds per-value counts for the hub guard.
    """

    memberships: pl.DataFrame
    values: pl.DataFrame
    n_conflict_unlinked: int
    n_ambiguous_unlinked: int


def people_within_values(keyed: pl.DataFrame, hub_max_people: int) -> PeopleWithinValues:
    """Partition each value's records into people by strong evidence.

    Sub-groups are the value's distinct id cards, plus (hanzi name, birth date)
    signatures that match no id card. A signature joins an id card when it
    agrees with it (same birth date as the card, or same hanzi name) without a
    conflict (different name AND different birth date on any record of the
    card) and when exactly one card qualifies. Records with no strong evidence
    join only a value's single sub-group. A value with more id cards than
    `hub_max_people` is a hub outright, which keeps the joins below small.
    """
    values = keyed.group_by(_VALUE).agg(
        pl.len().alias("n_records"),
        pl.col("channel").n_unique().alias("n_channels"),
        pl.col("id_card").drop_nulls().n_unique().alias("n_id_cards"),
    )
    obvious_hubs = values.filter(pl.col("n_id_cards") > hub_max_people).select(_VALUE)
    considered = keyed.join(obvious_hubs, on=_VALUE, how="anti")

    card_records = (
        considered.filter(pl.col("kind") == "id")
        .select(*_VALUE, "id_card", "hanzi_name", "birth")
        .unique()
    )
    signatures = considered.filter(pl.col("kind") == "name_birth").select(_SIGNATURE).unique()
    signature_people = _signature_people(signatures, card_records)

    standalone = signature_people.filter(pl.col("status") == "standalone")
    sub_groups = pl.concat(
        [
            card_records.select(*_VALUE, ("id:" + pl.col("id_card")).alias("person")).unique(),
            standalone.select(*_VALUE, "person"),
        ]
    )
    per_value = sub_groups.group_by(_VALUE).agg(
        pl.len().alias("n_sub_groups"), pl.col("person").first().alias("only_person")
    )

    kind = pl.col("kind")
    card_holders = considered.filter(kind == "id").select(
        "record_idx", *_VALUE, "kind", ("id:" + pl.col("id_card")).alias("person")
    )
    signed = (
        considered.filter(kind == "name_birth")
        .join(signature_people.select(*_SIGNATURE, "person"), on=_SIGNATURE, how="left")
        .select("record_idx", *_VALUE, "kind", "person")
    )
    weak = (
        considered.filter(kind == "weak")
        .join(per_value, on=_VALUE, how="left")
        .select(
            "record_idx",
            *_VALUE,
            "kind",
            pl.when(pl.col("n_sub_groups").is_null())
            .then(pl.lit("weak"))
            .when(pl.col("n_sub_groups") == 1)
            .then(pl.col("only_person"))
            .alias("person"),
        )
    )
    labelled = pl.concat([card_holders, signed, weak])
    n_conflict = labelled.filter(
        (pl.col("kind") == "name_birth") & pl.col("person").is_null()
    ).height
    n_ambiguous = labelled.filter((pl.col("kind") == "weak") & pl.col("person").is_null()).height

    values = (
        values.join(per_value.select(*_VALUE, "n_sub_groups"), on=_VALUE, how="left")
        .with_columns(
            pl.when(pl.col("n_id_cards") > hub_max_people)
            .then(pl.col("n_id_cards"))
            .otherwise(pl.col("n_sub_groups").fill_null(0))
            .clip(lower_bound=1)
            .cast(pl.UInt32)
            .alias("n_people")
        )
        .drop("n_sub_groups")
    )
    return PeopleWithinValues(
        memberships=labelled.select("record_idx", *_VALUE, "person"),
        values=values,
        n_conflict_unlinked=n_conflict,
        n_ambiguous_unlinked=n_ambiguous,
    )


def _signature_people(signatures: pl.DataFrame, card_records: pl.DataFrame) -> pl.DataFrame:
    """Decide, per (value, hanzi name, birth date) signature, which person it is.

    status: `card` (joins exactly one id card: person = that card), `standalone`
    (agrees with no card: a person of its own), `ambiguous` (agrees with several
    cards, or clashes with another signature on its card: person null).
    """
    agreeing = (
        pl.concat(
            [
                signatures.join(
                    card_records.select(*_VALUE, "birth", "id_card"), on=[*_VALUE, "birth"]
                ),
                signatures.join(
                    card_records.select(*_VALUE, "hanzi_name", "id_card").drop_nulls("hanzi_name"),
                    on=[*_VALUE, "hanzi_name"],
                ),
            ]
        )
        .select(*_SIGNATURE, "id_card")
        .unique()
    )
    compatible = (
        agreeing.join(
            card_records.select(
                *_VALUE,
                "id_card",
                pl.col("hanzi_name").alias("card_name"),
                pl.col("birth").alias("card_birth"),
            ),
            on=[*_VALUE, "id_card"],
        )
        .group_by(*_SIGNATURE, "id_card")
        .agg(_conflicts("hanzi_name", "birth", "card_name", "card_birth").any().alias("conflict"))
        .filter(~pl.col("conflict"))
    )
    candidates = compatible.group_by(_SIGNATURE).agg(
        pl.len().alias("n_cards"), pl.col("id_card").first()
    )
    attached = candidates.filter(pl.col("n_cards") == 1).drop("n_cards")
    clashing = _clashing_on_one_card(attached)

    return (
        signatures.join(candidates, on=_SIGNATURE, how="left")
        .join(clashing.with_columns(pl.lit(True).alias("clash")), on=_SIGNATURE, how="left")
        .with_columns(
            pl.when(pl.col("n_cards").is_null())
            .then(pl.lit("standalone"))
            .when((pl.col("n_cards") == 1) & pl.col("clash").is_null())
            .then(pl.lit("card"))
            .otherwise(pl.lit("ambiguous"))
            .alias("status")
        )
        .with_columns(
            pl.when(pl.col("status") == "card")
            .then("id:" + pl.col("id_card"))
            .when(pl.col("status") == "standalone")
            .then(pl.format("nb:{}|{}", pl.col("hanzi_name"), pl.col("birth")))
            .alias("person")
        )
        .select(*_SIGNATURE, "status", "person")
    )


def _conflicts(name_a: str, birth_a: str, name_b: str, birth_b: str) -> pl.Expr:
    """Different hanzi name AND different birth date: two people, not a typo."""
    return ((pl.col(name_a) != pl.col(name_b)) & (pl.col(birth_a) != pl.col(birth_b))).fill_null(
        False
    )


def _clashing_on_one_card(attached: pl.DataFrame) -> pl.DataFrame:
    """Signatures that joined the same card but contradict each other: keep them off it."""
    pairs = attached.join(attached, on=[*_VALUE, "id_card"], suffix="_other").filter(
        _conflicts("hanzi_name", "birth", "hanzi_name_other", "birth_other")
    )
    return pairs.select(_SIGNATURE).unique()


# --- edges -------------------------------------------------------------------------------


def sub_group_memberships(labelled: pl.DataFrame) -> pl.DataFrame:
    """Records of one person within one value, each pointed at the sub-group's smallest record.

    A record holds one value per rule, so within a rule `center` names its sub-group.
    """
    group = ["key_type", "value", "person"]
    return (
        labelled.filter(pl.col("person").is_not_null())
        .with_columns(
            pl.col("record_idx").min().over(group).alias("center"),
            pl.len().over(group).alias("group_size"),
        )
        .filter(pl.col("group_size") > 1)
        .select("record_idx", "key_type", "center")
    )


def _star_edges(memberships: pl.DataFrame, group: str, rule: str) -> pl.DataFrame:
    """Edges from each sub-group's smallest record to every other one (left < right)."""
    return (
        memberships.with_columns(pl.col("record_idx").min().over(group).alias("_hub"))
        .filter(pl.col("record_idx") != pl.col("_hub"))
        .select(
            pl.col("_hub").cast(pl.UInt32).alias("left"),
            pl.col("record_idx").cast(pl.UInt32).alias("right"),
            pl.lit(rule).alias("rule"),
            pl.lit(1.0).alias("score"),
            pl.lit(None, dtype=pl.Utf8).alias("weights"),
        )
    )


def edges_without_id_card_conflicts(
    memberships: pl.DataFrame, members: pl.DataFrame, rules: tuple[str, ...]
) -> tuple[pl.DataFrame, int]:
    """Add each rule's links, strongest rule first, never joining two id cards in one component.

    Each value is already free of clashing cards, but a chain can still bridge
    them (card X -phone- record without card -email- card Y). A rule's
    sub-group "carries" the card of the components it touches. Sub-groups that
    carry none are safe; sub-groups that carry two are dropped; a record reached
    by sub-groups carrying different cards is cut from those sub-groups. Weaker
    rules come later, so they are the ones cut. Returns edges and the number of
    memberships cut.
    """
    n = members.height
    card_codes = _id_card_codes(members)
    accepted: list[pl.DataFrame] = [pl.DataFrame(schema=EDGE_SCHEMA)]
    labels = np.arange(n, dtype=np.int64)
    n_cut = 0
    for rule in rules:
        rule_members = memberships.filter(pl.col("key_type") == rule).select(
            pl.col("record_idx").cast(pl.UInt32), "center"
        )
        if rule_members.is_empty():
            continue
        card_of = _component_cards(card_codes, labels)
        touched = rule_members.with_columns(_card_column(card_of, rule_members["record_idx"]))
        carried = touched.group_by("center").agg(
            pl.col("card").drop_nulls().n_unique().alias("n_carried"),
            pl.col("card").max().alias("carried"),
        )
        touched = touched.join(carried, on="center", how="left")
        free = touched.filter(pl.col("n_carried") == 0)
        carriers = touched.filter(pl.col("n_carried") == 1)
        free_edges = _star_edges(free, "center", rule)

        regions = component_labels(n, pl.concat([*accepted, free_edges]))
        carriers = carriers.with_columns(
            pl.Series("region", regions[carriers["record_idx"].to_numpy()])
        )
        holders = np.flatnonzero(card_of >= 0)
        region_cards = pl.concat(
            [
                pl.DataFrame({"region": regions[holders], "card": card_of[holders]}),
                carriers.select("region", pl.col("carried").alias("card")),
            ]
        )
        contested = (
            region_cards.group_by("region")
            .agg(pl.col("card").n_unique().alias("n_cards"))
            .filter(pl.col("n_cards") > 1)
        )
        kept = carriers.join(contested, on="region", how="anti")
        carrier_edges = _star_edges(kept, "center", rule)
        n_cut += touched.height - free.height - kept.height

        candidate = pl.concat([*accepted, free_edges, carrier_edges])
        labels = component_labels(n, candidate)
        accepted = [candidate]
    edges = accepted[0].unique(subset=["left", "right"], keep="first", maintain_order=True)
    return edges.sort("left", "right"), n_cut


def _id_card_codes(members: pl.DataFrame) -> np.ndarray:
    """Per record_idx, an integer code of its id card (-1 without one); exact, not a hash."""
    holders = members.select("record_idx", "id_card").drop_nulls("id_card")
    codes = np.full(members.height, -1, dtype=np.int64)
    codes[holders["record_idx"].to_numpy()] = holders["id_card"].rank("dense").to_numpy() - 1
    return codes


def _component_cards(card_codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per record, the code of the one id card its current component holds (-1: none)."""
    holders = card_codes >= 0
    component_card = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int64)
    component_card[labels[holders]] = card_codes[holders]
    return component_card[labels]


def _card_column(card_of: np.ndarray, record_idx: pl.Series) -> pl.Series:
    cards = pl.Series("card", card_of[record_idx.to_numpy()])
    return pl.select(pl.when(cards >= 0).then(cards)).to_series().alias("card")


# --- report ------------------------------------------------------------------------------


def _hub_report(
    blocked: pl.DataFrame, hubs: pl.DataFrame, values: pl.DataFrame, rules: tuple[str, ...]
) -> pl.DataFrame:
    """hub_values: what was refused and why, with the value only as a keyed token."""
    blocked_stats = (
        blocked.group_by(_VALUE)
        .agg(
            pl.len().cast(pl.UInt32).alias("n_records"),
            pl.col("channel").n_unique().cast(pl.UInt32).alias("n_channels"),
            pl.col("id_card").drop_nulls().n_unique().cast(pl.UInt32).alias("n_people"),
        )
        .with_columns(
            pl.col("n_people").clip(lower_bound=1), pl.lit("blocked value").alias("reason")
        )
    )
    hub_stats = values.join(hubs.select(_VALUE).unique(), on=_VALUE, how="semi").select(
        *_VALUE,
        pl.col("n_records").cast(pl.UInt32),
        pl.col("n_channels").cast(pl.UInt32),
        pl.col("n_people").cast(pl.UInt32),
        pl.format("hub: {} distinct people", pl.col("n_people")).alias("reason"),
    )
    report = pl.concat([blocked_stats, hub_stats], how="diagonal")
    if report.is_empty():
        return pl.DataFrame(schema=HUB_SCHEMA)
    rule_rank = {rule: i for i, rule in enumerate(rules)}
    report = report.with_columns(keyed_token(report["value"]).alias("value_token"))
    return (
        report.sort(
            pl.col("key_type").replace_strict(rule_rank, return_dtype=pl.Int32),
            pl.col("n_people"),
            "value_token",
            descending=[False, True, False],
        )
        .select(list(HUB_SCHEMA))
        .cast(HUB_SCHEMA)
    )
