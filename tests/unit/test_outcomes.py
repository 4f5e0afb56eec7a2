"""What the outcome recorder keeps of a request's predictions, and that it never holds more than its bound."""

from __future__ import annotations

import uuid

import msgspec
import numpy as np

from cloudeasyml.core.clock import utc_now
from cloudeasyml.metering.outcomes import OutcomeRecord, OutcomeRecorder, bounded_outputs
from cloudeasyml.settings import OutcomeSettings


class Price(msgspec.Struct, rename="camel"):
    sale_price: float


def test_predictions_are_kept_as_json_values_up_to_the_item_and_byte_bounds() -> None:
    predictions = [Price(sale_price=float(i)) for i in range(10)]
    assert bounded_outputs(predictions, 3, 10_000) == [{"salePrice": 0.0}, {"salePrice": 1.0}, {"salePrice": 2.0}]
    one = len(msgspec.json.encode({"salePrice": 0.0})) + 1
    assert len(bounded_outputs(predictions, 10, 2 + 4 * one) or []) == 4  # only whole items that fit
    assert bounded_outputs(None, 3, 100) is None


def test_embeddings_are_kept_whole_or_not_at_all() -> None:
    embedding = [0.1] * 384
    kept = bounded_outputs([embedding, embedding], 16, 64 * 1024) or []
    assert kept == [embedding, embedding]
    assert bounded_outputs([embedding], 16, 100) == []


def test_raw_tensors_are_split_into_one_value_per_item() -> None:
    tensors = [{"price": np.array([[1.5], [2.5], [3.5]], dtype=np.float32)}]
    assert bounded_outputs(tensors, 2, 10_000) == [{"price": [1.5]}, {"price": [2.5]}]


def _record(i: int, outputs: list[object] | None) -> OutcomeRecord:
    return OutcomeRecord(
        request_id=str(i), tenant_id=uuid.uuid4(), deployment_id=uuid.uuid4(), model_version="1", variant=None,
        mode="live", shadow_of=None, items=1, outputs=outputs, latency_ms=1.0, error=None, created_at=utc_now(),
    )  # fmt: skip


def test_the_recorder_drops_past_max_pending_and_holds_only_max_items_of_a_request() -> None:
    recorder = OutcomeRecorder(None, OutcomeSettings(max_pending=3, max_items=2))  # type: ignore[arg-type]
    big = np.zeros((4096, 384), dtype=np.float32)
    for i in range(5):
        recorder.record(_record(i, [{"sentence_embedding": big}]))
    assert recorder.pending == 3 and recorder.dropped == 2
    held = recorder._pending[0].outputs
    assert held is not None and held[0]["sentence_embedding"].shape == (2, 384)
    assert held[0]["sentence_embedding"].base is None  # a copy: the request's array is not kept alive
    recorder.record(_record(9, list(range(100))))
    assert recorder.dropped == 3
