"""Validation: decide, per dataset and channel, which rows are usable and which go to quarantine.

The rules are data: one Great Expectations suite per dataset in `expectations/<dataset>.json`.
Each expectation carries `meta.severity` ("critical" quarantines the row, "warning" only counts
it) and `meta.reason`, the text a reviewer reads in the quarantine. Changing what is valid means
editing a JSON file, not this module.

GX does not read polars and lists failing rows slowly: `result_format` COMPLETE walks the
failures in Python (6 s on 200k rows with half failing when keyed by a `source_row` column;
1.1-1.5 s against 0.6 s for this path with `source_row` as the index, bench/bench_validate.py).
So GX runs the suite for the counts, the data-quality summary and Data Docs (SUMMARY), and
the same expectations, read from the same JSON, are evaluated as polars expressions to find
the rows; GX's count and polars' must agree for every expectation, or the run stops.
`row_finder="gx"` takes the rows from GX instead (kept to prove the two agree).

GX only ever sees derived columns (ids, flags, counts): no expectation may name a phone or id
card column, so no personal value can reach Data Docs, and unexpected values are excluded
from the results on top of that.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from tasks.errors import ValidationFailed
from tasks.privacy import mask_id_card, mask_phone
from tasks.schema import (
    FLAGS,
    PII_COLUMNS,
    QUARANTINE_SCHEMA,
    RECORD_ID,
    SOURCE_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
SEVERITIES = ("critical", "warning")
DEFAULT_MAX_QUARANTINED_SHARE = 0.5

# Identifiers that let a member be linked deterministically (`identifier_count`).
IDENTIFIERS: tuple[str, ...] = ("phone", "phone_sha256", "unionid", "email", "id_card")
# Derived columns numbering the rows that share a key, in reading order (1 = first).
OCCURRENCE_KEYS: dict[str, tuple[str, ...]] = {
    "member_id_occurrence": ("member_id",),
    "member_id_as_of_occurrence": ("member_id", "as_of"),
}
FLAG_PREFIX = "flag_"
FIRST_ROW = "{first_row}"
SAMPLE_ROWS = 3
MIN_MASKABLE = 9   # shorter raw identifiers would show through a 3+4 character mask
_MOBILE = r"^1[3-9]\d{9}$"

DATA_QUALITY_COLUMNS: dict[str, pl.DataType] = {
    "channel": pl.Utf8(),
    "dataset": pl.Utf8(),
    "expectation": pl.Utf8(),
    "severity": pl.Utf8(),
    "unexpected_count": pl.Int64(),
    "unexpected_percent": pl.Float64(),
    "sample": pl.Utf8(),
    "success": pl.Boolean(),
}

# GX contexts and its lazy import are not thread-safe; Prefect runs channels in threads.
_GX_LOCK = threading.Lock()

RowFinder = Literal["polars", "gx"]


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite, as this stage reads it."""

    index: int
    type: str
    kwargs: dict[str, Any]
    severity: str
    reason: str
    fix: str

    @property
    def column(self) -> str:
        return self.kwargs["column"]

    @property
    def label(self) -> str:
        """How the data-quality table and error messages name the expectation."""
        return f"{self.type}({self.column})"

    def subject(self, dataset: str) -> str:
        """The source column a person would fix: `points` for `flag_points_not_integer`,
        `member_id` for `member_id_occurrence`."""
        if self.column in OCCURRENCE_KEYS:
            return OCCURRENCE_KEYS[self.column][0]
        if self.column == "identifier_count":
            return ", ".join(IDENTIFIERS)
        if self.column.startswith(FLAG_PREFIX):
            flag = self.column.removeprefix(FLAG_PREFIX)
            owners = [c for c in SOURCE_COLUMNS[dataset] if flag.startswith(f"{c}_")]
            return max(owners, key=len, default=flag)
        return self.column

    @property
    def is_table_level(self) -> bool:
        """Existence of a column is checked on the frame as read: normalization adds every
        column, so only the raw frame knows which ones the source lacks."""
        return self.type == "expect_column_to_exist"


