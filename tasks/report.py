"""The run report: one self-contained HTML page and a short Markdown summary.

A person reviewing last night's run wants to see, without any server or
network: how many records became how many members and by which rule, which
channels share members, where the points are, what disagrees, and which
channel sent bad data. The HTML inlines its CSS and its charts (matplotlib
rendered to SVG), so it opens from a mail attachment or a file share. The
Markdown is the same headline for a Prefect artifact.

Only small aggregates reach this module's Python: every table is summarised
with polars first. Identifiers that are personal information are never
rendered, and anything that still looks like a mainland mobile or a resident
id is masked on the way out (a channel may use a phone number as member_id).
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from tasks.errors import WarehouseError
from tasks.reconcile import DISCREPANCY_DESCRIPTIONS
from tasks.schema import MATCH_RULES

REPORT_TABLES: tuple[str, ...] = (
    "member_xref", "unified_members", "points_balances", "member_points",
    "points_discrepancies", "quarantine", "data_quality", "identity_changes",
    "review_queue", "hub_values", "ingest_counts",
)
# Replaced by every run (docs/internals.md): they hold the identity as of the
# latest successful run, whatever run_id their rows carry.
REPLACED_TABLES: frozenset[str] = frozenset(
    {"member_xref", "unified_members", "hub_values", "review_queue"}
)
HTML_NAME = "report.html"
MARKDOWN_NAME = "summary.md"
TOP_ROWS = 20
TOP_PER_KIND = 5
UPSET_COMBINATIONS = 12

# A mobile as typed (+86 / 0086 prefix, spaces or dashes) but not a slice of a longer
# number: an 18-digit order id keeps its digits.
_PHONE = re.compile(r"(?<![\d+])(?:\+?86[ -]?|0086[ -]?)?(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")
# GB 11643 shape (region, birth date, sequence, check), so other 18-digit numbers pass.
_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])([1-9]\d{2})\d{3}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"(\d{3}[0-9Xx])(?![0-9A-Za-z])"
)
_TEMPLATES = Path(__file__).with_name("templates")

# One colour per meaning, used by every chart so a reader learns them once.
_INK, _MUTED, _GRID = "#1f2937", "#6b7280", "#e5e7eb"
_BLUE, _TEAL, _AMBER, _RED, _GREEN, _SLATE = (
    "#2563eb", "#0d9488", "#d97706", "#dc2626", "#16a34a", "#94a3b8",
)


class ReadsTables(Protocol):
    """The one warehouse method the report needs (tasks/warehouse.py provides it)."""

    def read_table(self, name: str) -> pl.DataFrame | None: ...


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path


@dataclass
class ReportFacts:
    """Every number the report shows, as small frames; charts, HTML and Markdown read only this."""

    run: dict[str, Any]
    headline: dict[str, int | None]
    funnel: pl.DataFrame                 # step, group, records
    overlap: pl.DataFrame                # combination (list[str]), members
    channel_members: pl.DataFrame        # channel, records, unified_members, shared
    points_by_channel: pl.DataFrame      # channel, accounts, earned, redeemed, ... difference
    discrepancies_by_kind: pl.DataFrame  # kind, count, amount
    top_discrepancies: pl.DataFrame
    data_quality: pl.DataFrame           # channel, dataset, rows_read, rows_valid, ...
    failed_expectations: pl.DataFrame
    quarantine_reasons: pl.DataFrame     # channel, dataset, reason, rows
    identity: dict[str, Any] = field(default_factory=dict)


def build_report(tables: dict[str, pl.DataFrame], run: dict, out_dir: Path) -> ReportPaths:
    """Write report.html and summary.md for one run into `out_dir`."""
    started = time.perf_counter()
    facts = report_facts(tables, run)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(html=out_dir / HTML_NAME, markdown=out_dir / MARKDOWN_NAME)
    html = render_html(facts, render_charts(facts), time.perf_counter() - started)
    paths.html.write_text(html, encoding="utf-8")
    paths.markdown.write_text(render_markdown(facts), encoding="utf-8")
    return paths


def load_report_tables(
    warehouse: ReadsTables, run_id: str | None
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The published tables of one run (the latest when `run_id` is None) and its runs row.

    Partitioned and appended tables are filtered to the run's rows. Replaced
    tables hold only the newest identity: they are taken whole when the run is
    the latest one that did not fail, and filtered by run_id otherwise (usually
    empty: an older run's identity is no longer in the warehouse).
    """
    runs = warehouse.read_table("runs")
    if runs is None or runs.is_empty():
        raise WarehouseError(
            "the warehouse has no runs table or it is empty: run `memberlink run` first, "
            "or pass the warehouse that run published to"
        )
    runs = runs.sort("started_at", nulls_last=False)
    if run_id is None:
        run = runs.row(runs.height - 1, named=True)
    else:
        chosen = runs.filter(pl.col("run_id").cast(pl.Utf8) == run_id)
        if chosen.is_empty():
            raise WarehouseError(
                f"run {run_id} is not in the warehouse's runs table: check the id, or omit "
                "--run to report the latest run"
            )
        run = chosen.row(0, named=True)
    succeeded = runs
    if "status" in runs.columns:
        succeeded = runs.filter(pl.col("status").cast(pl.Utf8) != "failed")
    latest_published = succeeded["run_id"].cast(pl.Utf8).to_list()[-1:] if succeeded.height else []
    whole_identity = [str(run["run_id"])] == latest_published
    tables: dict[str, pl.DataFrame] = {}
    for name in REPORT_TABLES:
        frame = warehouse.read_table(name)
        if frame is None:
            continue
        keep_whole = name in REPLACED_TABLES and whole_identity
        if "run_id" in frame.columns and not keep_whole:
            frame = frame.filter(pl.col("run_id").cast(pl.Utf8) == str(run["run_id"]))
        tables[name] = frame
    return tables, dict(run)


