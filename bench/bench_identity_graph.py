"""Wall time of deterministic matching and unified-id assignment on synthetic members.

Run by hand, not in the test suite:

    /usr/bin/time -v .venv/bin/python bench/bench_identity_graph.py --records 1000000

Synthetic people buy through five channels (store with id cards, app, WeChat
mini-program, two platforms that give only a hashed phone); some share a
family phone, some carry a store phone typed by a clerk, some a test number.
Prints per-stage wall times and the sizes that explain them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.cluster import assign_unified_ids
from tasks.match import deterministic_links
from tasks.privacy import sha256_hex
from tasks.schema import MEMBER_SCHEMA
from tasks.settings import MatchSettings

CHANNELS = np.array(["pos", "app", "mini", "tmall", "jd"])
CHANNEL_SHARE = np.array([0.25, 0.25, 0.2, 0.15, 0.15])
TRUST = {"pos": 3, "app": 2, "mini": 1, "tmall": 1, "jd": 1}
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国")
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])


def people(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """The truth: one row per person."""
    birth = np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n).astype("timedelta64[D]")
    surname = np.array(SURNAMES)[rng.integers(0, len(SURNAMES), n)]
    given = np.char.add(
        np.array(GIVEN)[rng.integers(0, len(GIVEN), n)],
        np.where(rng.random(n) < 0.6, np.array(GIVEN)[rng.integers(0, len(GIVEN), n)], ""),
    )
    phone = (13_000_000_000 + rng.choice(6_999_999_999, n, replace=False)).astype(str)
    return pl.DataFrame(
        {
            "person": np.arange(n),
            "name": np.char.add(surname, given),
            "birth_date": birth.astype("datetime64[D]"),
            "phone": phone,
            "id_card": id_cards(birth, rng),
            "unionid": np.char.add("oU", np.arange(n).astype(str)),
            "email": np.char.add(np.char.add("p", np.arange(n).astype(str)), "@mail.cn"),
        }
    )


def id_cards(birth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Valid GB 11643 numbers: region 110101, the birth date, a sequence, the check character."""
    ymd = np.char.replace(birth.astype("datetime64[D]").astype(str), "-", "")
    seq = np.char.zfill(rng.integers(0, 1000, len(birth)).astype(str), 3)
    body = np.char.add(np.char.add("110101", ymd), seq)
    digits = np.frombuffer("".join(body.tolist()).encode(), dtype=np.uint8).reshape(-1, 17) - 48
    check = np.array(list("10X98765432"))[(digits * ID_WEIGHTS).sum(axis=1) % 11]
    return np.char.add(body, check)