@dataclass(frozen=True)
class Suite:
    """A dataset's expectations, loaded from its JSON file."""

    name: str
    path: Path
    document: dict[str, Any]
    rules: tuple[Rule, ...]
    max_quarantined_share: float

    @property
    def critical(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.severity == "critical" and not r.is_table_level)

    @property
    def row_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if not r.is_table_level)

    @property
    def check_columns(self) -> tuple[str, ...]:
        """The columns GX reads, in first-use order."""
        return tuple(dict.fromkeys(r.column for r in self.rules))


@dataclass
class Validated:
    """A dataset of one channel, split into usable rows and quarantine."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    summary: pl.DataFrame
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    docs_index: Path | None = field(default=None)


# --- suites ---------------------------------------------------------------------------------


def load_suite(dataset: str, suites_dir: Path | None = None) -> Suite:
    """Read `expectations/<dataset>.json` and check it says everything this stage needs."""
    path = (suites_dir or SUITES_DIR) / f"{dataset}.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    rules = tuple(_rule(i, spec, path) for i, spec in enumerate(document["expectations"]))
    share = float(document.get("meta", {}).get("max_quarantined_share",
                                               DEFAULT_MAX_QUARANTINED_SHARE))
    return Suite(document.get("name", dataset), path, document, rules, share)


def _rule(index: int, spec: dict[str, Any], path: Path) -> Rule:
    meta = spec.get("meta", {})
    where = f"{path.name} expectation {index} ({spec.get('type')})"
    if meta.get("severity") not in SEVERITIES:
        raise ValueError(f"{where}: meta.severity must be one of {SEVERITIES}")
    if not meta.get("reason"):
        raise ValueError(f"{where}: meta.reason is required (it is the quarantine reason)")
    column = spec.get("kwargs", {}).get("column")
    if not column:
        raise ValueError(f"{where}: only column expectations are supported")
    if column in PII_COLUMNS:
        raise ValueError(f"{where}: expectations must not read {column!r} (personal data would "
                         "reach Data Docs); check a flag_ column instead")
    if spec["type"] not in _UNEXPECTED and spec["type"] != "expect_column_to_exist":
        raise ValueError(f"{where}: no polars counterpart for this expectation type; "
                         f"supported: {sorted(_UNEXPECTED)}")
    return Rule(index, spec["type"], dict(spec["kwargs"]), meta["severity"], meta["reason"],
                meta.get("fix", "fix the source data"))


# --- the frame GX validates -----------------------------------------------------------------


def _first_row_column(column: str) -> str:
    return f"_first_row_{column}"


def occurrences(frame: pl.DataFrame, keys: list[str], name: str) -> pl.DataFrame:
    """Each row's rank among the rows sharing `keys` (1 = the first read) and the first
    such row's source_row; null where the first key is null (that row fails elsewhere).

    One sort instead of a window per key: `over()` on 200k distinct ids took 0.4-1 s,
    this 0.13 s.
    """
    ordered = (
        frame.select(*keys, SOURCE_ROW).with_row_index("_position")
        .sort([*keys, SOURCE_ROW], nulls_last=True)
        .with_columns(_new=pl.struct(keys).is_first_distinct(), _rank=pl.int_range(pl.len()))
        .with_columns(
            _start=pl.when("_new").then(pl.col("_rank")).forward_fill(),
            _first=pl.when("_new").then(pl.col(SOURCE_ROW)).forward_fill(),
        )
        .sort("_position")
    )
    present = pl.col(keys[0]).is_not_null()
    return ordered.select(
        pl.when(present).then(pl.col("_rank") - pl.col("_start") + 1).alias(name),
        pl.when(present).then(pl.col("_first")).alias(_first_row_column(name)),
    )


def derived_column(name: str, columns: list[str]) -> pl.Expr:
    """The expression for a column an expectation reads, from the normalized frame.

    `flag_<name>`: normalization flagged <name>; `identifier_count`: how many identifiers
    the member has; anything else: the column as normalized. (`*_occurrence` columns are
    made by `occurrences`.)
    """
    if name.startswith(FLAG_PREFIX):
        flag = name.removeprefix(FLAG_PREFIX)
        return pl.col(FLAGS).list.contains(flag).fill_null(False).alias(name)
    if name == "identifier_count":
        present = [pl.col(c).is_not_null() for c in IDENTIFIERS if c in columns]
        return pl.sum_horizontal(present or [pl.lit(0)]).cast(pl.Int32).alias(name)
    if name not in columns:
        raise ValueError(f"expectation column {name!r} is neither a normalized column nor a "
                         "derived one (flag_<name>, *_occurrence, identifier_count)")
    return pl.col(name)


def check_frame(normalized: pl.DataFrame, suite: Suite) -> pl.DataFrame:
    """`source_row` and every column the suite's expectations read."""
    plain = [c for c in suite.check_columns if c not in OCCURRENCE_KEYS]
    checks = normalized.select(pl.col(SOURCE_ROW).cast(pl.Int64),
                               *(derived_column(c, normalized.columns) for c in plain))
    ranked = [occurrences(normalized.with_columns(pl.col(SOURCE_ROW).cast(pl.Int64)),
                          list(OCCURRENCE_KEYS[c]), c)
              for c in suite.check_columns if c in OCCURRENCE_KEYS]
    return pl.concat([checks, *ranked], how="horizontal") if ranked else checks


