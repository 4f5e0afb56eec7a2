"""Exceptions of the Python client: one class per family of HTTP answer, each carrying the RFC 9457 problem detail.

The server answers every error as ``application/problem+json`` (``type``, ``title``, ``status``, ``detail``,
``instance``, and ``errors`` for field errors); the exception keeps all of it. An answer that is not problem details
(a proxy's HTML page, say) still raises the class of its status, with the body's start as ``detail``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec

__all__ = (
    "AuthError",
    "CloudEasyMLError",
    "ConflictError",
    "ConnectionFailedError",
    "InvalidInputError",
    "NotFoundError",
    "PaymentRequiredError",
    "RateLimitedError",
    "UnavailableError",
    "error_for",
)


class CloudEasyMLError(Exception):
    """Base of every error the client raises. Statuses outside the families below (405, 413, 500, ...) raise this
    class itself.

    Attributes:
        status: The HTTP status (None when no answer came: ``ConnectionFailedError``).
        title: The problem's title (the status phrase).
        detail: What went wrong, in the server's words.
        type: The problem type URI (``about:blank`` for the platform's own problems).
        instance: The path the problem is about, when the server says.
        problem: The whole problem-details document, extra members (``errors``) included.
        retry_after: Seconds the server asked the client to wait (``Retry-After``), when it did.
        request_id: The server's ``X-Request-ID`` of the answer, to quote when reporting a problem.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str = "",
        type: str = "about:blank",  # the RFC 9457 member's name
        instance: str | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if status is not None else detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.problem = problem if problem is not None else {}
        self.retry_after = retry_after
        self.request_id = request_id


class AuthError(CloudEasyMLError):
    """401 (no key, or a bad, revoked or expired one) or 403 (the key lacks the scope)."""


class NotFoundError(CloudEasyMLError):
    """404: no such resource, or another tenant's (the server does not tell them apart)."""


class ConflictError(CloudEasyMLError):
    """409: a name already taken, the plan's deployment cap, the tenant's last admin key."""


class InvalidInputError(CloudEasyMLError):
    """400 (malformed body) or 422 (valid JSON with invalid content; ``detail`` names the path)."""


class PaymentRequiredError(CloudEasyMLError):
    """402: the tenant's monthly spend cap is reached (``retry_after``: until the month ends)."""


class RateLimitedError(CloudEasyMLError):
    """429: the key's rate limit or the tenant's monthly request cap (``retry_after`` says for how long)."""


class UnavailableError(CloudEasyMLError):
    """503 (overloaded, model not ready, database down) or 504 (the request's deadline passed)."""


class ConnectionFailedError(CloudEasyMLError):
    """No answer: the connection could not be made, broke, or timed out (``status`` is None)."""


_FAMILY: dict[int, type[CloudEasyMLError]] = {
    400: InvalidInputError,
    401: AuthError,
    402: PaymentRequiredError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidInputError,
    429: RateLimitedError,
    503: UnavailableError,
    504: UnavailableError,
}


class _Problem(msgspec.Struct):
    type: str = "about:blank"
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None


def error_for(
    status: int, body: bytes, *, retry_after: float | None = None, request_id: str | None = None
) -> CloudEasyMLError:
    """The exception for an error answer: its family's class, with the problem details read from ``body``."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    document: dict[str, Any] = {}
    try:
        decoded = msgspec.json.decode(body)
        if isinstance(decoded, dict):
            document = decoded
        parsed = msgspec.convert(document, _Problem)
    except (msgspec.DecodeError, msgspec.ValidationError):
        # Not problem details (a proxy's page, a truncated body): keep what a person needs to see.
        parsed = _Problem(detail=body[:500].decode("utf-8", "replace").strip() or phrase)
    cls = _FAMILY.get(status, CloudEasyMLError)
    return cls(
        parsed.detail or phrase,
        status=status,
        title=parsed.title or phrase,
        type=parsed.type,
        instance=parsed.instance,
        problem=document,
        retry_after=retry_after,
        request_id=request_id,
    )
