"""The warehouse stage against a real DuckDB file and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from tasks.errors import WarehouseError
from tasks.warehouse import STORAGE_DTYPES, Warehouse, open_warehouse, sql_type

AS_OF = dt.date(2026, 3, 1)
NEXT_DAY = dt.date(2026, 3, 2)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty warehouse on each engine."""
    if request.param == "duckdb":
        return str(tmp_path / "warehouse.duckdb")
    return request.getfixturevalue("pg_fresh_url")


def run(run_id: str, as_of: dt.date = AS_OF, **extra) -> dict:
    return {
        "run_id": run_id,
        "started_at": dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC),
        "finished_at": dt.datetime(2026, 3, 1, 2, 5, tzinfo=dt.UTC),
        "as_of": as_of,
        "status": "success",
        "config": {"config": "sources.toml"},
        "warehouse": "warehouse.duckdb",
        "channels": ["pos", "tmall"],
        "counts": {"members": 3},
        "error": None,
        **extra,
    }


def execute_native(url: str, statement: str) -> None:
    """Run DDL with the engine's own client, as a DBA would, outside the warehouse API."""
    if url.endswith(".duckdb"):
        with duckdb.connect(url) as con:
            con.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(statement)


def every_dtype() -> pl.DataFrame:
    """One column per supported polars dtype, with nulls and awkward values."""
    return pl.DataFrame(
        {
            "text": ["王伟", "", None, 'quote " comma , newline \n back \\ slash'],
            "int8": pl.Series([1, -128, None, 127], dtype=pl.Int8),
            "int16": pl.Series([1, -32768, None, 32767], dtype=pl.Int16),
            "int32": pl.Series([1, -(2**31), None, 2**31 - 1], dtype=pl.Int32),
            "int64": pl.Series([1, -(2**63), None, 2**63 - 1], dtype=pl.Int64),
            "uint8": pl.Series([0, 255, None, 7], dtype=pl.UInt8),
            "uint16": pl.Series([0, 65535, None, 7], dtype=pl.UInt16),
            "uint32": pl.Series([0, 2**32 - 1, None, 7], dtype=pl.UInt32),
            "uint64": pl.Series([0, 2**63 - 1, None, 7], dtype=pl.UInt64),
            "float32": pl.Series([1.1, -0.0, None, float("inf")], dtype=pl.Float32),
            "float64": [0.1, 1e300, None, float("-inf")],
            "boolean": [True, False, None, True],
            "date": [dt.date(2026, 3, 1), dt.date(1900, 2, 28), None, dt.date(1969, 12, 31)],
            "naive_time": [
                dt.datetime(2026, 3, 1, 8, 30, 0, 123456),
                dt.datetime(1969, 12, 31, 23, 59, 59, 1),
                None,
                dt.datetime(2000, 1, 1),
            ],
            "zoned_time": pl.Series(
                [dt.datetime(2026, 3, 1, 8, 30), None, dt.datetime(2000, 1, 1), None]
            ).dt.replace_time_zone("Asia/Shanghai"),
            "text_list": [["pos", "tmall"], [], None, ['a "b"', None, "{c,d}", "NULL", "\\"]],
            "category": pl.Series(["pos", None, "jd", "pos"], dtype=pl.Categorical),
            "nothing": pl.Series([None, None, None, None], dtype=pl.Null),
            "key": [1, 2, 3, 4],
        }
    )


def storage_of(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    """The dtypes a frame is expected to come back with, per the SQL type mapping."""
    return {c: STORAGE_DTYPES[sql_type(d, "t", c)] for c, d in frame.schema.items()}


def xref(ids: list[str], run_id: str | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "channel": ["pos"] * len(ids),
            "member_id": [f"m{i}" for i in range(len(ids))],
            "unified_id": ids,
            "match_rule": ["phone"] * len(ids),
            "match_score": [1.0] * len(ids),
        }
    )
    return frame if run_id is None else frame.with_columns(run_id=pl.lit(run_id))


def balances(members: list[str], balance: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "unified_id": [f"U{i:010d}" for i in range(len(members))],
            "channel": ["pos"] * len(members),
            "member_id": members,
            "ledger_balance": [balance] * len(members),
            "reported_balance": [balance] * len(members),
        }
    )


