"""``Client``: the blocking Python client (``AsyncClient`` is the same API for asyncio)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from cloudeasyml.client import calls
from cloudeasyml.client.calls import (
    BatchRef,
    Call,
    DeploymentRef,
    FileRef,
    KeyRef,
    Upload,
    failure,
    jsonl_rows,
    output_file_of,
    request_args,
)
from cloudeasyml.client.errors import ConnectionFailedError
from cloudeasyml.client.retry import Attempts, RetryPolicy
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
    UsageRecord,
    UsageRecordPage,
)

__all__ = ("Client",)

T = TypeVar("T")


class Client:
    """A client of one CloudEasyML server, holding one pool of kept-alive connections; close it when done (or use
    it as a context manager). Safe to share between threads.

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(**calls.client_options(base_url, api_key, timeout, headers), transport=transport)
        self._retry = retry if retry is not None else RetryPolicy()
        self.models = Models(self)
        """Installed models: ``list()``, ``get(name)``."""
        self.deployments = Deployments(self)
        """The tenant's deployments: ``create``, ``list``, ``get``, ``delete``, ``predict``, and their revisions:
        ``update``, ``revisions``, ``rollback``, ``promote``, ``abort``."""
        self.keys = Keys(self)
        """The tenant's API keys: ``create``, ``list``, ``revoke``."""
        self.usage = UsageReports(self)
        """Usage and cost: ``get(start, end)``; the metered requests: ``records(...)``, ``iter_records(...)``."""
        self.quota = Quotas(self)
        """This month's caps: ``get()``."""
        self.files = Files(self)
        """Batch files (JSON Lines): ``upload``, ``list``, ``get``, ``content``, ``rows``, ``delete``."""
        self.batches = Batches(self)
        """Batch jobs: ``create``, ``list``, ``get``, ``cancel``, ``wait``, ``output``, ``errors``."""
        self.invoices = Invoices(self)
        """Monthly invoices: ``list()``, ``get("YYYY-MM")``, ``pdf("YYYY-MM")``."""

    def predict(self, deployment: DeploymentRef, inputs: Sequence[Any], *, timeout: float | None = None) -> Prediction:
        """Run ``inputs`` on a deployment through ``POST /predict`` (the deployment's id in the body).

        Retried on 429 and 503 (it did not run) and on connections never made; not after a connection broke
        mid-request, which may have run and billed it (see ``cloudeasyml.client.retry``).
        """
        return self.send(calls.predict(deployment, inputs, in_path=False, timeout=timeout))

    def send(self, call: Call[T]) -> T:
        """Make one call, retried as ``retry`` allows; its decoded result, or the error of its last attempt."""
        attempts = Attempts(self._retry, call.safety)
        while True:
            try:
                response = self._http.request(**request_args(call))
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
            time.sleep(delay)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Models:
    """``client.models``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[Model]:
        """Every installed model."""
        return self._client.send(calls.list_models())

    def get(self, name: str) -> Model:
        """One model: schemas, ``example_input``, pricing, serving defaults (``NotFoundError`` if not installed)."""
        return self._client.send(calls.get_model(name))


class Deployments:
    """``client.deployments``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
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
        return self._client.send(calls.create_deployment(model_name, name, model_version, config))

    def list(self) -> builtins.list[Deployment]:
        """The tenant's deployments, newest first."""
        return self._client.send(calls.list_deployments())

    def get(self, deployment: DeploymentRef) -> Deployment:
        """One deployment (``NotFoundError`` for another tenant's)."""
        return self._client.send(calls.get_deployment(deployment))

    def delete(self, deployment: DeploymentRef) -> None:
        """Delete a deployment; its usage stays."""
        self._client.send(calls.delete_deployment(deployment))

    def predict(self, deployment: DeploymentRef, inputs: Sequence[Any], *, timeout: float | None = None) -> Prediction:
        """Run ``inputs`` on the deployment (``POST /deployments/{id}/predict``); retried as ``Client.predict``."""
        return self._client.send(calls.predict(deployment, inputs, in_path=True, timeout=timeout))

    def update(
        self,
        deployment: DeploymentRef,
        *,
        model_version: str | None = None,
        variant: str | None = None,
        config: dict[str, Any] | None = None,
        traffic: Sequence[TrafficRoute | dict[str, Any]] | None = None,
    ) -> Deployment:
        """Change what serves the deployment behind the same URL (``PATCH``): a new revision, loaded and warmed
        before it takes traffic (a 503 ``UnavailableError`` if it fails to load; the old one goes on serving).

        Args:
            deployment: The deployment, or its id.
            model_version: Serve this version alone (a split is dropped).
            variant: Short for ``config={"variant": ...}``.
            config: Overrides merged onto the current config, camelCase as on the wire (``{"maxBatchSize": 64}``).
            traffic: A whole new split: ``TrafficRoute`` values or camelCase dicts, e.g. a 10 % canary.

        Returns:
            The deployment at its new revision (the same one when nothing changed).
        """
        return self._client.send(calls.update_deployment(deployment, model_version, variant, config, traffic))

    def revisions(self, deployment: DeploymentRef) -> builtins.list[Revision]:
        """Every revision, oldest first: what changed, who made it, the requests it served, which is ``current``."""
        return self._client.send(calls.list_revisions(deployment))

    def rollback(self, deployment: DeploymentRef, revision: int | None = None) -> Deployment:
        """A new revision equal to ``revision`` (default: the one before the current), warmed as ``update`` is."""
        return self._client.send(calls.rollback_deployment(deployment, revision))

    def promote(self, deployment: DeploymentRef, model_version: str, *, variant: str | None = None) -> Deployment:
        """Give the route of ``model_version`` (and ``variant``) all the traffic; every other route goes."""
        return self._client.send(calls.choose_route(deployment, "promote", model_version, variant))

    def abort(self, deployment: DeploymentRef, model_version: str, *, variant: str | None = None) -> Deployment:
        """Remove the route of ``model_version`` (a candidate); its weight goes to the first live route left."""
        return self._client.send(calls.choose_route(deployment, "abort", model_version, variant))


