"""The key format and its hashing."""

from __future__ import annotations

from cloudeasyml.domain.key_format import KEY_ID_PATTERN, generate_key, hash_secret, parse_key, secret_matches
from cloudeasyml.domain.principal import Principal, validate_scopes


def test_generated_keys_have_the_documented_shape_and_parse_back() -> None:
    key_id, secret = generate_key()
    assert KEY_ID_PATTERN.match(key_id) and len(secret) >= 32
    assert parse_key(f"{key_id}.{secret}") == (key_id, secret)
    assert len({generate_key()[0] for _ in range(1000)}) == 1000


def test_only_the_hash_is_compared_and_it_is_sha256() -> None:
    _, secret = generate_key()
    stored = hash_secret(secret)
    assert len(stored) == 64 and secret not in stored
    assert secret_matches(secret, stored)
    assert not secret_matches(secret + "x", stored)


def test_operator_keys_have_their_own_prefix() -> None:
    key_id, secret = generate_key("op_")
    assert key_id.startswith("op_") and KEY_ID_PATTERN.fullmatch(key_id)
    assert parse_key(f"{key_id}.{secret}") == (key_id, secret)
    assert generate_key()[0].startswith("sk_")


def test_malformed_keys_do_not_parse() -> None:
    for token in ("", "sk_abc", "sk_AAAAAAAAAAAAAAAA", "sk_AAAAAAAAAAAAAAAA.short", "pk_AAAAAAAAAAAAAAAA." + "a" * 40):
        assert parse_key(token) is None


def test_admin_and_write_scopes_imply_narrower_ones() -> None:
    import uuid

    admin = Principal(tenant_id=uuid.uuid4(), key_id="sk_x", scopes=frozenset({"admin"}))
    writer = Principal(tenant_id=uuid.uuid4(), key_id="sk_y", scopes=frozenset({"deployments:write"}))
    assert admin.has_scope("usage:read") and admin.has_scope("keys:write")
    assert writer.has_scope("deployments:read") and not writer.has_scope("predict")
    assert validate_scopes(["predict", "predict", "admin"]) == ("admin", "predict")
