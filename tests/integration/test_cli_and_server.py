"""The operator's path: the `cloudeasyml` CLI, then a real server process answering over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "cloudeasyml.cli"]


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(name="cli_env")
def fx_cli_env(database_url: str, artifact_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    env.update(
        CLOUDEASYML_HOME=str(tmp_path / "home"),
        CLOUDEASYML_DATABASE_URL=database_url,
        CLOUDEASYML_RUNTIME__ARTIFACT_DIR=str(artifact_dir),
    )
    return env


def test_db_commands_and_tenant_creation(cli_env: dict[str, str]) -> None:
    assert "database at head" in run_cli(cli_env, "db", "upgrade").stdout
    current = run_cli(cli_env, "db", "current")
    assert "(head)" in current.stdout + current.stderr
    created = json.loads(run_cli(cli_env, "tenants", "create", "acme", "--owner", "ops@acme.io", "--json").stdout)
    assert created["tenantId"] and created["key"].startswith(created["keyId"] + ".")
    again = run_cli(cli_env, "tenants", "create", "acme", "--owner", "ops@acme.io", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    run_cli(cli_env, "db", "downgrade", "base")
    current = run_cli(cli_env, "db", "current")
    assert "(head)" not in current.stdout + current.stderr


def test_db_downgrade_takes_a_relative_revision(cli_env: dict[str, str]) -> None:
    """`db downgrade -1` (the README's and docs/operations.md's example) is a revision, not an unknown option."""
    run_cli(cli_env, "db", "upgrade")
    assert "database at -1" in run_cli(cli_env, "db", "downgrade", "-1").stdout
    current = run_cli(cli_env, "db", "current")
    assert "(head)" not in current.stdout + current.stderr
    run_cli(cli_env, "db", "upgrade")
    current = run_cli(cli_env, "db", "current")
    assert "(head)" in current.stdout + current.stderr


def test_tenant_caps_are_set_and_removed_from_the_cli(cli_env: dict[str, str]) -> None:
    run_cli(cli_env, "db", "upgrade")
    run_cli(cli_env, "tenants", "create", "acme", "--owner", "ops@acme.io")
    both = run_cli(cli_env, "tenants", "set-caps", "acme", "--spend-cap", "12.50", "--request-cap", "1000").stdout
    assert "spend cap 12.5 per month, request cap 1000 per month" in both
    one = run_cli(cli_env, "tenants", "set-caps", "acme", "--request-cap", "none").stdout
    assert "spend cap 12.5 per month, request cap none per month" in one
    bad = run_cli(cli_env, "tenants", "set-caps", "acme", "--spend-cap", "lots", check=False)
    assert bad.returncode != 0 and "not a number" in bad.stderr
    negative = run_cli(cli_env, "tenants", "set-caps", "acme", "--request-cap", "-1", check=False)
    assert negative.returncode != 0 and "non-negative" in negative.stderr
    huge = run_cli(cli_env, "tenants", "set-caps", "acme", "--spend-cap", "1e12", check=False)
    assert huge.returncode != 0 and "at most 100000000" in huge.stderr
    unknown = run_cli(cli_env, "tenants", "set-caps", "nobody", "--request-cap", "5", check=False)
    assert unknown.returncode != 0 and "no tenant named 'nobody'" in unknown.stderr


def test_the_operator_issues_a_root_admin_key_from_the_cli(cli_env: dict[str, str]) -> None:
    run_cli(cli_env, "db", "upgrade")
    owner = json.loads(run_cli(cli_env, "tenants", "create", "acme", "--owner", "ops@acme.io", "--json").stdout)
    issued = json.loads(run_cli(cli_env, "tenants", "issue-admin-key", "acme", "--json").stdout)
    assert issued["key"].startswith(issued["keyId"] + ".") and issued["keyId"] != owner["keyId"]
    assert issued["scopes"] == ["admin"]
    unknown = run_cli(cli_env, "tenants", "issue-admin-key", "nobody", check=False)
    assert unknown.returncode != 0 and "no tenant named 'nobody'" in unknown.stderr


def test_plugins_list_shows_installed_models_and_their_source(cli_env: dict[str, str]) -> None:
    listed = json.loads(run_cli(cli_env, "plugins", "list", "--json").stdout)
    names = {m["model"]: m for m in listed["models"]}
    pytest.importorskip("cloudeasyml_housing")
    assert names["housing"]["source"].startswith("cloudeasyml-housing ")
    assert names["housing"]["version"]


def test_help_explains_every_command(cli_env: dict[str, str]) -> None:
    text = run_cli(cli_env, "--help").stdout
    for command in ("db", "tenants", "serve", "plugins", "export", "doctor"):
        assert command in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.export
def test_a_served_housing_prediction_over_real_http(cli_env: dict[str, str], database_url: str) -> None:
    if "postgres" in database_url:
        pytest.skip("one real-server run is enough; PostgreSQL is covered through the ASGI tests")
    pytest.importorskip("cloudeasyml_housing")
    run_cli(cli_env, "db", "upgrade")
    key = json.loads(run_cli(cli_env, "tenants", "create", "web", "--owner", "w@x.io", "--json").stdout)["key"]
    port = _free_port()
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--demo"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        model = httpx.get(f"{base}/models/housing", headers=headers).json()
        deployment = httpx.post(f"{base}/deployments", json={"modelName": "housing"}, headers=headers).json()
        response = httpx.post(
            f"{base}/predict",
            json={"deploymentId": deployment["id"], "inputs": [model["exampleInput"]]},
            headers=headers,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["price"] > 0
        assert httpx.get(f"{base}/usage", headers=headers).json()["totalRequests"] == 1
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "CloudEasyML on" in output and "Traceback" not in output
    # --demo made a tenant with a housing deployment and printed a predict command with a real example.
    assert "demo tenant created; owner key (shown once): sk_" in output
    assert '"inputs": [{"lotSize"' in output and "/predict" in output
