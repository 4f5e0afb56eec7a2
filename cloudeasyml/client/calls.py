"""The API's calls as data: what each client method sends and how its answer is read, shared by ``Client`` and
``AsyncClient`` (which differ only in how they send).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from cloudeasyml.client.errors import CloudEasyMLError, error_for
from cloudeasyml.client.retry import Safety, parse_retry_after
from cloudeasyml.client.schemas import ApiKey, ApiKeyCreated, Deployment, Model, Prediction, Quota, Usage

__all__ = ("DEFAULT_URL", "Call", "DeploymentRef", "KeyRef", "client_options", "failure", "request_args")

T = TypeVar("T")

DeploymentRef = Deployment | uuid.UUID | str
"""A deployment, or its id."""
KeyRef = ApiKey | str
"""An API key as listed or created, or its ``key_id``."""

_MODEL = msgspec.json.Decoder(Model)
_MODELS = msgspec.json.Decoder(list[Model])
_DEPLOYMENT = msgspec.json.Decoder(Deployment)
_DEPLOYMENTS = msgspec.json.Decoder(list[Deployment])
_PREDICTION = msgspec.json.Decoder(Prediction)
_KEY_CREATED = msgspec.json.Decoder(ApiKeyCreated)
_KEYS = msgspec.json.Decoder(list[ApiKey])
_USAGE = msgspec.json.Decoder(Usage)
_QUOTA = msgspec.json.Decoder(Quota)
_ENCODER = msgspec.json.Encoder()

DEFAULT_URL = "http://127.0.0.1:8000"
"""Where ``cloudeasyml serve`` listens by default."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call: the request, and the decoder of a successful answer (None: no body, the result is None)."""

    method: str
    path: str
    decoder: msgspec.json.Decoder[T] | None
    safety: Safety
    params: dict[str, str] | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    """Overrides the client's timeout for this call."""

    def result(self, content: bytes) -> T:
        """The decoded body of a 2xx answer."""
        if self.decoder is None:
            return None  # type: ignore[return-value]  # T is None for calls without a decoder
        return self.decoder.decode(content)


def client_options(
    base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout, headers: dict[str, str] | None
) -> dict[str, Any]:
    """The ``httpx.Client``/``AsyncClient`` arguments of a client: the URL and key (from ``CLOUDEASYML_URL`` and
    ``CLOUDEASYML_API_KEY`` when not given), the timeout and any extra headers.
    """
    base_url = base_url or os.environ.get("CLOUDEASYML_URL") or DEFAULT_URL
    api_key = api_key or os.environ.get("CLOUDEASYML_API_KEY")
    sent = {"User-Agent": f"cloudeasyml-client/{_version()}", "Accept": "application/json"}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    sent.update(headers or {})
    return {"base_url": base_url.rstrip("/"), "headers": sent, "timeout": timeout}


def _version() -> str:
    try:
        return metadata.version("cloudeasyml")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0"


def request_args(call: Call[Any]) -> dict[str, Any]:
    """The ``httpx`` request arguments of one attempt of ``call``."""
    headers = dict(call.headers)
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    return {
        "method": call.method,
        "url": call.path,
        "params": call.params,
        "content": call.body,
        "headers": headers,
        "timeout": call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
    }


def failure(status: int, content: bytes, headers: Any) -> CloudEasyMLError:
    """The exception for an error answer (``headers``: the answer's, a case-insensitive mapping)."""
    return error_for(
        status,
        content,
        retry_after=parse_retry_after(headers.get("retry-after")),
        request_id=headers.get("x-request-id"),
    )


def _segment(value: str) -> str:
    """One path segment: nothing in an id can reach another route (``/`` and ``..`` are quoted)."""
    return quote(value, safe="")


def deployment_id(ref: DeploymentRef) -> str:
    """The id of a deployment reference, as a path segment."""
    return _segment(str(ref.id if isinstance(ref, Deployment) else ref))


def _json(value: Any) -> bytes:
    return _ENCODER.encode(value)


