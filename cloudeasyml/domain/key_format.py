"""The API key format: ``sk_<16 chars>.<secret>`` (a tenant's key) or ``op_<16 chars>.<secret>`` (the platform
operator's, ``cloudeasyml operators create``). Only SHA-256 of the secret is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

__all__ = ("KEY_ID_PATTERN", "OPERATOR_KEY_PREFIX", "generate_key", "hash_secret", "parse_key", "secret_matches")

_ALPHABET = string.ascii_letters + string.digits
# Matched with fullmatch: ``$`` would accept a final newline.
KEY_ID_PATTERN = re.compile(r"(sk|op)_[A-Za-z0-9]{16}")
OPERATOR_KEY_PREFIX = "op_"
"""An operator key's id starts with this: the authenticator knows which table to read from the id alone."""
_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,128}")


def generate_key(prefix: str = "sk_") -> tuple[str, str]:
    """A new ``(key_id, secret)``: ``prefix`` (``sk_``, or ``OPERATOR_KEY_PREFIX``) and 16 random alphanumerics for
    the id, 256 random bits for the secret.
    """
    key_id = prefix + "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return key_id, secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret.

    Secrets are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret against a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_key(token: str) -> tuple[str, str] | None:
    """Split a full key into ``(key_id, secret)``, or None when it is not shaped like one."""
    key_id, dot, secret = token.partition(".")
    if not dot or not KEY_ID_PATTERN.fullmatch(key_id) or not _SECRET_PATTERN.fullmatch(secret):
        return None
    return key_id, secret