# --- facts: polars summaries of the published tables ---


def report_facts(tables: dict[str, pl.DataFrame], run: dict) -> ReportFacts:
    """Reduce the published tables to the few small frames the report shows."""
    xref = _table(tables, "member_xref")
    quarantine = _table(tables, "quarantine")
    discrepancies = _table(tables, "points_discrepancies")
    quality = ingest_counts(tables, run)
    by_kind = discrepancies_by_kind(discrepancies)
    points = points_by_channel(_table(tables, "points_balances"))
    funnel = matching_funnel(xref, quarantine, quality)
    unified = _n_unified(xref, _table(tables, "unified_members"))
    headline = {
        "member records read": _funnel_value(funnel, "records read"),
        "rows quarantined": int(quality["rows_quarantined"].sum())
        if quality.height else quarantine.height,
        "unified members": unified,
        "points accounts": points["accounts"].sum() if points.height else 0,
        "points on ledgers": points["ledger_balance"].sum() if points.height else 0,
        "discrepancies": discrepancies.height,
        "pairs to review": _table(tables, "review_queue").height,
        "hub values": _table(tables, "hub_values").height,
    }
    return ReportFacts(
        run=run_header(run),
        headline=headline,
        funnel=funnel,
        overlap=channel_overlap(xref),
        channel_members=channel_members(xref),
        points_by_channel=points,
        discrepancies_by_kind=by_kind,
        top_discrepancies=top_discrepancies(discrepancies),
        data_quality=quality,
        failed_expectations=failed_expectations(_table(tables, "data_quality")),
        quarantine_reasons=quarantine_reasons(quarantine),
        identity=identity_summary(tables),
    )


def run_header(run: dict) -> dict[str, Any]:
    """The runs row as the header shows it: times to the second and the wall time."""
    started, finished = _as_datetime(run.get("started_at")), _as_datetime(run.get("finished_at"))
    duration = None
    if started and finished:
        seconds = (finished - started).total_seconds()
        duration = f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"
    return {
        "run_id": str(run.get("run_id") or "unknown"),
        "flow_run_name": run.get("flow_run_name"),
        "as_of": str(run.get("as_of") or "unknown"),
        "status": str(run.get("status") or "unknown"),
        "started_at": started.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if started else None,
        "finished_at": finished.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if finished else None,
        "duration": duration,
        "error": run.get("error"),
        "warehouse": run.get("warehouse"),
    }