def sorted_table(warehouse: Warehouse, name: str, *keys: str) -> pl.DataFrame:
    frame = warehouse.read_table(name)
    assert frame is not None, f"table {name} is missing"
    return frame.sort(list(keys))


# --------------------------------------------------------------------------- types


def test_every_dtype_round_trips(url: str) -> None:
    warehouse = open_warehouse(url)
    frame = every_dtype()
    warehouse.publish({"dtypes": frame}, run("r1"))

    back = sorted_table(warehouse, "dtypes", "key")

    expected = frame.cast(storage_of(frame)).with_columns(
        pl.col("zoned_time").dt.convert_time_zone("UTC"), run_id=pl.lit("r1")
    )
    assert back.schema == expected.schema
    assert_frame_equal(back, expected)


def test_unsupported_dtype_is_refused_with_the_column_named(url: str) -> None:
    warehouse = open_warehouse(url)
    frame = pl.DataFrame({"span": [dt.timedelta(seconds=1)]})
    with pytest.raises(WarehouseError, match="'span'"):
        warehouse.publish({"spans": frame}, run("r1"))
    assert warehouse.read_table("spans") is None


def test_duckdb_and_postgres_hold_identical_tables(tmp_path, pg_fresh_url: str) -> None:
    tables = {
        "member_xref": xref(["U0000000001", "U0000000001", "U0000000002"]),
        "unified_members": pl.DataFrame(
            {
                "unified_id": ["U0000000001", "U0000000002"],
                "name": ["王伟", None],
                "birth_date": [dt.date(1990, 5, 17), None],
                "channels": [["pos", "tmall"], ["jd"]],
                "n_records": pl.Series([2, 1], dtype=pl.UInt32),
                "registered_at": [dt.datetime(2020, 1, 2, 3, 4, 5, 6), None],
            }
        ),
        "points_balances": balances(["m0", "m1"], 120),
        "dtypes": every_dtype(),
    }
    duck = open_warehouse(str(tmp_path / "same.duckdb"))
    pg = open_warehouse(pg_fresh_url)
    for warehouse in (duck, pg):
        warehouse.publish(tables, run("r1"))

    keys = {"member_xref": "member_id", "unified_members": "unified_id",
            "points_balances": "member_id", "dtypes": "key", "runs": "run_id"}
    for name, key in keys.items():
        assert_frame_equal(sorted_table(duck, name, key), sorted_table(pg, name, key))


# --------------------------------------------------------------------------- modes


