"""Reproduce ``src/cloudeasyml_sentiment/weights.npz`` from the shipped sentences.

Trains a fresh network (seed 0) on the 80 % of ``data/vader_sentences.csv`` outside the hashed validation split,
keeps the epoch with the lowest validation loss and writes its weights. Needs torch (``pip install
'cloudeasyml-sentiment[export]'``); takes about a minute on two CPU cores::

    python plugin_packages/cloudeasyml-sentiment/scripts/train_weights.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from cloudeasyml_sentiment.dataset import SHIPPED_DATA, SHIPPED_OPTIONS
from cloudeasyml_sentiment.model import SentimentModel


def main() -> None:
    """Train, report per epoch, and write the weights file."""
    model = SentimentModel()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHIPPED_DATA)
    parser.add_argument("--output", type=Path, default=model.weights_path())
    args = parser.parse_args()
    # One thread makes float sums run in one order, so a rerun gives the same weights on the same machine.
    torch.set_num_threads(1)
    started = time.perf_counter()

    def report(epoch: int, total: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        print(f"epoch {epoch}/{total}: {shown} ({time.perf_counter() - started:.1f} s)", flush=True)

    result = model.train_from(args.data, SHIPPED_OPTIONS, report, initial=None)
    np.savez_compressed(args.output, **result.weights)
    print(f"validation accuracy {result.metrics['accuracy']:.4f}, loss {result.metrics['loss']:.4f}")
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