def ingest_counts(tables: dict[str, pl.DataFrame], run: dict) -> pl.DataFrame:
    """Rows read, valid and quarantined per channel and dataset, from the best source at hand.

    The flow's `ingest_counts` table first, then the `counts` JSON of the runs row,
    then whatever the quarantine and the xref say (members only).
    """
    schema = {"channel": pl.Utf8, "dataset": pl.Utf8, "rows_read": pl.Int64,
              "rows_valid": pl.Int64, "rows_quarantined": pl.Int64}
    counted = _table(tables, "ingest_counts")
    if not {"rows_read", "rows_valid", "rows_quarantined"} <= set(counted.columns):
        counted = _counts_from_run(run, schema)
    if counted.is_empty():
        counted = _counts_from_outputs(tables, schema)
    return (
        counted.select(list(schema)).cast(schema)
        .with_columns(
            share=pl.when(pl.col("rows_read") > 0)
            .then(pl.col("rows_quarantined") / pl.col("rows_read"))
            .otherwise(0.0)
        )
        .sort("channel", "dataset")
    )


def matching_funnel(
    xref: pl.DataFrame, quarantine: pl.DataFrame, quality: pl.DataFrame
) -> pl.DataFrame:
    """Records read → quarantined → linked by each rule → unified members."""
    members_quality = quality.filter(pl.col("dataset") == "members")
    if members_quality.height:
        read = int(members_quality["rows_read"].sum())
        quarantined = int(members_quality["rows_quarantined"].sum())
    else:
        quarantined = _quarantined_members(quarantine)
        read = xref.height + quarantined
    steps = [("records read", "input", read), ("quarantined", "quarantine", quarantined),
             ("valid records", "input", xref.height)]
    if "match_rule" in xref.columns:
        grouped = xref.group_by("match_rule").len()
        by_rule = dict(zip(grouped["match_rule"], grouped["len"], strict=True))
        rules = [*MATCH_RULES, *sorted(set(by_rule) - set(MATCH_RULES))]
        steps += [(f"linked by {rule}" if rule != "singleton" else "singletons", "rule",
                   by_rule[rule]) for rule in rules if by_rule.get(rule)]
    steps.append(("unified members", "unified", _n_unified(xref, pl.DataFrame())))
    return pl.DataFrame(steps, schema={"step": pl.Utf8, "group": pl.Utf8, "records": pl.Int64},
                        orient="row")


def channel_overlap(xref: pl.DataFrame) -> pl.DataFrame:
    """How many unified members hold each combination of channels (UpSet intersections)."""
    if not {"channel", "unified_id"} <= set(xref.columns) or xref.is_empty():
        return pl.DataFrame(schema={"combination": pl.List(pl.Utf8), "members": pl.Int64})
    return (
        xref.group_by("unified_id")
        .agg(combination=pl.col("channel").unique().sort())
        .with_columns(key=pl.col("combination").list.join("+"))
        .group_by("key")
        .agg(pl.col("combination").first(), members=pl.len().cast(pl.Int64))
        .sort(["members", "key"], descending=[True, False])
        .select("combination", "members")
    )


def channel_members(xref: pl.DataFrame) -> pl.DataFrame:
    """Per channel: records, unified members, and how many of them other channels share."""
    if not {"channel", "unified_id"} <= set(xref.columns) or xref.is_empty():
        return pl.DataFrame(schema={"channel": pl.Utf8, "records": pl.Int64,
                                    "unified_members": pl.Int64, "shared": pl.Int64})
    spread = xref.with_columns(n_channels=pl.col("channel").n_unique().over("unified_id"))
    return (
        spread.group_by("channel")
        .agg(
            records=pl.len().cast(pl.Int64),
            unified_members=pl.col("unified_id").n_unique().cast(pl.Int64),
            shared=pl.col("unified_id").filter(pl.col("n_channels") > 1).n_unique().cast(pl.Int64),
        )
        .sort("channel")
    )


