"""The command line as a user meets it: exit codes, one-line errors, the summary, the report."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tasks.demo_data import generate_demo

runner = CliRunner()


def _flat(output: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "sources.toml")])
    assert result.exit_code == 2
    assert "does not exist; pass the path of your sources.toml" in _flat(result.output)
    assert "Traceback" not in result.output


def test_an_unknown_key_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "pos.csv").write_text("member_id\nM1\n", encoding="utf-8")
    (tmp_path / "sources.toml").write_text(
        '[[sources]]\nchannel = "pos"\nmembers = "pos.csv"\nencodng = "gb18030"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "sources.toml")])
    assert result.exit_code == 2
    assert 'line 4: unknown key "encodng" in [[sources]]' in _flat(result.output)


def test_a_bad_date_flag_is_refused_before_running(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--as-of", "30/11/2026"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output


def test_a_gbk_file_read_as_utf8_fails_the_run_with_the_fix(
    tmp_path: Path, prefect_api: None
) -> None:
    (tmp_path / "pos.csv").write_bytes("会员号,姓名\nM1,张三\n".encode("gb18030"))
    (tmp_path / "sources.toml").write_text(
        '[[sources]]\nchannel = "pos"\nmembers = "pos.csv"\n', encoding="utf-8"
    )
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "sources.toml"),
                                 "--warehouse", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2
    text = _flat(result.output)
    assert "is not UTF-8" in text and 'encoding = "gb18030"' in text
    assert "Traceback" not in result.output


def test_run_prints_the_summary_and_report_rebuilds_it(
    tmp_path: Path, prefect_api: None
) -> None:
    generate_demo(tmp_path / "demo", people=60, seed=3)
    warehouse = tmp_path / "w.duckdb"
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "demo" / "sources.toml"),
                                 "--warehouse", str(warehouse), "--channel", "pos",
                                 "--channel", "app"])
    assert result.exit_code == 0, result.output
    for line in ("read / quarantined", "unified members:", "report:"):
        assert line in result.output
    assert "tmall" not in result.output.split("memberlink run")[-1]

    out = tmp_path / "rebuilt"
    rebuilt = runner.invoke(app, ["report", "--warehouse", str(warehouse), "--out", str(out)])
    assert rebuilt.exit_code == 0, rebuilt.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "unified members" in html


def test_report_of_an_empty_warehouse_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--warehouse", str(tmp_path / "empty.duckdb"),
                                 "--run", "no-such-run"])
    assert result.exit_code == 1
    assert _flat(result.output).startswith("error:")
    assert "Traceback" not in result.output
