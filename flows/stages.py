"""Thin Prefect tasks around the pure stage functions in `tasks/`.

Each task times its stage and logs its counts (flows/progress.py); the logic
lives in `tasks/` and is tested there without the engine. Caching is off:
frames are not reliable cache keys (field notes), and every run re-reads its
sources anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.progress import stage
from tasks import (
    cluster,
    comparisons,
    golden,
    link,
    match,
    normalize,
    read,
    reconcile,
    report,
    validate,
)
from tasks.config import RunConfig, SourceConfig
from tasks.schema import (
    BALANCE_SCHEMA,
    MEMBER_SCHEMA,
    POINTS_SCHEMA,
    QUARANTINE_SCHEMA,
    Dataset,
    empty_frame,
)
from tasks.warehouse import Warehouse

stage_task = task(cache_policy=NO_CACHE, persist_result=False)

_NORMALIZED_SCHEMA = {"members": MEMBER_SCHEMA, "points": POINTS_SCHEMA, "balances": BALANCE_SCHEMA}


@dataclass
class ChannelDataset:
    """One dataset of one channel after validation."""

    channel: str
    dataset: Dataset
    validated: validate.Validated | None


@stage_task(task_run_name="ingest-{source.channel}-{dataset}")
def ingest_dataset(source: SourceConfig, dataset: Dataset, docs_dir: Path) -> ChannelDataset:
    """Read, normalize and validate one dataset of one channel."""
    if source.location(dataset) is None and source.query(dataset) is None:
        return ChannelDataset(source.channel, dataset, None)   # not configured
    with stage("read", f"{source.channel}/{dataset}") as record:
        raw = read.read_dataset(source, dataset)
        record.counts["rows"] = raw.height
    with stage("normalize", f"{source.channel}/{dataset}") as record:
        normalized = _normalize(raw, source, dataset)
        record.counts["flagged"] = int((normalized["flags"].list.len() > 0).sum())
    with stage("validate", f"{source.channel}/{dataset}") as record:
        validated = validate.validate_dataset(raw, normalized, dataset, source.channel, docs_dir)
        record.counts["valid"] = validated.rows_valid
        record.counts["quarantined"] = validated.rows_quarantined
    return ChannelDataset(source.channel, dataset, validated)


def _normalize(raw: pl.DataFrame, source: SourceConfig, dataset: Dataset) -> pl.DataFrame:
    if dataset == "members":
        return normalize.normalize_members(
            raw, source.channel, source.trust, phone_hash_case=source.phone_hash_case
        )
    if dataset == "points":
        return normalize.normalize_points(raw, source.channel)
    return normalize.normalize_balances(raw, source.channel)


def stack_valid(ingested: list[ChannelDataset], dataset: Dataset) -> pl.DataFrame:
    """All channels' valid rows of one dataset; members get `record_idx` (docs/internals.md)."""
    frames = [
        item.validated.valid for item in ingested if item.dataset == dataset and item.validated
    ]
    stacked = pl.concat(frames) if frames else empty_frame(_NORMALIZED_SCHEMA[dataset])
    if dataset != "members":
        return stacked
    return stacked.sort("channel", "member_id").with_row_index("record_idx").with_columns(
        pl.col("record_idx").cast(pl.UInt32)
    )


