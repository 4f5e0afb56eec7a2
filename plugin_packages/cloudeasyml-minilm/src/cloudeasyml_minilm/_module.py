"""The torch side of the plugin: BERT plus pooling. Imported only by ``MiniLMModel.build_module``.

This module imports torch and transformers at its top, so nothing on the serving path may import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

from cloudeasyml import Weights

__all__ = ("SentenceEmbedder", "build_embedder")

# Saved by older transformers as a persistent buffer; recomputed at construction now, so it may be left over.
_IGNORED_KEYS = frozenset({"embeddings.position_ids"})


class SentenceEmbedder(torch.nn.Module):
    """Token ids and attention mask to unit-length sentence embeddings.

    Pooling and normalisation live here, not in ``from_outputs``, so they are part of the ONNX graph and
    the served output is the embedding itself.
    """

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings of shape (batch, 384); padded positions (mask 0) do not count."""
        # Single-segment inputs: the token types are all zero, so they are made here, not fed.
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # Mean over real tokens; the clamp only guards an all-zero mask row, which to_arrays never makes.
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def _state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    """Tensors keyed as ``BertModel`` expects: no ``bert.`` prefix, no pooler (this model never uses it)."""
    state = {}
    for key, array in weights.items():
        key = key.removeprefix("bert.")
        if not key.startswith("pooler."):
            state[key] = torch.from_numpy(np.array(array, copy=True))
    return state


def build_embedder(config_dir: Path, weights: Weights) -> SentenceEmbedder:
    """The embedder in eval mode, from the config in ``config_dir`` (read locally) and ``weights``.

    Raises:
        ValueError: ``weights`` lack a parameter of the model or carry ones it does not have.
    """
    # "sdpa" exports with the dynamo exporter and matches eager to ~1e-7 cosine; it is also the faster one.
    config = BertConfig.from_pretrained(str(config_dir), attn_implementation="sdpa")
    bert = BertModel(config, add_pooling_layer=False)
    missing, unexpected = bert.load_state_dict(_state_dict(weights), strict=False)
    unexpected = [key for key in unexpected if key not in _IGNORED_KEYS]
    if missing or unexpected:
        raise ValueError(f"MiniLM weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return SentenceEmbedder(bert).eval()
