"""Reproduce the shipped ``weights.npz`` from the shipped ``data/housing.csv``.

It runs the same code path as ``HousingModel.train`` (and so as ``cloudeasyml train housing``) with the
options below, prints the held-out metrics that the README quotes, and writes the weights. Needs torch::

    pip install -c constraints.txt -e 'plugin_packages/cloudeasyml-housing[export]'
    python plugin_packages/cloudeasyml-housing/scripts/train_weights.py [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from cloudeasyml_housing import HousingModel
from cloudeasyml_housing.dataset import shipped_data_path

from cloudeasyml import TrainOptions

SHIPPED_OPTIONS = TrainOptions(epochs=80, learning_rate=1e-3, batch_size=32, seed=0, validation_fraction=0.2)
"""Chosen by 5-fold cross-validation on the training rows only (``scripts/cross_validate.py``)."""


def main() -> None:
    """Train, report, save."""
    model = HousingModel()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=model.weights_path(), help="where to write the .npz")
    args = parser.parse_args()

    def progress(epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}/{epochs}  loss {metrics['loss']:.4f}")

    started = time.perf_counter()
    result = model.train(shipped_data_path(), SHIPPED_OPTIONS, progress)
    seconds = time.perf_counter() - started
    print(
        f"held-out ({SHIPPED_OPTIONS.validation_fraction:.0%}, seed {SHIPPED_OPTIONS.seed}): "
        f"RMSE {result.metrics['rmse']:.2f}k CAD, MAE {result.metrics['mae']:.2f}k CAD, "
        f"R² {result.metrics['r2']:.3f}  ({seconds:.1f} s)"
    )
    np.savez(args.out, **result.weights)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
