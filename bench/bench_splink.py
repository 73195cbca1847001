"""Splink (DuckDB backend) vs memberlink's linkage on the same generated members.

    .venv/bin/python bench/bench_splink.py [--people 5000] [--seed 7] [--builtin] [--keep]

Both start from the same normalized members and the same deterministic edges;
both get the same derived keys (pinyin name key, YYYYMMDD birth date, email
local part: Splink has no pypinyin), the same blocking rules where Splink can
express them (the phone one-edit rule becomes blocks on the number's two
halves), comparable comparison levels, u by random sampling, m by EM, and a
match threshold of 0.95. Pairwise precision / recall / F1 of the final clusters
(deterministic edges + predicted links) and wall time of the linkage step.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_generated import (
    add_keep_flag,
    bench_workdir,
    evaluate,
    generated,
    print_table,
    run_ours,
)

from tasks import comparisons as cmp
from tasks import link
from tasks.graph import component_labels
from tasks.settings import LinkSettings


def _level(sql: str, label: str, *, null: bool = False, tf: str | None = None) -> dict:
    level = {"sql_condition": sql, "label_for_charts": label}
    if null:
        level["is_null_level"] = True
    if tf:
        level |= {"tf_adjustment_column": tf, "tf_adjustment_weight": 1.0}
    return level


def splink_settings() -> dict:
    """memberlink's comparison table, written as Splink comparisons (SQL levels)."""
    masked = "(name_kind_l = 'masked' OR name_kind_r = 'masked')"
    else_ = _level("ELSE", "else")
    comparisons = [
        {
            "output_column_name": "name",
            "comparison_levels": [
                _level(
                    "(name_key_l IS NULL AND surname_key_l IS NULL AND nickname_l IS NULL) OR "
                    "(name_key_r IS NULL AND surname_key_r IS NULL AND nickname_r IS NULL)",
                    "null",
                    null=True,
                ),
                # Splink's TF needs a plain exact level on the TF column: the pinyin key.
                _level("name_key_l = name_key_r", "same name (pinyin key)", tf="name_key"),
                # Same syllables in any order, or any reading of a multi-reading hanzi.
                _level(
                    "name_key_sorted_l = name_key_sorted_r OR "
                    "list_has_any(name_sounds_l, name_sounds_r)",
                    "same syllables or reading",
                ),
                _level("jaro_winkler_similarity(name_key_l, name_key_r) >= 0.9", "similar"),
                _level(f"{masked} AND surname_key_l = surname_key_r", "surname only"),
                _level("nickname_l = nickname_r", "same nickname"),
                else_,
            ],
        },
        {
            "output_column_name": "birth_date",
            "comparison_levels": [
                _level("birth_ymd_l IS NULL OR birth_ymd_r IS NULL", "null", null=True),
                _level("birth_ymd_l = birth_ymd_r", "exact"),
                _level(
                    "substr(birth_ymd_l, 1, 4) = substr(birth_ymd_r, 1, 4) AND "
                    "substr(birth_ymd_l, 5, 2) = substr(birth_ymd_r, 7, 2) AND "
                    "substr(birth_ymd_l, 7, 2) = substr(birth_ymd_r, 5, 2)",
                    "day/month swapped",
                ),
                _level(
                    "hamming(birth_ymd_l, birth_ymd_r) <= 1 OR abs(date_diff('day', "
                    "strptime(birth_ymd_l, '%Y%m%d'), strptime(birth_ymd_r, '%Y%m%d'))) <= 3",
                    "near",
                ),
                else_,
            ],
        },
        {
            "output_column_name": "phone",
            "comparison_levels": [
                _level("phone_sha256_l IS NULL OR phone_sha256_r IS NULL", "null", null=True),
                _level("phone_sha256_l = phone_sha256_r", "exact"),
                # a typo'd number against a hash-only record: its hash among the hashes
                # of the raw number's one-edit variants (cmp.phone_typo_hashes)
                _level(
                    "damerau_levenshtein(phone_l, phone_r) <= 1 OR "
                    "list_contains(phone_typo_sha256_l, phone_sha256_r) OR "
                    "list_contains(phone_typo_sha256_r, phone_sha256_l)",
                    "one digit off",
                ),
                else_,
            ],
        },
        {
            "output_column_name": "email",
            "comparison_levels": [
                _level("email_l IS NULL OR email_r IS NULL", "null", null=True),
                _level("email_l = email_r", "exact"),
                _level(
                    "jaro_winkler_similarity(email_local_l, email_local_r) >= 0.92", "local similar"
                ),
                else_,
            ],
        },
        {
            "output_column_name": "city",
            "comparison_levels": [
                _level("city_key_l IS NULL OR city_key_r IS NULL", "null", null=True),
                _level("city_key_l = city_key_r", "exact", tf="city_key"),
                else_,
            ],
        },
        {
            "output_column_name": "gender",
            "comparison_levels": [
                _level("gender_l IS NULL OR gender_r IS NULL", "null", null=True),
                _level("gender_l = gender_r", "exact"),
                else_,
            ],
        },
        {
            "output_column_name": "id_card",
            "comparison_levels": [
                _level("id_card_l IS NULL OR id_card_r IS NULL", "null", null=True),
                _level("id_card_l = id_card_r", "exact"),
                else_,
            ],
        },
    ]
    # Blocking sees identifiers as given (block_* columns), comparisons see refused ones
    # (hubs, blocked values) blanked: the same split as tasks/link.py.
    blocking = [
        "l.block_phone_sha256 = r.block_phone_sha256",
        "l.phone_head = r.phone_head",
        "l.phone_tail = r.phone_tail",
        ("l.block_phone_typo = r.block_phone_typo", ["block_phone_typo"]),
        "l.surname_key = r.surname_key AND l.birth_ymd = r.birth_ymd",
        # every reading of a hanzi name: Splink explodes the list, as our blocking does
        ("l.name_sounds = r.name_sounds AND l.city = r.city", ["name_sounds"]),
        (
            "l.name_sounds = r.name_sounds AND "
            "substr(l.birth_ymd, 1, 4) = substr(r.birth_ymd, 1, 4)",
            ["name_sounds"],
        ),
        "l.name_key_sorted = r.name_key_sorted AND l.birth_ymd = r.birth_ymd",
        "l.birth_ymd = r.birth_ymd AND l.city = r.city",
        "l.block_email_local = r.block_email_local",
    ]
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "record_idx",
        "comparisons": comparisons,
        "blocking_rules_to_generate_predictions": [
            {"blocking_rule": b[0], "sql_dialect": "duckdb", "arrays_to_explode": b[1]}
            if isinstance(b, tuple)
            else {"blocking_rule": b}
            for b in blocking
        ],
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
    }