def points_by_channel(points_balances: pl.DataFrame) -> pl.DataFrame:
    """Per channel totals of the reconciled accounts."""
    sums = ["earned", "redeemed", "expired", "adjusted", "ledger_balance", "reported_balance",
            "difference"]
    if points_balances.is_empty() or "channel" not in points_balances.columns:
        return pl.DataFrame(schema={"channel": pl.Utf8, "accounts": pl.Int64}
                            | dict.fromkeys(sums, pl.Int64))
    present = [name for name in sums if name in points_balances.columns]
    return (
        points_balances.group_by("channel")
        .agg(pl.len().cast(pl.Int64).alias("accounts"), *[pl.col(n).sum() for n in present])
        .with_columns(pl.lit(0, pl.Int64).alias(n) for n in sums if n not in present)
        .select("channel", "accounts", *sums)
        .sort("channel")
    )


def discrepancies_by_kind(discrepancies: pl.DataFrame) -> pl.DataFrame:
    """Count and absolute amount per kind: a mismatch of -500 and one of +500 both matter."""
    if discrepancies.is_empty() or "kind" not in discrepancies.columns:
        return pl.DataFrame(schema={"kind": pl.Utf8, "count": pl.Int64, "amount": pl.Int64})
    amount = pl.col("amount").abs() if "amount" in discrepancies.columns else pl.lit(0)
    return (
        discrepancies.group_by("kind")
        .agg(count=pl.len().cast(pl.Int64), amount=amount.sum().cast(pl.Int64))
        .sort(["count", "kind"], descending=[True, False])
    )


def top_discrepancies(
    discrepancies: pl.DataFrame, limit: int = TOP_ROWS, per_kind: int = TOP_PER_KIND
) -> pl.DataFrame:
    """The largest discrepancies by absolute amount, at most `per_kind` of each kind.

    Without the cap one systematic problem (a channel off by the same amount on
    every account) fills the table and hides every other kind.
    """
    columns = ["kind", "channel", "member_id", "unified_id", "amount", "reference", "detail"]
    size = pl.col("amount").abs()
    return (
        _with_columns(discrepancies, columns)
        .sort(size, "kind", "channel", "member_id", descending=[True, False, False, False],
              nulls_last=True)
        .filter(pl.int_range(pl.len()).over("kind") < per_kind)
        .head(limit)
    )


def failed_expectations(data_quality: pl.DataFrame, limit: int = TOP_ROWS) -> pl.DataFrame:
    """The validation warnings with the most unexpected rows, per channel and dataset."""
    columns = ["channel", "dataset", "expectation", "severity", "unexpected_count",
               "unexpected_percent"]
    if "expectation" not in data_quality.columns:
        return _with_columns(pl.DataFrame(), columns)
    failed = data_quality
    if "success" in data_quality.columns:
        failed = data_quality.filter(~pl.col("success").cast(pl.Boolean))
    return (
        _with_columns(failed, columns)
        .sort("unexpected_count", descending=True, nulls_last=True)
        .head(limit)
    )


def quarantine_reasons(quarantine: pl.DataFrame, limit: int = TOP_ROWS) -> pl.DataFrame:
    """Quarantined rows per reason: a row with two reasons counts under both."""
    schema = {"channel": pl.Utf8, "dataset": pl.Utf8, "reason": pl.Utf8, "rows": pl.Int64}
    if quarantine.is_empty() or "reasons" not in quarantine.columns:
        return pl.DataFrame(schema=schema)
    return (
        _with_columns(quarantine, ["channel", "dataset", "reasons"])
        .with_columns(reason=pl.col("reasons").cast(pl.Utf8).str.split("; "))
        .explode("reason")
        .filter(pl.col("reason").str.strip_chars() != "")
        .group_by("channel", "dataset", "reason")
        .agg(rows=pl.len().cast(pl.Int64))
        .sort(["rows", "channel", "dataset", "reason"], descending=[True, False, False, False])
        .head(limit)
        .cast(schema)
    )


