"""CloudEasyML plugin: sentiment (negative / positive) of short English texts.

Registered through the ``cloudeasyml`` entry point ``sentiment = "cloudeasyml_sentiment"``.
"""

from __future__ import annotations

from cloudeasyml import RegisterModel, hookimpl
from cloudeasyml_sentiment.model import SentimentInput, SentimentModel, SentimentPrediction, SentimentProbabilities

__all__ = (
    "SentimentInput",
    "SentimentModel",
    "SentimentPrediction",
    "SentimentProbabilities",
    "cloudeasyml_register_models",
)


@hookimpl
def cloudeasyml_register_models(register: RegisterModel) -> None:
    """Register the sentiment model."""
    register(SentimentModel())
