"""Readers: every format, encoding and location arrives as canonical all-Utf8 columns."""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import polars as pl
import pytest

from tasks.config import SourceConfig, load_config
from tasks.errors import SourceError
from tasks.read import canonical_headers, read_dataset

FIXTURES = Path(__file__).parent / "fixtures"
PROVENANCE = ["source_row", "source_file"]


def members(location: str | Path, **options: object) -> pl.DataFrame:
    frame = read_dataset(SourceConfig(channel="pos", members=str(location), **options), "members")
    assert frame is not None
    return frame


def source_error(source: SourceConfig, dataset: str = "members") -> str:
    with pytest.raises(SourceError) as raised:
        read_dataset(source, dataset)
    message = str(raised.value)
    assert "\n" not in message
    return message


def assert_all_text(frame: pl.DataFrame) -> None:
    text = {name: dtype for name, dtype in frame.schema.items() if name != "source_row"}
    assert set(text.values()) == {pl.Utf8}, frame.schema
    assert frame.schema["source_row"] == pl.Int64


def test_utf8_csv_keeps_text_and_only_canonical_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(" member_id ,phone,points,vip_level\n007,+86 138-0013-8000,5,3\n"
                    "008,,,\n", encoding="utf-8")
    frame = members(path)
    assert frame.columns == ["member_id", "phone", *PROVENANCE]     # points is not a member column
    assert frame["member_id"].to_list() == ["007", "008"]           # leading zeros survive
    assert frame["phone"].to_list() == ["+86 138-0013-8000", None]
    assert frame["source_row"].to_list() == [0, 1]
    assert frame["source_file"].to_list() == [str(path)] * 2
    assert_all_text(frame)


def test_utf8_bom_header(tmp_path: Path) -> None:
    frame = members(FIXTURES / "app_members_bom.csv")
    assert frame.columns == ["member_id", "phone", "unionid", *PROVENANCE]
    assert frame["member_id"].to_list() == ["007", "008"]
    assert frame["phone"].to_list() == ["13800138001", None]       # "mobile" is an alias


def test_utf8_bom_from_url_and_utf8_sig_encoding() -> None:
    url = f"file://{FIXTURES / 'app_members_bom.csv'}"
    frame = members(url, encoding="utf-8-sig")
    assert frame["member_id"].to_list() == ["007", "008"]
    assert frame["source_file"][0] == url


def test_gb18030_with_chinese_headers_mapped_in_config(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "pos_members_gb18030.csv", tmp_path / "pos_members.csv")
    (tmp_path / "sources.toml").write_text(
        '[[sources]]\nchannel = "pos"\nmembers = "pos_members.csv"\nencoding = "gb18030"\n'
        '[sources.columns]\nmember_id = "会员编号"\nphone = "联系电话"\nname = "客户姓名"\n',
        encoding="utf-8",
    )
    source = load_config(tmp_path / "sources.toml").sources[0]
    frame = read_dataset(source, "members")
    assert frame.columns == ["member_id", "phone", "name", "gender", "birth_date", *PROVENANCE]
    assert frame.row(1, named=True) == {
        "member_id": "P002", "phone": "+86 139-0000-0002", "name": "李娜", "gender": "女",
        "birth_date": "19851130", "source_row": 1, "source_file": str(tmp_path / "pos_members.csv"),
    }
    assert frame["name"].to_list() == ["张伟", "李娜"]


def test_gbk_file_read_as_utf8_names_byte_line_and_fix() -> None:
    path = FIXTURES / "web_members_gbk.csv"
    message = source_error(SourceConfig(channel="web", members=str(path)))
    assert message == (
        f'channel "web": {path} is not UTF-8 (invalid byte 0xd5 on '
        'line 3); it looks like GB18030 — add encoding = "gb18030" to its [[sources]] entry'
    )


def test_gbk_encoding_reads_the_same_file() -> None:
    frame = members(FIXTURES / "web_members_gbk.csv", encoding="gbk")
    assert frame["name"].to_list() == ["Li Lei", "张伟"]


