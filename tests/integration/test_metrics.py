"""``GET /metrics`` through prometheus-client (issue 9, observability): it parses with prometheus-client's own parser,
holds the request, queue-wait, batch-size and inference histograms with the counts the predictions made, counts
refusals by cause, names no tenant and no tenant's deployment, and with two processes sharing one
``PROMETHEUS_MULTIPROC_DIR`` each answers the sum of both. The Grafana dashboard queries only metrics the server
exports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from cloudeasyml.api.problems import REFUSAL_CAUSE_BY_ERROR
from cloudeasyml.app import create_app
from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.cli.serve import multiprocess_metrics_dir
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.tenants import NewTenant, create_tenant
from cloudeasyml.metering.metrics import MULTIPROC_ENV, REFUSAL_CAUSES
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.settings import DatabaseSettings, LimitsSettings, RuntimeSettings, Settings
from tests.conftest import bearer
from tests.support import tiny_model
from tests.support.server_process import export_models, stop_server, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "cloudeasyml.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition text, parsed by prometheus-client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


@pytest.fixture(name="settings")
def fx_settings(migrated_url: str, artifact_dir: Path, tmp_path: Path) -> Settings:
    """One deployment per tenant, so that a second one is refused (a refusal to count)."""
    return Settings(
        database=DatabaseSettings(url=migrated_url),
        runtime=RuntimeSettings(artifact_dir=str(artifact_dir)),
        limits=LimitsSettings(max_deployments=1),
        home=str(tmp_path / "home"),
    )


async def _deploy(client: AsyncTestClient[Litestar], key: str, name: str) -> str:
    response = await client.post("/deployments", json={"modelName": "tiny", "name": name}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _traffic(client: AsyncTestClient[Litestar], tenant: NewTenant, other: NewTenant) -> tuple[str, ...]:
    """Predictions by two tenants through two routes, one refusal and one unknown path; returns what must not
    appear on ``/metrics`` (ids, names, keys)."""
    first = await _deploy(client, tenant.key, "acme-secret-project")
    second = await _deploy(client, other.key, "globex-hidden-model")
    refused = await client.post("/deployments", json={"modelName": "tiny", "name": "x"}, headers=bearer(tenant.key))
    assert refused.status_code == 409, refused.text
    for _ in range(3):  # the fast path ahead of the router
        body = {"deploymentId": first, "inputs": [{"x": 1.0, "y": 2.0}] * 2}
        assert (await client.post("/predict", json=body, headers=bearer(tenant.key))).status_code == 200
    for _ in range(2):  # through the router
        body = {"inputs": [{"x": 3.0, "y": 4.0}]}
        response = await client.post(f"/deployments/{second}/predict", json=body, headers=bearer(other.key))
        assert response.status_code == 200, response.text
    assert (await client.get(f"/no-such-page/{tenant.tenant.id}")).status_code == 404
    limited = await client.post(
        "/api-keys", json={"name": "limited", "rateLimitPerMinute": 1}, headers=bearer(tenant.key)
    )
    assert limited.status_code == 201, limited.text
    body = {"deploymentId": first, "inputs": [{"x": 1.0, "y": 2.0}]}
    statuses = [
        (await client.post("/predict", json=body, headers=bearer(limited.json()["key"]))).status_code for _ in range(2)
    ]
    assert statuses == [200, 429]  # refused on the fast path, before the router
    return (
        limited.json()["key"],
        first,
        second,
        "acme-secret-project",
        "globex-hidden-model",
        str(tenant.tenant.id),
        str(other.tenant.id),
        tenant.tenant.name,
        other.tenant.name,
        tenant.key,
        other.key,
    )


async def test_metrics_parse_and_hold_the_histograms_by_model_and_route(
    settings: Settings, plugin_manager: PluginManager, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        secrets = await _traffic(client, tenant, other_tenant)
        assert (await client.request("BREWCOFFEE", "/health")).status_code >= 400
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    samples = _samples(text)

    assert _value(samples, "cloudeasyml_predictions_total", model="tiny", version="1.0.0") == 6
    assert _value(samples, "cloudeasyml_prediction_items_total", model="tiny", version="1.0.0") == 9
    assert _value(samples, "cloudeasyml_processing_seconds_total", model="tiny", version="1.0.0") > 0
    assert _value(samples, "cloudeasyml_cost_total", model="tiny", version="1.0.0") > 0  # tiny has a per-request price
    # Requests by route template and status: the fast path is labelled as its route is.
    predict = {"method": "POST", "route": "/predict", "status": "200"}
    assert _value(samples, "cloudeasyml_http_request_duration_seconds_count", **predict) == 4
    assert _value(samples, "cloudeasyml_http_request_duration_seconds_bucket", **predict, le="+Inf") == 4
    assert _value(samples, "cloudeasyml_http_request_duration_seconds_count", **(predict | {"status": "429"})) == 1
    routed = [
        labels
        for (name, labels), value in samples.items()
        if name == "cloudeasyml_http_request_duration_seconds_count" and value == 2
    ]
    assert any(dict(labels)["route"].startswith("/deployments/{") for labels in routed), routed
    requests = "cloudeasyml_http_request_duration_seconds_count"
    assert _value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert _value(samples, requests, method="POST", route="/deployments", status="409") == 1
    # One wait per request, one size and run time per batch; the batches hold every item.
    assert _value(samples, "cloudeasyml_queue_wait_seconds_count", model="tiny", version="1.0.0") == 6
    batches = _value(samples, "cloudeasyml_batch_size_items_count", model="tiny", version="1.0.0")
    assert 1 <= batches <= 6
    assert _value(samples, "cloudeasyml_batch_size_items_sum", model="tiny", version="1.0.0") == 9
    assert _value(samples, "cloudeasyml_inference_seconds_count", model="tiny", version="1.0.0") == batches
    assert _value(samples, "cloudeasyml_refusals_total", cause="deployment_limit") == 1
    assert _value(samples, "cloudeasyml_refusals_total", cause="rate_limit") == 1
    assert {cause for cause in REFUSAL_CAUSES} <= {
        dict(labels)["cause"] for name, labels in samples if name == "cloudeasyml_refusals_total"
    }
    assert _value(samples, "cloudeasyml_deployments_loaded") == 2
    assert _value(samples, "cloudeasyml_sessions_loaded") == 1  # both tenants' deployments share the session
    assert _value(samples, "cloudeasyml_session_bytes") > 0
    assert _value(samples, "cloudeasyml_queue_items", model="tiny") == 0
    assert _value(samples, "cloudeasyml_http_errors_total", status="409") == 1
    # The page answers without a key: no tenant, no deployment, no key, no path a client chose.
    for secret in secrets:
        assert secret not in text, secret
    assert "tenant" not in text and "no-such-page" not in text
    assert "BREWCOFFEE" not in text and _sum(samples, requests, method="OTHER") == 1  # any token a client sends


def test_every_refusal_error_has_a_cause_of_the_metric() -> None:
    assert set(REFUSAL_CAUSE_BY_ERROR.values()) == set(REFUSAL_CAUSES)


def _promql_names(node: object) -> set[str]:
    """The ``cloudeasyml_*`` metric names of every ``expr`` in a Grafana dashboard."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                names.update(re.findall(r"\bcloudeasyml_[a-z0-9_]+", value))
            else:
                names |= _promql_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _promql_names(value)
    return names


