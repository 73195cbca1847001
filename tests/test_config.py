"""sources.toml loading: resolved paths, typed settings, and one-line errors that name the line."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from tasks.config import RunConfig, SourceConfig, TomlLines, load_config
from tasks.errors import ConfigError


def write_config(directory: Path, body: str) -> Path:
    path = directory / "sources.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name in ("pos_members.csv", "pos_points.csv", "app_members.csv"):
        (tmp_path / name).write_text("member_id\n1\n", encoding="utf-8")
    (tmp_path / "tmall").mkdir()
    (tmp_path / "tmall" / "part-1.parquet").write_bytes(b"")
    return tmp_path


POS = """
[[sources]]
channel = "pos"
members = "pos_members.csv"
"""


def config_error(directory: Path, body: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(directory, body))
    message = str(raised.value)
    assert "\n" not in message and "pydantic" not in message.lower()
    return message


def test_full_config_is_typed_and_paths_resolved(data_dir: Path) -> None:
    path = write_config(data_dir, """
        [run]
        warehouse = "out/warehouse.duckdb"
        as_of = 2026-03-01
        report_dir = "reports"

        [[sources]]
        channel = "pos"
        members = "pos_members.csv"
        points = "./pos_points.csv"
        encoding = "GB18030"
        trust = 3
        [sources.columns]
        phone = "联系电话"
        member_id = ["会员编号", "卡号"]

        [[sources]]
        channel = "tmall"
        members = "tmall/*.parquet"
        balances = "s3://brand-lake/tmall/balances/*.parquet"
        phone_hash = { case = "upper" }

        [[sources]]
        channel = "crm"
        [sources.sql]
        url_env = "CRM_DATABASE_URL"
        query = "select * from members"

        [matching]
        hub_max_people = 6

        [linkage]
        decisions = "review/decisions.csv"
    """)
    config = load_config(path)

    pos, tmall, crm = config.sources
    assert config.channels == ("pos", "tmall", "crm")
    assert pos.members == str(data_dir / "pos_members.csv")
    assert pos.points == str(data_dir / "pos_points.csv")
    assert (pos.encoding, pos.trust) == ("gb18030", 3)
    assert pos.column_names("member_id") == ("会员编号", "卡号")
    assert pos.column_names("phone") == ("联系电话",)
    assert tmall.members == str(data_dir / "tmall" / "*.parquet")
    assert tmall.balances == "s3://brand-lake/tmall/balances/*.parquet"
    assert (tmall.phone_hash.algorithm, tmall.phone_hash_case) == ("sha256", "upper")
    assert (tmall.trust, tmall.encoding) == (1, "utf-8")
    assert pos.phone_hash_case == "lower"
    assert crm.members is None and crm.query("members") == "select * from members"
    assert crm.query("points") is None and crm.location("members") is None
    assert config.run.as_of == date(2026, 3, 1)
    assert config.run.warehouse == str(data_dir / "out" / "warehouse.duckdb")
    assert config.run.report_dir == data_dir / "reports"
    assert config.run.raw_pii is False
    assert config.run.quarantine_alert_share == 0.05
    assert config.matching.hub_max_people == 6
    assert config.linkage.decisions == str(data_dir / "review" / "decisions.csv")
    assert config.config_path == path


def test_defaults_and_string_date(data_dir: Path) -> None:
    config = load_config(write_config(data_dir, '[run]\nas_of = "2026-03-01"\n' + POS))
    assert config.run.as_of == date(2026, 3, 1)
    assert config.run.warehouse is None
    assert config.linkage.enabled is True


def test_url_warehouse_and_file_url_are_kept_as_given(data_dir: Path) -> None:
    config = load_config(write_config(data_dir, f"""
        [run]
        warehouse = "postgresql://etl@db/warehouse"
        [[sources]]
        channel = "pos"
        members = "file://{data_dir}/pos_members.csv"
    """))
    assert config.run.warehouse == "postgresql://etl@db/warehouse"
    assert config.sources[0].members == f"file://{data_dir}/pos_members.csv"


def test_sql_url_is_a_secret(data_dir: Path) -> None:
    config = load_config(write_config(data_dir, """
        [[sources]]
        channel = "crm"
        [sources.sql]
        url = "postgresql://crm:hunter2@db/crm"
        query = "select 1"
    """))
    assert "hunter2" not in repr(config)
    assert config.sources[0].sql.url.get_secret_value() == "postgresql://crm:hunter2@db/crm"


ERRORS = [
    pytest.param(
        POS + 'membrs = "x.csv"\n',
        'sources.toml line 4: unknown key "membrs" in [[sources]] channel "pos" '
        "(known: channel, members, points, balances, encoding, trust, columns, sql, phone_hash)",
        id="unknown-source-key",
    ),
    pytest.param(
        POS + '[sources.columns]\nphone = "mobile"\nphon = "tel"\n',
        'sources.toml line 6: "phon" is not a canonical column in [sources.columns] of '
        '[[sources]] channel "pos" (known: member_id, phone,',
        id="unknown-canonical-column",
    ),
    pytest.param(
        POS + 'columns = { phone = "mobile", nmae = "nick" }\n',
        'sources.toml line 4: "nmae" is not a canonical column',
        id="unknown-column-inline-table",
    ),
    pytest.param(
        POS + "trust = \"3\"\n",
        'sources.toml line 4: trust = "3": input should be a valid integer in [[sources]] '
        'channel "pos"',
        id="trust-not-integer",
    ),
    pytest.param(
        POS + "members_extra = 1\n[run]\nas_of = \"March\"\n",
        'sources.toml line 4: unknown key "members_extra"',
        id="first-error-wins",
    ),
    pytest.param(
        '[run]\nas_of = "March"\n' + POS,
        'sources.toml line 2: as_of = "March": input should be a valid date',
        id="bad-date",
    ),
    pytest.param(
        "[run]\nraw_pii = \"yes\"\n" + POS,
        'sources.toml line 2: raw_pii = "yes": input should be a valid boolean in [run]',
        id="bad-bool",
    ),
    pytest.param(
        POS + '\n[run]\nwarehose = "w.duckdb"\n',
        'sources.toml line 6: unknown key "warehose" in [run] (known: warehouse, as_of, '
        "report_dir, raw_pii, quarantine_alert_share)",
        id="unknown-run-key",
    ),
    pytest.param(
        POS + "\n[matching]\nhub_max_people = 0\n",
        "sources.toml line 6: hub_max_people = 0: input should be greater than or equal to 1 "
        "in [matching]",
        id="matching-out-of-range",
    ),
    pytest.param(
        POS + "\n[rnu]\nas_of = 2026-01-01\n",
        'sources.toml line 5: unknown key "rnu" in the top level (known: sources, run, '
        "matching, linkage, reconcile)",
        id="unknown-table",
    ),
    pytest.param(
        POS + '[sources.phone_hash]\nalgorithm = "md5"\n',
        'sources.toml line 5: algorithm = "md5": input should be \'sha256\' in '
        '[sources.phone_hash] of [[sources]] channel "pos"',
        id="unsupported-phone-hash",
    ),
    pytest.param(
        POS + 'encoding = "klingon"\n',
        'sources.toml line 4: encoding = "klingon": unknown text encoding in [[sources]] '
        'channel "pos"; use e.g. utf-8, gb18030, gbk',
        id="unknown-encoding",
    ),
    pytest.param(
        POS + '\n[[sources]]\nchannel = "pos"\nmembers = "app_members.csv"\n',
        'sources.toml line 6: channel "pos" is defined twice in [[sources]] channel "pos"; '
        "rename one",
        id="duplicate-channel",
    ),
    pytest.param(
        POS + '\n[[sources]]\nchannel = "App-2"\nmembers = "app_members.csv"\n',
        'sources.toml line 6: channel = "App-2": a channel name is lower-case letters, digits '
        "and _, starting with a letter",
        id="invalid-channel-name",
    ),
    pytest.param(
        POS + '\n[[sources]]\nmembers = "app_members.csv"\n',
        'sources.toml line 5: missing key "channel" in [[sources]] #2',
        id="missing-channel",
    ),
    pytest.param(
        POS + '\n[[sources]]\nchannel = "app"\npoints = "pos_points.csv"\n',
        'sources.toml line 5: no members in [[sources]] channel "app"; give members',
        id="missing-members",
    ),
    pytest.param(
        POS + '[sources.sql]\nquery = "select 1"\n',
        "sources.toml line 4: give exactly one of url or url_env in [sources.sql] of "
        '[[sources]] channel "pos"',
        id="sql-without-url",
    ),
    pytest.param(
        POS + '[sources.sql]\nurl = "sqlite://"\nquery = "select 1"\n',
        'sources.toml line 3: members comes from both a file and [sources.sql] in [[sources]] '
        'channel "pos"; keep one',
        id="file-and-sql",
    ),
    pytest.param(
        POS + '[sources.sql]\nurl = "sqlite://"\nquery = """\nselect 1\n"""\nqurey = "x"\n',
        'sources.toml line 9: unknown key "qurey" in [sources.sql] of [[sources]] channel "pos" '
        "(known: url, url_env, query, points_query, balances_query)",
        id="unknown-sql-key-after-multiline-string",
    ),
    pytest.param(
        POS + 'points = "pos_points.csv\n',
        "sources.toml line 4: not valid TOML: Illegal character",
        id="toml-syntax",
    ),
    pytest.param(
        '[run]\nas_of = 2026-03-01\n',
        'sources.toml: missing key "sources" in the top level; add one [[sources]] entry',
        id="no-sources",
    ),
    pytest.param(
        'config_path = "/etc"\n' + POS,
        'sources.toml line 1: unknown key "config_path" in the top level',
        id="config-path-is-not-a-key",
    ),
]


@pytest.mark.parametrize(("body", "expected"), ERRORS)
def test_config_error_names_line_and_key(data_dir: Path, body: str, expected: str) -> None:
    assert config_error(data_dir, body).startswith(expected)


def test_missing_file_names_path_channel_and_line(data_dir: Path) -> None:
    message = config_error(data_dir, POS + 'points = "pos_pionts.csv"\n')
    assert message == (
        f"sources.toml line 4: no file at {data_dir / 'pos_pionts.csv'} for points in "
        f'[[sources]] channel "pos"; relative paths start from {data_dir}'
    )


def test_glob_without_match_is_an_error(data_dir: Path) -> None:
    message = config_error(data_dir, POS.replace("pos_members.csv", "tmall/*.csv"))
    assert message.startswith(f"sources.toml line 3: no file matches {data_dir}/tmall/*.csv "
                              'for members in [[sources]] channel "pos"')


def test_remote_url_is_not_checked_at_load(data_dir: Path) -> None:
    config = load_config(write_config(data_dir, POS.replace("pos_members.csv",
                                                            "memory://nowhere/*.csv")))
    assert config.sources[0].members == "memory://nowhere/*.csv"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_config_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_bytes('[[sources]]\nchannel = "门店"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match=r"^sources\.toml line 2: not UTF-8"):
        load_config(tmp_path / "sources.toml")


@pytest.fixture
def two_channels(data_dir: Path) -> RunConfig:
    return load_config(write_config(data_dir, POS + """
        [[sources]]
        channel = "app"
        members = "app_members.csv"
    """.replace("        ", "")))


def test_select_channels_keeps_config_order(two_channels: RunConfig) -> None:
    assert two_channels.select_channels(["app"]).channels == ("app",)
    assert two_channels.select_channels(["app", "pos"]).channels == ("pos", "app")
    assert two_channels.select_channels(None).channels == ("pos", "app")
    assert two_channels.select_channels("app").channels == ("app",)
    assert two_channels.source("app").members.endswith("app_members.csv")


def test_select_unknown_channel(two_channels: RunConfig) -> None:
    with pytest.raises(ConfigError) as raised:
        two_channels.select_channels(["pos", "tmall"])
    assert str(raised.value) == (
        'unknown channel "tmall": sources.toml defines pos, app; pick channels from those'
    )


def test_source_config_built_in_code_is_validated() -> None:
    assert SourceConfig(channel="pos", members="m.csv").encoding == "utf-8"
    with pytest.raises(ValueError, match="channel name"):
        SourceConfig(channel="POS", members="m.csv")


def test_toml_lines_index_arrays_of_tables_and_inline_keys() -> None:
    lines = TomlLines(textwrap.dedent("""
        [[sources]]
        channel = "a"
        sql.query = '''
        x = 1
        '''
        [[sources]]
        channel = "b"
        columns = { phone = "tel" }
        [sources.sql]
        url = "sqlite://"
    """))
    assert lines.line_of(("sources", 0, "channel")) == 3
    assert lines.line_of(("sources", 0, "sql", "query")) == 4
    assert lines.line_of(("sources", 0, "x")) == 2          # inside a string: not a key
    assert lines.line_of(("sources", 1, "channel")) == 8
    assert lines.line_of(("sources", 1, "columns", "phone")) == 9
    assert lines.line_of(("sources", 1, "sql", "url")) == 11
    assert lines.line_of(("sources", 1, "sql", "missing")) == 10
    assert lines.line_of(("nowhere",)) is None