def identity_summary(tables: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Counts of what the identity stages left for people: changes, reviews, hubs."""
    changes = _table(tables, "identity_changes")
    hubs = _table(tables, "hub_values")
    kind = _first_present(changes, ("change", "change_type", "kind", "event"))
    hub_kind = _first_present(hubs, ("identifier", "field", "rule", "kind"))
    return {
        "identity_changes": changes.height,
        "changes_by_kind": _count_by(changes, kind),
        "review_queue": _table(tables, "review_queue").height,
        "hub_values": hubs.height,
        "hubs_by_identifier": _count_by(hubs, hub_kind),
    }


# --- charts: matplotlib to inline SVG ---


def render_charts(facts: ReportFacts) -> dict[str, Markup | None]:
    """Each chart as inline SVG markup, or None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    return {
        "funnel": _svg("funnel", funnel_chart, facts.funnel)
        if facts.funnel["records"].sum() else None,
        "overlap": _svg("overlap", overlap_chart, facts.overlap) if facts.overlap.height else None,
        "points": _svg("points", points_chart, facts.points_by_channel)
        if facts.points_by_channel.height else None,
        "discrepancies": _svg("discrepancies", discrepancy_chart, facts.discrepancies_by_kind)
        if facts.discrepancies_by_kind.height else None,
        "quality": _svg("quality", quality_chart, facts.data_quality)
        if facts.data_quality.height else None,
    }


def funnel_chart(funnel: pl.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    colours = {"input": _SLATE, "quarantine": _RED, "rule": _BLUE, "unified": _GREEN}
    steps, counts = funnel["step"].to_list(), funnel["records"].to_list()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(steps) + 0.9))
    bars = ax.barh(steps, counts, color=[colours[g] for g in funnel["group"]], height=0.62)
    ax.invert_yaxis()
    _label_bars(ax, bars, counts)
    _tidy_axes(ax, grid="x")
    _compact_ticks(ax, "x")
    ax.set_title("Member records through matching", loc="left", fontweight="bold")
    return fig


