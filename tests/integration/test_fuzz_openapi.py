"""schemathesis against the app's own OpenAPI document (``/schema/openapi.json``), over real HTTP: every
operation, called with a valid admin key, answers no 5xx, only statuses the document lists, with the content
type and body the document gives. A tenant with a deployment of the tiny model makes the inference paths
reachable. Bounded (``FUZZ_EXAMPLES`` per operation) to stay within a few minutes on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.serialization import encode_json
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudeasyml.app import create_app
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.operators import issue_operator_key
from cloudeasyml.plugins.manager import PluginManager, get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings
from tests.conftest import bearer, new_tenant
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread
from tests.support.template_db import TEMPLATES

pytestmark = pytest.mark.fuzz

FUZZ_EXAMPLES = int(os.environ.get("CLOUDEASYML_FUZZ_EXAMPLES", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass(frozen=True)
class Live:
    base_url: str
    key: str
    deployment_id: str
    operator_key: str


@pytest.fixture(name="live", scope="module")
def fx_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One real server for the module: SQLite, the tiny model, a tenant with its admin key and a deployment."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    url = TEMPLATES.sqlite(root / "fuzz.db")
    tenant = asyncio.run(new_tenant(url, "fuzzer"))
    operator_key = asyncio.run(_operator_key(url))
    pm = _plugins()
    tiny_model.seed_graph(root / "art")
    settings_ = Settings(
        database=DatabaseSettings(url=url), runtime=RuntimeSettings(artifact_dir=str(root / "art")), home=str(root)
    )
    with serve_in_thread(create_app(settings_, pm)) as address:
        base_url = f"http://{address}"
        made = httpx.post(
            f"{base_url}/deployments", json={"modelName": "tiny", "name": "scorer"}, headers=bearer(tenant.key)
        )
        assert made.status_code == 201, made.text
        # One inference exports and loads the model, so the V2 model routes answer ready (200) from the start.
        infer = httpx.post(
            f"{base_url}/v2/models/scorer/infer",
            json={"inputs": [{"name": "points", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
            headers=bearer(tenant.key),
            timeout=60,
        )
        assert infer.status_code == 200, infer.text
        yield Live(base_url=base_url, key=tenant.key, deployment_id=made.json()["id"], operator_key=operator_key)


async def _operator_key(url: str) -> str:
    async with one_transaction(url) as session:
        return (await issue_operator_key(session, "fuzzer")).key


def _plugins() -> PluginManager:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    return pm


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without a database (the served one is checked to be the same)."""
    with tempfile.TemporaryDirectory() as home:
        # As the app serves it (its JSON encoder turns the Decimals of numeric bounds into numbers).
        return json.loads(encode_json(create_app(Settings(home=home), _plugins()).openapi_schema.to_schema()))


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_fuzzed_document_is_the_served_one(live: Live) -> None:
    served = httpx.get(f"{live.base_url}/schema/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT


def _aim_at_the_deployment(case: schemathesis.Case, live: Live) -> None:
    """Point inference at the real deployment, so that generated bodies reach decoding and the model instead of
    stopping at a 404 for a random name (deletes are left random: they must not remove it)."""
    path = case.operation.path
    if path.startswith("/v2/models/"):
        case.path_parameters = {**(case.path_parameters or {}), "name": "scorer"}
    elif path == "/deployments/{deployment_id}/predict":
        case.path_parameters = {**(case.path_parameters or {}), "deployment_id": live.deployment_id}
    if isinstance(case.body, dict):
        if path == "/predict" and "deploymentId" in case.body:
            case.body = {**case.body, "deploymentId": live.deployment_id}
        elif path == "/v1/embeddings" and "model" in case.body:
            case.body = {**case.body, "model": "scorer"}


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_its_document(case: schemathesis.Case, live: Live) -> None:
    _aim_at_the_deployment(case, live)
    # The operator's routes with the operator's key (a tenant key gets 403 there, which would test little).
    key = live.operator_key if case.operation.path.startswith(("/operator/", "/plans")) else live.key
    case.call_and_validate(base_url=live.base_url, headers=bearer(key), checks=CHECKS, timeout=30)
