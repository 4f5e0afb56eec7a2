"""What a doctor check returns, and what the checks share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from sqlalchemy.engine import make_url

from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.settings import Settings

__all__ = ("Context", "Finding", "Status", "safe_url", "scrub")

Status = Literal["OK", "WARN", "FAIL"]


class Finding(msgspec.Struct, frozen=True):
    """One result: what was checked, how it went, and what to do about it when it is not OK."""

    check: str
    status: Status
    summary: str
    fix: str | None = None


@dataclass
class Context:
    """What the checks learn and share, in order (the database check counts deployments asking for CUDA)."""

    settings: Settings
    catalog: ModelCatalog | None = None
    cuda_deployments: int | None = None
    """Deployments whose config asks for ``cuda``: None when the database could not be read."""


def safe_url(url: str) -> str:
    """A URL without its password (secrets never reach terminals or logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (Redis): hide the password by hand
        parts = urlsplit(url)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[1]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return url


def scrub(message: str, url: str) -> str:
    """An error message with the URL's password taken out, should the driver have quoted it."""
    password = urlsplit(url.replace("+asyncpg", "")).password
    return message.replace(password, "***") if password else message
