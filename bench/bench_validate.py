"""Wall time of `validate_dataset` on a synthetic members frame, both ways of finding rows.

    .venv/bin/python bench/bench_validate.py [--rows 200000] [--bad 0.01 0.1]
    /usr/bin/time -v .venv/bin/python bench/bench_validate.py --rows 200000 --finder polars

`bad` is the share of rows failing a critical rule (half missing member_id, half duplicates);
about 20% of rows also carry a warning flag. The first call pays the GX import and is not
timed. Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from tasks.schema import MEMBER_SCHEMA
from tasks.validate import validate_dataset


def synthetic_members(rows: int, bad: float, seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.char.add("M", np.arange(rows).astype(str)).astype(object)
    draw = rng.random(rows)
    ids[draw < bad / 2] = None
    duplicate = (draw >= bad / 2) & (draw < bad)
    ids[duplicate] = "M0"
    phones = np.char.add("138", rng.integers(10**7, 10**8, rows).astype(str)).astype(object)
    flags = np.where(rng.random(rows) < 0.2, "phone_invalid", "")
    raw = pl.DataFrame({
        "member_id": ids, "phone": phones,
        "source_row": np.arange(rows), "source_file": ["members.csv"] * rows,
    }, schema_overrides={"member_id": pl.Utf8, "phone": pl.Utf8})
    normalized = raw.select(
        pl.lit("bench").alias("channel"), "member_id",
        pl.when(pl.Series(flags) == "").then(pl.col("phone")).alias("phone"),
        pl.lit(None, pl.Utf8).alias("phone_sha256"),
        "source_row", "source_file",
        pl.Series("flags", flags).str.split(",").list.eval(pl.element().filter(pl.element() != "")),
    ).with_columns(
        pl.lit(None).cast(dtype).alias(name)
        for name, dtype in MEMBER_SCHEMA.items()
        if name not in ("channel", "member_id", "phone", "phone_sha256", "source_row",
                        "source_file", "flags")
    ).select([pl.col(n).cast(d) for n, d in MEMBER_SCHEMA.items()])
    return raw, normalized


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--bad", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--finder", choices=["polars", "gx", "both"], default="both")
    args = parser.parse_args()
    finders = ["polars", "gx"] if args.finder == "both" else [args.finder]
    warm_raw, warm_norm = synthetic_members(100, 0.0)
    validate_dataset(warm_raw, warm_norm, "members", "bench")  # GX import, not timed
    for bad in args.bad:
        raw, normalized = synthetic_members(args.rows, bad)
        for finder in finders:
            start = time.perf_counter()
            result = validate_dataset(raw, normalized, "members", "bench", row_finder=finder)
            elapsed = time.perf_counter() - start
            print(f"rows={args.rows} bad={bad:.0%} finder={finder}: {elapsed:.2f} s "
                  f"(quarantined {result.rows_quarantined})")


if __name__ == "__main__":
    main()
