"""Deterministic matching and its guards, on hand-built members frames."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tasks.graph import component_labels
from tasks.match import deterministic_links
from tasks.privacy import keyed_token, sha256_hex
from tasks.schema import MEMBER_SCHEMA
from tasks.settings import MatchSettings


@pytest.fixture(autouse=True)
def _pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERLINK_PII_KEY", "test-key")


def id_card(region_birth_seq: str) -> str:
    """A valid GB 11643 id card from its first 17 characters."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(region_birth_seq, weights, strict=True))
    return region_birth_seq + "10X98765432"[total % 11]


def members_frame(rows: list[dict]) -> pl.DataFrame:
    """The members frame of docs/internals.md: MEMBER_SCHEMA + record_idx, sorted."""
    full = []
    for row in rows:
        record = {column: None for column in MEMBER_SCHEMA}
        record.update(trust=1, source_row=0, source_file="f.csv", flags=[])
        record.update(row)
        if record["phone"] is not None and record["phone_sha256"] is None:
            record["phone_sha256"] = "pending"
        if record["name"] is not None and record["name_kind"] is None:
            record["name_kind"] = "hanzi"
        full.append(record)
    frame = pl.DataFrame(full, schema=MEMBER_SCHEMA)
    frame = frame.with_columns(
        pl.when(pl.col("phone_sha256") == "pending")
        .then(sha256_hex(frame["phone"]))
        .otherwise(pl.col("phone_sha256"))
        .alias("phone_sha256")
    )
    return (
        frame.sort("channel", "member_id")
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )


def components(members: pl.DataFrame, edges: pl.DataFrame) -> dict[str, int]:
    labels = component_labels(members.height, edges)
    keys = (members["channel"] + ":" + members["member_id"]).to_list()
    return dict(zip(keys, labels.tolist(), strict=True))