def test_replaced_table_holds_only_the_latest_run(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish({"member_xref": xref(["U0000000001", "U0000000002"])}, run("r1"))
    warehouse.publish({"member_xref": xref(["U0000000003"])}, run("r2"))

    table = sorted_table(warehouse, "member_xref", "member_id")
    assert table["unified_id"].to_list() == ["U0000000003"]
    assert table["run_id"].to_list() == ["r2"]


def test_unknown_table_is_replaced(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish({"brand_extras": pl.DataFrame({"x": [1, 2]})}, run("r1"))
    warehouse.publish({"brand_extras": pl.DataFrame({"x": [3]})}, run("r2"))
    assert sorted_table(warehouse, "brand_extras", "x")["x"].to_list() == [3]


def test_partitioned_table_rewrites_only_its_as_of(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish({"points_balances": balances(["a", "b"], 10)}, run("r1", AS_OF))
    warehouse.publish({"points_balances": balances(["a"], 20)}, run("r2", NEXT_DAY))
    warehouse.publish({"points_balances": balances(["c"], 30)}, run("r3", AS_OF))

    table = sorted_table(warehouse, "points_balances", "as_of", "member_id")
    assert table.select("as_of", "member_id", "ledger_balance", "run_id").rows() == [
        (AS_OF, "c", 30, "r3"),
        (NEXT_DAY, "a", 20, "r2"),
    ]


def test_partitioned_table_needs_an_as_of(url: str) -> None:
    warehouse = open_warehouse(url)
    with pytest.raises(WarehouseError, match="as_of"):
        warehouse.publish({"points_balances": balances(["a"], 10)}, {"run_id": "r1"})
    assert warehouse.read_table("runs") is None


def test_appended_table_keeps_every_run_and_a_retry_does_not_duplicate(url: str) -> None:
    warehouse = open_warehouse(url)
    changes = pl.DataFrame({"unified_id": ["U0000000001"], "change": ["created"]})
    warehouse.publish({"identity_changes": changes}, run("r1"))
    warehouse.publish({"identity_changes": changes}, run("r2"))
    warehouse.publish({"identity_changes": changes}, run("r2"))

    table = sorted_table(warehouse, "identity_changes", "run_id")
    assert table["run_id"].to_list() == ["r1", "r2"]


def test_runs_row_is_upserted_by_run_id(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.record_run(run("r1", status="running", finished_at=None))
    warehouse.publish({}, run("r1", status="success"))
    warehouse.record_run(
        run("r2", status="failed", error="cannot reach postgresql://crm:hunter2@db/crm")
    )

    runs = sorted_table(warehouse, "runs", "run_id")
    assert runs["run_id"].to_list() == ["r1", "r2"]
    assert runs["status"].to_list() == ["success", "failed"]
    assert runs["finished_at"][0] == dt.datetime(2026, 3, 1, 2, 5, tzinfo=dt.UTC)
    assert runs["channels"][0].to_list() == ["pos", "tmall"]
    assert runs["counts"][0] == '{"members": 3}'
    assert "hunter2" not in runs["error"][1]
    assert runs["as_of"][1] == AS_OF


def test_later_run_adds_new_columns(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish({"points_balances": balances(["a"], 10)}, run("r1", AS_OF))
    wider = balances(["b"], 20).with_columns(frozen_points=pl.lit(5, pl.Int32))
    warehouse.publish({"points_balances": wider}, run("r2", NEXT_DAY))

    table = sorted_table(warehouse, "points_balances", "as_of")
    assert table.schema["frozen_points"] == pl.Int32
    assert table["frozen_points"].to_list() == [None, 5]


def test_read_table_filters_by_run_id(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish({"points_balances": balances(["a"], 10)}, run("r1", AS_OF))
    warehouse.publish({"points_balances": balances(["b", "c"], 20)}, run("r2", NEXT_DAY))

    only_r2 = warehouse.read_table("points_balances", where_run_id="r2")
    assert only_r2 is not None
    assert sorted(only_r2["member_id"].to_list()) == ["b", "c"]
    assert warehouse.read_table("no_such_table") is None


def test_last_issued_unified_id(url: str) -> None:
    warehouse = open_warehouse(url)
    assert warehouse.last_issued_unified_id() == 0
    changes = pl.DataFrame(
        {"old_unified_id": ["U0000000100", None], "new_unified_id": ["U0000000007", "U0000000009"]}
    )
    warehouse.publish(
        {"member_xref": xref(["U0000000042", "U0000000003"]), "identity_changes": changes},
        run("r1"),
    )
    assert warehouse.last_issued_unified_id() == 100


# --------------------------------------------------------------------------- atomicity


def snapshot(warehouse: Warehouse) -> dict[str, pl.DataFrame | None]:
    keys = {"member_xref": "member_id", "points_balances": "member_id",
            "unified_members": "unified_id", "data_quality": "check", "runs": "run_id"}
    state = {}
    for name, key in keys.items():
        frame = warehouse.read_table(name)
        state[name] = None if frame is None else frame.sort(key)
    return state


def assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name, frame in before.items():
        if frame is None:
            assert after[name] is None, f"{name} was created by a failed publish"
        else:
            assert_frame_equal(after[name], frame)


def second_run_tables(third: str, third_frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {
        "member_xref": xref(["U0000000009"]),
        "points_balances": balances(["z"], 99),
        third: third_frame,
    }


def test_failed_publish_on_a_type_violation_changes_nothing(url: str) -> None:
    warehouse = open_warehouse(url)
    members = pl.DataFrame({"unified_id": ["U0000000001"], "n_records": [2]})
    warehouse.publish(
        {"member_xref": xref(["U0000000001"]), "points_balances": balances(["a"], 10),
         "unified_members": members},
        run("r1"),
    )
    before = snapshot(warehouse)

    bad = pl.DataFrame({"unified_id": ["U0000000009"], "n_records": ["13812345678 records"]})
    with pytest.raises(WarehouseError, match="unified_members") as failure:
        warehouse.publish(second_run_tables("unified_members", bad), run("r2"))

    assert "13812345678" not in str(failure.value)
    assert_same_state(before, snapshot(warehouse))


def test_failed_publish_on_a_database_constraint_changes_nothing(url: str) -> None:
    warehouse = open_warehouse(url)
    warehouse.publish(
        {"member_xref": xref(["U0000000001"]), "points_balances": balances(["a"], 10)}, run("r1")
    )
    execute_native(
        url,
        'CREATE TABLE data_quality ("check" TEXT, failed BIGINT CHECK (failed >= 0), '
        "run_id TEXT, as_of DATE)",
    )
    before = snapshot(warehouse)

    bad = pl.DataFrame({"check": ["phone_valid"], "failed": [-1]})
    with pytest.raises(WarehouseError, match="data_quality"):
        warehouse.publish(second_run_tables("data_quality", bad), run("r2"))

    assert_same_state(before, snapshot(warehouse))


def test_failed_first_publish_creates_no_table(url: str) -> None:
    warehouse = open_warehouse(url)
    bad = pl.DataFrame({"span": [dt.timedelta(seconds=1)]})
    with pytest.raises(WarehouseError):
        warehouse.publish(second_run_tables("spans", bad), run("r1"))
    assert all(frame is None for frame in snapshot(warehouse).values())


# --------------------------------------------------------------------------- URLs


def test_unreachable_postgres_error_is_redacted() -> None:
    with pytest.raises(WarehouseError) as failure:
        open_warehouse("postgresql://u:secret@127.0.0.1:1/x")
    message = str(failure.value)
    assert "secret" not in message
    assert "postgresql://u:***@127.0.0.1:1/x" in message


def test_missing_duckdb_folder_is_a_warehouse_error(tmp_path) -> None:
    with pytest.raises(WarehouseError, match="does not exist"):
        open_warehouse(str(tmp_path / "missing" / "warehouse.duckdb"))


def test_unrecognised_url_is_a_warehouse_error() -> None:
    with pytest.raises(WarehouseError, match="not recognised"):
        open_warehouse("mysql://u:secret@db/x")


def test_env_url_is_read_from_the_variable(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERLINK_TEST_WAREHOUSE", url)
    warehouse = open_warehouse("env:MEMBERLINK_TEST_WAREHOUSE")
    warehouse.publish({"member_xref": xref(["U0000000005"])}, run("r1"))
    assert open_warehouse(url).last_issued_unified_id() == 5


def test_env_url_names_a_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMBERLINK_TEST_WAREHOUSE", raising=False)
    with pytest.raises(WarehouseError, match="MEMBERLINK_TEST_WAREHOUSE"):
        open_warehouse("env:MEMBERLINK_TEST_WAREHOUSE")


def test_default_url_comes_from_the_environment_then_the_working_directory(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERLINK_WAREHOUSE_URL", str(tmp_path / "from_env.duckdb"))
    assert open_warehouse(None).display_url == f"duckdb://{tmp_path / 'from_env.duckdb'}"
    monkeypatch.delenv("MEMBERLINK_WAREHOUSE_URL")
    assert open_warehouse(None).display_url == f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    assert (tmp_path / "warehouse.duckdb").exists()


def test_duckdb_url_form(tmp_path) -> None:
    path = tmp_path / "abs.duckdb"
    warehouse = open_warehouse(f"duckdb://{path}")
    warehouse.publish({"member_xref": xref(["U0000000001"])}, run("r1"))
    assert open_warehouse(str(path)).read_table("member_xref") is not None


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres", "postgresql+psycopg"])
def test_postgres_url_spellings(pg_fresh_url: str, scheme: str) -> None:
    warehouse = open_warehouse(pg_fresh_url.replace("postgresql", scheme, 1))
    warehouse.publish({"member_xref": xref(["U0000000001"])}, run("r1"))
    assert warehouse.display_url.startswith(scheme + "://")
    assert warehouse.last_issued_unified_id() == 1


def test_secret_url_is_read_from_a_prefect_secret_block(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    loaded = []

    def load(name: str, **options: object) -> Secret:
        loaded.append(name)
        return Secret(value=url)

    monkeypatch.setattr(Secret, "load", staticmethod(load))
    warehouse = open_warehouse("secret:memberlink-warehouse")
    warehouse.publish({"member_xref": xref(["U0000000003"])}, run("r1"))
    assert loaded == ["memberlink-warehouse"]
    assert warehouse.last_issued_unified_id() == 3