def members(n_records: int, seed: int) -> pl.DataFrame:
    """Channel records of the people, with the noise matching has to survive."""
    rng = np.random.default_rng(seed)
    truth = people(int(n_records / 1.6), rng)
    pick = rng.integers(0, truth.height, n_records)
    channel = CHANNELS[rng.choice(len(CHANNELS), n_records, p=CHANNEL_SHARE)]
    records = truth[pick].with_columns(pl.Series("channel", channel))

    family = rng.random(n_records) < 0.02  # a relative's phone
    store = rng.random(n_records) < 0.003  # one of 50 store phones
    test_number = rng.random(n_records) < 0.0005  # a well-known test number
    relative_phone = truth["phone"].to_numpy()[rng.integers(0, truth.height, n_records)]
    store_phone = (17_700_000_000 + rng.integers(0, 50, n_records)).astype(str)
    phone = np.where(family, relative_phone, records["phone"].to_numpy())
    phone = np.where(store, store_phone, phone)
    phone = np.where(test_number, "13800138000", phone)
    records = records.with_columns(pl.Series("phone", phone))

    is_ = {c: pl.col("channel") == c for c in CHANNELS}
    records = records.with_columns(
        pl.when(is_["pos"] & (pl.lit(rng.random(n_records)) < 0.5))
        .then("id_card")
        .alias("id_card"),
        pl.when(is_["app"] | is_["mini"]).then("unionid").alias("unionid"),
        pl.when(is_["app"] & (pl.lit(rng.random(n_records)) < 0.5)).then("email").alias("email"),
        pl.when(is_["pos"] | is_["app"]).then("name").alias("name"),
        pl.when(is_["pos"] | is_["app"]).then(pl.lit("hanzi")).alias("name_kind"),
        pl.when(is_["pos"] | (is_["app"] & (pl.lit(rng.random(n_records)) < 0.5)))
        .then("birth_date")
        .alias("birth_date"),
        pl.when(is_["mini"]).then(pl.lit(None, dtype=pl.Utf8)).otherwise("phone").alias("phone"),
    )
    records = records.with_columns(sha256_hex(records["phone"]).alias("phone_sha256")).with_columns(
        pl.when(is_["tmall"] | is_["jd"]).then(None).otherwise("phone").alias("phone"),
        pl.format("{}{}", pl.col("channel"), pl.int_range(pl.len()).over("channel")).alias(
            "member_id"
        ),
        pl.col("channel").replace_strict(TRUST, return_dtype=pl.Int32).alias("trust"),
        pl.lit(dt.datetime(2024, 1, 1)).alias("registered_at"),
        pl.int_range(pl.len()).alias("source_row"),
        pl.lit("synthetic").alias("source_file"),
        pl.lit([], dtype=pl.List(pl.Utf8)).alias("flags"),
    )
    for column, dtype in MEMBER_SCHEMA.items():
        if column not in records.columns:
            records = records.with_columns(pl.lit(None, dtype=dtype).alias(column))
    return (
        records.select(*MEMBER_SCHEMA, "person")
        .cast(MEMBER_SCHEMA)
        .sort("channel", "member_id")
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )


def timed(label: str, fn, *args):
    """Run fn, print wall and CPU seconds: on a shared machine CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<42} wall {wall:7.2f} s   cpu {cpu:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("MEMBERLINK_PII_KEY", "bench-key")

    frame = timed("generate members", members, args.records, args.seed)
    print(f"records {frame.height:,}; polars threads {pl.thread_pool_size()}")
    wall, cpu = time.perf_counter(), time.process_time()
    links = timed("deterministic_links", deterministic_links, frame, MatchSettings())
    first = timed(
        "assign_unified_ids (first run)", assign_unified_ids, frame, links.edges, None, "r1"
    )
    print(
        f"{'deterministic_links + assign_unified_ids':<42} wall {time.perf_counter() - wall:7.2f} s"
        f"   cpu {time.process_time() - cpu:7.2f} s   load {os.getloadavg()[0]:.1f}"
    )
    again = timed(
        "assign_unified_ids (re-run)",
        assign_unified_ids,
        frame,
        links.edges,
        first.xref,
        "r2",
        first.last_issued,
    )
    print(
        f"edges {links.edges.height:,}; hub values {links.hub_values.height}; "
        f"unified members {first.xref['unified_id'].n_unique():,}; "
        f"changes on re-run {again.identity_changes.height}"
    )
    print("guarded:", links.guarded)
    print(false_merges(frame, first.xref))


def false_merges(frame: pl.DataFrame, xref: pl.DataFrame) -> str:
    """How many unified members hold records of more than one synthetic person (ground truth)."""
    truth = frame.select("channel", "member_id", "person").join(xref, on=["channel", "member_id"])
    mixed = (
        truth.group_by("unified_id")
        .agg(pl.col("person").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
    )
    found = truth.group_by("person").agg(pl.col("unified_id").n_unique().alias("n"))
    return (
        f"unified members mixing people: {mixed.height:,}; "
        f"people split over several unified members: {found.filter(pl.col('n') > 1).height:,} "
        f"of {found.height:,} (deterministic links only)"
    )


if __name__ == "__main__":
    main()
