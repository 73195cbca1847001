"""Production path against a real Prefect server: deploy, backfill with custom parameters,
a process worker runs it, the warehouse and the Artifacts page show the result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tasks.demo_data import generate_demo

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
BACKFILL_DATE = "2026-10-31"

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {seconds}s")


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(env["PREFECT_API_URL"], server)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [*PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _api(env: dict[str, str], path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_backfill_from_a_deployment_runs_on_a_worker_and_publishes(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    generate_demo(demo, people=200, seed=5)
    warehouse = tmp_path / "warehouse.duckdb"

    _prefect(server_env, "work-pool", "create", "memberlink", "--type", "process")
    _prefect(server_env, "--no-prompt", "deploy", "--all")
    out = _prefect(
        server_env, "deployment", "run", "unify-members/nightly",
        "--param", f"config={demo / 'sources.toml'}",
        "--param", f"warehouse={warehouse}",
        "--param", f"as_of={BACKFILL_DATE}",
        "--param", 'channels=["pos", "tmall", "app"]',
    )
    assert "Created flow run" in out
    _prefect(server_env, "worker", "start", "--pool", "memberlink", "--run-once", timeout=600)

    runs = _api(server_env, "/flow_runs/filter", {
        "deployments": {"name": {"any_": ["nightly"]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
    })
    assert [run["state"]["type"] for run in runs] == ["COMPLETED"], runs
    flow_run_id = runs[0]["id"]

    with duckdb.connect(str(warehouse), read_only=True) as con:
        run_row = con.execute(
            f"select as_of, status from runs where run_id = '{flow_run_id}'"
        ).fetchone()
        channels = {row[0] for row in con.execute("select channel from member_xref").fetchall()}
    assert run_row is not None and str(run_row[0]) == BACKFILL_DATE and run_row[1] == "completed"
    assert channels == {"pos", "tmall", "app"}

    artifacts = _api(server_env, "/artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
    })
    keys = {artifact["key"] for artifact in artifacts}
    assert {"memberlink-run-summary", "memberlink-data-quality", "memberlink-top-discrepancies",
            "memberlink-report"} <= keys


def test_deployment_parameters_are_typed_and_described(server_env: dict[str, str]) -> None:
    deployments = _api(server_env, "/deployments/filter", {
        "deployments": {"name": {"any_": ["nightly"]}},
    })
    schema = deployments[0]["parameter_openapi_schema"]["properties"]
    assert set(schema) >= {"config", "warehouse", "as_of", "channels", "full_refresh"}
    assert all(schema[name].get("description") for name in schema)
    assert schema["as_of"]["anyOf"][0]["format"] == "date"
    schedule = deployments[0]["schedules"][0]["schedule"]
    assert schedule["timezone"] == "Asia/Shanghai" and schedule["cron"]
    assert deployments[0]["concurrency_limit"] == 1 or deployments[0].get(
        "global_concurrency_limit", {}).get("limit") == 1
