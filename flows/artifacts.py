"""Prefect artifacts: what a person reviews on the Artifacts page each morning.

Keys are stable so that every run adds a version to the same artifact and the
page shows its history. Nothing here carries raw PII: the tables arrive masked.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.events import emit_event

from tasks.report import ReportPaths

SUMMARY_KEY = "memberlink-run-summary"
DATA_QUALITY_KEY = "memberlink-data-quality"
DISCREPANCIES_KEY = "memberlink-top-discrepancies"
REPORT_KEY = "memberlink-report"
DATA_DOCS_KEY = "memberlink-data-docs"
TOP_DISCREPANCIES = 25


def publish_run_artifacts(
    tables: dict[str, pl.DataFrame], run: dict, report: ReportPaths, out_dir: Path
) -> None:
    create_markdown_artifact(
        report.markdown.read_text(encoding="utf-8"),
        key=SUMMARY_KEY,
        description=f"memberlink run summary, as of {run['as_of']}",
    )
    create_markdown_artifact(
        data_quality_markdown(
            tables["ingest_counts"], tables["data_quality"], tables["quarantine"], run
        ),
        key=DATA_QUALITY_KEY,
        description=f"Validation results per channel, as of {run['as_of']}",
    )
    create_table_artifact(
        top_discrepancies(tables["points_discrepancies"]).to_dicts(),
        key=DISCREPANCIES_KEY,
        description=f"The {TOP_DISCREPANCIES} largest points discrepancies, as of {run['as_of']}",
    )
    create_link_artifact(
        report.html.resolve().as_uri(), link_text="memberlink report (HTML)", key=REPORT_KEY,
        description="Self-contained HTML report of this run; opens offline.",
    )
    docs_index = out_dir / "data-docs" / "index.html"
    if docs_index.exists():
        create_link_artifact(
            docs_index.resolve().as_uri(), link_text="Great Expectations Data Docs",
            key=DATA_DOCS_KEY, description="Validation results per channel and dataset.",
        )


def publish_failure(run: dict, error: BaseException) -> None:
    """A failed run still updates the data-quality feed, saying what broke and how to fix it."""
    create_markdown_artifact(
        f"# memberlink run failed\n\n"
        f"- run: `{run['run_id']}`\n- as of: {run.get('as_of', '?')}\n\n"
        f"**{type(error).__name__}**: {error}\n\n"
        "Nothing was published: the warehouse is as it was before this run.\n",
        key=DATA_QUALITY_KEY,
        description="memberlink run failed",
    )


def alert_quarantine_share(
    data_quality_counts: pl.DataFrame, quarantine: pl.DataFrame, threshold: float, run: dict
) -> list[str]:
    """Emit `memberlink.quarantine.threshold-exceeded` per channel and dataset above threshold.

    `data_quality_counts` has channel, dataset, rows_read, rows_quarantined. The event
    drives automations/quarantine-share.yaml; the reason in it is already masked.
    """
    alerts = data_quality_counts.filter(
        pl.col("rows_read") > 0, pl.col("rows_quarantined") / pl.col("rows_read") > threshold
    )
    for row in alerts.iter_rows(named=True):
        top = (
            quarantine.filter(pl.col("channel") == row["channel"],
                              pl.col("dataset") == row["dataset"])
            .group_by("reasons").len().sort("len", descending=True)["reasons"].head(1).to_list()
        )
        emit_event(
            event="memberlink.quarantine.threshold-exceeded",
            resource={"prefect.resource.id": f"memberlink.channel.{row['channel']}",
                      "prefect.resource.name": row["channel"]},
            payload={
                **row,
                "run_id": run["run_id"],
                "share_percent": round(100 * row["rows_quarantined"] / row["rows_read"], 2),
                "threshold_percent": round(100 * threshold, 2),
                "top_reason": top[0] if top else "",
            },
        )
    return [f"{r['channel']}/{r['dataset']}" for r in alerts.iter_rows(named=True)]


def top_discrepancies(discrepancies: pl.DataFrame) -> pl.DataFrame:
    if discrepancies.is_empty():
        return pl.DataFrame({"kind": ["none"], "detail": ["no discrepancies found"]})
    return (
        discrepancies.sort(pl.col("amount").abs(), descending=True, nulls_last=True)
        .head(TOP_DISCREPANCIES)
        .select("kind", "channel", "member_id", "unified_id", "amount", "detail")
    )


def data_quality_markdown(
    counts: pl.DataFrame, quality: pl.DataFrame, quarantine: pl.DataFrame, run: dict
) -> str:
    """One section per channel: rows read/valid/quarantined, failed expectations, reasons."""
    lines = [f"# Data quality, as of {run['as_of']}", "", f"run `{run['run_id']}`", ""]
    if counts.is_empty():
        return "\n".join([*lines, "No datasets were validated."])
    failed = quality.filter(~pl.col("success")) if not quality.is_empty() else quality
    for channel in counts["channel"].unique(maintain_order=True):
        lines += [f"## {channel}", "", "| dataset | read | valid | quarantined |",
                  "| --- | ---: | ---: | ---: |"]
        for row in counts.filter(pl.col("channel") == channel).iter_rows(named=True):
            lines.append(f"| {row['dataset']} | {row['rows_read']:,} | {row['rows_valid']:,} "
                         f"| {row['rows_quarantined']:,} |")
        rows = failed.filter(pl.col("channel") == channel) if not failed.is_empty() else failed
        lines += ["", "| dataset | failed expectation | severity | rows | share |",
                  "| --- | --- | --- | ---: | ---: |"]
        lines += [
            f"| {r['dataset']} | {r['expectation']} | {r['severity']} | "
            f"{r['unexpected_count']:,} | {r['unexpected_percent']:.2f}% |"
            for r in rows.iter_rows(named=True)
        ] or ["| all | every expectation passed | | 0 | 0% |"]
        reasons = (
            quarantine.filter(pl.col("channel") == channel)
            .with_columns(pl.col("reasons").str.replace_all(r" \(first at row \d+\)", ""))
            .group_by("dataset", "reasons").len().sort("len", "reasons", descending=True).head(5)
        )
        if not reasons.is_empty():
            lines += ["", "Quarantined rows, most common reasons:", ""]
            lines += [f"- {r['dataset']}: {r['reasons']} ({r['len']:,})"
                      for r in reasons.iter_rows(named=True)]
        lines.append("")
    return "\n".join(lines)