def run_splink(
    members: pl.DataFrame,
    det_edges: pl.DataFrame,
    threshold: float,
    refused_keys: pl.DataFrame | None = None,
) -> tuple[np.ndarray, float]:
    """Splink after the same deterministic edges; identifiers deterministic matching
    refused (`refused_keys`) compare as missing, as in our linkage."""
    from splink import Linker
    from splink.internals.duckdb.database_api import DuckDBAPI

    given = cmp.member_keys(members)
    blanked = link.without_refused_keys(given, refused_keys)
    records = blanked.with_columns(
        given["phone_sha256"].alias("block_phone_sha256"),
        given["phone"].str.slice(0, 6).alias("phone_head"),
        given["phone"].str.slice(6).alias("phone_tail"),
        given["email_local"].alias("block_email_local"),
        given.select(link.phone_typo_hash_key().alias("block_phone_typo")).to_series(),
    ).select(
        pl.col("record_idx").cast(pl.Int64),
        "name",
        "name_kind",
        "name_key",
        "name_sounds",
        "name_key_sorted",
        "surname_key",
        "nickname",
        "birth_ymd",
        "phone",
        "phone_sha256",
        "phone_typo_sha256",
        "email",
        "email_local",
        "city",
        "city_key",
        "gender",
        "id_card",
        "unionid",
        "block_phone_sha256",
        "phone_head",
        "phone_tail",
        "block_email_local",
        "block_phone_typo",
    )
    start = time.perf_counter()
    db_api = DuckDBAPI()
    frame = db_api.register(records.to_arrow())
    linker = Linker(frame, splink_settings(), log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        ["l.phone_sha256 = r.phone_sha256", "l.unionid = r.unionid", "l.id_card = r.id_card"],
        recall=0.7,
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    for rule in (
        "l.block_phone_sha256 = r.block_phone_sha256",
        "l.surname_key = r.surname_key AND l.birth_ymd = r.birth_ymd",
        "l.city_key = r.city_key AND l.gender = r.gender",
    ):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    links = pl.from_arrow(
        predictions.as_duckdbpyrelation().select("record_idx_l", "record_idx_r").arrow()
    )
    seconds = time.perf_counter() - start
    edges = pl.concat(
        [
            det_edges.select(pl.col("left").cast(pl.Int64), pl.col("right").cast(pl.Int64)),
            links.select(
                pl.col("record_idx_l").alias("left"), pl.col("record_idx_r").alias("right")
            ),
        ]
    )
    return component_labels(members.height, edges), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--builtin", action="store_true", help="use the built-in generator")
    parser.add_argument(
        "--keep-refused",
        action="store_true",
        help="both linkers compare hub and blocked identifiers as values (the old behaviour)",
    )
    add_keep_flag(parser)
    args = parser.parse_args()
    settings = LinkSettings()
    with bench_workdir(args.keep) as workdir:
        data = generated(args.people, args.seed, args.builtin, workdir)
    truth = data.truth.to_numpy()
    print(f"{data.members.height:,} records of {args.people:,} people ({data.source})")
    blank = not args.keep_refused
    ours, _, our_seconds = run_ours(data, settings, blank_refused=blank)
    theirs, their_seconds = run_splink(
        data.members,
        data.det_edges,
        settings.match_threshold,
        data.refused_keys if blank else None,
    )
    print_table(
        [
            evaluate(
                "deterministic + memberlink (polars, rapidfuzz, ECM)", ours, truth, our_seconds
            ),
            evaluate("deterministic + Splink 5 (DuckDB)", theirs, truth, their_seconds),
        ],
        f"Same records, threshold {settings.match_threshold}",
    )


if __name__ == "__main__":
    main()
