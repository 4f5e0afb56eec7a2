"""Training loop of the sentiment network (imports torch; used by ``SentimentModel.train`` only)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional

from cloudeasyml import TrainOptions, TrainProgress, TrainResult, Weights
from cloudeasyml_sentiment.dataset import LabelledTexts, validation_mask
from cloudeasyml_sentiment.network import SentimentNet, module_from_weights, weights_of
from cloudeasyml_sentiment.tokenizer import PAD_ID, token_ids

__all__ = ("PATIENCE", "TOKEN_DROPOUT", "WEIGHT_DECAY", "train_network")

TOKEN_DROPOUT = 0.2
"""Share of words hidden from each training sentence, so the model does not lean on a single word."""
WEIGHT_DECAY = 0.05
PATIENCE = 2
"""Epochs without a better validation loss after which training stops; the best epoch's weights are kept."""


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[index, : len(row)] = 1
    return ids, mask


def _drop_tokens(mask: torch.Tensor) -> torch.Tensor:
    dropped = mask * (torch.rand(mask.shape) >= TOKEN_DROPOUT).to(mask.dtype)
    # A sentence that lost every word keeps them all: an empty row would teach nothing.
    return torch.where(dropped.sum(dim=1, keepdim=True) == 0, mask, dropped)


def _evaluate(module: SentimentNet, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        logits = module.logits(ids, mask)
    return {
        "loss": float(functional.cross_entropy(logits, labels)),
        "accuracy": float((logits.argmax(dim=1) == labels).to(torch.float32).mean()),
    }


def _initial_module(train_rows: list[list[int]], initial: Weights | None) -> SentimentNet:
    if initial is not None:
        return module_from_weights(initial)
    module = SentimentNet()
    # Buckets no training word hashes to never get a gradient; zero them so an unseen word at serving time
    # adds nothing instead of random noise (and the weights file compresses better).
    unseen = torch.ones(module.embedding.num_embeddings, dtype=torch.bool)
    unseen[torch.tensor(sorted({i for row in train_rows for i in row}), dtype=torch.int64)] = False
    with torch.no_grad():
        module.embedding.weight[unseen] = 0.0
    return module


def _check(options: TrainOptions) -> None:
    if options.epochs < 1 or options.batch_size < 1 or not options.learning_rate > 0:
        raise ValueError(f"epochs, batch_size and learning_rate must be positive, got {options}")


def train_network(
    data: LabelledTexts, options: TrainOptions, progress: TrainProgress | None = None, initial: Weights | None = None
) -> TrainResult:
    """Train on ``data`` minus a hashed validation split; return the best epoch's validation metrics and weights.

    Args:
        data: The labelled sentences.
        options: Epochs, learning rate, batch size, seed and validation fraction.
        progress: Called once per epoch as ``progress(epoch, options.epochs, metrics)``.
        initial: Weights to start from (fine-tuning); ``None`` starts from a fresh, seeded initialisation.

    Raises:
        ValueError: bad options, or a split with no training or no validation sentence.
    """
    _check(options)
    held_out = validation_mask(data.texts, seed=options.seed, fraction=options.validation_fraction)
    if held_out.all() or not held_out.any():
        raise ValueError(f"{len(data.texts)} sentences leave no training or no validation sentence; add more data")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    rows = [token_ids(text) for text in data.texts]
    train_rows = [row for row, held in zip(rows, held_out, strict=True) if not held]
    train_labels = torch.from_numpy(data.labels[~held_out])
    val_ids, val_mask = _pad([row for row, held in zip(rows, held_out, strict=True) if held])
    val_labels = torch.from_numpy(data.labels[held_out])

    module = _initial_module(train_rows, initial)
    optimizer = torch.optim.AdamW(module.parameters(), lr=options.learning_rate, weight_decay=WEIGHT_DECAY)
    best: dict[str, float] = {"loss": float("inf"), "accuracy": 0.0}
    best_state = copy.deepcopy(module.state_dict())
    stale = 0
    for epoch in range(1, options.epochs + 1):
        module.train()
        order = rng.permutation(len(train_rows))
        losses = []
        for start in range(0, len(order), options.batch_size):
            batch = order[start : start + options.batch_size]
            ids, mask = _pad([train_rows[i] for i in batch])
            loss = functional.cross_entropy(module.logits(ids, _drop_tokens(mask)), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metrics = _evaluate(module, val_ids, val_mask, val_labels)
        if progress is not None:
            progress(epoch, options.epochs, {"train_loss": float(np.mean(losses)), **metrics})
        if metrics["loss"] < best["loss"]:
            best, best_state, stale = metrics, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    module.load_state_dict(best_state)
    return TrainResult(metrics=best, weights=weights_of(module.eval()))
