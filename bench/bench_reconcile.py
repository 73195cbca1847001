"""Points reconciliation accuracy on generated channels with injected faults.

    .venv/bin/python bench/bench_reconcile.py [--people 20000] [--seed 7] [--show 5]
    /usr/bin/time -v .venv/bin/python bench/bench_reconcile.py   # peak RSS

Generates demo channels (`tasks.demo_data.generate_demo`) into a temporary
directory, runs the real stages in-process without Prefect's engine (the plain
functions the flow's tasks call: read -> normalize -> validate through
`flows.stages.ingest_dataset.fn` and `stack_valid`, then
`match.deterministic_links`, `link.probabilistic_links` (a fresh model, no
reviewer decisions), `cluster.assign_unified_ids` (no previous run) and
`reconcile.reconcile_points`), and scores `points_discrepancies` per kind
against `truth/points_faults.parquet`.

What counts as finding a fault is a key per kind (`MATCH_KEYS`):

- account kinds (`balance_mismatch`, `negative_balance`, `orphan_txn`,
  `unexpired_points`): (channel, member_id). The reconciler reports these once
  per account; the truth lists orphan rows per transaction and unexpired points
  per earn row, so truth rows collapse to their account.
- transaction kinds (`duplicate_txn`, `over_redemption`): (channel, member_id,
  txn_id), the found row's `reference` being the txn_id.
- `double_credit`: one injected fault is one order (truth marks both the
  original credit and the extra one). A found row is right when its (channel,
  member_id, order_id) is one of that order's truth rows; the order is found
  when any of its truth rows is.
- `secondary` truth rows (a negative balance implied by an injected
  over-redemption) are expected findings like primary ones: they count in
  truth, so finding them is a true positive and missing them lowers recall.
  The table shows how many truth keys are secondary.

Precision = true-positive found keys / found keys; recall = truth events
found / truth events. `--show N` prints N false positives and negatives per
kind with the reconciler's detail, to see why a rule misses.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows import stages
from tasks import cluster, link, match, reconcile
from tasks.config import RunConfig, load_config
from tasks.demo_data import generate_demo
from tasks.reconcile import DISCREPANCY_KINDS

ACCOUNT_KEY = ("channel", "member_id")


@dataclass(frozen=True)
class MatchKey:
    """How truth rows and found rows of one kind are compared."""

    key: tuple[str, ...]     # columns a found row and a truth row must share
    event: tuple[str, ...]   # columns naming one injected fault (recall counts these)


MATCH_KEYS: dict[str, MatchKey] = {
    "balance_mismatch": MatchKey(ACCOUNT_KEY, ACCOUNT_KEY),
    "negative_balance": MatchKey(ACCOUNT_KEY, ACCOUNT_KEY),
    "orphan_txn": MatchKey(ACCOUNT_KEY, ACCOUNT_KEY),
    "unexpired_points": MatchKey(ACCOUNT_KEY, ACCOUNT_KEY),
    "duplicate_txn": MatchKey((*ACCOUNT_KEY, "ref"), (*ACCOUNT_KEY, "ref")),
    "over_redemption": MatchKey((*ACCOUNT_KEY, "ref"), (*ACCOUNT_KEY, "ref")),
    "double_credit": MatchKey((*ACCOUNT_KEY, "ref"), ("ref",)),
}
# The truth column a found row's `reference` stands for, per kind that has one.
TRUTH_REFERENCE: dict[str, str] = {
    "duplicate_txn": "txn_id",
    "over_redemption": "txn_id",
    "double_credit": "order_id",
}


@dataclass
class PipelineRun:
    """What the bench keeps of one in-process pipeline run."""

    discrepancies: pl.DataFrame
    truth: pl.DataFrame
    reconcile_seconds: float
    stage_seconds: dict[str, float]
    counts: dict[str, int]


def run_pipeline(people: int, seed: int, out_dir: Path, repeat: int = 1) -> PipelineRun:
    """generate -> ingest -> match -> link -> cluster -> reconcile, as the flow does it.

    reconcile_points runs `repeat` times and the fastest is kept: on a shared
    machine one run's wall time is mostly the neighbours' load.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    manifest = generate_demo(out_dir, people=people, seed=seed)
    seconds["generate"] = time.perf_counter() - started

    config: RunConfig = load_config(manifest.config)
    as_of: date = config.run.as_of or manifest.as_of
    started = time.perf_counter()
    ingested = [
        stages.ingest_dataset.fn(source, dataset, None)
        for source in config.sources
        for dataset in ("members", "points", "balances")
    ]
    members = stages.stack_valid(ingested, "members")
    points = stages.stack_valid(ingested, "points")
    balances = stages.stack_valid(ingested, "balances")
    seconds["read+normalize+validate"] = time.perf_counter() - started

    started = time.perf_counter()
    deterministic = match.deterministic_links(members, config.matching)
    probabilistic = link.probabilistic_links(members, deterministic.edges, config.linkage)
    edges = pl.concat([deterministic.edges, probabilistic.edges], how="diagonal_relaxed")
    identity = cluster.assign_unified_ids(members, edges, None, "bench")
    seconds["match+link+cluster"] = time.perf_counter() - started

    timings = []
    for _ in range(max(repeat, 1)):
        started = time.perf_counter()
        result = reconcile.reconcile_points(
            points, balances, members, identity.xref, as_of, config.reconcile
        )
        timings.append(time.perf_counter() - started)
    reconcile_seconds = min(timings)
    seconds["reconcile"] = reconcile_seconds
    return PipelineRun(
        discrepancies=result.points_discrepancies,
        truth=pl.read_parquet(manifest.truth["points_faults"]),
        reconcile_seconds=reconcile_seconds,
        stage_seconds=seconds,
        counts={
            "members": members.height,
            "ledger rows": points.height,
            "balances": balances.height,
            "accounts": result.points_balances.height,
            "discrepancies": result.points_discrepancies.height,
        },
    )


