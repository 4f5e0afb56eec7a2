"""Helpers for text model plugins (numpy only: safe on the serving path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ("pad_token_ids",)


def pad_token_ids(rows: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad token id rows to the longest one (at least 1): ``input_ids`` and an ``attention_mask`` that marks
    the real tokens, both int64 ``[batch, longest row]``, as transformer-style graphs take them.
    """
    width = max((len(row) for row in rows), default=1) or 1
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