# --- the same expectations in polars ----------------------------------------------------------


def _not_null(rule: Rule) -> pl.Expr:
    return pl.col(rule.column).is_null()


def _null(rule: Rule) -> pl.Expr:
    return pl.col(rule.column).is_not_null()


def _in_set(rule: Rule) -> pl.Expr:
    return ~pl.col(rule.column).is_in(rule.kwargs["value_set"])


def _not_in_set(rule: Rule) -> pl.Expr:
    return pl.col(rule.column).is_in(rule.kwargs["value_set"])


def _between(rule: Rule) -> pl.Expr:
    value, outside = pl.col(rule.column), pl.lit(False)
    low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
    if low is not None:
        outside = outside | (value <= low if rule.kwargs.get("strict_min") else value < low)
    if high is not None:
        outside = outside | (value >= high if rule.kwargs.get("strict_max") else value > high)
    return outside


def _match_regex(rule: Rule) -> pl.Expr:
    return ~pl.col(rule.column).str.contains(rule.kwargs["regex"])


def _not_match_regex(rule: Rule) -> pl.Expr:
    return pl.col(rule.column).str.contains(rule.kwargs["regex"])


# GX ignores nulls in every map expectation but the two about nulls; fill_null(False) in
# `unexpected` does the same.
_UNEXPECTED = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_values_to_not_match_regex": _not_match_regex,
}


def unexpected(rule: Rule) -> pl.Expr:
    """True where the row fails the expectation, as GX would count it."""
    return _UNEXPECTED[rule.type](rule).fill_null(False).alias(f"rule_{rule.index}")


def reason_text(rule: Rule) -> pl.Expr:
    """The rule's reason for a failing row, with `{first_row}` filled in for duplicates."""
    if FIRST_ROW not in rule.reason:
        return pl.lit(rule.reason)
    before, after = rule.reason.split(FIRST_ROW, 1)
    first = pl.col(_first_row_column(rule.column)).cast(pl.Utf8)
    return pl.concat_str([pl.lit(before), first, pl.lit(after)])


# --- Great Expectations ---------------------------------------------------------------------


def _gx_expectations(suite: Suite) -> list[dict[str, Any]]:
    """The suite's expectations for GX, with the rule index to map results back."""
    return [
        {**spec, "severity": spec["meta"]["severity"],
         "meta": {**spec["meta"], "rule": i}}
        for i, spec in enumerate(suite.document["expectations"])
    ]