def _base_name(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)\Z", "", name)


async def test_the_dashboard_queries_only_metrics_the_server_exports(
    settings: Settings, plugin_manager: PluginManager, tenant: NewTenant, other_tenant: NewTenant
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {_base_name(name) for name in _promql_names(dashboard)}
    assert len(used) >= 10, used
    async with AsyncTestClient(app=create_app(settings, plugin_manager)) as client:
        await _traffic(client, tenant, other_tenant)
        text = (await client.get("/metrics")).text
    exported = {_base_name(name) for name, _labels in _samples(text)}
    assert used <= exported, sorted(used - exported)


def test_serve_sets_up_a_fresh_directory_for_several_workers(tmp_path: Path) -> None:
    settings = Settings(home=str(tmp_path / "home"))
    stale = tmp_path / "home" / "prometheus" / "counter_12345.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    environ: dict[str, str] = {}
    assert multiprocess_metrics_dir(settings, 1, environ) is None and environ == {}
    path = multiprocess_metrics_dir(settings, 2, environ)
    assert path == stale.parent and environ == {MULTIPROC_ENV: str(path)}
    assert path.is_dir() and not stale.exists()
    operators = {MULTIPROC_ENV: str(tmp_path / "theirs")}
    assert multiprocess_metrics_dir(settings, 4, operators) is None
    assert operators == {MULTIPROC_ENV: str(tmp_path / "theirs")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Servers:
    """Server processes sharing one multiprocess directory."""

    bases: list[str]
    processes: list[subprocess.Popen[bytes]]
    tenants: tuple[NewTenant, NewTenant]


@pytest.fixture(name="two_processes")
def fx_two_processes(artifact_dir: Path, tmp_path: Path) -> Iterator[Servers]:
    """Two server processes (the tiny model; uvicorn, as ``cloudeasyml serve`` runs) on one SQLite database, sharing
    one ``PROMETHEUS_MULTIPROC_DIR`` as the workers of ``cloudeasyml serve --workers 2`` do."""
    export_models(artifact_dir, tiny_model.TinyModel())  # here, once: two processes exporting at once would race
    url = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    upgrade_database(url)

    async def tenants() -> tuple[NewTenant, NewTenant]:
        made = []
        for name in ("tenant-one", "tenant-two"):
            async with one_transaction(url) as session:
                made.append(await create_tenant(session, name, "owner@example.com"))
        return made[0], made[1]

    pair = asyncio.run(tenants())
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    env.update(
        CLOUDEASYML_HOME=str(tmp_path / "home"),
        CLOUDEASYML_DATABASE_URL=url,
        CLOUDEASYML_RUNTIME__ARTIFACT_DIR=str(artifact_dir),
        CLOUDEASYML_SERVER__ACCESS_LOG="false",
        CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD="false",
        PROMETHEUS_MULTIPROC_DIR=str(shared),
    )
    servers: list[subprocess.Popen[bytes]] = []
    bases = []
    log = (tmp_path / "servers.log").open("w")
    try:
        for _ in range(2):
            port = _free_port()
            command = [sys.executable, "-m", "uvicorn", "--factory", "tests.support.tiny_app:create"]
            command += ["--port", str(port), "--log-level", "warning"]
            servers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log))
            bases.append(f"http://127.0.0.1:{port}")
        for server, base in zip(servers, bases, strict=True):
            wait_until_healthy(server, base, tmp_path / "servers.log")
        yield Servers(bases, servers, pair)
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


