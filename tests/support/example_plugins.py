"""Example plugins for the non-model hooks, as a third party would write them (see docs/plugins.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal

from cloudeasyml import Pricing, hookimpl
from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import AuthenticationError

JWT_SECRET = b"test-signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict[str, object], secret: bytes = JWT_SECRET) -> str:
    """An HS256 JWT (what an identity provider would issue)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


class JwtAuth:
    """Accepts HS256 JWTs whose ``tenant`` claim names the tenant and ``scope`` lists scopes."""

    @hookimpl
    def cloudeasyml_authenticate(self, token: str) -> Principal | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None  # not a JWT: let other plugins try
        header, payload, signature = parts
        expected = hmac.new(JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise AuthenticationError("invalid token signature")
        claims = json.loads(_unb64(payload))
        if claims.get("exp", 0) < time.time():
            raise AuthenticationError("token has expired")
        return Principal(
            tenant_id=uuid.UUID(claims["tenant"]),
            key_id=f"jwt:{claims['sub']}",
            scopes=frozenset(str(claims.get("scope", "")).split()),
        )


class TierPricing:
    """Plan ``enterprise`` pays half of every price."""

    @hookimpl
    def cloudeasyml_adjust_pricing(self, model, plan: str, pricing: Pricing) -> Pricing | None:  # type: ignore[no-untyped-def]
        if plan != "enterprise":
            return None
        half = Decimal("0.5")
        return Pricing(
            per_request=pricing.per_request * half,
            per_second=pricing.per_second * half,
            per_gpu_hour=pricing.per_gpu_hour * half,
        )
