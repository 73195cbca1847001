"""The memberlink flow: one read of it is the whole pipeline.

sources.toml → ingest each channel (read, normalize, validate; in parallel) →
deterministic match → probabilistic link → clusters with stable ids → golden
records → points reconciliation → one atomic publish → report and artifacts.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts, stages
from tasks import link
from tasks.config import RunConfig, load_config
from tasks.privacy import redact_url
from tasks.schema import DATASETS
from tasks.warehouse import Warehouse, open_warehouse


@flow(
    name="unify-members",
    description="Unify loyalty members across channels and reconcile their points.",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    log_prints=True,
)
def unify_members(
    config: str = "sources.toml",
    warehouse: str | None = None,
    as_of: date | None = None,
    channels: list[str] | None = None,
    full_refresh: bool = False,
    raw_pii: bool = False,
) -> dict:
    """Unify members and reconcile points for one cut-off date.

    Args:
        config: Path to sources.toml, on the machine that runs the flow.
        warehouse: Where to publish: a .duckdb path, duckdb:///path, postgresql://...,
            env:VARNAME or secret:BLOCK. Empty uses [run].warehouse of the config.
        as_of: Reconciliation cut-off (YYYY-MM-DD): ledger rows after this day are ignored
            and this day's earlier results are replaced. Empty means [run].as_of, else today.
        channels: Only these channels (e.g. ["pos", "tmall"]); empty means all.
        full_refresh: Rebuild identities from scratch: refit the linkage model and do not
            carry unified_ids over from the previous run (issued ids are never reused).
        raw_pii: Publish raw phone and id-card columns. Leave off unless your warehouse is
            cleared for personal information.
    """
    run = _start_run(config)
    store: Warehouse | None = None
    try:
        cfg = load_config(config).select_channels(channels)
        store = open_warehouse(warehouse or cfg.run.warehouse)
        run.update(as_of=as_of or cfg.run.as_of or date.today(), warehouse=store.display_url)
        out_dir = cfg.output_dir / run["run_id"]
        tables = _unify(cfg, store, run, out_dir, full_refresh, raw_pii or cfg.run.raw_pii)
        run.update(status="completed", finished_at=_now(), counts=json.dumps(_counts(tables)))
        stages.publish(store, tables, run)
        report = stages.build_report(tables, run, out_dir)
        artifacts.publish_run_artifacts(tables, run, report, out_dir)
    except Exception as error:
        run.update(status="failed", finished_at=_now(), error=str(error))
        if store is not None:   # a config or connection error has no warehouse to tell
            store.record_run(run)
        artifacts.publish_failure(run, error)
        raise
    return {**run, "report": str(report.html), "markdown": str(report.markdown)}


def _unify(
    cfg: RunConfig, store: Warehouse, run: dict, out_dir: Path, full_refresh: bool, raw_pii: bool
) -> dict[str, pl.DataFrame]:
    """The pipeline proper, from sources to the tables one run publishes."""
    futures = [
        stages.ingest_dataset.submit(source, dataset, out_dir / "data-docs")
        for source in cfg.sources
        for dataset in DATASETS
    ]
    ingested = [future.result() for future in futures]
    members = stages.stack_valid(ingested, "members")
    quarantine, data_quality = stages.stack_quality(ingested)
    counts = stages.ingest_counts(ingested)
    artifacts.alert_quarantine_share(counts, quarantine, cfg.run.quarantine_alert_share, run)

    deterministic = stages.match_deterministic(members, cfg)
    decisions = stages.load_review_decisions(cfg, store)
    probabilistic = stages.link_probabilistic(
        members, deterministic, cfg, decisions, store, full_refresh
    )
    edges = pl.concat([deterministic.edges, probabilistic.edges], how="diagonal_relaxed")
    identity = stages.cluster_members(members, edges, store, run["run_id"], full_refresh)
    unified = stages.build_golden_records(members, identity.xref, raw_pii)

    points = stages.stack_valid(ingested, "points")
    balances = stages.stack_valid(ingested, "balances")
    ledger = stages.reconcile_points(points, balances, members, identity.xref, run["as_of"], cfg)

    return {
        "member_xref": identity.xref,
        "unified_members": unified,
        "identity_changes": identity.identity_changes,
        "hub_values": deterministic.hub_values,
        "review_queue": probabilistic.review_queue,
        "linkage_model": link.model_frame(probabilistic.model),
        "points_balances": ledger.points_balances,
        "member_points": ledger.member_points,
        "points_discrepancies": ledger.points_discrepancies,
        "quarantine": quarantine,
        "data_quality": data_quality,
        "ingest_counts": counts,
    }


def _start_run(config: str) -> dict:
    """The runs row: its id is the Prefect flow-run id, so the UI and the warehouse agree."""
    run_id = runtime.flow_run.id or datetime.now(UTC).strftime("local-%Y%m%dT%H%M%S")
    return {
        "run_id": str(run_id),
        "flow_run_name": runtime.flow_run.name,
        "started_at": _now(),
        "finished_at": None,
        "status": "running",
        "config": redact_url(str(config)),
        "error": None,
        "counts": None,
    }


def _counts(tables: dict[str, pl.DataFrame]) -> dict[str, object]:
    """Row counts per table, per channel and dataset, and per match rule, for `runs`."""
    counts: dict[str, object] = {name: frame.height for name, frame in tables.items()}
    counts["channels"] = {
        channel: {row["dataset"]: {k: row[k] for k in ("rows_read", "rows_valid",
                                                          "rows_quarantined")}
                  for row in rows.iter_rows(named=True)}
        for (channel,), rows in tables["ingest_counts"].group_by("channel", maintain_order=True)
    }
    xref = tables["member_xref"]
    counts["match_rules"] = dict(xref.group_by("match_rule").len().sort("match_rule").iter_rows())
    return counts


def _now() -> datetime:
    return datetime.now(UTC)
