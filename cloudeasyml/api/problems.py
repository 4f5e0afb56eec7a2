"""Every error leaves as RFC 9457 problem details; no stack trace ever does."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import HTTPScope, Receive, Send

from cloudeasyml.api.raw_http import CLIENT_GONE
from cloudeasyml.errors import (
    AuthenticationError,
    CloudEasyMLError,
    ConflictError,
    DeadlineExceededError,
    ExportError,
    InvalidInputError,
    MalformedRequestError,
    ModelNotReadyError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitedError,
    RequestCapReachedError,
    RetryLaterError,
    SpendCapReachedError,
    TenantLimitReachedError,
)

__all__ = ("STATUS_BY_ERROR", "exception_handlers", "problem", "send_problem")

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[CloudEasyMLError], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    TenantLimitReachedError: 409,  # the state conflicts (too many deployments); deleting one resolves it
    InvalidInputError: 422,
    MalformedRequestError: 400,
    RateLimitedError: 429,
    RequestCapReachedError: 429,
    SpendCapReachedError: 402,
    OverloadedError: 503,
    ModelNotReadyError: 503,
    ExportError: 503,  # the model cannot be made servable here; the detail says why
    DeadlineExceededError: 504,
}


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


def handle_domain_error(request: Request[Any, Any, Any], exc: CloudEasyMLError) -> Response[dict[str, Any]]:
    """Domain errors by the table above."""
    status = _status_of(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RetryLaterError) else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="cloudeasyml"'}
    if status >= 500 and not isinstance(exc, OverloadedError | ModelNotReadyError | DeadlineExceededError):
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc.detail)
    return problem(request, status, exc.detail, headers=headers)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own errors (unknown route, wrong method, body too large, invalid parameters)."""
    extra: dict[str, Any] = {}
    if exc.extra:
        extra["errors"] = exc.extra
    status = exc.status_code
    if exc.detail == CLIENT_GONE:
        # The client hung up while its body was being read: nobody receives this answer, and it is no server error.
        log.debug("client disconnected before %s was read", request.url.path)
        return problem(request, 400, "client disconnected")
    if status >= 500:
        log.error("HTTP %s on %s: %s", status, request.url.path, exc.detail)
        return problem(request, status, HTTPStatus(status).phrase)
    return problem(request, status, exc.detail, headers=exc.headers, **extra)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else is our bug: log it whole, tell the client nothing about it."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "internal server error")


exception_handlers = {
    CloudEasyMLError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


async def send_problem(scope: HTTPScope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer ``exc`` as the app's exception handlers would, for a request served outside Litestar's router (see
    ``cloudeasyml.api.platform_app``): the handler of the exception's nearest class in ``exception_handlers``.
    """
    handler = next(exception_handlers[cls] for cls in type(exc).__mro__ if cls in exception_handlers)
    request: Request[Any, Any, Any] = Request(scope)  # type: ignore[arg-type]
    response = handler(request, exc)  # type: ignore[operator]
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)  # type: ignore[arg-type]
