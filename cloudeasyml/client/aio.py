"""``AsyncClient``: the Python client for asyncio (``Client`` is the same API, blocking)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from cloudeasyml.client import calls
from cloudeasyml.client.calls import Call, DeploymentRef, KeyRef, failure, request_args
from cloudeasyml.client.errors import ConnectionFailedError
from cloudeasyml.client.retry import Attempts, RetryPolicy
from cloudeasyml.client.schemas import ApiKey, ApiKeyCreated, Deployment, Model, Prediction, Quota, Usage

__all__ = ("AsyncClient",)

T = TypeVar("T")


class AsyncClient:
    """A client of one CloudEasyML server, holding one pool of kept-alive connections; close it when done (or use
    it as ``async with``). Use it from one event loop.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000`` (default: ``$CLOUDEASYML_URL``, else that).
        api_key: The key sent as ``Authorization: Bearer`` (default: ``$CLOUDEASYML_API_KEY``).
        timeout: Seconds to wait for a connection, each read and each write (or an ``httpx.Timeout``); a
            prediction may take its own (``predict(..., timeout=)``).
        retry: When and how long to retry (see ``cloudeasyml.client.retry``); ``RetryPolicy(max_attempts=1)``
            turns retries off.
        headers: Extra headers sent with every request.
        transport: An ``httpx`` transport to send through (a proxy, a Unix socket); default: TCP.

    Errors raise subclasses of ``CloudEasyMLError`` carrying the server's problem details.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**calls.client_options(base_url, api_key, timeout, headers), transport=transport)
        self._retry = retry if retry is not None else RetryPolicy()
        self.models = Models(self)
        """Installed models: ``list()``, ``get(name)``."""
        self.deployments = Deployments(self)
        """The tenant's deployments: ``create``, ``list``, ``get``, ``delete``, ``predict``."""
        self.keys = Keys(self)
        """The tenant's API keys: ``create``, ``list``, ``revoke``."""
        self.usage = UsageReports(self)
        """Usage and cost: ``get(start, end)``."""
        self.quota = Quotas(self)
        """This month's caps: ``get()``."""

    async def predict(
        self, deployment: DeploymentRef, inputs: Sequence[Any], *, timeout: float | None = None
    ) -> Prediction:
        """Run ``inputs`` on a deployment through ``POST /predict`` (the deployment's id in the body).

        Retried on 429 and 503 (it did not run) and on connections never made; not after a connection broke
        mid-request, which may have run and billed it (see ``cloudeasyml.client.retry``).
        """
        return await self.send(calls.predict(deployment, inputs, in_path=False, timeout=timeout))

    async def send(self, call: Call[T]) -> T:
        """Make one call, retried as ``retry`` allows; its decoded result, or the error of its last attempt."""
        attempts = Attempts(self._retry, call.safety)
        while True:
            try:
                response = await self._http.request(**request_args(call))
            except httpx.TransportError as exc:
                delay = attempts.after_error(exc)
                if delay is None:
                    raise ConnectionFailedError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.is_success:
                    return call.result(response.content)
                error = failure(response.status_code, response.content, response.headers)
                delay = attempts.after_answer(response.status_code, error.retry_after)
                if delay is None:
                    raise error
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Models:
    """``client.models``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[Model]:
        """Every installed model."""
        return await self._client.send(calls.list_models())

    async def get(self, name: str) -> Model:
        """One model: schemas, ``example_input``, pricing, serving defaults (``NotFoundError`` if not installed)."""
        return await self._client.send(calls.get_model(name))


class Deployments:
    """``client.deployments``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        model_name: str,
        *,
        name: str | None = None,
        model_version: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Deployment:
        """Deploy a model; ``config`` overrides its serving defaults, camelCase as on the wire
        (``{"maxBatchSize": 64}``). Not retried after a broken connection (it may have been created).
        """
        return await self._client.send(calls.create_deployment(model_name, name, model_version, config))

    async def list(self) -> builtins.list[Deployment]:
        """The tenant's deployments, newest first."""
        return await self._client.send(calls.list_deployments())

    async def get(self, deployment: DeploymentRef) -> Deployment:
        """One deployment (``NotFoundError`` for another tenant's)."""
        return await self._client.send(calls.get_deployment(deployment))

    async def delete(self, deployment: DeploymentRef) -> None:
        """Delete a deployment; its usage stays."""
        await self._client.send(calls.delete_deployment(deployment))

    async def predict(
        self, deployment: DeploymentRef, inputs: Sequence[Any], *, timeout: float | None = None
    ) -> Prediction:
        """Run ``inputs`` on the deployment (``POST /deployments/{id}/predict``); retried as ``Client.predict``."""
        return await self._client.send(calls.predict(deployment, inputs, in_path=True, timeout=timeout))


class Keys:
    """``client.keys``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> ApiKeyCreated:
        """Create a key with at most the calling key's scopes, expiry and rate limit; its ``key`` is shown once."""
        return await self._client.send(calls.create_key(name, scopes, expires_at, rate_limit_per_minute))

    async def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys, never their secrets."""
        return await self._client.send(calls.list_keys())

    async def revoke(self, key: KeyRef) -> None:
        """Revoke a key and every key it created."""
        await self._client.send(calls.revoke_key(key))


class UsageReports:
    """``client.usage``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, start: datetime | None = None, end: datetime | None = None) -> Usage:
        """Requests, items and cost over ``[start, end)`` by model (naive times are UTC; default: this month)."""
        return await self._client.send(calls.get_usage(start, end))


class Quotas:
    """``client.quota``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self) -> Quota:
        """This month's spend and request caps, what is used and what is left."""
        return await self._client.send(calls.get_quota())
