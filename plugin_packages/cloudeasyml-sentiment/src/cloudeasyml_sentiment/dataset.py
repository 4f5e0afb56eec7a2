"""Labelled sentences on disk: reading, validating and the train/validation split (no torch)."""

from __future__ import annotations

import csv
import hashlib
from importlib.resources import files
from pathlib import Path

import msgspec
import numpy as np

from cloudeasyml import TrainOptions

__all__ = ("LABELS", "SHIPPED_DATA", "SHIPPED_OPTIONS", "LabelledTexts", "read_labelled", "validation_mask")

LABELS = ("negative", "positive")
"""Class names in output order: index 0 is negative, index 1 is positive."""
SHIPPED_DATA = Path(str(files("cloudeasyml_sentiment") / "data" / "vader_sentences.csv"))
"""The human-rated sentences of Hutto & Gilbert (2014) that the shipped weights were trained on."""
SHIPPED_OPTIONS = TrainOptions(epochs=8, learning_rate=1e-3, batch_size=32, seed=0, validation_fraction=0.2)
"""The options the shipped weights were trained with; their seed and fraction define the held-out split."""

_LABEL_INDEX = {"negative": 0, "positive": 1, "neg": 0, "pos": 1, "0": 0, "1": 1}


class LabelledTexts(msgspec.Struct, frozen=True):
    """Texts and their class indices (0 negative, 1 positive), row-aligned."""

    texts: list[str]
    labels: np.ndarray


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","


def _parse_rows(path: Path, reader: csv.DictReader[str]) -> LabelledTexts:
    if reader.fieldnames is None or not {"text", "label"} <= {name.strip().lower() for name in reader.fieldnames}:
        raise ValueError(f"{path.name}: the header must name a 'text' and a 'label' column, found {reader.fieldnames}")
    texts: list[str] = []
    labels: list[int] = []
    for line, row in enumerate(reader, start=2):
        row = {(key or "").strip().lower(): value for key, value in row.items()}
        text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip().lower()
        if not text:
            raise ValueError(f"{path.name}, line {line}: empty text")
        if label not in _LABEL_INDEX:
            raise ValueError(f"{path.name}, line {line}: label {label!r} is not one of negative, positive, 0, 1")
        texts.append(text)
        labels.append(_LABEL_INDEX[label])
    return LabelledTexts(texts=texts, labels=np.asarray(labels, dtype=np.int64))


def read_labelled(path: Path) -> LabelledTexts:
    """Read labelled sentences from a CSV file (tab-separated when named ``.tsv`` or ``.tab``).

    The file needs a header naming a ``text`` and a ``label`` column; other columns are ignored. Labels are
    ``negative`` / ``positive`` (or ``neg`` / ``pos``, ``0`` / ``1``), case-insensitive.

    Raises:
        ValueError: the file is missing or not UTF-8, lacks the columns, has an empty text or an unknown label,
            or does not hold at least one sentence of each class.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            data = _parse_rows(path, csv.DictReader(handle, delimiter=_delimiter(path)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read training data {path}: {exc}") from exc
    counts = dict(zip(LABELS, np.bincount(data.labels, minlength=len(LABELS)).tolist(), strict=True))
    if min(counts.values()) == 0:
        raise ValueError(f"{path.name}: need sentences of both classes, found {counts}")
    return data


def validation_mask(texts: list[str], *, seed: int, fraction: float) -> np.ndarray:
    """Which texts are held out for validation: a hash of the seed and the lower-cased text below ``fraction``.

    Hashing (rather than shuffling) keeps a sentence on the same side however the file is ordered or extended,
    and puts repeated sentences on one side only, so validation never sees a training sentence.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must lie strictly between 0 and 1, got {fraction}")
    cut = int(fraction * (1 << 64))
    keys = (hashlib.blake2b(f"{seed}:{text.lower()}".encode(), digest_size=8).digest() for text in texts)
    return np.fromiter((int.from_bytes(key, "big") < cut for key in keys), dtype=bool, count=len(texts))
