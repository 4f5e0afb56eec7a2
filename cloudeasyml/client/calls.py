"""The API's calls as data: what each client method sends and how its answer is read, shared by ``Client`` and
``AsyncClient`` (which differ only in how they send).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from cloudeasyml.client.errors import CloudEasyMLError, error_for
from cloudeasyml.client.retry import Safety, parse_retry_after
from cloudeasyml.client.schemas import (
    ApiKey,
    ApiKeyCreated,
    Batch,
    Deployment,
    File,
    Invoice,
    InvoiceSummary,
    Model,
    Prediction,
    Quota,
    Revision,
    TrafficRoute,
    Usage,
    UsageRecordPage,
)

__all__ = (
    "DEFAULT_URL",
    "BatchRef",
    "Call",
    "DeploymentRef",
    "FileRef",
    "KeyRef",
    "Upload",
    "client_options",
    "failure",
    "jsonl_rows",
    "output_file_of",
    "request_args",
)

T = TypeVar("T")

DeploymentRef = Deployment | uuid.UUID | str
"""A deployment, or its id."""
KeyRef = ApiKey | str
"""An API key as listed or created, or its ``key_id``."""
FileRef = File | str
"""A file as uploaded or listed, or its id."""
BatchRef = Batch | str
"""A batch job, or its id."""
Upload = str | os.PathLike[str] | bytes | Iterable[Any]
"""What ``files.upload`` takes: a path, the file's bytes, or rows (dicts) written as JSON Lines."""

_MODEL = msgspec.json.Decoder(Model)
_MODELS = msgspec.json.Decoder(list[Model])
_DEPLOYMENT = msgspec.json.Decoder(Deployment)
_DEPLOYMENTS = msgspec.json.Decoder(list[Deployment])
_PREDICTION = msgspec.json.Decoder(Prediction)
_KEY_CREATED = msgspec.json.Decoder(ApiKeyCreated)
_KEYS = msgspec.json.Decoder(list[ApiKey])
_USAGE = msgspec.json.Decoder(Usage)
_QUOTA = msgspec.json.Decoder(Quota)
_REVISIONS = msgspec.json.Decoder(list[Revision])
_FILE = msgspec.json.Decoder(File)
_FILES = msgspec.json.Decoder(list[File])
_BATCH = msgspec.json.Decoder(Batch)
_BATCHES = msgspec.json.Decoder(list[Batch])
_INVOICE = msgspec.json.Decoder(Invoice)
_INVOICES = msgspec.json.Decoder(list[InvoiceSummary])
_RECORDS = msgspec.json.Decoder(UsageRecordPage)
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
    content_type: str = "application/json"
    """The body's media type (when it has one)."""
    raw: bool = False
    """The result is the answer's body as bytes (a file's content, a PDF), not decoded."""

    def result(self, content: bytes) -> T:
        """The decoded body of a 2xx answer."""
        if self.raw:
            return content  # type: ignore[return-value]  # T is bytes for raw calls
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
        headers["Content-Type"] = call.content_type
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
    body: dict[str, Any] = {"inputs": list(inputs)}
    if in_path:
        path = f"/deployments/{deployment_id(ref)}/predict"
    else:
        path = "/predict"
        body["deploymentId"] = str(ref.id if isinstance(ref, Deployment) else ref)
    return Call("POST", path, _PREDICTION, Safety.KEYED, body=_json(body), headers=_keyed(), timeout=timeout)


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


def _keyed() -> dict[str, str]:
    """A fresh ``Idempotency-Key``, made once per call: every attempt of the call sends the same one."""
    return {"Idempotency-Key": uuid.uuid4().hex}


# Deployments' revisions: see the README, "Rolling out a new version".


def _route(route: TrafficRoute | dict[str, Any]) -> dict[str, Any]:
    """One route as sent: a ``TrafficRoute`` (camelCase, its defaults left out) or a dict as given (camelCase)."""
    if isinstance(route, TrafficRoute):
        return _without_none(
            modelVersion=route.model_version, weight=route.weight, variant=route.variant, mode=route.mode
        )
    return dict(route)


