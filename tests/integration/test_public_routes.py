"""Which routes answer without a key: exactly the probes, ``/metrics``, the API's documentation and the web console's
static files (their script calls the API with the key). The test walks
every route the app has, so a route added without authentication fails it."""

from __future__ import annotations

import re
import uuid

import pytest
from litestar.routes import ASGIRoute, HTTPRoute

from tests.conftest import bearer

PUBLIC = {"/health", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"}
"""The paths that answer without a key (any method: ``OPTIONS`` too), besides the documentation under ``/schema`` and
the console under ``/console``."""

_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")


def _concrete(path: str) -> str:
    """A path with a value for each parameter (``{deployment_id:uuid}`` → a random UUID)."""
    return _PARAMETER.sub(lambda m: str(uuid.uuid4()) if m.group(2) == "uuid" else "x", path)


def _operations(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    operations = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            operations += [(method, route.path) for method in sorted(route.methods)]
        elif isinstance(route, ASGIRoute):  # POST /predict: an ASGI route answers every method
            operations += [(method, route.path) for method in ("GET", "POST")]
        else:  # a websocket route would need its own check
            pytest.fail(f"route {route.path} of type {type(route).__name__} is not covered by this test")
    return operations


async def test_only_probes_metrics_and_docs_answer_without_a_key(app, client) -> None:
    operations = _operations(app)
    assert PUBLIC <= {path for _method, path in operations} and len(operations) > 40
    for method, path in operations:
        public = path in PUBLIC or any(path == root or path.startswith(f"{root}/") for root in ("/schema", "/console"))
        url = _concrete(path)
        response = await client.request(method, url)
        if public:
            assert response.status_code not in (401, 403), (method, path, response.text)
            # A wrong key on a public path is not looked at either.
            assert (await client.request(method, url, headers=bearer("sk_wrong"))).status_code not in (401, 403)
        else:
            assert response.status_code == 401, (method, path, response.status_code)


async def test_paths_that_only_start_like_public_ones_need_a_key(client) -> None:
    for path in ("/healthz", "/health/readyz", "/v2/healthy", "/metrics/x", "/schemas", "/consoles"):
        assert (await client.get(path)).status_code in (401, 404), path
