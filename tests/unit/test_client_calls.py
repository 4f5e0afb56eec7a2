"""How the client builds its calls: which carry an ``Idempotency-Key`` and how each is retried."""

from __future__ import annotations

import inspect
import uuid
from pathlib import Path

import msgspec

from cloudeasyml.client import AsyncClient, Client, TrafficRoute, calls
from cloudeasyml.client.retry import Safety

DEPLOYMENT = uuid.UUID(int=1)


def test_keyed_posts_carry_one_fresh_key_each() -> None:
    built = [
        calls.upload_file([{"input": 1}], None),
        calls.create_batch(DEPLOYMENT, "file-1", None, None),
        calls.cancel_batch("batch_1"),
        calls.rollback_deployment(DEPLOYMENT, None),
        calls.choose_route(DEPLOYMENT, "promote", "1.0.0", None),
        calls.choose_route(DEPLOYMENT, "abort", "1.0.0", None),
    ]
    assert {call.safety for call in built} == {Safety.KEYED}
    keys = [call.headers["Idempotency-Key"] for call in built]
    assert len(set(keys)) == len(keys)


def test_a_patch_is_idempotent_and_keyed() -> None:
    route = TrafficRoute(model_version="1.0.0", weight=90)
    call = calls.update_deployment(DEPLOYMENT, None, None, None, [route, {"modelVersion": "1.1.0", "weight": 10}])
    assert call.method == "PATCH" and call.safety is Safety.IDEMPOTENT and "Idempotency-Key" in call.headers
    assert msgspec.json.decode(call.body or b"") == {
        "traffic": [{"modelVersion": "1.0.0", "weight": 90, "mode": "live"}, {"modelVersion": "1.1.0", "weight": 10}]
    }


def test_an_upload_is_keyed_whatever_its_size(tmp_path: Path) -> None:
    # The server spools a keyed upload past its request limit (10 MiB by default) to disk, up to the batch file limit.
    large = calls.upload_file(b"x" * (10 * 1024 * 1024 + 1), "big.jsonl")
    assert large.headers["Idempotency-Key"] and large.safety is Safety.KEYED
    assert large.params == {"filename": "big.jsonl"} and large.content_type == "application/jsonl"
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"input": 1}\n')
    small = calls.upload_file(path, None)
    assert small.params == {"filename": "rows.jsonl"} and small.body == path.read_bytes()
    assert calls.upload_file([{"input": 1}, {"input": 2}], None).body == b'{"input":1}\n{"input":2}\n'


def test_ids_cannot_leave_their_path_segment() -> None:
    assert calls.get_file("../batches").path == "/files/..%2Fbatches"
    assert calls.get_batch("a/b").path == "/batches/a%2Fb"
    assert calls.get_invoice("2026-01/../x").path == "/invoices/2026-01%2F..%2Fx"


def _api(cls: type) -> dict[str, list[tuple[str, ...]]]:
    """Every public method of a client and of its namespaces (``client.files`` ...), with its parameters."""
    client = cls("http://127.0.0.1:1", "sk_unused.key")
    found: dict[str, list[tuple[str, ...]]] = {}
    for owner_name, owner in [("", client), *((name, value) for name, value in vars(client).items())]:
        if owner_name.startswith("_"):
            continue
        for name in dir(type(owner)):
            method = getattr(type(owner), name)
            if name.startswith("_") or not callable(method) or name in ("close", "send"):
                continue
            parameters = inspect.signature(method).parameters.values()
            found[f"{owner_name}.{name}"] = [(p.name, p.kind.name, repr(p.default)) for p in parameters]
    return found


def test_the_async_client_has_the_same_api_as_the_client() -> None:
    sync_api, async_api = _api(Client), _api(AsyncClient)
    assert sync_api == async_api
    assert {"deployments.update", "deployments.rollback", "files.upload", "batches.wait", "invoices.pdf"} <= set(
        sync_api
    )