def update_deployment(
    ref: DeploymentRef,
    model_version: str | None,
    variant: str | None,
    config: dict[str, Any] | None,
    traffic: Sequence[TrafficRoute | dict[str, Any]] | None,
) -> Call[Deployment]:
    """``PATCH /deployments/{id}``: idempotent by its meaning (the body states the result; a repeat changes nothing
    and makes no revision), so retried as a GET is. It carries an ``Idempotency-Key`` too, for a server that honours
    keys on PATCH (today's honours them on POSTs: a retry that meets its first attempt still warming gets that
    attempt's revision or a ``ConflictError``, never a second revision).
    """
    body = _without_none(
        modelVersion=model_version,
        variant=variant,
        config=config,
        traffic=[_route(r) for r in traffic] if traffic is not None else None,
    )
    path = f"/deployments/{deployment_id(ref)}"
    return Call("PATCH", path, _DEPLOYMENT, Safety.IDEMPOTENT, body=_json(body), headers=_keyed())


def list_revisions(ref: DeploymentRef) -> Call[list[Revision]]:
    """``GET /deployments/{id}/revisions``."""
    return Call("GET", f"/deployments/{deployment_id(ref)}/revisions", _REVISIONS, Safety.IDEMPOTENT)


def rollback_deployment(ref: DeploymentRef, revision: int | None) -> Call[Deployment]:
    """``POST /deployments/{id}/rollback``: keyed, since a repeated rollback to "the one before" would go further."""
    body = _without_none(revision=revision)
    path = f"/deployments/{deployment_id(ref)}/rollback"
    return Call("POST", path, _DEPLOYMENT, Safety.KEYED, body=_json(body), headers=_keyed())


def choose_route(ref: DeploymentRef, action: str, model_version: str, variant: str | None) -> Call[Deployment]:
    """``POST /deployments/{id}/promote`` or ``/abort`` (``action``) of one route of the traffic."""
    body = _without_none(modelVersion=model_version, variant=variant)
    path = f"/deployments/{deployment_id(ref)}/{action}"
    return Call("POST", path, _DEPLOYMENT, Safety.KEYED, body=_json(body), headers=_keyed())


# Batch inference: see the README, "Batch inference".


def file_id(ref: FileRef) -> str:
    """The id of a file reference, as a path segment."""
    return _segment(ref.id if isinstance(ref, File) else ref)


def batch_id(ref: BatchRef) -> str:
    """The id of a batch job reference, as a path segment."""
    return _segment(ref.id if isinstance(ref, Batch) else ref)


def _jsonl(rows: Iterable[Any]) -> bytes:
    return b"".join(_ENCODER.encode(row) + b"\n" for row in rows)


def upload_file(content: Upload, filename: str | None) -> Call[File]:
    """``POST /files`` of JSON Lines: a path's bytes (named after it unless ``filename``), bytes as they are, or
    rows encoded one a line (``{"input": ..., "customId": ...}``). Keyed, whatever its size: the server spools a
    keyed upload past its request limit to disk, so a retry after a broken connection stores the file once.
    """
    if isinstance(content, str | os.PathLike):
        body = Path(content).read_bytes()
        filename = filename or Path(content).name
    elif isinstance(content, bytes | bytearray | memoryview):
        body = bytes(content)
    else:
        body = _jsonl(content)
    params = {"filename": filename} if filename else None
    return Call(
        "POST",
        "/files",
        _FILE,
        Safety.KEYED,
        params=params,
        body=body,
        headers=_keyed(),
        content_type="application/jsonl",
    )


def list_files(purpose: str | None) -> Call[list[File]]:
    """``GET /files`` (newest first, at most 100), of one ``purpose`` if given."""
    params = {"purpose": purpose} if purpose else None
    return Call("GET", "/files", _FILES, Safety.IDEMPOTENT, params=params)


def get_file(ref: FileRef) -> Call[File]:
    """``GET /files/{id}``."""
    return Call("GET", f"/files/{file_id(ref)}", _FILE, Safety.IDEMPOTENT)


