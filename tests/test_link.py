"""Probabilistic linkage: comparison levels, TF adjustment, EM accuracy, guards, decisions."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks import comparisons as cmp
from tasks import link
from tasks.graph import component_labels
from tasks.match import deterministic_links
from tasks.privacy import sha256_hex
from tasks.schema import MEMBER_SCHEMA
from tasks.settings import LinkSettings, MatchSettings

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_generated.py"


def _bench_generated():
    spec = importlib.util.spec_from_file_location("bench_generated", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_generated"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def members_frame(rows: list[dict]) -> pl.DataFrame:
    """A members frame (MEMBER_SCHEMA + record_idx) from a few hand-written rows."""
    frame = pl.DataFrame(
        rows,
        schema={k: v for k, v in MEMBER_SCHEMA.items() if k in {c for r in rows for c in r}},
        strict=False,
    )
    frame = frame.select(
        [
            pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
            for c, t in MEMBER_SCHEMA.items()
        ]
    )
    frame = frame.with_columns(
        pl.coalesce("phone_sha256", sha256_hex(frame["phone"])).alias("phone_sha256"),
        pl.col("member_id").fill_null(pl.int_range(pl.len()).cast(pl.Utf8)),
        pl.col("channel").fill_null("pos"),
        pl.col("trust").fill_null(1),
    )
    return frame.with_row_index("record_idx").with_columns(pl.col("record_idx").cast(pl.UInt32))


def levels_of(rows: list[dict]) -> dict[str, str]:
    """Level labels of the pair (row 0, row 1), per field."""
    records = cmp.member_keys(members_frame(rows))
    pairs = pl.DataFrame(
        {"left": [0], "right": [1]}, schema={"left": pl.UInt32, "right": pl.UInt32}
    )
    vectors = link.comparison_vectors(records, pairs, cmp.MEMBER_COMPARISONS)
    return {c.field: c.labels[vectors[c.field][0]] for c in cmp.MEMBER_COMPARISONS}


# ------------------------------------------------------------ comparison levels


def test_hanzi_and_pinyin_names_agree_in_pinyin():
    levels = levels_of(
        [
            {"name": "张伟", "name_kind": "hanzi", "surname": "张"},
            {"name": "Zhang Wei", "name_kind": "pinyin"},
        ]
    )
    assert levels["name"] == "same pinyin"


def test_western_order_pinyin_agrees_with_hanzi():
    levels = levels_of(
        [
            {"name": "李娜", "name_kind": "hanzi", "surname": "李"},
            {"name": "Na Li", "name_kind": "pinyin"},
        ]
    )
    assert levels["name"] == "same pinyin"


def _blocked_by(rows: list[dict]) -> list[str]:
    """The blocking rule that pairs row 0 and row 1, if any."""
    records = cmp.member_keys(members_frame(rows))
    pairs, _ = link.candidate_pairs(records, link.MEMBER_BLOCKING_RULES, max_block_size=50)
    return pairs.filter((pl.col("left") == 0) & (pl.col("right") == 1))["blocked_by"].to_list()


def test_pinyin_words_split_into_syllables():
    assert cmp.split_syllables("jiande") == ["jian", "de"]
    assert cmp.split_syllables("ouyangxiuyuan") == ["ou", "yang", "xiu", "yuan"]
    # pinyin writes xi'an: a vowel-initial syllable inside a word is the worse split
    assert cmp.split_syllables("fangan") == ["fan", "gan"]
    assert cmp.split_syllables("coco") == ["coco"]  # not pinyin: left whole
    assert cmp.pinyin_syllables(pl.Series(["Jiande JIANG", None])).to_list() == [
        ["jian", "de", "jiang"],
        None,
    ]


def test_given_name_first_pinyin_in_one_word_meets_hanzi():
    """`jiande jiang` is 蒋建德 written given name first, the given name as one word:
    neither the pinyin key nor the word order matches, the syllables do."""
    born = {"birth_date": date(1985, 7, 9), "city": "杭州"}
    rows = [
        {"name": "蒋建德", "name_kind": "hanzi", "surname": "蒋", **born},
        {"name": "jiande jiang", "name_kind": "pinyin", **born},
    ]
    assert levels_of(rows)["name"] == "same pinyin"
    assert "name syllables + birth_date" in _blocked_by(rows)
    other = [rows[0], {"name": "jianguo jiang", "name_kind": "pinyin", **born}]
    assert levels_of(other)["name"] != "same pinyin"


def test_multi_reading_character_agrees_by_any_reading():
    """率 reads lv (pypinyin's choice) or shuai: 韩睿率 and its homophone typo 韩睿帅, or its
    Latin spelling Han Ruishuai, are the same sound."""
    city = {"city": "长沙"}
    rows = [
        {"name": "韩睿率", "name_kind": "hanzi", "surname": "韩", **city},
        {"name": "韩睿帅", "name_kind": "hanzi", "surname": "韩", **city},
    ]
    assert cmp.readings_of(pl.Series(["韩睿率"])).to_list() == [
        ["hanruilv", "hanruishuai", "hanruilve"]
    ]
    assert levels_of(rows)["name"] == "same pinyin"
    assert "name pinyin + city" in _blocked_by(rows)
    latin = [rows[0], {"name": "Han Ruishuai", "name_kind": "pinyin", **city}]
    assert levels_of(latin)["name"] == "same pinyin"
    # a surname keeps its surname reading: 王 is never read yu, so 王娜 is not 于娜
    wang = {"name": "王娜", "name_kind": "hanzi", "surname": "王", **city}
    assert levels_of([wang, {**wang, "name": "于娜", "surname": "于"}])["name"] != "same pinyin"
    # a character with one reading gains nothing: 韩睿明 is another name
    assert levels_of([rows[0], {**rows[1], "name": "韩睿明"}])["name"] != "same pinyin"
    assert "name pinyin + city" not in _blocked_by([rows[0], {**rows[1], "name": "韩睿明"}])


def test_masked_name_agrees_on_surname_only():
    assert (
        levels_of(
            [
                {"name": "张**", "name_kind": "masked", "surname": "张"},
                {"name": "张伟", "name_kind": "hanzi", "surname": "张"},
            ]
        )["name"]
        == "surname only (masked)"
    )
    assert (
        levels_of(
            [
                {"name": "张**", "name_kind": "masked", "surname": "张"},
                {"name": "王伟", "name_kind": "hanzi", "surname": "王"},
            ]
        )["name"]
        == "else"
    )


def test_city_in_hanzi_and_pinyin_agrees():
    assert levels_of([{"city": "宁波"}, {"city": "Ningbo"}])["city"] == "exact"
    assert levels_of([{"city": "重庆"}, {"city": "chongqing"}])["city"] == "exact"
    assert levels_of([{"city": "宁波"}, {"city": "Nanjing"}])["city"] == "else"


def test_different_hanzi_names_disagree():
    levels = levels_of(
        [
            {"name": "张伟", "name_kind": "hanzi", "surname": "张"},
            {"name": "刘洋", "name_kind": "hanzi", "surname": "刘"},
        ]
    )
    assert levels["name"] == "else"


def test_swapped_day_and_month():
    levels = levels_of([{"birth_date": date(1990, 3, 12)}, {"birth_date": date(1990, 12, 3)}])
    assert levels["birth_date"] == "day/month swapped"
    assert (
        levels_of([{"birth_date": date(1990, 3, 12)}, {"birth_date": date(1990, 3, 13)}])[
            "birth_date"
        ]
        == "near"
    )
    assert (
        levels_of([{"birth_date": date(1990, 3, 12)}, {"birth_date": date(1975, 8, 1)}])[
            "birth_date"
        ]
        == "else"
    )


def test_one_digit_phone_typo_and_hash_only_records():
    assert (
        levels_of([{"phone": "13812345678"}, {"phone": "13812345679"}])["phone"] == "one digit off"
    )
    assert (
        levels_of([{"phone": "13812345678"}, {"phone": "13812345768"}])["phone"] == "one digit off"
    )
    assert levels_of([{"phone": "13812345678"}, {"phone": "13998765432"}])["phone"] == "else"
    hashed = sha256_hex(pl.Series(["13812345678"]))[0]
    assert levels_of([{"phone": "13812345678"}, {"phone_sha256": hashed}])["phone"] == "exact"
    far = sha256_hex(pl.Series(["13812345699"]))[0]
    # Two digits off against a hash: nothing to see.
    assert levels_of([{"phone": "13812345678"}, {"phone_sha256": far}])["phone"] == "else"


def test_phone_one_edit_numbers_are_valid_mobiles_one_edit_away():
    variants = cmp.phone_one_edit_numbers(pl.Series(["13812345678", "12345", None]))
    assert set(variants["phone"]) == {"13812345678"}  # not a mobile, null: no variants
    # substitutions: none at 1, six at 3 (3-9), 9 x 9 after; transpositions: 3<->8 and
    # eight more (31... is no mobile)
    assert variants.height == variants["variant"].n_unique() == 6 + 81 + 1 + 8
    assert variants["variant"].str.contains(cmp.MAINLAND_MOBILE).all()
    assert {"13812345679", "13812345768", "18312345678"} <= set(variants["variant"])
    assert "13812345678" not in set(variants["variant"])


@pytest.mark.parametrize("typed", ["13812345679", "13812345768", "19812345678"])
def test_one_digit_typo_against_a_hash_only_record(typed):
    """Tmall/JD give only the hash: the raw number's one-edit variants are hashed and
    looked up, on either side of the pair, and a block pairs the two records."""
    hashed = sha256_hex(pl.Series(["13812345678"]))[0]
    rows = [{"phone": typed, "channel": "pos"}, {"phone_sha256": hashed, "channel": "tmall"}]
    assert levels_of(rows)["phone"] == "one digit off"
    assert levels_of(rows[::-1])["phone"] == "one digit off"
    assert "phone one edit (hashed)" in _blocked_by(rows)


def test_typo_hashes_only_for_hashes_a_hash_only_record_holds():
    """A raw record's own hash is no target: raw numbers compare by digits already."""
    records = cmp.member_keys(members_frame([{"phone": "13812345678"}, {"phone": "13812345679"}]))
    assert records["phone_typo_sha256"].null_count() == 2
    assert _blocked_by([{"phone": "13812345678"}, {"phone": "13812345679"}]) == ["phone one edit"]


def test_refused_phone_blanks_its_typo_hashes():
    hashed = sha256_hex(pl.Series(["13812345678"]))[0]
    rows = [{"phone": "13812345679"}, {"phone_sha256": hashed, "channel": "jd"}]
    records = cmp.member_keys(members_frame(rows))
    assert records["phone_typo_sha256"][0].to_list() == [hashed]
    refused = pl.DataFrame(
        {"record_idx": [0], "key_type": ["phone"]},
        schema={"record_idx": pl.UInt32, "key_type": pl.Utf8},
    )
    blanked = link.without_refused_keys(records, refused)
    assert blanked["phone_typo_sha256"][0] is None
    pairs = pl.DataFrame(
        {"left": [0], "right": [1]}, schema={"left": pl.UInt32, "right": pl.UInt32}
    )
    vectors = link.comparison_vectors(blanked, pairs, cmp.MEMBER_COMPARISONS)
    assert cmp.PHONE.labels[vectors["phone"][0]] == "null"


def test_typo_hashes_are_chunked_without_changing_the_result():
    phones = pl.Series(["13812345679", "13912345678", None, "13812345679", "15000000000"])
    targets = sha256_hex(pl.Series(["13812345678", "13912345679"]))
    whole = cmp.phone_typo_hashes(phones, targets)
    assert cmp.phone_typo_hashes(phones, targets, chunk=1).equals(whole)
    assert whole.list.len().to_list() == [2, 2, None, 2, None]  # each one edit from both
    assert cmp.phone_typo_hashes(phones, targets.clear()).null_count() == phones.len()


def test_id_card_and_gender_conflicts():
    levels = levels_of(
        [
            {"id_card": "11010519491231002X", "gender": "F"},
            {"id_card": "110105194912310037", "gender": "M"},
        ]
    )
    assert levels["id_card"] == "conflict"
    assert levels["gender"] == "conflict"


def test_null_when_a_side_lacks_the_field():
    levels = levels_of([{"email": "a@qq.com", "city": "上海"}, {"city": None}])
    assert levels["email"] == "null"
    assert levels["city"] == "null"


# ------------------------------------------------------ term-frequency adjustment


def test_common_name_weighs_less_than_rare_name():
    rows = [{"name": "王伟", "name_kind": "hanzi", "surname": "王"} for _ in range(40)]
    rows += [{"name": "欧阳修远", "name_kind": "hanzi", "surname": "欧"} for _ in range(2)]
    rows += [
        {"name": f"李{c}", "name_kind": "hanzi", "surname": "李"} for c in "一二三四五六七八九十"
    ]
    records = cmp.member_keys(members_frame(rows))
    pairs = pl.DataFrame(
        {"left": [0, 40], "right": [1, 41]}, schema={"left": pl.UInt32, "right": pl.UInt32}
    )
    vectors = link.comparison_vectors(records, pairs, cmp.MEMBER_COMPARISONS)
    assert vectors["name"].to_list() == [cmp.NAME.code("exact")] * 2
    model = link.fit_model(vectors.head(0), cmp.MEMBER_COMPARISONS)  # priors
    scored = link.score_pairs(records, vectors, model, cmp.MEMBER_COMPARISONS)
    common, rare = scored["name_tf"].to_list()
    assert common < rare
    assert scored["match_weight"][0] < scored["match_weight"][1]


# ------------------------------------------------------------ EM on known truth


@pytest.fixture(scope="module")
def synthetic():
    bench = _bench_generated()
    members, truth = bench.synthetic_members(600, seed=3)
    return members, truth, bench.simple_deterministic(members)


def test_em_links_true_duplicates_and_not_strangers(synthetic):
    members, truth, det = synthetic
    result = link.probabilistic_links(members, det, LinkSettings())
    assert result.model.status.startswith("em")
    assert 0 < result.model.lambda_ < 0.01
    edges = result.edges
    assert edges.height > 10
    correct = truth[edges["left"].to_numpy()] == truth[edges["right"].to_numpy()]
    assert correct.mean() >= 0.97  # precision of the new links

    def recall(edge_frame: pl.DataFrame) -> float:
        labels = component_labels(members.height, edge_frame)
        frame = pl.DataFrame({"c": labels, "t": truth})
        pairs = (
            frame.group_by("c", "t").len().select((pl.col("len") * (pl.col("len") - 1) // 2).sum())
        )
        true = frame.group_by("t").len().select((pl.col("len") * (pl.col("len") - 1) // 2).sum())
        return pairs.item() / true.item()

    before = recall(det)
    after = recall(
        pl.concat([det.select("left", "right").cast(pl.UInt32), edges.select("left", "right")])
    )
    assert after > before + 0.02
    # m > u on every agreement level the model kept from EM
    agree = result.model.levels.filter((pl.col("label") == "exact") & (pl.col("field") != "phone"))
    assert (agree["m"] > agree["u"]).all()


def test_edges_follow_the_edge_contract(synthetic):
    members, _, det = synthetic
    edges = link.probabilistic_links(members, det, LinkSettings()).edges
    assert edges.schema == link.EDGE_SCHEMA
    assert (edges["left"] < edges["right"]).all()
    assert set(edges["rule"]) <= {"probabilistic", "review_accepted"}
    assert (edges["score"] >= LinkSettings().match_threshold).all()
    assert edges["weights"].str.json_decode().struct.fields  # per-field weights as JSON
    labels = component_labels(members.height, det)
    assert (labels[edges["left"].to_numpy()] != labels[edges["right"].to_numpy()]).all()


# ----------------------------------------------------------------- guards


def _twin_rows(id_left: str | None, id_right: str | None) -> list[dict]:
    person = {
        "name": "欧阳修远",
        "name_kind": "hanzi",
        "surname": "欧",
        "gender": "M",
        "birth_date": date(1949, 12, 31),
        "city": "北京",
    }
    return [
        {**person, "channel": "pos", "member_id": "a", "phone": "13812345678", "id_card": id_left},
        {**person, "channel": "app", "member_id": "b", "phone": "13812345679", "id_card": id_right},
    ]


def _with_background(synthetic, rows: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    members, _, det = synthetic
    extra = members_frame(rows).drop("record_idx")
    extra = extra.with_columns(pl.col("member_id") + "-hand")
    combined = (
        pl.concat([members.drop("record_idx"), extra])
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )
    return combined, det, members.height


def test_twins_are_linked_without_id_cards(synthetic):
    combined, det, first = _with_background(synthetic, _twin_rows(None, None))
    edges = link.probabilistic_links(combined, det, LinkSettings()).edges
    assert edges.filter((pl.col("left") == first) & (pl.col("right") == first + 1)).height == 1


def test_conflicting_id_cards_are_never_linked(synthetic):
    combined, det, first = _with_background(
        synthetic, _twin_rows("11010519491231002X", "110105194912310037")
    )
    result = link.probabilistic_links(combined, det, LinkSettings(review_threshold=0.01))
    pair = (pl.col("left") == first) & (pl.col("right") == first + 1)
    assert result.edges.filter(pair).height == 0
    assert (
        result.review_queue.filter(
            (pl.col("left_member_id") == "a-hand") | (pl.col("right_member_id") == "a-hand")
        ).height
        == 0
    )


# ------------------------------------------------- refused identifiers (hubs)

STORE_PHONE = "13700001111"


def _store_phone_rows() -> list[dict]:
    """Eight walk-in customers a clerk gave the store's phone (a hub), and on it:
    y1/y2 one person (same name and birth date, nothing else shared), x-store/x-own
    one person whose own number another channel holds, w1/w2 two different 王伟."""
    walk_ins = [
        {
            "channel": "pos",
            "member_id": f"walk-in-{i}",
            "name": name,
            "name_kind": "hanzi",
            "surname": name[0],
            "birth_date": date(1960 + 3 * i, 1 + i, 2 + i),
            "gender": "MF"[i % 2],
            "city": "杭州",
            "phone": STORE_PHONE,
        }
        for i, name in enumerate(["赵敏", "钱多多", "孙悦", "周星", "吴刚", "郑爽", "冯巩", "陈红"])
    ]
    ouyang = {
        "name": "欧阳修远",
        "name_kind": "hanzi",
        "surname": "欧阳",
        "birth_date": date(1949, 12, 31),
        "gender": "M",
        "city": "杭州",
    }
    shangguan = {
        "name": "上官婉儿",
        "name_kind": "hanzi",
        "surname": "上官",
        "birth_date": date(1988, 6, 6),
    }
    wang = {"name": "王伟", "name_kind": "hanzi", "surname": "王", "gender": "M", "city": "杭州"}
    return [
        *walk_ins,
        {**shangguan, "channel": "pos", "member_id": "y1", "phone": STORE_PHONE},
        {**shangguan, "channel": "crm", "member_id": "y2", "phone": STORE_PHONE},
        {**ouyang, "channel": "pos", "member_id": "x-store", "phone": STORE_PHONE},
        {**ouyang, "channel": "app", "member_id": "x-own", "phone": "13912345678"},
        {
            **wang,
            "channel": "pos",
            "member_id": "w1",
            "phone": STORE_PHONE,
            "birth_date": date(1970, 3, 3),
        },
        {**wang, "channel": "app", "member_id": "w2", "phone": STORE_PHONE},
    ]


@pytest.fixture(scope="module")
def store_phone_members(synthetic):
    """The synthetic background plus `_store_phone_rows`, through real deterministic matching."""
    members, _, _ = synthetic
    extra = members_frame(_store_phone_rows()).drop("record_idx")
    combined = (
        pl.concat([members.drop("record_idx"), extra])
        .sort("channel", "member_id")
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )
    return combined, deterministic_links(combined, MatchSettings())


def _pair(members: pl.DataFrame, a: str, b: str) -> tuple[int, int]:
    idx = members.filter(pl.col("member_id").is_in([a, b]))["record_idx"].sort()
    assert idx.len() == 2
    return idx[0], idx[1]


def _linked(edges: pl.DataFrame, pair: tuple[int, int]) -> pl.DataFrame:
    return edges.filter((pl.col("left") == pair[0]) & (pl.col("right") == pair[1]))


def _queued(queue: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    return queue.filter(
        pl.col("left_member_id").is_in([a, b]) & pl.col("right_member_id").is_in([a, b])
    )


def test_store_phone_is_refused_deterministically_and_read_as_missing(store_phone_members):
    members, det = store_phone_members
    on_store = members.filter(pl.col("phone") == STORE_PHONE)["record_idx"]
    refused_phones = det.refused_keys.filter(pl.col("key_type") == "phone")["record_idx"]
    assert refused_phones.sort().to_list() == on_store.sort().to_list()
    assert det.hub_values.select("key_type", "n_records").rows() == [("phone", on_store.len())]

    result = link.probabilistic_links(
        members, det.edges, LinkSettings(), refused_keys=det.refused_keys
    )
    # one person, sharing only the store's phone: name + birth date link them
    same = _linked(result.edges, _pair(members, "y1", "y2"))
    assert same["rule"].to_list() == ["probabilistic"]
    assert same["weights"].str.json_decode()[0]["phone"] == 0.0  # no evidence either way
    # the store's phone against the person's own number: missing, not a disagreement
    own = _linked(result.edges, _pair(members, "x-store", "x-own"))
    assert own.height == 1 and own["weights"].str.json_decode()[0]["phone"] == 0.0
    # two people on the store's phone: not linked, not even worth a reviewer's look
    assert _linked(result.edges, _pair(members, "w1", "w2")).is_empty()
    assert _queued(result.review_queue, "w1", "w2").is_empty()
    walk_ins = members.filter(pl.col("member_id").str.starts_with("walk-in"))["record_idx"]
    touching = result.edges.filter(
        pl.col("left").is_in(walk_ins.implode()) | pl.col("right").is_in(walk_ins.implode())
    )
    assert touching.is_empty()


def test_store_phone_compared_as_a_value_would_queue_two_strangers(store_phone_members):
    """The behaviour before refused identifiers were blanked: the shared hub reads as a
    phone agreement and lifts two different 王伟 into the review queue."""
    members, det = store_phone_members
    result = link.probabilistic_links(members, det.edges, LinkSettings())
    queued = _queued(result.review_queue, "w1", "w2")
    assert queued["phone_level"].to_list() == ["exact"]


def test_refused_phone_costs_no_disagreement_weight(store_phone_members):
    """With one fixed model, a refused phone moves the pair from the phone's 'else' level
    to its null level: the match weight rises by exactly -weight(else), which lifts a
    name + birth date match over the threshold that the disagreement kept it under."""
    members, det = store_phone_members
    records = cmp.member_keys(members)
    pair = pl.DataFrame(
        [_pair(members, "x-store", "x-own")], schema=["left", "right"], orient="row"
    ).cast(pl.UInt32)
    levels = link.comparison_vectors(records, pair, cmp.MEMBER_COMPARISONS)
    priors = link.fit_model(levels.head(0), cmp.MEMBER_COMPARISONS)
    weights = priors.weight_table(cmp.MEMBER_COMPARISONS)
    phone_else = weights["phone"][cmp.PHONE.code("else")]
    assert phone_else < 0
    # the rest of the pair's evidence, then a prior that leaves it half the phone's
    # disagreement above the 0.95 threshold (log2 19 = 4.25 bits)
    evidence = sum(
        weights[c.field][levels[c.field][0]] for c in cmp.MEMBER_COMPARISONS if c.field != "phone"
    )
    odds = 2.0 ** (np.log2(19) - phone_else / 2 - evidence)
    settings = LinkSettings(tf_adjustment=False)

    def scored(refused: pl.DataFrame | None) -> link.ProbabilisticLinks:
        model = link.LinkModel(priors.levels, odds / (1 + odds), "test")
        return link.probabilistic_links(
            members, det.edges, settings, previous_model=model, refused_keys=refused
        )

    blanked = scored(det.refused_keys)
    compared = scored(None)
    assert _linked(blanked.edges, pair.row(0)).height == 1
    assert _linked(compared.edges, pair.row(0)).is_empty()
    queued = _queued(compared.review_queue, "x-store", "x-own")
    assert queued["phone_level"].to_list() == ["else"]
    assert queued["left_refused"].to_list() == [None] and queued["right_refused"].is_null().all()


# -------------------------------------------------------------- decisions


def test_decisions_accept_and_reject_are_honoured(synthetic):
    rows = [
        *_twin_rows(None, None),
        {
            "channel": "wechat",
            "member_id": "c",
            "name": "阳光",
            "name_kind": "other",
            "city": "上海",
        },
        {
            "channel": "tmall",
            "member_id": "d",
            "name": "刘**",
            "name_kind": "masked",
            "surname": "刘",
        },
    ]
    combined, det, first = _with_background(synthetic, rows)
    decisions = pl.DataFrame(
        {
            "left_channel": ["app", "wechat"],
            "left_member_id": ["b-hand", "c-hand"],
            "right_channel": ["pos", "tmall"],
            "right_member_id": ["a-hand", "d-hand"],
            "decision": ["reject", "Accept"],
        }
    )
    result = link.probabilistic_links(combined, det, LinkSettings(), decisions)
    rejected = (pl.col("left") == first) & (pl.col("right") == first + 1)
    assert result.edges.filter(rejected).height == 0
    assert (
        result.review_queue.filter(pl.col("left_member_id").is_in(["a-hand", "b-hand"])).height == 0
    )
    accepted = result.edges.filter((pl.col("left") == first + 2) & (pl.col("right") == first + 3))
    assert accepted["rule"].to_list() == ["review_accepted"]


def test_bad_decision_value_is_a_user_error(synthetic):
    from tasks.errors import ConfigError

    members, _, det = synthetic
    decisions = pl.DataFrame(
        {
            "left_channel": ["pos"],
            "left_member_id": ["1"],
            "right_channel": ["app"],
            "right_member_id": ["2"],
            "decision": ["maybe"],
        }
    )
    with pytest.raises(ConfigError, match="neither accept nor reject"):
        link.probabilistic_links(members, det, LinkSettings(), decisions)


# ----------------------------------------------------------- review queue


def test_review_queue_carries_no_raw_phone_or_id_card(synthetic):
    members, _, det = synthetic
    result = link.probabilistic_links(
        members, det, LinkSettings(match_threshold=0.999999999, review_threshold=0.01)
    )
    queue = result.review_queue
    assert queue.height > 0
    assert {
        "left_channel",
        "left_member_id",
        "right_channel",
        "right_member_id",
        "match_probability",
        "name_level",
        "name_weight",
    } <= set(queue.columns)
    secrets = (
        set(members["phone"].drop_nulls())
        | set(members["id_card"].drop_nulls())
        | set(members["phone_sha256"].drop_nulls())
    )
    for column, dtype in queue.schema.items():
        if dtype == pl.Utf8:
            assert not set(queue[column].drop_nulls()) & secrets, column
    assert queue["left_phone"].drop_nulls().str.contains(r"\*\*\*\*|hashed").all()


def test_disabled_linkage_links_nothing(synthetic):
    members, _, det = synthetic
    result = link.probabilistic_links(members, det, LinkSettings(enabled=False))
    assert result.edges.height == 0
    assert result.review_queue.height == 0
    assert np.isfinite(result.model.lambda_)