class Keys:
    """``client.keys``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> ApiKeyCreated:
        """Create a key with at most the calling key's scopes, expiry and rate limit; its ``key`` is shown once."""
        return self._client.send(calls.create_key(name, scopes, expires_at, rate_limit_per_minute))

    def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys, never their secrets."""
        return self._client.send(calls.list_keys())

    def revoke(self, key: KeyRef) -> None:
        """Revoke a key and every key it created."""
        self._client.send(calls.revoke_key(key))


class UsageReports:
    """``client.usage``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, start: datetime | None = None, end: datetime | None = None) -> Usage:
        """Requests, items and cost over ``[start, end)`` by model (naive times are UTC; default: this month)."""
        return self._client.send(calls.get_usage(start, end))

    def records(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        deployment: DeploymentRef | None = None,
        api_key: KeyRef | None = None,
        model: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> UsageRecordPage:
        """One page of the metered requests in ``[start, end)`` (default: this month), oldest first, optionally of
        one deployment, API key or model; ``limit`` per page (server default 100, at most 1000); pass the page's
        ``next_cursor`` as ``cursor`` (same filters) for the next.
        """
        return self._client.send(calls.usage_records(start, end, deployment, api_key, model, limit, cursor))

    def iter_records(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        deployment: DeploymentRef | None = None,
        api_key: KeyRef | None = None,
        model: str | None = None,
        limit: int | None = None,
    ) -> Iterator[UsageRecord]:
        """Every record ``records`` would page through, fetching the next page as the last one runs out."""
        cursor: str | None = None
        while True:
            page = self.records(
                start, end, deployment=deployment, api_key=api_key, model=model, limit=limit, cursor=cursor
            )
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class Quotas:
    """``client.quota``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self) -> Quota:
        """This month's spend and request caps, what is used and what is left."""
        return self._client.send(calls.get_quota())


class Files:
    """``client.files``: JSON Lines files, a batch job's input and results."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(self, content: Upload, *, filename: str | None = None) -> File:
        """Upload JSON Lines: a path, the file's bytes, or rows (``{"input": ..., "customId": ...}``) written one
        a line. It carries an ``Idempotency-Key``, whatever its size, so a retry after a broken connection stores it
        once.
        """
        return self._client.send(calls.upload_file(content, filename))

    def list(self, *, purpose: str | None = None) -> builtins.list[File]:
        """The tenant's files, newest first (at most 100); ``purpose``: ``batch``, ``batch_output``, ``batch_error``."""
        return self._client.send(calls.list_files(purpose))

    def get(self, file: FileRef) -> File:
        """One file's metadata."""
        return self._client.send(calls.get_file(file))

    def content(self, file: FileRef) -> bytes:
        """The file's bytes, as stored."""
        return self._client.send(calls.file_content(file))

    def rows(self, file: FileRef) -> builtins.list[Any]:
        """The file's lines, each parsed from JSON, in order."""
        return jsonl_rows(self.content(file))

    def delete(self, file: FileRef) -> None:
        """Delete a file (the input of an unfinished job: ``ConflictError``)."""
        self._client.send(calls.delete_file(file))


class Batches:
    """``client.batches``: batch jobs over an uploaded file."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        deployment: DeploymentRef,
        input_file: FileRef,
        *,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Batch:
        """Run every line of ``input_file`` on ``deployment`` in the background, at the batch price.

        Args:
            deployment: The deployment, or its id.
            input_file: The uploaded input (``files.upload``), or its id.
            completion_window: Hours, like ``"24h"`` (the default and the most); past it the job expires.
            metadata: Up to 16 strings of your own, kept with the job.
        """
        return self._client.send(calls.create_batch(deployment, input_file, completion_window, metadata))

    def list(self) -> builtins.list[Batch]:
        """The tenant's jobs, newest first (at most 100)."""
        return self._client.send(calls.list_batches())

    def get(self, job: BatchRef) -> Batch:
        """A job's status, counts and, once it has ended, its output and error files."""
        return self._client.send(calls.get_batch(job))

    def cancel(self, job: BatchRef) -> Batch:
        """Stop starting chunks: ``cancelling`` until the running ones finish, then ``cancelled``."""
        return self._client.send(calls.cancel_batch(job))

    def wait(self, job: BatchRef, *, poll: float = 2.0, timeout: float | None = None) -> Batch:
        """Read the job every ``poll`` seconds until its status is final (``Batch.done``); it as it ended.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (the job goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (current := self.get(job)).done:
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"batch {current.id} is still {current.status} after {timeout} s")
            time.sleep(poll)
        return current

    def output(self, job: BatchRef) -> builtins.list[Any]:
        """A finished job's output lines, parsed, in input order: ``{"line", "customId", "output"}`` each (those
        that failed are in ``errors``). ``ValueError`` while the job has not ended.
        """
        file = output_file_of(job if isinstance(job, Batch) and job.done else self.get(job), "output_file_id")
        return [] if file is None else self._client.files.rows(file)

    def errors(self, job: BatchRef) -> builtins.list[Any]:
        """A finished job's failed lines, parsed: ``{"line", "customId", "error": <problem details>}`` each."""
        file = output_file_of(job if isinstance(job, Batch) and job.done else self.get(job), "error_file_id")
        return [] if file is None else self._client.files.rows(file)


class Invoices:
    """``client.invoices``: monthly invoices (scope ``usage:read``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[InvoiceSummary]:
        """Every month (UTC) with usage, newest first, with its total and request count."""
        return self._client.send(calls.list_invoices())

    def get(self, month: str) -> Invoice:
        """The invoice of ``month`` (``YYYY-MM``, UTC): one line per model, version and kind, and the total."""
        return self._client.send(calls.get_invoice(month))

    def pdf(self, month: str) -> bytes:
        """The invoice of ``month`` rendered as a PDF."""
        return self._client.send(calls.invoice_pdf(month))
