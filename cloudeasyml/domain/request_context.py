"""What one request carries through the platform: its id, and what the data plane learns about it for the log line.

The edge creates a ``RequestContext`` per HTTP request, before authentication; the data plane bills the request
under ``request_id`` (the usage record's primary key and the ``requestId`` of a prediction's answer) and fills in
the deployment, model and item count, and once billed, the cost; the edge's access log reads them when the answer
has left, and the edge's ``X-Usage-*`` headers report the cost (``cloudeasyml.api.request_log``).
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

from cloudeasyml.core.traffic import RouteMode

__all__ = ("CLIENT_REQUEST_ID", "RequestContext", "client_request_id")

CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
"""What a client's own request id may look like: up to 128 printable characters without spaces or quotes, so it
can go into a log line and a header as is."""


class RequestContext:
    """One request's id and what serving it involved. Mutable: the data plane fills it in as it goes."""

    __slots__ = (
        "client_request_id",
        "cost",
        "deployment_id",
        "items",
        "model_name",
        "model_version",
        "mode",
        "processing_ms",
        "request_id",
        "routing_key",
        "shadow_of",
        "tenant_id",
        "variant",
    )

    def __init__(self, request_id: str | None = None, client_request_id: str | None = None) -> None:
        self.request_id = request_id or str(uuid.uuid4())
        """The platform's id of the request: the usage record's primary key, so always generated here."""
        self.client_request_id = client_request_id
        """The id the client sent in ``X-Request-ID``, if valid: logged and echoed, never used as a billing key."""
        self.tenant_id: uuid.UUID | None = None
        self.deployment_id: uuid.UUID | None = None
        self.model_name: str | None = None
        self.model_version: str | None = None
        """The version that served the request (the route the data plane picked), not the deployment's first."""
        self.variant: str | None = None
        """The graph variant that served it (``float``, ``optimized``, ``int8``)."""
        self.mode: RouteMode = "live"
        """``live``: the request answers its client; ``shadow``: a copy of a live request run on a shadow route after
        the live answer was sent (never returned; ``shadow_of`` names the live request)."""
        self.shadow_of: str | None = None
        """For a shadow copy: the ``request_id`` of the live request it copies."""
        self.routing_key: str | None = None
        """The client's ``X-Routing-Key``: requests with one key keep one live version while the weights stay."""
        self.items = 0
        self.cost: Decimal | None = None
        """What the request was billed (set by the data plane once its usage is recorded; None: not billed). The
        edge returns it, with ``items`` and ``processing_ms``, in the ``X-Usage-*`` headers of the answer."""
        self.processing_ms = 0.0
        """The processing time billed (the request's share of its batch), once billed."""


def client_request_id(value: str) -> str | None:
    """The client's ``X-Request-ID`` if it is a valid one (``CLIENT_REQUEST_ID``), else None (ignored)."""
    return value if CLIENT_REQUEST_ID.fullmatch(value) else None
