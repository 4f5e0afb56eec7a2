"""The sentiment model plugin: English sentence -> negative / positive with probabilities.

Serving imports only numpy, msgspec and cloudeasyml; torch is imported inside ``build_module`` and ``train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
import numpy as np

from cloudeasyml import (
    ModelPlugin,
    Pricing,
    QualityMetric,
    ServingConfig,
    TensorSpec,
    TrainOptions,
    TrainProgress,
    TrainResult,
)
from cloudeasyml_sentiment.dataset import LABELS, read_labelled
from cloudeasyml_sentiment.tokenizer import BUCKETS, FIRST_HASHED_ID, MAX_WORDS, batch_arrays

if TYPE_CHECKING:
    import torch

    from cloudeasyml import Weights

__all__ = ("MAX_TEXT_CHARS", "SentimentInput", "SentimentModel", "SentimentPrediction", "SentimentProbabilities")

MAX_TEXT_CHARS = 5000
"""Longest accepted text. Only the first 64 words are read, so longer input would be billed for nothing."""


class SentimentInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel", frozen=True):
    """One text to classify."""

    text: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_TEXT_CHARS,
            pattern=r"\S",
            description="English text, typically one sentence or a short review; only its first 64 words are read.",
            examples=["This movie was wonderful, I loved it"],
        ),
    ]
    """The text; must hold at least one non-blank character."""


class SentimentProbabilities(msgspec.Struct, forbid_unknown_fields=True, rename="camel", frozen=True):
    """Probability of each class; the two add up to 1."""

    negative: float
    """Probability that the text is negative."""
    positive: float
    """Probability that the text is positive."""


class SentimentPrediction(msgspec.Struct, forbid_unknown_fields=True, rename="camel", frozen=True):
    """The predicted class of one text."""

    label: Literal["negative", "positive"]
    """The more probable class (``negative`` on an exact tie)."""
    score: float
    """Probability of ``label``, between 0.5 and 1."""
    probabilities: SentimentProbabilities
    """Probability of each class."""


class SentimentModel(ModelPlugin[SentimentInput, SentimentPrediction]):
    """Binary sentiment of short English texts: hashed-word embeddings, mean pooling and a small MLP."""

    name = "sentiment"
    version = "1.0.0"
    description = (
        "Sentiment (negative / positive) of short English texts such as reviews and posts. A bag-of-words "
        "network trained on 19k human-rated sentences (tweets, movie and product reviews, editorials)."
    )
    task = "text-classification"
    # Feedback ``label``: "negative" or "positive", compared with the prediction's ``label``.
    quality_metric = QualityMetric.accuracy("label")
    input_type = SentimentInput
    output_type = SentimentPrediction
    input_tensors = (
        TensorSpec("input_ids", "INT64", (-1, -1), ("batch", "sequence")),
        TensorSpec("attention_mask", "INT64", (-1, -1), ("batch", "sequence")),
    )
    output_tensors = (TensorSpec("probabilities", "FP32", (-1, 2), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.0002"), per_second=Decimal("0.004"))
    serving = ServingConfig(max_batch_size=64, max_batch_delay_ms=2.0)
    # Texts are read to MAX_WORDS words, so a run of 1024 inputs holds [1024, 64] ids: a few MB.
    max_items_per_request = 1024
    max_batch_items = 1024
    max_characters_per_item = MAX_TEXT_CHARS
    max_tokens_per_item = MAX_WORDS

    def cost_units(self, items: list[SentimentInput]) -> int:
        """Characters: the tokenizer's work, which dominates a run, grows with them."""
        return sum(len(item.text) for item in items)

    def example_inputs(self) -> list[SentimentInput]:
        """Two clear cases of different lengths, so the exported sequence axis stays dynamic."""
        return [
            SentimentInput(text="This movie was wonderful, I loved it"),
            SentimentInput(text="Terrible, boring and a waste of time"),
            SentimentInput(text="The battery died after two days and support never answered my emails."),
        ]

    def build_module(self, weights: Weights) -> torch.nn.Module:
        """The network loaded with ``weights``, in eval mode."""
        from cloudeasyml_sentiment.network import module_from_weights

        return module_from_weights(weights)

    def to_arrays(self, items: list[SentimentInput]) -> dict[str, np.ndarray]:
        """Hashed word ids and attention mask, padded to the longest text of the batch."""
        return batch_arrays([item.text for item in items])

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[SentimentPrediction]:
        """One prediction per row of ``probabilities``."""
        predictions = []
        for negative, positive in np.asarray(outputs["probabilities"], dtype=np.float64).tolist():
            label = LABELS[int(positive > negative)]
            predictions.append(
                SentimentPrediction(
                    label=label,
                    score=max(negative, positive),
                    probabilities=SentimentProbabilities(negative=negative, positive=positive),
                )
            )
        return predictions

    def random_arrays(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """Random word ids with random lengths, padding included, for the export parity check."""
        width = 24
        input_ids = rng.integers(FIRST_HASHED_ID, BUCKETS, size=(batch_size, width), dtype=np.int64)
        lengths = rng.integers(1, width + 1, size=batch_size)
        attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return {"input_ids": np.where(attention_mask == 1, input_ids, 0), "attention_mask": attention_mask}

    def train(self, data: Path, options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
        """Fine-tune the shipped weights on a CSV/TSV of ``text,label`` rows (see ``read_labelled``).

        ``options.validation_fraction`` of the sentences, chosen by a hash of ``options.seed`` and the text, are
        held out; the returned metrics (``accuracy``, ``loss``) are theirs, for the epoch with the lowest
        validation loss, whose weights are returned. Progress is reported once per epoch.

        Raises:
            ValueError: the file cannot be read or is malformed, or the options are out of range.
        """
        return self.train_from(data, options, progress, initial=self.load_weights())

    def train_from(
        self,
        data: Path,
        options: TrainOptions,
        progress: TrainProgress | None = None,
        *,
        initial: Weights | None = None,
    ) -> TrainResult:
        """Like ``train``, but starting from ``initial`` weights.

        ``initial=None`` starts from a fresh, seeded network: that is how ``scripts/train_weights.py`` makes the
        shipped weights.
        """
        from cloudeasyml_sentiment.training import train_network

        return train_network(read_labelled(data), options, progress, initial=initial)
