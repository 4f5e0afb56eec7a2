"""A tiny but real embedding model, so that ``POST /v1/embeddings`` is tested without MiniLM (whose export needs
torch and minutes): words hashed into 16 ids, each id a row of a 16×4 table, the rows of a text's words summed.

Its graph (``Gather → Mul by the attention mask → ReduceSum``) is built with ``onnx.helper`` and placed in the artifact
store by ``seed_graph``, as ``tiny_model``'s is. Like MiniLM it takes ``input_ids`` and ``attention_mask``, so its
tokens are counted from the mask."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cloudeasyml import ModelPlugin, Pricing, ServingConfig, TensorSpec, hookimpl

WEIGHTS = Path(__file__).with_name("tiny_embed_weights.npz")
VOCABULARY = 16
DIMENSIONS = 4

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


def tiny_embed_weights() -> dict[str, np.ndarray]:
    """Deterministic weights (what ``tiny_embed_weights.npz`` holds)."""
    return {"table": np.random.default_rng(11).normal(size=(VOCABULARY, DIMENSIONS)).astype(np.float32)}


def token_ids(text: str) -> list[int]:
    """The ids of a text's words (whitespace-separated)."""
    return [zlib.crc32(word.encode()) % VOCABULARY for word in text.split()] or [0]


def graph(weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """``embedding[b] = Σ_s table[input_ids[b, s]] * attention_mask[b, s]``."""
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "sequence_axis"], ["embedding"], keepdims=0),
    ]
    network = helper.make_graph(
        nodes,
        "tiny-embed",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIMENSIONS])],
        [
            numpy_helper.from_array(np.asarray(weights["table"], dtype=np.float32), "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "sequence_axis"),
        ],
    )
    model = helper.make_model(network, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def seed_graph(artifact_dir: Path) -> Path:
    """Put ``graph()`` where the artifact store keeps the export of the shipped weights; returns its path."""
    from cloudeasyml.runtime.artifacts import ArtifactStore
    from cloudeasyml.runtime.resolver import ArtifactResolver

    model = TinyEmbedder()
    resolver = ArtifactResolver(ArtifactStore(artifact_dir))
    path = resolver.store.onnx_path(model.name, model.version, resolver.weights_digest(model, model.version))
    if not path.exists():
        manifest = {"model": model.name, "version": model.version, "weightsSha256": model.weights_digest()}

        def produce(tmp: Path) -> dict[str, str]:
            onnx.save(graph(model.load_weights()), str(tmp))
            return {"builtBy": "tests/support/tiny_embedder.py graph() (onnx.helper), not an export"}

        resolver.store.write_export(path, produce, manifest)
    return path


class TinyEmbedder(ModelPlugin[str, list[float]]):
    """Embeds a text as the sum of its words' rows of a small table."""

    name = "tiny-embed"
    version = "1.0.0"
    task = "embedding"
    input_type = Text
    output_type = list[float]
    input_tensors = (
        TensorSpec("input_ids", "INT64", (-1, -1), ("batch", "sequence")),
        TensorSpec("attention_mask", "INT64", (-1, -1), ("batch", "sequence")),
    )
    output_tensors = (TensorSpec("embedding", "FP32", (-1, DIMENSIONS), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.001"), per_second=Decimal("0.5"))
    serving = ServingConfig(max_batch_size=16)
    max_characters_per_item = 1000

    def weights_path(self) -> Path:
        return WEIGHTS

    def example_inputs(self) -> list[str]:
        return ["a man eats food", "the market fell"]

    def build_module(self, weights):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the tiny embedder is served from its onnx.helper graph; it is never exported")

    def to_arrays(self, items: list[str]) -> dict[str, np.ndarray]:
        ids = [token_ids(text) for text in items]
        width = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[list[float]]:
        return np.asarray(outputs["embedding"], dtype=np.float32).tolist()


@hookimpl
def cloudeasyml_register_models(register):  # type: ignore[no-untyped-def]
    """Register the tiny embedder."""
    register(TinyEmbedder())