def _gx_context(mode: str, root: Path | None = None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode=mode, project_root_dir=root) if root else gx.get_context(
        mode=mode)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _add_suite(context: Any, suite: Suite) -> Any:
    import great_expectations as gx

    gx_suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=suite.name, expectations=_gx_expectations(suite),
                            meta=suite.document.get("meta"))
    )
    # GX logs and drops an expectation it cannot parse; a dropped rule must not pass silently.
    if len(gx_suite.expectations) != len(suite.rules):
        raise ValueError(f"{suite.path}: GX accepted {len(gx_suite.expectations)} of "
                         f"{len(suite.rules)} expectations; check the types and kwargs")
    return gx_suite


def gx_frame(checks: pl.DataFrame, columns: tuple[str, ...], index_rows: bool) -> Any:
    """The checked columns as pandas, for GX.

    Text and dates stay Arrow-backed (no copy). Numbers (as float, so nulls survive) and
    the null-free flag booleans go to numpy: GX compares Arrow numbers with a Python call
    per value, and hashes Arrow columns for its batch fingerprint far slower than numpy
    ones. With `index_rows`, `source_row` becomes the index so GX names failing rows by it.
    """
    import pandas as pd

    def converted(series: pl.Series) -> Any:
        if series.dtype.is_numeric():
            return series.cast(pl.Float64).to_pandas()
        if series.dtype == pl.Boolean and series.null_count() == 0:
            return series.to_pandas()
        return series.to_pandas(use_pyarrow_extension_array=True)

    frame = pd.DataFrame({name: converted(checks[name]) for name in columns})
    if index_rows:
        frame.index = pd.Index(checks[SOURCE_ROW].to_numpy(), name=SOURCE_ROW)
    return frame


def run_suite(suite: Suite, checks: pl.DataFrame, channel: str, dataset: str,
              complete: bool = False) -> ExpectationSuiteValidationResult:
    """Run the suite in an ephemeral GX context on the derived columns.

    SUMMARY asks GX for counts only. COMPLETE also lists every failing row's `source_row`
    (the frame's index then), never a value: `exclude_unexpected_values` is always on.
    """
    frame = gx_frame(checks, suite.check_columns, index_rows=complete)
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE" if complete else "SUMMARY",
        "exclude_unexpected_values": True,
        "partial_unexpected_count": 0,
    }
    if complete:
        result_format["unexpected_index_column_names"] = [SOURCE_ROW]
    with _GX_LOCK:
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        context = _gx_context("ephemeral")
        gx_suite = _add_suite(context, suite)
        batch = (context.data_sources.add_pandas(channel).add_dataframe_asset(dataset)
                 .add_batch_definition_whole_dataframe("rows"))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{channel}.{dataset}", data=batch, suite=gx_suite))
        return definition.run(batch_parameters={"dataframe": frame},
                              result_format=result_format, run_id=RunIdentifier(run_name=channel))


def _results_by_rule(result: ExpectationSuiteValidationResult) -> dict[int, Any]:
    return {r.expectation_config.meta["rule"]: r for r in result.results}


def _gx_unexpected_rows(rule_result: Any) -> list[int]:
    """Source rows GX found failing (COMPLETE with source_row as the named index)."""
    found = rule_result.result.get("unexpected_index_list") or []
    return [row for entry in found for row in entry[SOURCE_ROW]]


# --- quarantine -----------------------------------------------------------------------------


def _masked(column: str) -> pl.Expr:
    """A raw value fit for the quarantine: phones and id cards masked, hashes cut short.

    A value too short for its mask to hide anything is starred out whole.
    """
    value = pl.col(column)
    if column == "phone":
        masked = mask_phone(value)
    elif column == "id_card":
        masked = mask_id_card(value)
    elif column == "phone_sha256":
        masked = value.str.slice(0, 8) + pl.lit("…")
    else:
        return value
    return (pl.when(value.str.len_chars() >= MIN_MASKABLE).then(masked)
            .when(value.is_not_null()).then(pl.lit("***")))