def test_hashed_only_channel_links_to_plain_phone_channel() -> None:
    phone_hash = sha256_hex(pl.Series(["13912345678"]))[0]
    members = members_frame(
        [
            {"channel": "pos", "member_id": "p1", "phone": "13912345678", "name": "李娜"},
            {"channel": "tmall", "member_id": "t1", "phone_sha256": phone_hash},
            {"channel": "jd", "member_id": "j1", "phone_sha256": "f" * 64},
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.select("rule", "score").rows() == [("phone", 1.0)]
    comp = components(members, links.edges)
    assert comp["pos:p1"] == comp["tmall:t1"] != comp["jd:j1"]
    assert links.edges.schema == {
        "left": pl.UInt32,
        "right": pl.UInt32,
        "rule": pl.Utf8,
        "score": pl.Float64,
        "weights": pl.Utf8,
    }
    assert links.hub_values.is_empty()


def test_store_phone_with_thirty_people_is_a_hub_that_links_nobody() -> None:
    store_phone = "13700001111"
    rows = [
        {
            "channel": "pos",
            "member_id": f"p{i:02d}",
            "phone": store_phone,
            "name": f"顾客{'甲乙丙丁戊己庚辛壬癸'[i % 10]}{i}",
            "birth_date": dt.date(1970 + i, 1 + i % 12, 1 + i % 28),
        }
        for i in range(30)
    ]
    rows.append({"channel": "tmall", "member_id": "t1", "phone": store_phone})
    members = members_frame(rows)
    links = deterministic_links(members, MatchSettings())
    assert links.edges.is_empty()
    hub = links.hub_values.row(0, named=True)
    assert links.hub_values.height == 1
    assert hub["key_type"] == "phone"
    assert hub["n_people"] == 30 and hub["n_records"] == 31 and hub["n_channels"] == 2
    assert hub["reason"] == "hub: 30 distinct people"
    assert hub["value_token"] == keyed_token(pl.Series([members["phone_sha256"][0]]))[0]
    text = str(links.hub_values.rows()) + str(links.edges.rows()) + str(links.guarded)
    assert store_phone not in text and members["phone_sha256"][0] not in text
    assert links.guarded["hub_records"] == 31


def test_family_phone_keeps_people_apart_but_dads_card_joins_dad() -> None:
    family_phone = "13600002222"
    dad_card = id_card("11010119750315001")
    members = members_frame(
        [
            {
                "channel": "pos",
                "member_id": "dad",
                "phone": family_phone,
                "name": "王建国",
                "birth_date": dt.date(1975, 3, 15),
            },
            {
                "channel": "pos",
                "member_id": "mom",
                "phone": family_phone,
                "name": "刘芳",
                "birth_date": dt.date(1978, 6, 1),
            },
            {
                "channel": "app",
                "member_id": "kid",
                "phone": family_phone,
                "name": "王小明",
                "birth_date": dt.date(2008, 9, 9),
            },
            {"channel": "crm", "member_id": "c9", "phone": family_phone, "id_card": dad_card},
            # a hashed-only record of the family phone: whose is it? nobody can say
            {"channel": "tmall", "member_id": "t1", "phone": family_phone},
        ]
    )
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert comp["crm:c9"] == comp["pos:dad"]
    assert len({comp["pos:dad"], comp["pos:mom"], comp["app:kid"]}) == 3
    assert comp["tmall:t1"] not in {comp["pos:dad"], comp["pos:mom"], comp["app:kid"]}
    assert links.hub_values.is_empty()
    assert links.guarded["ambiguous_unlinked"] == 1


def test_family_without_any_card_is_not_merged() -> None:
    members = members_frame(
        [
            {
                "channel": "pos",
                "member_id": "a",
                "phone": "13600003333",
                "name": "王建国",
                "birth_date": dt.date(1975, 3, 15),
            },
            {
                "channel": "pos",
                "member_id": "b",
                "phone": "13600003333",
                "name": "刘芳",
                "birth_date": dt.date(1978, 6, 1),
            },
            {
                "channel": "app",
                "member_id": "c",
                "phone": "13600003333",
                "name": "王小明",
                "birth_date": dt.date(2008, 9, 9),
            },
            {
                "channel": "app",
                "member_id": "d",
                "phone": "13600003333",
                "name": "刘芳",
                "birth_date": dt.date(1978, 6, 1),
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.select("left", "right").rows() == [(1, 3)]  # pos:b ~ app:d... by idx
    comp = components(members, links.edges)
    assert comp["pos:b"] == comp["app:d"]
    assert len({comp["pos:a"], comp["pos:b"], comp["app:c"]}) == 3


def test_blocked_test_number_links_nobody_and_is_listed() -> None:
    members = members_frame(
        [
            {"channel": "pos", "member_id": "p1", "phone": "13800138000", "name": "张三"},
            {"channel": "app", "member_id": "a1", "phone": "13800138000", "name": "张三"},
            {"channel": "tmall", "member_id": "t1", "phone": "13800138000"},
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.is_empty()
    assert links.hub_values.select("key_type", "reason", "n_records").rows() == [
        ("phone", "blocked value", 3)
    ]
    assert "13800138000" not in str(links.hub_values.rows())


def test_blocked_value_given_as_hash_is_honoured() -> None:
    phone_hash = sha256_hex(pl.Series(["13912340000"]))[0]
    members = members_frame(
        [
            {"channel": "pos", "member_id": "p1", "phone": "13912340000"},
            {"channel": "tmall", "member_id": "t1", "phone_sha256": phone_hash},
        ]
    )
    links = deterministic_links(members, MatchSettings(blocked_values=(phone_hash,)))
    assert links.edges.is_empty()


def test_two_id_cards_on_one_unionid_are_not_linked() -> None:
    members = members_frame(
        [
            {
                "channel": "app",
                "member_id": "a",
                "unionid": "oU1",
                "id_card": id_card("31010119800101001"),
            },
            {
                "channel": "mini",
                "member_id": "m",
                "unionid": "oU1",
                "id_card": id_card("31010119900101002"),
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.is_empty()


def test_a_chain_never_puts_two_id_cards_in_one_component() -> None:
    card_x = id_card("44030119850101001")
    card_y = id_card("44030119860202002")
    members = members_frame(
        [
            # x holds card X and shares a phone with the bridge record
            {"channel": "pos", "member_id": "x", "phone": "13711112222", "id_card": card_x},
            # the bridge has no strong evidence; it shares the phone with x, an e-mail with y
            {"channel": "app", "member_id": "bridge", "phone": "13711112222", "email": "a@b.cn"},
            {"channel": "crm", "member_id": "y", "email": "a@b.cn", "id_card": card_y},
            # an unrelated pair on the same e-mail rule still links
            {"channel": "app", "member_id": "p", "email": "p@q.cn"},
            {"channel": "crm", "member_id": "q", "email": "p@q.cn"},
        ]
    )
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert comp["pos:x"] != comp["crm:y"]
    # the stronger rule (phone) keeps its link; the weaker (email) is cut
    assert comp["pos:x"] == comp["app:bridge"]
    assert comp["app:p"] == comp["crm:q"]
    assert links.guarded["id_card_conflict_cut"] >= 1
    cards = members.with_columns(
        pl.Series("component", component_labels(members.height, links.edges))
    )
    per_component = cards.group_by("component").agg(pl.col("id_card").drop_nulls().n_unique())
    assert per_component["id_card"].max() <= 1


def test_same_id_card_links_across_channels_and_rules_keep_strongest() -> None:
    card = id_card("11010119700101001")
    members = members_frame(
        [
            {"channel": "pos", "member_id": "p1", "id_card": card, "email": "z@x.cn"},
            {"channel": "crm", "member_id": "c1", "id_card": card, "email": "z@x.cn"},
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.select("left", "right", "rule").rows() == [(0, 1, "email")]


def test_unknown_rule_is_a_config_error() -> None:
    from tasks.errors import ConfigError

    members = members_frame([{"channel": "pos", "member_id": "p1"}])
    with pytest.raises(ConfigError, match="unknown rule 'wechat'"):
        deterministic_links(members, MatchSettings(rules=("phone", "wechat")))


def test_random_crowded_identifiers_never_link_contradicting_records() -> None:
    """Few phones, e-mails and cards shared at random: the guards' invariants must hold."""
    import random

    rng = random.Random(11)
    cards = [id_card(f"3201021980{m:02d}{d:02d}00{d % 10}") for m, d in [(1, 2), (3, 4), (5, 6)]]
    names = ["王伟", "李娜", "张敏", "刘洋"]
    rows = []
    for i in range(120):
        rows.append(
            {
                "channel": rng.choice(["pos", "app", "tmall"]),
                "member_id": f"m{i:03d}",
                "phone": rng.choice([None, "13911110001", "13911110002", "13911110003"]),
                "email": rng.choice([None, None, "a@x.cn", "b@x.cn"]),
                "id_card": rng.choice([None, None, None, *cards]),
                "name": rng.choice([None, *names]),
                "birth_date": rng.choice([None, dt.date(1980, 1, 2), dt.date(1990, 3, 4)]),
            }
        )
    members = members_frame(rows)
    links = deterministic_links(members, MatchSettings(hub_max_people=8))
    assert links.edges.height > 0
    ends = members.select("record_idx", "id_card", "name", "birth_date")
    pairs = links.edges.join(ends, left_on="left", right_on="record_idx").join(
        ends, left_on="right", right_on="record_idx", suffix="_r"
    )
    contradicting = pairs.filter(
        (pl.col("id_card") != pl.col("id_card_r"))
        | ((pl.col("name") != pl.col("name_r")) & (pl.col("birth_date") != pl.col("birth_date_r")))
    )
    assert contradicting.is_empty()
    labelled = members.with_columns(
        pl.Series("component", component_labels(members.height, links.edges))
    )
    per_component = labelled.group_by("component").agg(pl.col("id_card").drop_nulls().n_unique())
    assert per_component["id_card"].max() <= 1


# --- weak evidence: masked names, nicknames, gender, stated birth dates -------------------


def hashed(phone: str) -> str:
    return sha256_hex(pl.Series([phone]))[0]


def test_family_phone_seen_only_on_hashed_records_with_different_surnames_is_not_merged() -> None:
    family = hashed("13611112222")
    members = members_frame(
        [
            {
                "channel": "tmall",
                "member_id": "t1",
                "phone_sha256": family,
                "name": "张**",
                "name_kind": "masked",
                "surname": "张",
            },
            {
                "channel": "jd",
                "member_id": "j1",
                "phone_sha256": family,
                "name": "李*明",
                "name_kind": "masked",
                "surname": "李",
            },
            # a nickname says nothing: it could be either of them, so it joins neither
            {
                "channel": "tmall",
                "member_id": "t2",
                "phone_sha256": family,
                "name": "tb12345",
                "name_kind": "other",
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.is_empty()
    assert links.guarded["ambiguous_unlinked"] == 1
    assert links.hub_values.is_empty()


def test_same_masked_surname_and_no_conflict_is_merged() -> None:
    phone = "13611113333"
    members = members_frame(
        [
            {
                "channel": "pos",
                "member_id": "p1",
                "phone": phone,
                "name": "张建伟",
                "surname": "张",
                "gender": "M",
                "birth_date": dt.date(1980, 1, 2),
            },
            {
                "channel": "tmall",
                "member_id": "t1",
                "phone_sha256": hashed(phone),
                "name": "张**",
                "name_kind": "masked",
                "surname": "张",
            },
            {
                "channel": "jd",
                "member_id": "j1",
                "phone_sha256": hashed(phone),
                "name": "张*伟",
                "name_kind": "masked",
                "surname": "张",
            },
            {
                "channel": "wechat",
                "member_id": "w1",
                "phone": phone,
                "gender": "M",
                "name": "小猫咪",
                "surname": "小",
            },  # a nickname, not the surname 小
        ]
    )
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert len(set(comp.values())) == 1
    assert set(links.edges["rule"]) == {"phone"}


def test_masked_names_tell_a_family_apart_around_one_card() -> None:
    """Dad's card and his masked record join; mom's masked records form their own person;
    the mask that shows a different last character (张*明) is a third person."""
    phone = "13611114444"
    dad_card = id_card("11010119750315001")
    rows = [
        {
            "channel": "pos",
            "member_id": "dad",
            "phone": phone,
            "id_card": dad_card,
            "name": "张建国",
            "surname": "张",
        },
        {
            "channel": "jd",
            "member_id": "dad_jd",
            "phone_sha256": hashed(phone),
            "name": "张*国",
            "name_kind": "masked",
            "surname": "张",
        },
        {
            "channel": "tmall",
            "member_id": "mom_tm",
            "phone_sha256": hashed(phone),
            "name": "刘*",
            "name_kind": "masked",
            "surname": "刘",
        },
        {
            "channel": "jd",
            "member_id": "mom_jd",
            "phone_sha256": hashed(phone),
            "name": "刘*",
            "name_kind": "masked",
            "surname": "刘",
        },
        {
            "channel": "jd",
            "member_id": "kid_jd",
            "phone_sha256": hashed(phone),
            "name": "张*明",
            "name_kind": "masked",
            "surname": "张",
        },
        # a woman with no name: dad's card says male, but she may be mom or 张*明
        {"channel": "wechat", "member_id": "wx", "phone": phone, "gender": "F"},
    ]
    members = members_frame(rows)
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert comp["pos:dad"] == comp["jd:dad_jd"]
    assert comp["tmall:mom_tm"] == comp["jd:mom_jd"]
    assert comp["pos:dad"] != comp["tmall:mom_tm"]
    assert comp["jd:kid_jd"] not in {comp["pos:dad"], comp["tmall:mom_tm"]}
    assert comp["wechat:wx"] not in {comp["pos:dad"], comp["tmall:mom_tm"], comp["jd:kid_jd"]}
    # without 张*明 the woman fits only mom
    members = members_frame([row for row in rows if row["member_id"] != "kid_jd"])
    comp = components(members, deterministic_links(members, MatchSettings()).edges)
    assert comp["tmall:mom_tm"] == comp["jd:mom_jd"] == comp["wechat:wx"] != comp["pos:dad"]


def test_a_surname_that_fits_two_people_links_neither() -> None:
    """张** could be 张*伟 or 张*明: the value shows two people and 张** is ambiguous."""
    value = hashed("13611115555")
    members = members_frame(
        [
            {
                "channel": "tmall",
                "member_id": "t1",
                "phone_sha256": value,
                "name": "张**",
                "name_kind": "masked",
                "surname": "张",
            },
            {
                "channel": "jd",
                "member_id": "j1",
                "phone_sha256": value,
                "name": "张*伟",
                "name_kind": "masked",
                "surname": "张",
            },
            {
                "channel": "jd",
                "member_id": "j2",
                "phone_sha256": value,
                "name": "张*明",
                "name_kind": "masked",
                "surname": "张",
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    assert links.edges.is_empty()


def test_gender_and_stated_birth_dates_separate_records_without_names() -> None:
    members = members_frame(
        [
            {"channel": "wechat", "member_id": "w1", "phone": "13611116666", "gender": "M"},
            {"channel": "app", "member_id": "a1", "phone": "13611116666", "gender": "F"},
            {
                "channel": "app",
                "member_id": "b1",
                "email": "x@y.cn",
                "birth_date": dt.date(1980, 3, 12),
            },
            {
                "channel": "crm",
                "member_id": "b2",
                "email": "x@y.cn",
                "birth_date": dt.date(1991, 7, 30),
            },
            # the same date typed day first is one person
            {
                "channel": "app",
                "member_id": "c1",
                "unionid": "oU9",
                "birth_date": dt.date(1985, 3, 12),
            },
            {
                "channel": "wechat",
                "member_id": "c2",
                "unionid": "oU9",
                "birth_date": dt.date(1985, 12, 3),
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert comp["wechat:w1"] != comp["app:a1"]
    assert comp["app:b1"] != comp["crm:b2"]
    assert comp["app:c1"] == comp["wechat:c2"]


def test_names_compare_by_sound_and_pinyin_in_either_order() -> None:
    phone = "13611117777"
    members = members_frame(
        [
            {
                "channel": "pos",
                "member_id": "p1",
                "phone": phone,
                "name": "林秀英",
                "surname": "林",
                "birth_date": dt.date(1990, 5, 6),
            },
            # a homophone typo of the same name and birth date: the same person
            {
                "channel": "app",
                "member_id": "a1",
                "phone": phone,
                "name": "林秀莹",
                "surname": "林",
                "birth_date": dt.date(1990, 5, 6),
            },
            {
                "channel": "wechat",
                "member_id": "w1",
                "phone": phone,
                "name": "xiuying lin",
                "name_kind": "pinyin",
            },
            # another name in pinyin is another person; a Latin nickname says nothing
            {
                "channel": "wechat",
                "member_id": "w2",
                "phone": phone,
                "name": "li na",
                "name_kind": "pinyin",
            },
            {
                "channel": "tmall",
                "member_id": "t1",
                "phone": phone,
                "name": "coco",
                "name_kind": "pinyin",
            },
        ]
    )
    links = deterministic_links(members, MatchSettings())
    comp = components(members, links.edges)
    assert comp["pos:p1"] == comp["app:a1"] == comp["wechat:w1"]
    assert comp["wechat:w2"] != comp["pos:p1"]
    # two people on the value: the nickname could be either
    assert comp["tmall:t1"] not in {comp["pos:p1"], comp["wechat:w2"]}


def test_a_value_on_more_records_than_anyone_holds_is_a_hub() -> None:
    rows = [
        {"channel": "tmall", "member_id": f"t{i:02d}", "phone_sha256": hashed("13611118888")}
        for i in range(12)
    ]
    members = members_frame(rows)
    links = deterministic_links(members, MatchSettings(hub_max_records=10))
    assert links.edges.is_empty()
    assert links.hub_values.select("n_records", "reason").rows() == [(12, "hub: 12 records")]
    assert deterministic_links(members, MatchSettings()).edges.height == 11


def test_refused_keys_name_hub_and_blocked_records_and_hold_no_value() -> None:
    """Linkage reads refused identifiers as missing, so it needs to know which records'
    identifiers were refused, per rule, and nothing of the values themselves."""
    store, test_number, family = "13700001111", "13800138000", "13600002222"
    rows = [
        {
            "channel": "pos",
            "member_id": f"s{i}",
            "phone": store,
            "name": name,
            "birth_date": dt.date(1970 + i, 1 + i, 1 + i),
            "email": "shop@brand.cn",
        }
        for i, name in enumerate(["赵敏", "钱多多", "孙悦", "周星", "吴刚", "郑爽"])
    ]
    rows += [
        {"channel": "app", "member_id": "t1", "phone": test_number, "name": "张三"},
        {
            "channel": "pos",
            "member_id": "f1",
            "phone": family,
            "name": "王建国",
            "birth_date": dt.date(1975, 3, 15),
        },
        {
            "channel": "app",
            "member_id": "f2",
            "phone": family,
            "name": "王建国",
            "birth_date": dt.date(1975, 3, 15),
        },
    ]
    members = members_frame(rows)
    links = deterministic_links(members, MatchSettings())
    refused = links.refused_keys
    assert refused.schema == {"record_idx": pl.UInt32, "key_type": pl.Utf8}
    ids = dict(zip(members["member_id"], members["record_idx"], strict=True))
    shop = sorted(ids[f"s{i}"] for i in range(6))
    assert refused.filter(pl.col("key_type") == "phone")["record_idx"].to_list() == sorted(
        [*shop, ids["t1"]]
    )
    assert refused.filter(pl.col("key_type") == "email")["record_idx"].to_list() == shop
    # the family's phone linked its one person: not refused
    assert ids["f1"] not in refused["record_idx"].to_list()
    assert links.edges.select("left", "right").rows() == [tuple(sorted((ids["f1"], ids["f2"])))]
    assert set(links.hub_values["reason"]) == {"blocked value", "hub: 6 distinct people"}
    assert store not in repr(links) and members["phone_sha256"][0] not in repr(links)
