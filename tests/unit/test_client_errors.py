"""The Python client's reading of error answers and ``Retry-After``, on answers as servers and proxies send them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from cloudeasyml.client import errors
from cloudeasyml.client.retry import parse_retry_after

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("Wed, 02 Dec 2026 12:00:30 GMT", 30.0),
        ("Wed, 02 Dec 2026 11:00:00 GMT", 0.0),  # a date already past: no wait
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=lambda: NOW) == seconds


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.InvalidInputError),
        (401, errors.AuthError),
        (402, errors.PaymentRequiredError),
        (403, errors.AuthError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.InvalidInputError),
        (429, errors.RateLimitedError),
        (503, errors.UnavailableError),
        (504, errors.UnavailableError),
        (405, errors.CloudEasyMLError),
        (500, errors.CloudEasyMLError),
    ],
)
def test_each_status_raises_its_familys_class(status: int, cls: type[errors.CloudEasyMLError]) -> None:
    body = b'{"type": "about:blank", "title": "T", "status": %d, "detail": "D", "errors": [1]}' % status
    error = errors.error_for(status, body, retry_after=3.0, request_id="r")
    assert type(error) is cls and isinstance(error, errors.CloudEasyMLError)
    assert (error.status, error.title, error.detail) == (status, "T", "D")
    assert (error.retry_after, error.request_id) == (3.0, "r")
    assert error.problem["errors"] == [1]


def test_an_answer_that_is_not_problem_details_keeps_its_status_and_text() -> None:
    error = errors.error_for(502, b"<html>Bad Gateway from the proxy</html>")
    assert type(error) is errors.CloudEasyMLError and error.status == 502
    assert error.title == "Bad Gateway" and "from the proxy" in error.detail and error.problem == {}
    empty = errors.error_for(503, b"")
    assert isinstance(empty, errors.UnavailableError) and empty.detail == "Service Unavailable"


def test_a_url_the_client_cannot_use_fails_at_once_without_retries() -> None:
    from cloudeasyml.client import Client, ConnectionFailedError, RetryPolicy

    with Client("ftp://127.0.0.1:1", "sk_a.b", retry=RetryPolicy(backoff_seconds=30)) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as failed:
            client.models.list()  # a GET, retried after most connection errors: not after this one
    assert "UnsupportedProtocol" in str(failed.value)
    assert time.monotonic() - started < 10  # no 15-30 s backoff was waited
