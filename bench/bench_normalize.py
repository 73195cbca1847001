"""How fast normalize_members turns messy member rows into MEMBER_SCHEMA.

Run by hand, not in CI:

    /usr/bin/time -v .venv/bin/python bench/bench_normalize.py --rows 1000000

Rows are drawn from a pool of hand-written messy variants (prefixes, full-width
digits, masked and placeholder names, mixed date formats, broken values), so
every rule and every flag is exercised; the pool is sampled with numpy to the
requested size with unique member ids.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.normalize import ID_CARD_CHECK_CHARS, ID_CARD_WEIGHTS, normalize_members

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
REGIONS = ("110101", "310104", "440305", "330106", "510107")


def _id_card(rng: random.Random) -> str:
    body = (
        rng.choice(REGIONS)
        + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        + f"{rng.randint(0, 999):03d}"
    )
    total = sum(int(d) * w for d, w in zip(body, ID_CARD_WEIGHTS, strict=True))
    return body + ID_CARD_CHECK_CHARS[total % 11]


def _phone(rng: random.Random) -> str:
    digits = f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}"
    return rng.choice([
        digits,
        f"+86 {digits}",
        f"86{digits}",
        f"0086-{digits[:3]}-{digits[3:7]}-{digits[7:]}",
        f"(+86){digits[:3]} {digits[3:7]} {digits[7:]}",
        digits.translate(FULL_WIDTH),
        digits[:7],
        "",
    ])


def _name(rng: random.Random) -> str:
    surname, given = rng.choice(SURNAMES), "".join(rng.choices(GIVEN, k=rng.randint(1, 2)))
    return rng.choice([
        surname + given, f" {surname} {given} ", surname + "**", surname + "*" + given[-1],
        "微信用户" + str(rng.randint(1000, 999999)), "zhang wei", "Wei Zhang", "欧阳" + given,
        "N/A", "小明🌟",
    ])


def _birth_date(rng: random.Random) -> str:
    y, m, d = rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([
        f"{y}-{m:02d}-{d:02d}", f"{y}{m:02d}{d:02d}", f"{y}/{m}/{d}", f"{y}年{m}月{d}日",
        f"{y}.{m}.{d}", "1800-01-01", "not a date", "",
    ])


def _registered_at(rng: random.Random) -> str:
    y, m, d = rng.randint(2015, 2025), rng.randint(1, 12), rng.randint(1, 28)
    hh, mm, ss = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice([
        f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}",
        f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}+08:00",
        f"{y}/{m}/{d} {hh}:{mm:02d}",
        f"{y}-{m:02d}-{d:02d}",
        str(rng.randint(1_450_000_000, 1_750_000_000)),
        "yesterday",
    ])


def messy_pool(size: int, seed: int = 7) -> pl.DataFrame:
    """A pool of distinct messy member rows, all Utf8 as the reader delivers them."""
    rng = random.Random(seed)
    rows = []
    for i in range(size):
        card = _id_card(rng)
        rows.append({
            "phone": _phone(rng),
            "phone_sha256": rng.choice([None, None, None, "ab" * 32, "AB" * 32, "xyz"]),
            "email": rng.choice([f"User{i}@Example.COM ", f"u{i}@qq.com", "bad@", None]),
            "id_card": rng.choice([card, card.lower(), card[:-1] + "0", "", "123"]),
            "name": _name(rng),
            "gender": rng.choice(["男", "女", "M", "f", "1", "2", "未知", "?", ""]),
            "birth_date": _birth_date(rng),
            "city": rng.choice(["上海市", "北京", "深圳市 ", "", "杭州"]),
            "address": rng.choice(["  某路1号 ", "", "某街 2 号"]),
            "unionid": rng.choice([f"oU{i:08d}", None]),
            "registered_at": _registered_at(rng),
        })
    return pl.DataFrame(rows, schema={name: pl.Utf8 for name in rows[0]})


def messy_members(n_rows: int, pool_size: int = 20_000, seed: int = 7) -> pl.DataFrame:
    pool = messy_pool(pool_size, seed)
    picks = np.random.default_rng(seed).integers(0, pool.height, n_rows)
    return pool[picks].with_columns(
        member_id=pl.format("M{}", pl.int_range(n_rows)),
        source_row=pl.int_range(n_rows, dtype=pl.Int64),
        source_file=pl.lit("bench_members.csv"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    raw = messy_members(args.rows)
    print(f"{'rows':>10} {'seconds':>8} {'rows/s':>10} {'flagged':>8}")
    for _ in range(args.repeat):
        started = time.perf_counter()
        members = normalize_members(raw, "bench", trust=2)
        seconds = time.perf_counter() - started
        assert members.height == raw.height
        flagged = members.filter(pl.col("flags").list.len() > 0).height
        print(f"{members.height:>10,} {seconds:>8.2f} {members.height / seconds:>10,.0f} "
              f"{flagged / members.height:>8.1%}")


if __name__ == "__main__":
    main()