def truth_keys(truth: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The kind's truth rows with `ref` (txn_id or order_id where the kind has one)."""
    rows = truth.filter(pl.col("kind") == kind)
    ref = pl.col(TRUTH_REFERENCE[kind]) if kind in TRUTH_REFERENCE else pl.lit(None, pl.Utf8)
    return rows.with_columns(ref=ref)


def found_keys(found: pl.DataFrame, kind: str) -> pl.DataFrame:
    rows = found.filter(pl.col("kind") == kind)
    ref = pl.col("reference") if kind in TRUTH_REFERENCE else pl.lit(None, pl.Utf8)
    return rows.with_columns(ref=ref)


def score_kind(truth: pl.DataFrame, found: pl.DataFrame, kind: str) -> dict[str, object]:
    """Truth events, found keys, true positives, precision, recall, and the misses."""
    spec = MATCH_KEYS[kind]
    key, event = list(spec.key), list(spec.event)
    expected = truth_keys(truth, kind)
    reported = found_keys(found, kind)
    truth_key_set = expected.unique(key).select(key)
    found_key_set = reported.unique(key, keep="first", maintain_order=True)
    true_positive = found_key_set.join(truth_key_set, on=key, how="semi", nulls_equal=True)
    false_positive = found_key_set.join(truth_key_set, on=key, how="anti", nulls_equal=True)
    events = expected.group_by(event).agg(secondary=pl.col("secondary").all())
    hit = expected.join(found_key_set.select(key), on=key, how="semi", nulls_equal=True)
    events_found = hit.select(event).unique()
    missed = expected.join(events_found, on=event, how="anti", nulls_equal=True)
    n_truth, n_found, n_tp = events.height, found_key_set.height, true_positive.height
    return {
        "kind": kind,
        "truth": n_truth,
        "secondary": int(events["secondary"].sum()),
        "found": n_found,
        "tp": n_tp,
        "precision": n_tp / n_found if n_found else (1.0 if n_truth == 0 else 0.0),
        "recall": events_found.height / n_truth if n_truth else 1.0,
        "_fp": false_positive,
        "_fn": missed,
    }


def print_scores(scores: list[dict[str, object]]) -> None:
    header = (
        f"{'kind':<18}{'truth':>7}{'(sec.)':>7}{'found':>7}{'tp':>7}"
        f"{'precision':>11}{'recall':>9}"
    )
    print(header)
    print("-" * len(header))
    for s in scores:
        print(
            f"{s['kind']:<18}{s['truth']:>7}{s['secondary']:>7}{s['found']:>7}{s['tp']:>7}"
            f"{s['precision']:>11.4f}{s['recall']:>9.4f}"
        )


def print_misses(scores: list[dict[str, object]], show: int) -> None:
    """A few false positives (with the reconciler's detail) and negatives (with the truth's)."""
    wide = {"fmt_str_lengths": 160, "tbl_width_chars": 220, "tbl_hide_column_data_types": True}
    with pl.Config(tbl_rows=show, **wide):
        for s in scores:
            fp, fn = s["_fp"], s["_fn"]
            if fp.height:
                print(f"\n{s['kind']}: {fp.height} false positives, e.g.")
                print(fp.select("channel", "member_id", "unified_id", "amount", "reference",
                                "detail").head(show))
            if fn.height:
                print(f"\n{s['kind']}: {fn.height} truth rows missed, e.g.")
                print(fn.select("channel", "member_id", "txn_id", "order_id", "secondary",
                                "detail").head(show))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3,
                        help="run reconcile_points this many times, report the fastest")
    parser.add_argument("--show", type=int, default=0,
                        help="print this many false positives and negatives per kind")
    args = parser.parse_args()
    started = time.perf_counter()
    logging.disable(logging.INFO)  # GX logs a line per suite; stage timings are printed below
    with tempfile.TemporaryDirectory(prefix="memberlink-bench-reconcile-") as out:
        run = run_pipeline(args.people, args.seed, Path(out), args.repeat)
    scores = [score_kind(run.truth, run.discrepancies, kind) for kind in DISCREPANCY_KINDS]
    unknown = set(run.discrepancies["kind"]) - set(DISCREPANCY_KINDS)
    print(f"people {args.people:,}, seed {args.seed}: "
          + ", ".join(f"{k} {v:,}" for k, v in run.counts.items()))
    print_scores(scores)
    if unknown:
        print(f"kinds the bench does not score: {sorted(unknown)}")
    if args.show:
        print_misses(scores, args.show)
    print("\nwall time: " + ", ".join(f"{k} {v:.2f}s" for k, v in run.stage_seconds.items()))
    print(f"reconcile_points alone {run.reconcile_seconds:.2f}s (best of {args.repeat}); "
          f"whole script {time.perf_counter() - started:.1f}s after imports "
          "(with imports and peak RSS: run under /usr/bin/time -v)")


if __name__ == "__main__":
    main()