def original_row(raw: pl.DataFrame, dataset: str) -> pl.Expr:
    """The row as read, as JSON, with personal identifiers masked."""
    columns = [c for c in SOURCE_COLUMNS[dataset] if c in raw.columns]
    masked = [_masked(c).cast(pl.Utf8).alias(c) for c in columns]
    return pl.struct(masked).struct.json_encode().alias("original_row")


def quarantine_rows(raw: pl.DataFrame, verdict: pl.DataFrame, channel: str,
                    dataset: str) -> pl.DataFrame:
    """QUARANTINE_SCHEMA rows for the quarantined part of `raw`.

    `verdict` is aligned with `raw` row by row: `quarantined`, `reasons` and `record_id`
    (the normalized id, as matching and the xref know it).
    """
    rows = raw.with_columns(verdict.select("reasons", "record_id")).filter(
        verdict["quarantined"])
    return rows.select(
        pl.lit(channel).alias("channel"),
        pl.lit(dataset).alias("dataset"),
        pl.col(SOURCE_FILE).cast(pl.Utf8) if SOURCE_FILE in rows.columns
        else pl.lit(None, pl.Utf8).alias(SOURCE_FILE),
        pl.col(SOURCE_ROW).cast(pl.Int64),
        pl.col("record_id"),
        pl.col("reasons"),
        original_row(rows, dataset),
    ).cast(QUARANTINE_SCHEMA)


# --- summary --------------------------------------------------------------------------------


def _masked_record_id(record_id: str) -> pl.Expr:
    """Record ids in a readable sample; channels that key members by mobile get it masked."""
    value = pl.col(record_id)
    return pl.when(value.str.contains(_MOBILE)).then(mask_phone(value)).otherwise(value)


def sample_text(marked: pl.DataFrame, rule: Rule, record_id: str, count: int) -> str | None:
    """`member_id missing: row 3, row 9 (M004) (+5 more)`: a few failing rows to look up.

    Values never appear, only row numbers and record ids, so nothing personal leaks into
    the data-quality table; a reason that varies by row (duplicates) is given per row.
    """
    if count == 0 or rule.is_table_level:
        return None
    per_row = FIRST_ROW in rule.reason
    needed = [SOURCE_ROW, record_id, *([_first_row_column(rule.column)] if per_row else [])]
    head = (marked.lazy().filter(pl.col(f"rule_{rule.index}")).select(needed)
            .head(SAMPLE_ROWS).collect())
    where = pl.concat_str([
        pl.lit("row "), pl.col(SOURCE_ROW).cast(pl.Utf8),
        pl.when(pl.col(record_id).is_not_null())
        .then(pl.concat_str([pl.lit(" ("), _masked_record_id(record_id), pl.lit(")")]))
        .otherwise(pl.lit("")),
        *([pl.lit(": "), reason_text(rule)] if per_row else []),
    ])
    lines = head.select(where.alias("line"))["line"].to_list()
    more = f" (+{count - len(lines)} more)" if count > len(lines) else ""
    if per_row:
        return "; ".join(lines) + more
    return f"{rule.reason}: {', '.join(lines)}{more}"


def summary_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DATA_QUALITY_COLUMNS)


# --- failures a person must fix ---------------------------------------------------------------


def _files(raw: pl.DataFrame) -> str:
    if SOURCE_FILE not in raw.columns or raw.height == 0:
        return "the source"
    files = raw[SOURCE_FILE].unique(maintain_order=True).drop_nulls().to_list()
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def check_required_columns(raw: pl.DataFrame, suite: Suite, channel: str, dataset: str) -> None:
    for rule in suite.rules:
        if rule.is_table_level and rule.column not in raw.columns:
            raise ValidationFailed(
                f"channel {channel!r}, {dataset}: {rule.label} failed, required column "
                f"{rule.column!r} is missing in {_files(raw)} (all {_rows(raw.height)}); "
                f"{rule.fix}")


