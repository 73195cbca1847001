"""How long one atomic publish of a large run takes, on DuckDB and on PostgreSQL.

Run by hand, not in CI, one engine per process so peak RSS is per engine:

    /usr/bin/time -v .venv/bin/python bench/bench_publish.py --engine duckdb
    /usr/bin/time -v .venv/bin/python bench/bench_publish.py --engine postgres

Publishes --xref member_xref rows (default 1,000,000) and --members
unified_members rows (default 500,000) twice (the second run replaces the
first, as a nightly run does), then reads member_xref back. The PostgreSQL run
uses a fresh database on 127.0.0.1:5432 (user postgres), dropped afterwards;
the DuckDB run a file in a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.warehouse import open_warehouse

CHANNELS = ["pos", "tmall", "jd", "app", "mini"]


def member_xref(rows: int, people: int) -> pl.DataFrame:
    """Two records per person on average, ids in the published `U` + 10 digits form."""
    index = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
    return pl.DataFrame(
        {
            "channel": pl.Series(CHANNELS).gather(index % len(CHANNELS)),
            "member_id": "M" + index.cast(pl.Utf8).str.zfill(9),
            "unified_id": "U" + (index % people).cast(pl.Utf8).str.zfill(10),
            "match_rule": pl.Series(["phone", "unionid", "singleton", "probabilistic"]).gather(
                index % 4
            ),
            "match_score": ((index % 100) / 100).cast(pl.Float64),
            "match_weights": pl.Series([None, '{"name": 3.2, "birth_date": 5.1}']).gather(
                index % 2
            ),
            "linked_to": pl.Series([None, "pos:M000000001"]).gather(index % 2),
        }
    )


def unified_members(people: int) -> pl.DataFrame:
    index = pl.int_range(0, people, dtype=pl.Int64, eager=True)
    return pl.DataFrame(
        {
            "unified_id": "U" + index.cast(pl.Utf8).str.zfill(10),
            "name": pl.Series(["王伟", "李娜", "张**", "Liu Yang"]).gather(index % 4),
            "gender": pl.Series(["M", "F", None]).gather(index % 3),
            "birth_date": (index % 15000 - 3653).cast(pl.Int32).cast(pl.Date),  # from 1960
            "phone_masked": "138****" + (index % 10000).cast(pl.Utf8).str.zfill(4),
            "city": pl.Series(["上海", "北京", "深圳", None]).gather(index % 4),
            "channels": pl.Series([["pos"], ["pos", "tmall"], ["app", "mini", "jd"]]).gather(
                index % 3
            ),
            "n_records": (index % 3 + 1).cast(pl.UInt32),
            "registered_at": pl.Series([dt.datetime(2020, 1, 1, 8, 0)]).gather(index * 0),
        }
    )


@contextmanager
def warehouse_url(engine: str) -> Iterator[str]:
    if engine == "duckdb":
        with tempfile.TemporaryDirectory() as folder:
            yield str(Path(folder) / "bench.duckdb")
        return
    import psycopg

    name = f"memberlink_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["duckdb", "postgres"], required=True)
    parser.add_argument("--xref", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=500_000)
    args = parser.parse_args()

    tables = {"member_xref": member_xref(args.xref, args.members),
              "unified_members": unified_members(args.members)}
    with warehouse_url(args.engine) as url:
        warehouse = open_warehouse(url)
        for attempt in ("first publish (creates tables)", "second publish (replaces rows)"):
            run_id = uuid.uuid4().hex
            started = time.perf_counter()
            warehouse.publish(tables, {"run_id": run_id, "as_of": dt.date.today()})
            print(f"{args.engine}: {attempt}: {time.perf_counter() - started:.2f} s "
                  f"({args.xref:,} xref + {args.members:,} unified_members rows)")
        started = time.perf_counter()
        back = warehouse.read_table("member_xref")
        assert back is not None and back.height == args.xref
        print(f"{args.engine}: read_table member_xref: {time.perf_counter() - started:.2f} s")
        assert warehouse.last_issued_unified_id() == args.members - 1


if __name__ == "__main__":
    main()