def _without_none(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def list_models() -> Call[list[Model]]:
    """``GET /models``."""
    return Call("GET", "/models", _MODELS, Safety.IDEMPOTENT)


def get_model(name: str) -> Call[Model]:
    """``GET /models/{name}``."""
    return Call("GET", f"/models/{_segment(name)}", _MODEL, Safety.IDEMPOTENT)


def create_deployment(
    model_name: str, name: str | None, model_version: str | None, config: dict[str, Any] | None
) -> Call[Deployment]:
    """``POST /deployments``."""
    body = _without_none(modelName=model_name, name=name, modelVersion=model_version, config=config)
    return Call("POST", "/deployments", _DEPLOYMENT, Safety.UNSAFE, body=_json(body))


def list_deployments() -> Call[list[Deployment]]:
    """``GET /deployments``."""
    return Call("GET", "/deployments", _DEPLOYMENTS, Safety.IDEMPOTENT)


def get_deployment(ref: DeploymentRef) -> Call[Deployment]:
    """``GET /deployments/{id}``."""
    return Call("GET", f"/deployments/{deployment_id(ref)}", _DEPLOYMENT, Safety.IDEMPOTENT)


def delete_deployment(ref: DeploymentRef) -> Call[None]:
    """``DELETE /deployments/{id}``."""
    return Call("DELETE", f"/deployments/{deployment_id(ref)}", None, Safety.IDEMPOTENT)


def predict(ref: DeploymentRef, inputs: Sequence[Any], *, in_path: bool, timeout: float | None) -> Call[Prediction]:
    """``POST /deployments/{id}/predict`` (``in_path``) or ``POST /predict`` with ``deploymentId`` in the body.

    ``inputs`` may hold dicts or any value msgspec encodes (Structs, dataclasses). The ``Idempotency-Key`` is made
    once here, so every attempt of this call carries the same one (see ``retry.RETRY_PREDICTIONS_AFTER_...``).
    """
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    body: dict[str, Any] = {"inputs": list(inputs)}
    if in_path:
        path = f"/deployments/{deployment_id(ref)}/predict"
    else:
        path = "/predict"
        body["deploymentId"] = str(ref.id if isinstance(ref, Deployment) else ref)
    return Call("POST", path, _PREDICTION, Safety.PREDICTION, body=_json(body), headers=headers, timeout=timeout)


def create_key(
    name: str, scopes: Sequence[str] | None, expires_at: datetime | None, rate_limit_per_minute: int | None
) -> Call[ApiKeyCreated]:
    """``POST /api-keys``."""
    body = _without_none(
        name=name,
        scopes=list(scopes) if scopes is not None else None,
        expiresAt=expires_at,
        rateLimitPerMinute=rate_limit_per_minute,
    )
    return Call("POST", "/api-keys", _KEY_CREATED, Safety.UNSAFE, body=_json(body))


def list_keys() -> Call[list[ApiKey]]:
    """``GET /api-keys``."""
    return Call("GET", "/api-keys", _KEYS, Safety.IDEMPOTENT)


def revoke_key(ref: KeyRef) -> Call[None]:
    """``DELETE /api-keys/{keyId}`` (idempotent on the server: revoking a revoked key succeeds)."""
    key_id = ref.key_id if isinstance(ref, ApiKey) else ref
    return Call("DELETE", f"/api-keys/{_segment(key_id)}", None, Safety.IDEMPOTENT)


def get_usage(start: datetime | None, end: datetime | None) -> Call[Usage]:
    """``GET /usage`` over ``[start, end)`` (naive times are UTC; defaults: this month until now)."""
    params = {name: value.isoformat() for name, value in (("start", start), ("end", end)) if value is not None}
    return Call("GET", "/usage", _USAGE, Safety.IDEMPOTENT, params=params or None)


def get_quota() -> Call[Quota]:
    """``GET /usage/quota``."""
    return Call("GET", "/usage/quota", _QUOTA, Safety.IDEMPOTENT)