def check_quarantine_share(marked: pl.DataFrame, suite: Suite, counts: dict[int, int],
                           raw: pl.DataFrame, channel: str, dataset: str,
                           quarantined: int) -> None:
    """A channel whose rows mostly fail is misconfigured, not dirty: stop the run."""
    total = marked.height
    if total == 0 or quarantined == 0 or quarantined / total < suite.max_quarantined_share:
        return
    worst = max(suite.critical, key=lambda r: counts[r.index])
    example = marked.filter(pl.col(f"rule_{worst.index}"))[SOURCE_ROW].head(1).to_list()
    raise ValidationFailed(
        f"channel {channel!r}, {dataset}: {quarantined} of {total} rows "
        f"({quarantined / total:.0%}) fail critical expectations (limit "
        f"{suite.max_quarantined_share:.0%} in {suite.path.name}); most often {worst.label} "
        f"on column {worst.subject(dataset)!r}: {worst.reason.replace(FIRST_ROW, '…')} in "
        f"{_rows(counts[worst.index])} (first at row {example[0]}) of {_files(raw)}; "
        f"{worst.fix}")


# --- the stage ------------------------------------------------------------------------------


def _check_alignment(raw: pl.DataFrame, normalized: pl.DataFrame) -> None:
    """Quarantine rows are cut from `raw` by position: both frames must hold the same rows."""
    if raw.height != normalized.height or (
        SOURCE_ROW in raw.columns
        and not raw[SOURCE_ROW].cast(pl.Int64).equals(normalized[SOURCE_ROW].cast(pl.Int64))
    ):
        raise ValueError("raw and normalized frames must hold the same rows in the same order "
                         f"({raw.height} vs {normalized.height} rows)")


def validate_dataset(
    raw: pl.DataFrame,
    normalized: pl.DataFrame,
    dataset: str,
    channel: str,
    docs_dir: Path | None = None,
    *,
    suites_dir: Path | None = None,
    row_finder: RowFinder = "polars",
) -> Validated:
    """Split a channel's normalized rows into valid rows and quarantine, by the dataset's suite.

    Raises ValidationFailed when a required column is missing or when at least the suite's
    `max_quarantined_share` of the rows fail critically: that is a mapping error to fix, not
    data to quarantine row by row.
    """
    suite = load_suite(dataset, suites_dir)
    _check_alignment(raw, normalized)
    check_required_columns(raw, suite, channel, dataset)
    record_id = RECORD_ID[dataset]
    checks = check_frame(normalized, suite)

    result = run_suite(suite, checks, channel, dataset, complete=row_finder == "gx")
    by_rule = _results_by_rule(result)
    marked = mark_failing_rows(checks, suite, by_rule, row_finder).with_columns(
        normalized[record_id].alias(record_id))
    counts = failing_counts(marked, suite, by_rule)

    verdict = marked.select(
        pl.any_horizontal([pl.col(f"rule_{r.index}") for r in suite.critical]
                          or [pl.lit(False)]).alias("quarantined"),
        pl.concat_str([pl.when(pl.col(f"rule_{r.index}")).then(reason_text(r))
                       for r in suite.critical] or [pl.lit(None, pl.Utf8)],
                      separator="; ", ignore_nulls=True).alias("reasons"),
        pl.col(record_id).alias("record_id"),
    )
    valid = normalized.filter(~verdict["quarantined"])
    quarantine = quarantine_rows(raw, verdict, channel, dataset)
    summary = summary_frame([
        {
            "channel": channel,
            "dataset": dataset,
            "expectation": rule.label,
            "severity": rule.severity,
            "unexpected_count": counts.get(rule.index, 0),
            "unexpected_percent": 100.0 * counts.get(rule.index, 0) / max(normalized.height, 1),
            "sample": sample_text(marked, rule, record_id, counts.get(rule.index, 0)),
            "success": bool(by_rule[rule.index].success),
        }
        for rule in suite.rules
    ])
    docs_index = publish_to_data_docs(result, suite, docs_dir, channel) if docs_dir else None
    check_quarantine_share(marked, suite, counts, raw, channel, dataset, quarantine.height)
    return Validated(valid, quarantine, summary, normalized.height, valid.height,
                     quarantine.height, docs_index)