def overlap_chart(overlap: pl.DataFrame) -> Any:
    """UpSet-style: bars for the commonest channel combinations, a dot matrix below naming them."""
    import matplotlib.pyplot as plt

    top = overlap.head(UPSET_COMBINATIONS)
    combos, counts = top["combination"].to_list(), top["members"].to_list()
    channels = sorted({c for combo in combos for c in combo})
    fig, (bars_ax, dots_ax) = plt.subplots(
        2, 1, figsize=(7, 2.4 + 0.24 * len(channels)), sharex=True,
        gridspec_kw={"height_ratios": [2.4, max(0.8, 0.26 * len(channels))]},
    )
    x = range(len(combos))
    colours = [_BLUE if len(combo) > 1 else _SLATE for combo in combos]
    bars = bars_ax.bar(x, counts, color=colours, width=0.6)
    for bar, value in zip(bars, counts, strict=True):
        bars_ax.annotate(f"{value:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                         xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                         fontsize=8, color=_INK)
    _tidy_axes(bars_ax, grid="y")
    bars_ax.set_ylabel("unified members")
    bars_ax.set_title("Unified members by channel combination (blue: several channels)",
                      loc="left", fontweight="bold")
    bars_ax.margins(y=0.15)
    for row in range(len(channels)):
        dots_ax.scatter(x, [row] * len(combos), s=36, color=_GRID, zorder=1)
    for col, combo in enumerate(combos):
        rows = [channels.index(c) for c in combo]
        dots_ax.plot([col, col], [min(rows), max(rows)], color=_INK, linewidth=1.6, zorder=2)
        dots_ax.scatter([col] * len(rows), rows, s=40, color=_INK, zorder=3)
    dots_ax.set_yticks(range(len(channels)), channels)
    dots_ax.set_ylim(len(channels) - 0.5, -0.5)
    dots_ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        dots_ax.spines[side].set_visible(False)
    dots_ax.tick_params(axis="y", length=0)
    return fig


def points_chart(points: pl.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    series = [("earned", _TEAL), ("redeemed", _BLUE), ("expired", _AMBER),
              ("ledger_balance", _INK)]
    channels = points["channel"].to_list()
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(11, 3.2))
    for i, (name, colour) in enumerate(series):
        offsets = [c + (i - (len(series) - 1) / 2) * width for c in range(len(channels))]
        ax.bar(offsets, points[name].to_list(), width=width * 0.92, color=colour,
               label=name.replace("_", " "))
    ax.set_xticks(range(len(channels)), channels)
    _tidy_axes(ax, grid="y")
    _compact_ticks(ax, "y")
    ax.axhline(0, color=_MUTED, linewidth=0.8)
    ax.legend(ncols=len(series), frameon=False, loc="upper left", bbox_to_anchor=(0, -0.08))
    ax.set_title("Points by channel (ledger, up to the cut-off)", loc="left", fontweight="bold")
    return fig


def discrepancy_chart(by_kind: pl.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    kinds = by_kind["kind"].to_list()
    fig, (count_ax, amount_ax) = plt.subplots(
        1, 2, figsize=(11, 0.3 * len(kinds) + 1.0), sharey=True
    )
    for ax, column, colour, title in (
        (count_ax, "count", _RED, "Discrepancies by kind: count"),
        (amount_ax, "amount", _AMBER, "points involved (absolute)"),
    ):
        values = by_kind[column].to_list()
        bars = ax.barh(kinds, values, color=colour, height=0.6)
        _label_bars(ax, bars, values)
        _tidy_axes(ax, grid="x")
        _compact_ticks(ax, "x")
        ax.set_title(title, loc="left", fontweight="bold")
    count_ax.invert_yaxis()
    return fig


def quality_chart(quality: pl.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    """Rows read (valid + quarantined) beside the quarantined share, which is what alerts."""
    labels = [f"{c} / {d}" for c, d in zip(quality["channel"], quality["dataset"], strict=True)]
    valid, quarantined = quality["rows_valid"].to_list(), quality["rows_quarantined"].to_list()
    shares = [100 * share for share in quality["share"].to_list()]
    fig, (rows_ax, share_ax) = plt.subplots(
        1, 2, figsize=(11, 0.24 * len(labels) + 1.1), sharey=True,
        gridspec_kw={"width_ratios": [3, 2]},
    )
    rows_ax.barh(labels, valid, color=_TEAL, height=0.62, label="valid")
    rows_ax.barh(labels, quarantined, left=valid, color=_RED, height=0.62, label="quarantined")
    rows_ax.invert_yaxis()
    _tidy_axes(rows_ax, grid="x")
    _compact_ticks(rows_ax, "x")
    rows_ax.legend(ncols=2, frameon=False, loc="lower right", bbox_to_anchor=(1, 1))
    rows_ax.set_title("Rows read per channel and dataset", loc="left", fontweight="bold")
    bars = share_ax.barh(labels, shares, color=[_RED if s else _GRID for s in shares], height=0.62)
    for bar, share in zip(bars, shares, strict=True):
        middle = bar.get_y() + bar.get_height() / 2
        share_ax.annotate(f" {_share(share / 100)}", (bar.get_width(), middle),
                          va="center", fontsize=8, color=_INK)
    share_ax.margins(x=0.15)
    _tidy_axes(share_ax, grid="x")
    share_ax.xaxis.set_major_formatter("{x:g}%")
    share_ax.set_title("quarantined share", loc="left", fontweight="bold")
    return fig


def _svg(name: str, draw: Any, data: pl.DataFrame) -> Markup:
    """Draw with house style, return scalable inline SVG without XML prologue or metadata."""
    import matplotlib.pyplot as plt

    style = {
        "svg.fonttype": "none",            # text stays text: small, selectable, searchable
        "svg.hashsalt": f"memberlink-{name}",  # stable, per-chart ids: no clashes when inlined
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": 9,
        "figure.constrained_layout.use": True,
        "axes.edgecolor": _GRID,
        "axes.labelcolor": _INK,
        "xtick.color": _MUTED,
        "ytick.color": _INK,
        "text.color": _INK,
    }
    with plt.rc_context(style):
        figure = draw(data)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(figure)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s(?:xmlns(?::xlink)?|version)="[^"]*"', "", svg)
    svg = re.sub(r'\s(width|height)="[\d.]+pt"', "", svg, count=2)
    return Markup(svg.replace("<svg", f'<svg role="img" aria-label="{name} chart"', 1))


def _label_bars(ax: Any, bars: Any, values: list[int]) -> None:
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f" {value:,}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    va="center", fontsize=8, color=_INK)
    ax.margins(x=0.12)


def _tidy_axes(ax: Any, grid: str) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis=grid, color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(length=0)


def _compact_ticks(ax: Any, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter

    def compact(value: float, _pos: int) -> str:
        for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:g}{suffix}"
        return f"{value:g}"

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(compact))


# --- HTML and Markdown ---


def render_html(facts: ReportFacts, charts: dict[str, Markup | None], seconds: float) -> str:
    """The page, from tasks/templates/report.html.j2; every output is masked and escaped."""
    environment = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _number
    environment.filters["pct"] = _share
    template = environment.get_template("report.html.j2")
    return template.render(
        facts=facts,
        run=facts.run,
        charts=charts,
        rows=lambda frame: frame.to_dicts(),
        kind_help=DISCREPANCY_DESCRIPTIONS,
        top_per_kind=TOP_PER_KIND,
        overlap_rows=[
            {"combination": " + ".join(row["combination"]), "members": row["members"]}
            for row in facts.overlap.head(UPSET_COMBINATIONS).to_dicts()
        ],
        generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        build_seconds=seconds,
    )


def render_markdown(facts: ReportFacts) -> str:
    """The headline for a Prefect artifact: counts, discrepancies by kind, quality per channel."""
    run = facts.run
    timing = f" · {run['duration']}" if run["duration"] else ""
    lines = [
        f"# memberlink run `{run['run_id']}`",
        "",
        f"as of **{run['as_of']}** · status **{run['status']}**{timing}",
        "",
        "| | |",
        "| --- | ---: |",
        *[f"| {label} | {_number(value)} |" for label, value in facts.headline.items()],
        "",
        "## Discrepancies by kind",
        "",
    ]
    if facts.discrepancies_by_kind.height:
        lines += ["| kind | count | points (absolute) |", "| --- | ---: | ---: |"]
        lines += [f"| {r['kind']} | {_number(r['count'])} | {_number(r['amount'])} |"
                  for r in facts.discrepancies_by_kind.to_dicts()]
    else:
        lines.append("No discrepancies.")
    lines += ["", "## Data quality per channel", ""]
    if facts.data_quality.height:
        lines += ["| channel | dataset | read | valid | quarantined | share |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [
            f"| {r['channel']} | {r['dataset']} | {_number(r['rows_read'])} | "
            f"{_number(r['rows_valid'])} | {_number(r['rows_quarantined'])} | "
            f"{_share(r['share'])} |"
            for r in facts.data_quality.to_dicts()
        ]
    else:
        lines.append("No datasets were read.")
    if run["error"]:
        lines += ["", f"**Error:** {_markdown_cell(run['error'])}"]
    return mask_pii_text("\n".join(lines) + "\n")


def mask_pii_text(text: str) -> str:
    """Mask anything shaped like a mainland mobile (138****5678) or resident id (110*...123X)."""
    text = _PHONE.sub(r"\1****\2", text)
    return _ID_CARD.sub(lambda m: m[1] + "*" * 11 + m[2], text)


def _finalize(value: Any) -> Any:
    if isinstance(value, Markup):
        return Markup(mask_pii_text(str(value)))
    if value is None:
        return ""
    return mask_pii_text(str(value)) if isinstance(value, str) else value


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _share(value: float | None) -> str:
    """0.03% rather than 0.0%: a few quarantined rows must not read as none."""
    if value is None:
        return "–"
    return f"{value:.2%}" if 0 < value < 0.01 else f"{value:.1%}"


def _markdown_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- small helpers ---


def _table(tables: dict[str, pl.DataFrame], name: str) -> pl.DataFrame:
    frame = tables.get(name)
    return frame if frame is not None else pl.DataFrame()


_NUMERIC = {"amount": pl.Int64, "unexpected_count": pl.Int64, "unexpected_percent": pl.Float64}


def _with_columns(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Exactly `columns`, missing ones null: a fixed layout that never shows a PII column."""
    if not frame.columns:  # selecting literals from a frame without columns gives one row
        return pl.DataFrame(schema={c: _NUMERIC.get(c, pl.Utf8) for c in columns})
    return frame.select(
        pl.col(c) if c in frame.columns else pl.lit(None, _NUMERIC.get(c, pl.Utf8)).alias(c)
        for c in columns
    )


def _count_by(frame: pl.DataFrame, column: str | None) -> list[dict[str, Any]]:
    if column is None or frame.is_empty():
        return []
    return (
        frame.group_by(column).agg(rows=pl.len())
        .sort(["rows", column], descending=[True, False])
        .rename({column: "label"})
        .with_columns(pl.col("label").cast(pl.Utf8))
        .head(TOP_ROWS).to_dicts()
    )


def _first_present(frame: pl.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def _n_unified(xref: pl.DataFrame, unified_members: pl.DataFrame) -> int:
    if "unified_id" in xref.columns and xref.height:
        return xref["unified_id"].n_unique()
    return unified_members.height


def _quarantined_members(quarantine: pl.DataFrame) -> int:
    if "dataset" not in quarantine.columns:
        return 0
    return quarantine.filter(pl.col("dataset") == "members").height


def _funnel_value(funnel: pl.DataFrame, step: str) -> int | None:
    values = funnel.filter(pl.col("step") == step)["records"]
    return int(values[0]) if values.len() else None


def _counts_from_run(run: dict, schema: dict[str, Any]) -> pl.DataFrame:
    """The per-channel counts the flow stores as JSON in the runs row."""
    counts = run.get("counts")
    if isinstance(counts, str):
        try:
            counts = json.loads(counts)
        except ValueError:
            counts = None
    channels = counts.get("channels") if isinstance(counts, dict) else None
    if not isinstance(channels, dict):
        return pl.DataFrame(schema=schema)
    rows = [
        {"channel": channel, "dataset": dataset, **{k: numbers.get(k) for k in list(schema)[2:]}}
        for channel, datasets in channels.items()
        for dataset, numbers in datasets.items()
    ]
    return pl.DataFrame(rows, schema=schema)


def _counts_from_outputs(tables: dict[str, pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    """Members only: valid rows are in the xref, the rest in quarantine."""
    xref, quarantine = _table(tables, "member_xref"), _table(tables, "quarantine")
    valid = pl.DataFrame(schema={"channel": pl.Utf8, "rows_valid": pl.Int64})
    if "channel" in xref.columns:
        valid = xref.group_by("channel").agg(rows_valid=pl.len().cast(pl.Int64))
    bad = (
        quarantine.filter(pl.col("dataset") == "members").group_by("channel")
        .agg(rows_quarantined=pl.len().cast(pl.Int64))
        if {"channel", "dataset"} <= set(quarantine.columns)
        else pl.DataFrame(schema={"channel": pl.Utf8, "rows_quarantined": pl.Int64})
    )
    return (
        valid.join(bad, on="channel", how="full", coalesce=True)
        .with_columns(
            pl.col("rows_valid", "rows_quarantined").fill_null(0), dataset=pl.lit("members")
        )
        .with_columns(rows_read=pl.col("rows_valid") + pl.col("rows_quarantined"))
        .select(list(schema))
        .cast(schema)
    )


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time())
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