def stack_quality(ingested: list[ChannelDataset]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The quarantine and data-quality rows of every channel and dataset."""
    present = [item.validated for item in ingested if item.validated]
    if not present:
        return empty_frame(QUARANTINE_SCHEMA), pl.DataFrame()
    quarantine = pl.concat([v.quarantine for v in present], how="diagonal_relaxed")
    quality = pl.concat([v.summary for v in present], how="diagonal_relaxed")
    return quarantine, quality


def ingest_counts(ingested: list[ChannelDataset]) -> pl.DataFrame:
    """Rows read, valid and quarantined per channel and dataset: the quarantine invariant."""
    return pl.DataFrame(
        [
            {"channel": item.channel, "dataset": item.dataset,
             "rows_read": item.validated.rows_read, "rows_valid": item.validated.rows_valid,
             "rows_quarantined": item.validated.rows_quarantined}
            for item in ingested if item.validated
        ],
        schema={"channel": pl.Utf8, "dataset": pl.Utf8, "rows_read": pl.Int64,
                "rows_valid": pl.Int64, "rows_quarantined": pl.Int64},
    )


@stage_task
def match_deterministic(members: pl.DataFrame, config: RunConfig) -> match.DeterministicLinks:
    with stage("match") as record:
        links = match.deterministic_links(members, config.matching)
        record.counts["links"] = links.edges.height
        record.counts["hub_values"] = links.hub_values.height
    return links


@stage_task
def link_probabilistic(
    members: pl.DataFrame, deterministic: match.DeterministicLinks, config: RunConfig,
    decisions: pl.DataFrame | None, store: Warehouse, full_refresh: bool,
) -> link.ProbabilisticLinks:
    """Fellegi-Sunter linkage; the model fitted by an earlier run is reused unless retrained.
    Identifiers deterministic matching refused (hubs, blocked values) compare as missing."""
    retrain = full_refresh or config.linkage.retrain
    previous = None if retrain else link.model_from_frame(
        store.read_table("linkage_model"), comparisons.MEMBER_COMPARISONS
    )
    with stage("link") as record:
        links = link.probabilistic_links(
            members, deterministic.edges, config.linkage, decisions, previous_model=previous,
            refused_keys=deterministic.refused_keys,
        )
        record.counts["links"] = links.edges.height
        record.counts["to_review"] = links.review_queue.height
    return links


@stage_task
def load_review_decisions(config: RunConfig, store: Warehouse) -> pl.DataFrame | None:
    """Reviewer decisions from the configured CSV and the warehouse's review_decisions table."""
    frames = []
    if config.linkage.decisions:
        path = Path(config.linkage.decisions)
        if not path.is_absolute():
            path = config.config_path.parent / path
        if path.exists():
            frames.append(pl.read_csv(path, infer_schema=False))
    if (table := store.read_table("review_decisions")) is not None:
        frames.append(table.select(pl.all().cast(pl.Utf8)))
    return pl.concat(frames, how="diagonal") if frames else None


@stage_task
def cluster_members(
    members: pl.DataFrame, edges: pl.DataFrame, store: Warehouse, run_id: str, full_refresh: bool
) -> cluster.Identity:
    with stage("cluster") as record:
        previous = None if full_refresh else store.read_table("member_xref")
        identity = cluster.assign_unified_ids(
            members, edges, previous, run_id, store.last_issued_unified_id()
        )
        record.counts["unified_members"] = identity.xref["unified_id"].n_unique()
        record.counts["identity_changes"] = identity.identity_changes.height
    return identity


@stage_task
def build_golden_records(
    members: pl.DataFrame, xref: pl.DataFrame, raw_pii: bool
) -> pl.DataFrame:
    with stage("golden") as record:
        unified = golden.golden_records(members, xref, raw_pii=raw_pii)
        record.counts["unified_members"] = unified.height
    return unified


@stage_task
def reconcile_points(
    points: pl.DataFrame, balances: pl.DataFrame, members: pl.DataFrame, xref: pl.DataFrame,
    as_of: date, config: RunConfig,
) -> reconcile.Reconciliation:
    with stage("reconcile") as record:
        result = reconcile.reconcile_points(
            points, balances, members, xref, as_of, config.reconcile
        )
        record.counts["accounts"] = result.points_balances.height
        record.counts["discrepancies"] = result.points_discrepancies.height
    return result


@stage_task
def publish(store: Warehouse, tables: dict[str, pl.DataFrame], run: dict) -> None:
    with stage("publish", store.display_url) as record:
        store.publish(tables, run)
        record.counts["tables"] = len(tables)
        record.counts["rows"] = sum(frame.height for frame in tables.values())


@stage_task
def build_report(tables: dict[str, pl.DataFrame], run: dict, out_dir: Path) -> report.ReportPaths:
    with stage("report") as record:
        paths = report.build_report(tables, run, out_dir)
        record.counts["bytes"] = paths.html.stat().st_size
    return paths
