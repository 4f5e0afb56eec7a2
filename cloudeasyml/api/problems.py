"""Every error leaves as RFC 9457 problem details; no stack trace ever does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import HTTPScope, Receive, Send

from cloudeasyml.api.raw_http import CLIENT_GONE
from cloudeasyml.db.errors import as_unavailable
from cloudeasyml.errors import (
    AuthenticationError,
    CloudEasyMLError,
    ConflictError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    ExportError,
    InvalidInputError,
    MalformedRequestError,
    ModelNotReadyError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    RequestCapReachedError,
    RetryLaterError,
    RolloutFailedError,
    SpendCapReachedError,
    StorageQuotaExceededError,
    TenantLimitReachedError,
    TenantSuspendedError,
    UsageJournalError,
)

__all__ = (
    "REFUSAL_CAUSE_BY_ERROR",
    "STATUS_BY_ERROR",
    "exception_handlers",
    "problem",
    "problem_body",
    "send_problem",
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[CloudEasyMLError], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    TenantSuspendedError: 403,  # the key is valid; its tenant may not use it now (an operator's decision)
    NotFoundError: 404,
    ConflictError: 409,
    TenantLimitReachedError: 409,  # the state conflicts (too many deployments); deleting one resolves it
    InvalidInputError: 422,
    MalformedRequestError: 400,
    PayloadTooLargeError: 413,
    StorageQuotaExceededError: 409,  # deleting files makes room
    RateLimitedError: 429,
    RequestCapReachedError: 429,
    SpendCapReachedError: 402,
    OverloadedError: 503,
    ModelNotReadyError: 503,
    RolloutFailedError: 503,  # the new revision did not load; nothing changed, the old one serves
    ExportError: 503,  # the model cannot be made servable here; the detail says why
    DeadlineExceededError: 504,
    DatabaseUnavailableError: 503,  # down, locked or timing out: never a 500 (see handle_unexpected)
    UsageJournalError: 503,  # a request that cannot be billed is not answered
}

REFUSAL_CAUSE_BY_ERROR: dict[type[CloudEasyMLError], str] = {
    RateLimitedError: "rate_limit",
    RequestCapReachedError: "request_cap",
    SpendCapReachedError: "spend_cap",
    OverloadedError: "queue_full",
    DeadlineExceededError: "deadline",
    TenantLimitReachedError: "deployment_limit",
}
"""Errors that refuse a request because of a limit, counted by ``cloudeasyml_refusals_total{cause}`` (the causes are
``cloudeasyml.metering.metrics.REFUSAL_CAUSES``)."""


def problem(
    request: Request[Any, Any, Any], status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    """A problem-details response. ``type`` is ``about:blank``, so ``title`` is the status phrase."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    body["instance"] = request.url.path
    body.update(extra)
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.record_error(status)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _status_of(exc: CloudEasyMLError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _count_refusal(request: Request[Any, Any, Any], exc: CloudEasyMLError) -> None:
    for cls in type(exc).__mro__:
        if cls in REFUSAL_CAUSE_BY_ERROR:
            services = getattr(request.app.state, "services", None)
            if services is not None:
                services.metrics.record_refusal(REFUSAL_CAUSE_BY_ERROR[cls])
            return


def problem_body(exc: Exception) -> dict[str, Any]:
    """The problem details an online request failing with ``exc`` would have been answered with (no ``instance``):
    what a batch job's error file says of a line that failed.
    """
    status = _status_of(exc) if isinstance(exc, CloudEasyMLError) else 500
    detail = exc.detail if isinstance(exc, CloudEasyMLError) else "internal server error"
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}


def handle_domain_error(request: Request[Any, Any, Any], exc: CloudEasyMLError) -> Response[dict[str, Any]]:
    """Domain errors by the table above."""
    status = _status_of(exc)
    _count_refusal(request, exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RetryLaterError) else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="cloudeasyml"'}
    if isinstance(exc, DatabaseUnavailableError):
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc.__cause__ or exc)
    elif status >= 500 and not isinstance(exc, OverloadedError | ModelNotReadyError | DeadlineExceededError):
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc.detail)
    return problem(request, status, exc.detail, headers=headers)


def _validation_detail(errors: Any) -> str | None:
    """One line naming each invalid field, as the platform's own 422s do (``... - at `$.name```)."""
    if not isinstance(errors, list) or not errors:
        return None
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        message, key, source = error.get("message", "invalid value"), error.get("key"), error.get("source")
        source = getattr(source, "value", source)  # Litestar's ParamType, a str enum
        if message == "'data'" and key == "data":  # Litestar's KeyError when there is no body at all
            parts.append("a JSON body is required")
        elif key is None:
            parts.append(str(message))
        elif source == "body":
            parts.append(f"{message} - at `$`" if key == "data" else f"{message} - at `$.{key}`")
        else:
            parts.append(f"{message} - {source or 'parameter'} `{key}`")
    return "; ".join(parts) or None


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own errors (unknown route, wrong method, body too large, invalid parameters).

    Its ``ValidationException`` (a body or a parameter of the wrong type or shape) is a 422 naming the fields, as
    the platform's own validation errors are; JSON that cannot be parsed at all stays a 400.
    """
    extra: dict[str, Any] = {}
    if exc.extra:
        extra["errors"] = exc.extra
    status = exc.status_code
    if isinstance(exc, ValidationException) and status == 400:
        detail = _validation_detail(exc.extra)
        if detail is not None:
            return problem(request, 422, detail, headers=exc.headers, **extra)
    if exc.detail == CLIENT_GONE:
        # The client hung up while its body was being read: nobody receives this answer, and it is no server error.
        log.debug("client disconnected before %s was read", request.url.path)
        return problem(request, 400, "client disconnected")
    if status >= 500:
        log.error("HTTP %s on %s: %s", status, request.url.path, exc.detail)
        return problem(request, status, HTTPStatus(status).phrase)
    return problem(request, status, exc.detail, headers=exc.headers, **extra)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A database that is down, locked or timing out is a 503 (``DatabaseUnavailableError``), whichever code met it;
    anything else is our bug: log it whole, tell the client nothing about it.
    """
    if (unavailable := as_unavailable(exc)) is not None:
        return handle_domain_error(request, unavailable)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "internal server error")


exception_handlers = {
    CloudEasyMLError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


async def send_problem(
    scope: HTTPScope,
    receive: Receive,
    send: Send,
    exc: Exception,
    handlers: Mapping[Any, Any] | None = None,
) -> None:
    """Answer ``exc`` as the app's exception handlers would, for a request served outside Litestar's router (see
    ``cloudeasyml.api.fast_path``): the handler of the exception's nearest class in ``handlers`` (a route's own, such
    as the Open Inference Protocol's dialect; by default the app's ``exception_handlers``).
    """
    handlers = exception_handlers if handlers is None else handlers
    handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
    request: Request[Any, Any, Any] = Request(scope)
    response = handler(request, exc)  # type: ignore[operator]
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)