def test_two_processes_sharing_a_multiprocess_directory_report_the_sum(two_processes: Servers) -> None:
    (first, second), (one, two) = two_processes.bases, two_processes.tenants
    deployment = httpx.post(
        f"{first}/deployments", json={"modelName": "tiny", "name": "shared-secret"}, headers=bearer(one.key)
    ).json()["id"]
    other = httpx.post(
        f"{second}/deployments", json={"modelName": "tiny", "name": "other-secret"}, headers=bearer(two.key)
    ).json()["id"]
    for base, key, target, count in ((first, one.key, deployment, 3), (second, two.key, other, 2)):
        for _ in range(count):
            body = {"deploymentId": target, "inputs": [{"x": 1.0, "y": 2.0}]}
            response = httpx.post(f"{base}/predict", json=body, headers=bearer(key), timeout=60)
            assert response.status_code == 200, response.text
    for base in (first, second):
        # Histograms, billing counters and gauges reach the files within a second (each process's refresh).
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"{base}/metrics").text
            samples = _samples(text)
            settled = _value(samples, "cloudeasyml_predictions_total", model="tiny", version="1.0.0") == 5
            settled = settled and _value(samples, "cloudeasyml_deployments_loaded") == 2
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert _value(samples, "cloudeasyml_predictions_total", model="tiny", version="1.0.0") == 5
        assert _value(samples, "cloudeasyml_prediction_items_total", model="tiny", version="1.0.0") == 5
        assert _value(samples, "cloudeasyml_deployments_loaded") == 2  # each process's own, summed
        assert _value(samples, "cloudeasyml_models_installed") == 1  # the most of any process, not a sum
        assert _value(samples, "cloudeasyml_queue_wait_seconds_count", model="tiny", version="1.0.0") == 5
        predict = {"method": "POST", "route": "/predict", "status": "200"}
        assert _value(samples, "cloudeasyml_http_request_duration_seconds_count", **predict) == 5
        assert _sum(samples, "cloudeasyml_batch_size_items_sum", model="tiny", version="1.0.0") == 5
        for secret in (deployment, other, "shared-secret", "other-secret", str(one.tenant.id), str(two.tenant.id)):
            assert secret not in text
    # A worker killed outright (a worker manager restarts it under another id): its gauges stop counting at the next
    # scrape, what it served stays counted.
    killed = two_processes.processes[0]
    killed.kill()
    killed.wait(timeout=30)
    samples = _samples(httpx.get(f"{second}/metrics").text)
    assert _value(samples, "cloudeasyml_deployments_loaded") == 1
    assert _value(samples, "cloudeasyml_predictions_total", model="tiny", version="1.0.0") == 5


def test_cloudeasyml_serve_with_two_workers_shares_one_fresh_directory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    upgrade_database(url)
    home = tmp_path / "home"
    stale = home / "prometheus" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_") and k != MULTIPROC_ENV}
    env.update(CLOUDEASYML_HOME=str(home), CLOUDEASYML_DATABASE_URL=url, CLOUDEASYML_SERVER__ACCESS_LOG="false")
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    command = [sys.executable, "-m", "cloudeasyml.cli", "serve", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while len(pids) < 2:  # each worker writes its gauges there within a second of starting
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, sorted(p.name for p in stale.parent.iterdir())
            time.sleep(0.2)
            pids = {path.stem.rsplit("_", 1)[1] for path in stale.parent.glob("gauge_livesum_*.db")}
        assert not stale.exists()
        while True:
            assert time.monotonic() < deadline, "the server did not answer"
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert _value(_samples(text), "cloudeasyml_models_installed") >= 0
    finally:
        stop_server(server)
        log.close()
