"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers.

The signature is ``v1,`` + base64 of HMAC-SHA256, keyed with the secret's decoded bytes, over
``{webhook-id}.{webhook-timestamp}.{body}``. While a rotated-out secret still signs, the header carries both
signatures, space-separated; a receiver accepts the message when any of them verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = ("SECRET_PREFIX", "new_secret", "sign", "signed_headers")

SECRET_PREFIX = "whsec_"

_SECRET_BYTES = 32
"""256-bit signing keys (the specification asks for 24 to 64 bytes)."""


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` under ``secret``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with each secret in ``secrets_``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_),
        "content-type": "application/json",
    }
