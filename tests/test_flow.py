"""The flow end to end on generated messy channels, on a real Prefect API and DuckDB file."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from prefect.client.orchestration import get_client

from flows.artifacts import DATA_QUALITY_KEY, DISCREPANCIES_KEY, REPORT_KEY, SUMMARY_KEY
from flows.unify_members import unify_members
from tasks.demo_data import generate_demo

PEOPLE = 400


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, people=PEOPLE, seed=11)
    return out


@pytest.fixture(scope="module")
def first_run(demo_dir: Path, prefect_api: None) -> tuple[dict, Path]:
    warehouse = demo_dir / "warehouse.duckdb"
    summary = unify_members(config=str(demo_dir / "sources.toml"), warehouse=str(warehouse))
    return summary, warehouse


def _table(warehouse: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(sql).pl()


def _truth_rows(demo_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(demo_dir / "truth" / "persons.parquet")


def test_every_member_row_lands_in_xref_or_quarantine_exactly_once(
    first_run: tuple[dict, Path], demo_dir: Path
) -> None:
    summary, warehouse = first_run
    run_id = summary["run_id"]
    xref = _table(
        warehouse, f"select channel, member_id from member_xref where run_id = '{run_id}'"
    )
    quarantined = _table(
        warehouse,
        "select channel, count(*) as n from quarantine "
        f"where dataset = 'members' and run_id = '{run_id}' group by channel",
    )
    written = _truth_rows(demo_dir).group_by("channel").len("rows_written")
    landed = (
        xref.group_by("channel").len("linked")
        .join(quarantined, on="channel", how="full", coalesce=True).fill_null(0)
        .join(written, on="channel", how="full", coalesce=True)
    )
    assert landed.height == 5
    assert (landed["linked"] + landed["n"] == landed["rows_written"]).all(), landed
    assert xref.select(pl.struct("channel", "member_id").is_unique().all()).item()
    counts = json.loads(summary["counts"])
    for channel, datasets in counts["channels"].items():
        members = datasets["members"]
        assert members["rows_valid"] + members["rows_quarantined"] == members["rows_read"]
        assert members["rows_read"] == written.filter(pl.col("channel") == channel)[
            "rows_written"].item()


def test_quarantine_explains_the_messy_rows(first_run: tuple[dict, Path]) -> None:
    _, warehouse = first_run
    reasons = _table(warehouse, "select channel, dataset, reasons from quarantine")
    text = " | ".join(reasons["reasons"].to_list())
    assert "member_id" in text                      # missing and duplicated ids in pos
    assert reasons.filter(pl.col("dataset") == "points").height > 0   # non-numeric points
    assert reasons["reasons"].str.len_chars().min() > 5


def test_unified_members_agree_with_xref_and_runs(first_run: tuple[dict, Path]) -> None:
    summary, warehouse = first_run
    n_ids = _table(warehouse, "select count(distinct unified_id) from member_xref").item()
    unified = _table(warehouse, "select unified_id, n_records from unified_members")
    assert unified.height == n_ids
    n_xref = _table(warehouse, "select count(*) from member_xref").item()
    assert unified["n_records"].sum() == n_xref
    runs = _table(warehouse, "select * from runs")
    run = runs.filter(pl.col("run_id") == summary["run_id"])
    assert run["status"].item() == "completed"
    assert run["as_of"].item() == date(2026, 11, 30)
    rules = set(_table(warehouse, "select distinct match_rule from member_xref")["match_rule"])
    assert {"phone", "singleton"} <= rules
    assert rules <= {"phone", "unionid", "email", "id_card", "probabilistic", "review_accepted",
                     "singleton"}


def test_no_raw_phone_or_id_card_is_published(first_run: tuple[dict, Path], demo_dir: Path) -> None:
    _, warehouse = first_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [row[0] for row in con.execute("show tables").fetchall()]
        dump = "\n".join(str(con.execute(f"select * from {table}").fetchall()) for table in tables)
    assert not re.search(r"(?<![0-9A-Za-z.])1[3-9]\d{9}(?![0-9A-Za-z])", dump)
    assert not re.search(r"(?<![0-9A-Za-z.])\d{17}[\dX](?![0-9A-Za-z])", dump)
    assert not re.search(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", dump)   # plain sha256
    evidence = pl.read_parquet(demo_dir / "truth" / "evidence.parquet")
    secrets = pl.concat([evidence["phone"], evidence["id_card"]]).drop_nulls().unique()
    assert secrets.len() > 100
    leaked = [value for value in secrets.to_list() if value in dump]
    assert leaked == []


def _latest_artifact(key: str) -> str:
    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC, limit=1,
            )
            return str(found[0].data)

    return asyncio.run(read())


def test_artifacts_have_stable_keys(first_run: tuple[dict, Path]) -> None:
    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def keys() -> set[str]:
        async with get_client() as client:
            wanted = [SUMMARY_KEY, DATA_QUALITY_KEY, DISCREPANCIES_KEY, REPORT_KEY]
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted))
            )
            return {artifact.key for artifact in found}

    assert asyncio.run(keys()) == {SUMMARY_KEY, DATA_QUALITY_KEY, DISCREPANCIES_KEY, REPORT_KEY}


def test_rerun_keeps_every_unified_id(first_run: tuple[dict, Path], demo_dir: Path) -> None:
    _summary, warehouse = first_run
    before = _table(warehouse, "select channel, member_id, unified_id from member_xref")
    second = unify_members(config=str(demo_dir / "sources.toml"), warehouse=str(warehouse))
    after = _table(warehouse, "select channel, member_id, unified_id from member_xref")
    joined = before.join(after, on=["channel", "member_id"], suffix="_after")
    assert joined.height == before.height == after.height
    assert (joined["unified_id"] == joined["unified_id_after"]).all()
    changes = _table(
        warehouse, f"select * from identity_changes where run_id = '{second['run_id']}'"
    )
    assert changes.height == 0


def test_backfill_replaces_only_its_own_date(first_run: tuple[dict, Path], demo_dir: Path) -> None:
    _, warehouse = first_run
    config = str(demo_dir / "sources.toml")
    past = date(2026, 10, 31)
    unify_members(config=config, warehouse=str(warehouse), as_of=past)
    dates = _table(warehouse, "select distinct as_of from points_balances order by 1")["as_of"]
    assert dates.to_list() == [past, date(2026, 11, 30)]
    again = unify_members(config=config, warehouse=str(warehouse), as_of=past)
    per_date = _table(warehouse, "select as_of, count(distinct run_id) as runs "
                                 "from points_balances group by as_of")
    assert per_date["runs"].to_list() == [1, 1]
    runs = _table(warehouse, f"select as_of from runs where run_id = '{again['run_id']}'")
    assert runs["as_of"].item() == past


def test_a_broken_channel_fails_the_run_and_publishes_nothing(
    first_run: tuple[dict, Path], demo_dir: Path, tmp_path: Path
) -> None:
    _, warehouse = first_run
    broken = tmp_path / "broken"
    shutil.copytree(demo_dir, broken, ignore=shutil.ignore_patterns("*.duckdb*"))
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    app_members = broken / "app_members.csv"
    app_members.write_text("who,what\n1,2\n", encoding="utf-8")
    before = _table(copy, "select * from member_xref order by channel, member_id")
    with pytest.raises(Exception, match="member_id"):
        unify_members(config=str(broken / "sources.toml"), warehouse=str(copy))
    after = _table(copy, "select * from member_xref order by channel, member_id")
    assert before.equals(after)
    failed = _table(copy, "select status, error from runs where status = 'failed'")
    assert failed.height == 1 and "member_id" in failed["error"].item()
    latest = _latest_artifact(DATA_QUALITY_KEY)
    assert "failed" in latest and "app" in latest and "member_id" in latest


def test_a_changed_input_moves_only_the_members_it_touches(
    demo_dir: Path, tmp_path: Path, prefect_api: None
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(demo_dir, changed, ignore=shutil.ignore_patterns("*.duckdb*", "memberlink-out"))
    warehouse = tmp_path / "warehouse.duckdb"
    unify_members(config=str(changed / "sources.toml"), warehouse=str(warehouse))
    before = _table(warehouse, "select channel, member_id, unified_id from member_xref")
    no_id_card = _table(warehouse, "select unified_id from unified_members "
                                   "where id_card_token is null")["unified_id"]

    # A new app sign-up with the phone of one member and the unionid of another joins them.
    app = pl.read_csv(changed / "app_members.csv", infer_schema=False)
    wechat = pl.read_ndjson(changed / "wechat_members.ndjson", infer_schema_length=None)
    candidates = before.filter(pl.col("unified_id").is_in(no_id_card.implode()))
    phone_owner = (
        app.filter(pl.col("phone").is_not_null(), pl.col("unionid").is_null())
        .join(candidates.filter(pl.col("channel") == "app"), on="member_id").sort("member_id")
        .row(0, named=True)
    )
    unionid_owner = (
        wechat.filter(pl.col("unionid").is_not_null(), pl.col("phone").is_null())
        .join(candidates.filter(pl.col("channel") == "wechat"), on="member_id")
        .filter(pl.col("unified_id") != phone_owner["unified_id"]).sort("member_id")
        .row(0, named=True)
    )
    bridge = {column: None for column in app.columns} | {
        "member_id": "A29999999", "phone": phone_owner["phone"],
        "unionid": unionid_owner["unionid"],
    }
    pl.concat([app, pl.DataFrame([bridge], schema=app.schema)]).write_csv(
        changed / "app_members.csv"
    )

    second = unify_members(config=str(changed / "sources.toml"), warehouse=str(warehouse))
    after = _table(warehouse, "select channel, member_id, unified_id from member_xref")
    touched = {phone_owner["unified_id"], unionid_owner["unified_id"]}
    kept, retired = sorted(touched)
    joined = before.join(after, on=["channel", "member_id"], suffix="_after")
    moved = joined.filter(pl.col("unified_id") != pl.col("unified_id_after"))
    assert set(moved["unified_id"]) == {retired}
    assert set(moved["unified_id_after"]) == {kept}
    untouched = joined.filter(~pl.col("unified_id").is_in(list(touched)))
    assert (untouched["unified_id"] == untouched["unified_id_after"]).all()
    assert after.filter(pl.col("member_id") == "A29999999")["unified_id"].item() == kept
    changes = _table(
        warehouse,
        "select unified_id, change, related_ids from identity_changes "
        f"where run_id = '{second['run_id']}' order by change",
    )
    assert changes.rows() == [(kept, "merged", retired), (retired, "retired", kept)]


def test_postgresql_gets_the_same_tables_as_duckdb(
    demo_dir: Path, tmp_path: Path, pg_fresh_url: str, prefect_api: None
) -> None:
    from tasks.warehouse import open_warehouse

    config = str(demo_dir / "sources.toml")
    duck_url = str(tmp_path / "parity.duckdb")
    unify_members(config=config, warehouse=duck_url)
    unify_members(config=config, warehouse=pg_fresh_url)
    duck, pg = open_warehouse(duck_url), open_warehouse(pg_fresh_url)
    volatile = {"run_id", "started_at", "finished_at", "warehouse", "flow_run_name"}
    for table in ("member_xref", "unified_members", "points_balances", "member_points",
                  "points_discrepancies", "quarantine", "data_quality", "hub_values",
                  "review_queue", "identity_changes"):
        left, right = duck.read_table(table), pg.read_table(table)
        assert left is not None and right is not None, table
        columns = sorted(set(left.columns) - volatile)
        assert columns == sorted(set(right.columns) - volatile), table
        left, right = left.select(columns).sort(columns), right.select(columns).sort(columns)
        assert left.height > 0 or table in {"review_queue", "hub_values"}, table
        assert left.equals(right), table


def test_a_missing_config_fails_with_a_readable_artifact(
    tmp_path: Path, prefect_api: None
) -> None:
    from tasks.errors import ConfigError

    missing = tmp_path / "nowhere" / "sources.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        unify_members(config=str(missing))
    latest = _latest_artifact(DATA_QUALITY_KEY)
    assert "ConfigError" in latest and "does not exist" in latest