def file_content(ref: FileRef) -> Call[bytes]:
    """``GET /files/{id}/content``: the file's bytes."""
    path = f"/files/{file_id(ref)}/content"
    return Call("GET", path, None, Safety.IDEMPOTENT, headers={"Accept": "application/jsonl"}, raw=True)


def delete_file(ref: FileRef) -> Call[None]:
    """``DELETE /files/{id}``."""
    return Call("DELETE", f"/files/{file_id(ref)}", None, Safety.IDEMPOTENT)


def jsonl_rows(content: bytes) -> list[Any]:
    """The values of a JSON Lines file, in order (blank lines skipped)."""
    return [msgspec.json.decode(line) for line in content.splitlines() if line.strip()]


def output_file_of(job: Batch, field_name: str) -> str | None:
    """The id of a finished job's output or error file (``field_name``); None when it has none (no line of that
    kind). ``ValueError`` while the job has not ended: its files are not written yet.
    """
    if not job.done:
        raise ValueError(f"batch {job.id} is {job.status}: its files exist once it has ended (see batches.wait)")
    file: str | None = getattr(job, field_name)
    return file


def create_batch(
    ref: DeploymentRef, input_file: FileRef, completion_window: str | None, metadata: dict[str, str] | None
) -> Call[Batch]:
    """``POST /batches``, keyed: a retry after a broken connection gets the first job, never a second."""
    body = _without_none(
        deploymentId=str(ref.id if isinstance(ref, Deployment) else ref),
        inputFileId=input_file.id if isinstance(input_file, File) else input_file,
        completionWindow=completion_window,
        metadata=metadata,
    )
    return Call("POST", "/batches", _BATCH, Safety.KEYED, body=_json(body), headers=_keyed())


def list_batches() -> Call[list[Batch]]:
    """``GET /batches`` (newest first, at most 100)."""
    return Call("GET", "/batches", _BATCHES, Safety.IDEMPOTENT)


def get_batch(ref: BatchRef) -> Call[Batch]:
    """``GET /batches/{id}``."""
    return Call("GET", f"/batches/{batch_id(ref)}", _BATCH, Safety.IDEMPOTENT)


def cancel_batch(ref: BatchRef) -> Call[Batch]:
    """``POST /batches/{id}/cancel`` (cancelling twice is the same as once, but keyed all the same)."""
    return Call("POST", f"/batches/{batch_id(ref)}/cancel", _BATCH, Safety.KEYED, headers=_keyed())


# Invoices and usage records: see docs/billing.md.


def list_invoices() -> Call[list[InvoiceSummary]]:
    """``GET /invoices``: every month with usage, newest first."""
    return Call("GET", "/invoices", _INVOICES, Safety.IDEMPOTENT)


def get_invoice(month: str) -> Call[Invoice]:
    """``GET /invoices/{YYYY-MM}``."""
    return Call("GET", f"/invoices/{_segment(month)}", _INVOICE, Safety.IDEMPOTENT)


def invoice_pdf(month: str) -> Call[bytes]:
    """``GET /invoices/{YYYY-MM}`` with ``Accept: application/pdf``: the PDF's bytes."""
    path = f"/invoices/{_segment(month)}"
    return Call("GET", path, None, Safety.IDEMPOTENT, headers={"Accept": "application/pdf"}, raw=True)


def usage_records(
    start: datetime | None,
    end: datetime | None,
    deployment: DeploymentRef | None,
    api_key: KeyRef | None,
    model: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[UsageRecordPage]:
    """``GET /usage/records``: one page, oldest first (``next_cursor`` asks for the next with the same filters)."""
    params = _without_none(
        start=start.isoformat() if start is not None else None,
        end=end.isoformat() if end is not None else None,
        deploymentId=str(deployment.id if isinstance(deployment, Deployment) else deployment) if deployment else None,
        apiKeyId=(api_key.key_id if isinstance(api_key, ApiKey) else api_key) if api_key else None,
        model=model,
        limit=str(limit) if limit is not None else None,
        cursor=cursor,
    )
    return Call("GET", "/usage/records", _RECORDS, Safety.IDEMPOTENT, params=params or None)
