"""CloudEasyML plugin: all-MiniLM-L6-v2 sentence embeddings (model name ``minilm``)."""

from __future__ import annotations

from cloudeasyml import RegisterModel, hookimpl
from cloudeasyml_minilm.model import MiniLMModel

__all__ = ("MiniLMModel", "cloudeasyml_register_models")


@hookimpl
def cloudeasyml_register_models(register: RegisterModel) -> None:
    """Register the MiniLM embedding model."""
    register(MiniLMModel())