def test_chinese_header_aliases_without_mapping(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("会员号,手机号,姓名,性别,出生日期,身份证号,城市,地址,注册时间,邮箱,备注\n"
                    "M1,13800138000,王伟,男,1990-01-01,11010519491231002X,北京,朝阳区,"
                    "2024-01-01 10:00,w@x.cn,老客户\n", encoding="utf-8")
    frame = members(path)
    assert frame.columns == [
        "member_id", "phone", "email", "id_card", "name", "gender", "birth_date", "city",
        "address", "registered_at", *PROVENANCE,
    ]
    assert frame.row(0)[:5] == ("M1", "13800138000", "w@x.cn", "11010519491231002X", "王伟")


def test_explicit_mapping_beats_exact_name_and_alias(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("member_id,phone,手机号,card_no,backup_phone\nx,1,2,C9,3\n", encoding="utf-8")
    frame = members(path, columns={"member_id": "card_no", "phone": "BACKUP PHONE"})
    assert frame.select("member_id", "phone").row(0) == ("C9", "3")


def test_explicit_mapping_may_take_a_header_that_is_an_alias(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("member_id,mobile,tel\nM1,13800138000,010-1234\n", encoding="utf-8")
    frame = members(path, columns={"phone": "mobile", "address": "tel"})
    assert frame.select("phone", "address").row(0) == ("13800138000", "010-1234")
    frame = members(path, columns={"address": "mobile"})
    assert frame.select("phone", "address").row(0) == ("010-1234", "13800138000")


def test_mapping_list_covers_files_that_disagree(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("卡号,phone\nC1,1\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("单号,客户卡号,积分\nT1,C1,10\n", encoding="utf-8")
    source = SourceConfig(channel="pos", members=str(tmp_path / "m.csv"),
                          points=str(tmp_path / "p.csv"),
                          columns={"member_id": ["卡号", "客户卡号"], "txn_id": "单号"})
    assert read_dataset(source, "members")["member_id"].to_list() == ["C1"]
    points = read_dataset(source, "points")
    assert points.select("txn_id", "member_id", "points").row(0) == ("T1", "C1", "10")


def test_points_aliases(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("流水号,会员编号,积分,交易时间,类型,订单号\nT1,M1,-20,2024-02-01,redeem,O9\n",
                    encoding="utf-8")
    source = SourceConfig(channel="pos", members=str(path), points=str(path))
    points = read_dataset(source, "points")
    assert points.columns == ["txn_id", "member_id", "txn_time", "points", "txn_type", "order_id",
                              *PROVENANCE]
    assert points["points"].to_list() == ["-20"]


def test_balances_alias_and_unconfigured_dataset(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("member_id,余额\nM1,100\n", encoding="utf-8")
    source = SourceConfig(channel="pos", members=str(path), balances=str(path))
    assert read_dataset(source, "balances").select("member_id", "balance").row(0) == ("M1", "100")
    assert read_dataset(source, "points") is None


def test_tsv(tmp_path: Path) -> None:
    path = tmp_path / "m.tsv"
    path.write_text("member_id\tname\nM1\tZhang, Wei\n", encoding="utf-8")
    assert members(path).select("member_id", "name").row(0) == ("M1", "Zhang, Wei")


def test_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress("member_id,姓名\nM1,王伟\n".encode()))
    assert members(path).select("member_id", "name").row(0) == ("M1", "王伟")


def test_parquet_types_become_text(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pl.DataFrame({
        "member_id": [1, 2], "phone": [13800138000, None],
        "birth_date": pl.Series([None, "1990-01-02"]).str.to_date(), "extra": [1.5, 2.5],
    }).write_parquet(path)
    frame = members(path)
    assert frame.columns == ["member_id", "phone", "birth_date", *PROVENANCE]
    assert frame["phone"].to_list() == ["13800138000", None]
    assert frame["birth_date"].to_list() == [None, "1990-01-02"]
    assert_all_text(frame)


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl"])
def test_ndjson(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    path.write_text('{"member_id": 7, "mobile": 13800138000, "名字": "x"}\n'
                    '{"member_id": "A8", "unionid": "oU_1"}\n', encoding="utf-8")
    frame = members(path)
    assert frame.columns == ["member_id", "phone", "unionid", *PROVENANCE]
    assert frame["member_id"].to_list() == ["7", "A8"]
    assert frame["phone"].to_list() == ["13800138000", None]
    assert_all_text(frame)


def test_ndjson_in_gb18030(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes('{"会员号": "M1", "姓名": "王伟"}\n'.encode("gb18030"))
    assert members(path, encoding="gb18030").select("member_id", "name").row(0) == ("M1", "王伟")


def test_glob_concatenates_sorted_files_with_different_columns(tmp_path: Path) -> None:
    (tmp_path / "part-2.csv").write_text("phone,member_id\n3,C\n", encoding="utf-8")
    (tmp_path / "part-1.csv").write_text("member_id,name,phone\nA,a,1\nB,b,2\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")
    frame = members(tmp_path / "part-*.csv")
    assert frame.columns == ["member_id", "phone", "name", *PROVENANCE]
    assert frame["member_id"].to_list() == ["A", "B", "C"]
    assert frame["phone"].to_list() == ["1", "2", "3"]
    assert frame["name"].to_list() == ["a", "b", None]
    assert frame["source_row"].to_list() == [0, 1, 2]
    assert frame["source_file"].to_list() == [str(tmp_path / "part-1.csv")] * 2 + [
        str(tmp_path / "part-2.csv")]


@pytest.fixture
def memory_dir() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/memberlink-{uuid.uuid4().hex[:8]}"
    yield root
    fs.rm(root, recursive=True)


def test_memory_url_glob(memory_dir: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_dir}/b.parquet", b"")
    pl.DataFrame({"member_id": ["M2"], "phone": [1]}).write_parquet(
        fs.open(f"{memory_dir}/b.parquet", "wb"))
    fs.pipe(f"{memory_dir}/a.csv.gz", gzip.compress("会员号\nM1\n".encode()))
    frame = members(f"memory://{memory_dir}/*")
    assert frame["member_id"].to_list() == ["M1", "M2"]
    assert frame["source_file"].to_list() == [f"memory://{memory_dir}/a.csv.gz",
                                              f"memory://{memory_dir}/b.parquet"]


def test_memory_url_in_gb18030_with_mapping(memory_dir: str) -> None:
    fsspec.filesystem("memory").pipe(f"{memory_dir}/m.csv", "卡号,电话\nC1,138\n".encode("gb18030"))
    frame = members(f"memory://{memory_dir}/m.csv", encoding="gb18030",
                    columns={"member_id": "卡号", "phone": "电话"})
    assert frame.select("member_id", "phone").row(0) == ("C1", "138")


def test_gbk_in_memory_read_as_utf8(memory_dir: str) -> None:
    fsspec.filesystem("memory").pipe(f"{memory_dir}/m.csv", "member_id\nM1\n张\n".encode("gbk"))
    message = source_error(SourceConfig(channel="pos", members=f"memory://{memory_dir}/m.csv"))
    assert "is not UTF-8 (invalid byte 0xd5 on line 3)" in message
    assert 'add encoding = "gb18030"' in message


def test_missing_member_id_names_file_found_columns_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("卡号,手机号\nC1,138\n", encoding="utf-8")
    assert source_error(SourceConfig(channel="pos", members=str(path))) == (
        f'channel "pos": {path} has no member_id column (found: 卡号, 手机号); name it under '
        '[sources.columns]: member_id = "<its column name>"'
    )


def test_missing_points_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("txn_id,member_id,amount\nT1,M1,5\n", encoding="utf-8")
    message = source_error(SourceConfig(channel="pos", members=str(path), points=str(path)),
                           "points")
    assert message.startswith(f'channel "pos": {path} has no points column (found: txn_id, '
                              "member_id, amount)")
    assert 'points = "<its column name>"' in message


def test_missing_balance_column(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("member_id,amount\nM1,5\n", encoding="utf-8")
    message = source_error(SourceConfig(channel="pos", members=str(path), balances=str(path)),
                           "balances")
    assert "has no balance column" in message


def test_missing_file_and_empty_glob(tmp_path: Path) -> None:
    path = tmp_path / "gone.csv"
    assert source_error(SourceConfig(channel="pos", members=str(path))) == (
        f'channel "pos": no file at {path}; check the path in its [[sources]] entry'
    )
    assert "no file matches memory:///nothing-here/*.csv" in source_error(
        SourceConfig(channel="pos", members="memory:///nothing-here/*.csv"))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"")
    assert source_error(SourceConfig(channel="pos", members=str(path))) == (
        f'channel "pos": {path} is empty; it needs at least a header line'
    )


def test_header_only_file_is_an_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("member_id,phone\n", encoding="utf-8")
    frame = members(path)
    assert frame.height == 0
    assert frame.columns == ["member_id", "phone", *PROVENANCE]


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    path.write_bytes(b"PAR1 not really")
    message = source_error(SourceConfig(channel="pos", members=str(path)))
    assert message.startswith(f'channel "pos": {path} cannot be read as parquet:')


def test_ragged_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('member_id,name\n1,"Wang, Wei"\n2,Li,Na\n', encoding="utf-8")
    assert source_error(SourceConfig(channel="pos", members=str(path))) == (
        f'channel "pos": {path} has a row with more fields than its header (line 3); quote '
        "values that contain the separator, or fix the row"
    )


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "m.xlsx"
    path.write_bytes(b"x")
    assert "has an unknown extension; use .csv, .tsv, .parquet" in source_error(
        SourceConfig(channel="pos", members=str(path)))


def test_canonical_headers_ignores_spacing_and_case() -> None:
    source = SourceConfig(channel="pos", members="m.csv")
    headers = ["\ufeffMember ID", " Mobile ", "Birth-Date", "unknown"]
    assert canonical_headers(headers, source, "members") == {
        "\ufeffMember ID": "member_id", " Mobile ": "phone", "Birth-Date": "birth_date",
    }


# -- SQL -----------------------------------------------------------------------------------

@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as db:
        db.execute("create table members (会员号 text, mobile integer, birthday date, note text)")
        db.executemany("insert into members values (?, ?, ?, ?)",
                       [("007", 13800138000, "1990-01-02", "x"), ("008", None, None, None)])
        db.execute("create table ledger (txn_id text, member_id text, points integer)")
        db.execute("insert into ledger values ('T1', '007', -5)")
    return f"sqlite:///{path}"


def test_sqlite_source(sqlite_url: str) -> None:
    source = SourceConfig(channel="crm", sql={
        "url": sqlite_url, "query": "select * from members order by 1",
        "points_query": "select * from ledger"})
    frame = read_dataset(source, "members")
    assert frame.columns == ["member_id", "phone", "birth_date", *PROVENANCE]
    assert frame.rows() == [("007", "13800138000", "1990-01-02", 0, "sql"),
                            ("008", None, None, 1, "sql")]
    assert_all_text(frame)
    assert read_dataset(source, "points").select("txn_id", "points").row(0) == ("T1", "-5")
    assert read_dataset(source, "balances") is None


def test_sql_url_from_environment(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TEST_URL", sqlite_url)
    source = SourceConfig(channel="crm", sql={"url_env": "CRM_TEST_URL",
                                              "query": "select * from members"})
    assert read_dataset(source, "members").height == 2
    monkeypatch.delenv("CRM_TEST_URL")
    assert source_error(source) == (
        'channel "crm": environment variable CRM_TEST_URL (url_env of its [sources.sql]) is not set'
    )


def test_sql_failure_names_query_and_channel(sqlite_url: str) -> None:
    source = SourceConfig(channel="crm", sql={"url": sqlite_url, "query": "select * from nope"})
    assert source_error(source) == (
        f'channel "crm": the members query on {sqlite_url} failed: '
        "(sqlite3.OperationalError) no such table: nope"
    )


def test_sql_missing_required_column(sqlite_url: str) -> None:
    source = SourceConfig(channel="crm", sql={"url": sqlite_url,
                                              "query": "select note from members"})
    assert source_error(source).startswith(
        'channel "crm": its members query has no member_id column (found: note)')


REQUIRE_PG = os.environ.get("MEMBERLINK_REQUIRE_PG") == "1"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_members_table() -> Iterator[str]:
    """A uniquely named table in the `test` database, dropped afterwards."""
    import psycopg

    try:
        connection = psycopg.connect(PG_URL, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (MEMBERLINK_REQUIRE_PG=1): {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is down: {exc}")
    table = f"read_test_{uuid.uuid4().hex[:10]}"
    with connection:
        connection.execute(f"create table {table} (会员号 text, 手机号 bigint, "
                           "balance numeric(12,2), registered_at timestamp, vip boolean)")
        connection.execute(f"insert into {table} values ('P1', 13800138000, 12.50, "
                           "'2024-01-02 03:04:05', true), ('P2', null, null, null, null)")
        try:
            yield table
        finally:
            connection.execute(f"drop table {table}")


@pytest.mark.postgres
def test_postgresql_source(pg_members_table: str) -> None:
    source = SourceConfig(channel="crm", sql={
        "url": PG_URL.replace("postgres@", "postgres:sekrit@"),
        "query": f"select * from {pg_members_table} order by 1",
        "balances_query": f"select 会员号, balance from {pg_members_table} order by 1"})
    frame = read_dataset(source, "members")
    assert frame.columns == ["member_id", "phone", "registered_at", *PROVENANCE]
    assert frame["member_id"].to_list() == ["P1", "P2"]
    assert frame["phone"].to_list() == ["13800138000", None]
    assert frame["registered_at"][0].startswith("2024-01-02 03:04:05")
    assert_all_text(frame)
    balances = read_dataset(source, "balances")
    assert balances["balance"].to_list() == ["12.50", None]


@pytest.mark.postgres
def test_postgresql_error_redacts_password(pg_members_table: str) -> None:
    source = SourceConfig(channel="crm", sql={
        "url": "postgresql://postgres:sekrit@127.0.0.1:5432/no_such_db_memberlink",
        "query": f"select * from {pg_members_table}"})
    message = source_error(source)
    assert "sekrit" not in message
    assert message.startswith('channel "crm": the members query on postgresql://postgres:***'
                              "@127.0.0.1:5432/no_such_db_memberlink failed:")
    assert "no_such_db_memberlink" in message