def mark_failing_rows(checks: pl.DataFrame, suite: Suite, by_rule: dict[int, Any],
                      row_finder: RowFinder) -> pl.DataFrame:
    """`checks` with a boolean `rule_<i>` per row-level expectation: the row fails it."""
    if row_finder == "gx":
        marks = [pl.col(SOURCE_ROW).is_in(_gx_unexpected_rows(by_rule[r.index]))
                 .alias(f"rule_{r.index}") for r in suite.row_rules]
    else:
        marks = [unexpected(r) for r in suite.row_rules]
    return checks.with_columns(marks)


def failing_counts(marked: pl.DataFrame, suite: Suite, by_rule: dict[int, Any]) -> dict[int, int]:
    """Failing rows per expectation; GX's count and the rows found must agree."""
    sums = marked.select(pl.col(f"rule_{r.index}").sum() for r in suite.row_rules)
    counts = {r.index: int(sums[f"rule_{r.index}"].item()) for r in suite.row_rules}
    for rule in suite.row_rules:
        gx_count = by_rule[rule.index].result.get("unexpected_count") or 0
        if gx_count != counts[rule.index]:
            raise RuntimeError(f"{suite.path.name}: GX counts {gx_count} rows failing "
                               f"{rule.label}, polars {counts[rule.index]}; the polars "
                               "counterpart of this expectation is wrong")
    return counts


# --- Data Docs ------------------------------------------------------------------------------

DOCS_SITE = "local_site"


@contextmanager
def _docs_lock(docs_dir: Path) -> Iterator[None]:
    """One writer at a time on a docs folder: threads share `_GX_LOCK`, processes (Dask
    workers) an advisory file lock, where the platform has one."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    with _GX_LOCK, open(docs_dir / ".memberlink-docs.lock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: threads only
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _docs_context(docs_dir: Path) -> Any:
    """The file-mode GX project under docs_dir/gx, its site written to docs_dir itself
    (docs_dir/index.html), where the flow links to it."""
    context = _gx_context("file", docs_dir)
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
    }
    if context.list_data_docs_sites().get(DOCS_SITE) != site:
        if DOCS_SITE in context.list_data_docs_sites():
            context.update_data_docs_site(DOCS_SITE, site)
        else:
            context.add_data_docs_site(DOCS_SITE, site)
    return context


def _site_index(sites: dict[str, str]) -> Path:
    return Path(re.sub(r"^file://", "", sites[DOCS_SITE]))


def publish_to_data_docs(result: ExpectationSuiteValidationResult, suite: Suite,
                         docs_dir: Path, channel: str) -> Path:
    """Keep one channel's result in the docs project and rebuild its pages and the index.

    The result holds counts and source rows only (values are excluded), so the pages
    carry no personal data. Returns the site's index.html.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    docs_dir = Path(docs_dir)
    with _docs_lock(docs_dir):
        context = _docs_context(docs_dir)
        _add_suite(context, suite)
        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id,
            run_id=RunIdentifier(run_name=channel, run_time=result.meta["run_id"].run_time),
            batch_identifier=f"{channel}-{suite.name}",
        )
        context.validation_results_store.set(key, result)
        return _site_index(context.build_data_docs(site_names=[DOCS_SITE],
                                                   resource_identifiers=[key, suite_id]))


def build_data_docs(docs_dir: Path) -> Path:
    """Rebuild the whole Data Docs site in docs_dir from every result kept there.

    `validate_dataset(..., docs_dir=...)` already keeps the site current; this is for a
    full rebuild (a fresh copy of the pages, or after editing a suite). Returns index.html.
    """
    docs_dir = Path(docs_dir)
    with _docs_lock(docs_dir):
        return _site_index(_docs_context(docs_dir).build_data_docs(site_names=[DOCS_SITE]))
