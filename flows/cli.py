"""`memberlink` on the command line: run, demo, report.

The CLI prints one line per stage and a closing summary; Prefect's own console
log is turned down to warnings so the two do not interleave (the full log still
goes to the Prefect API and shows in the UI).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.config import load_config
from tasks.errors import MemberlinkError

app = typer.Typer(
    help="Unify a brand's loyalty members across channels and reconcile their points.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, highlight=False)
T = TypeVar("T")


@app.command()
def run(
    config: Annotated[Path, typer.Option(help="The run's sources.toml.")] = Path("sources.toml"),
    warehouse: Annotated[str | None, typer.Option(
        help="A .duckdb path, duckdb:///path, postgresql://..., env:VAR or secret:BLOCK.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Cut-off date YYYY-MM-DD.")] = None,
    channels: Annotated[list[str] | None, typer.Option(
        "--channel", help="Only this channel (repeatable).")] = None,
    full_refresh: Annotated[bool, typer.Option(
        help="Rebuild identities instead of carrying unified_ids over.")] = False,
    raw_pii: Annotated[bool, typer.Option(
        help="Publish raw phone and id-card columns.")] = False,
) -> None:
    """Run the pipeline on a sources.toml and publish to the warehouse."""
    cutoff = _parse_date(as_of) if as_of else None
    _guarded(lambda: load_config(config).select_channels(channels))  # fail fast, before Prefect
    summary = _run_flow(
        config=str(config), warehouse=warehouse, as_of=cutoff, channels=channels or None,
        full_refresh=full_refresh, raw_pii=raw_pii,
    )
    _print_summary(summary)


@app.command()
def demo(
    people: Annotated[int, typer.Option(min=10, help="How many people to generate.")] = 5000,
    out: Annotated[Path, typer.Option(help="Where to write the demo channels.")] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 7,
) -> None:
    """Generate messy multi-channel demo data, then run the pipeline on it."""
    from tasks.demo_data import generate_demo

    manifest = generate_demo(out, people=people, seed=seed)
    console.print(f"[bold]demo[/]: {people:,} people written to {out}/ "
                  f"({manifest.config.name}, three files per channel, truth/)")
    summary = _run_flow(config=str(manifest.config), warehouse=None, as_of=None,
                        channels=None, full_refresh=False, raw_pii=False)
    _print_summary(summary)


@app.command()
def report(
    warehouse: Annotated[str, typer.Option(help="The warehouse to read.")] = "warehouse.duckdb",
    run_id: Annotated[str | None, typer.Option("--run", help="A run id; default the latest.")] =
    None,
    out: Annotated[Path, typer.Option(help="Folder for report.html and summary.md.")] =
    Path("memberlink-report"),
) -> None:
    """Rebuild the HTML and Markdown report of a run from the warehouse."""
    from tasks.report import build_report, load_report_tables
    from tasks.warehouse import open_warehouse

    def rebuild() -> None:
        tables, run_row = load_report_tables(open_warehouse(warehouse), run_id)
        paths = build_report(tables, run_row, out)
        console.print(f"report: {paths.html}\nsummary: {paths.markdown}")

    _guarded(rebuild)


def _run_flow(**parameters: object) -> dict:
    from flows import progress

    _quiet_prefect_console()
    from flows.unify_members import unify_members

    def print_stage(record: progress.StageRecord) -> None:
        console.print(f"  [cyan]{record.stage:<10}[/] {record.subject:<18} {record.counts_text()} "
                      f"[dim]({record.seconds:.2f}s)[/]")

    progress.add_listener(print_stage)
    try:
        return _guarded(lambda: unify_members(**parameters))
    finally:
        progress.remove_listener(print_stage)


def _guarded(action: Callable[[], T]) -> T:
    """Errors a user can fix print as one line; a traceback only with MEMBERLINK_DEBUG=1."""
    try:
        return action()
    except MemberlinkError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}")
        raise typer.Exit(error.exit_code) from None
    except Exception as error:
        if os.environ.get("MEMBERLINK_DEBUG"):
            raise
        console.print(f"[bold red]run failed:[/] {type(error).__name__}: {escape(str(error))}\n"
                      "Set MEMBERLINK_DEBUG=1 for the traceback.")
        raise typer.Exit(1) from None


def _quiet_prefect_console() -> None:
    """Silence Prefect's console handlers: the CLI prints its own lines and the error.

    The API handlers keep INFO, so the full log and any traceback still reach the
    Prefect UI. Telemetry is off: it only fails on machines without internet.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for name in ["", *logging.root.manager.loggerDict]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler | logging.StreamHandler) and not (
                isinstance(handler, logging.FileHandler)
            ):
                handler.setLevel(logging.CRITICAL + 1)


def _print_summary(summary: dict) -> None:
    counts = json.loads(summary["counts"])
    table = Table(title=f"memberlink run {summary['run_id']} · as of {summary['as_of']}")
    table.add_column("channel")
    for dataset in ("members", "points", "balances"):
        table.add_column(f"{dataset}\nread / quarantined", justify="right")
    for channel, datasets in counts["channels"].items():
        cells = [
            f"{row['rows_read']:,} / {row['rows_quarantined']:,}" if (row := datasets.get(d))
            else "-"
            for d in ("members", "points", "balances")
        ]
        table.add_row(channel, *cells)
    console.print(table)
    rules = ", ".join(f"{rule} {n:,}" for rule, n in counts["match_rules"].items())
    console.print(f"unified members: [bold]{counts['unified_members']:,}[/]"
                  f"  (records by rule: {rules})")
    console.print(f"points discrepancies: {counts['points_discrepancies']:,}   "
                  f"review queue: {counts['review_queue']:,}   "
                  f"hub values: {counts['hub_values']:,}")
    console.print(f"warehouse: {summary['warehouse']}\nreport:    {summary['report']}")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        console.print(f"[bold red]error:[/] --as-of {text!r} is not a date; use YYYY-MM-DD")
        raise typer.Exit(2) from None


if __name__ == "__main__":
    sys.exit(app())
