"""The torch module: hashed-word embeddings, masked mean pooling, a small MLP and a softmax.

Imported only to export or train (``build_module``, ``train``); serving never imports this file.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cloudeasyml_sentiment.tokenizer import BUCKETS, PAD_ID

__all__ = ("EMBEDDING_DIM", "HIDDEN_DIM", "SentimentNet", "module_from_weights", "weights_of")

EMBEDDING_DIM = 32
HIDDEN_DIM = 32
DROPOUT = 0.2


class SentimentNet(nn.Module):
    """``(input_ids, attention_mask) -> probabilities`` of ``[negative, positive]``, each ``[batch, 2]``."""

    def __init__(self, buckets: int = BUCKETS, embedding_dim: int = EMBEDDING_DIM, hidden_dim: int = HIDDEN_DIM):
        super().__init__()
        self.embedding = nn.Embedding(buckets, embedding_dim, padding_idx=PAD_ID)
        self.hidden = nn.Linear(embedding_dim, hidden_dim)
        self.dropout = nn.Dropout(DROPOUT)
        self.output = nn.Linear(hidden_dim, 2)
        # Small vectors, so that rows no training word reaches stay close to the zero they are set to afterwards.
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.1)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised class scores; training uses these with cross-entropy."""
        mask = attention_mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        # Multiplying by the mask, not indexing, keeps padding out of the sum and exports as plain ONNX ops.
        summed = (self.embedding(input_ids) * mask).sum(dim=1)
        pooled = summed / mask.sum(dim=1).clamp(min=1.0)
        return self.output(self.dropout(torch.relu(self.hidden(pooled))))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class probabilities, ``[batch, 2]``."""
        return torch.softmax(self.logits(input_ids, attention_mask), dim=-1)


def module_from_weights(weights: dict[str, np.ndarray]) -> SentimentNet:
    """A ``SentimentNet`` sized after ``weights`` and loaded with them, in eval mode.

    Raises:
        ValueError: a parameter is missing, unexpected or of the wrong shape.
    """
    try:
        buckets, embedding_dim = weights["embedding.weight"].shape
        hidden_dim = weights["hidden.weight"].shape[0]
        module = SentimentNet(int(buckets), int(embedding_dim), int(hidden_dim))
        module.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in weights.items()})
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"weights do not fit the sentiment network: {exc}") from exc
    return module.eval()


def weights_of(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's ``state_dict`` as float32 numpy arrays (copies)."""
    state = module.state_dict()
    return {key: value.detach().cpu().numpy().astype(np.float32, copy=True) for key, value in state.items()}
