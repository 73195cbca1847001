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
from tasks.privacy import sha256_hex
from tasks.schema import MEMBER_SCHEMA
from tasks.settings import LinkSettings

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
    other = sha256_hex(pl.Series(["13812345679"]))[0]
    # A hash cannot be one digit off: only exact or else.
    assert levels_of([{"phone": "13812345678"}, {"phone_sha256": other}])["phone"] == "else"


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
