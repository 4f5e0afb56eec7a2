"""How the training options of the shipped weights were chosen: 5-fold cross-validation on the training rows.

The 20 % held-out split (seed 0) that the README reports never takes part, so its figures stay honest.
Prints the mean R² of each setting, and ordinary least squares on the same features as a baseline. Takes
about two minutes on two CPU cores::

    python plugin_packages/cloudeasyml-housing/scripts/cross_validate.py
"""

from __future__ import annotations

import itertools

import numpy as np
from cloudeasyml_housing import network
from cloudeasyml_housing.dataset import read_csv, regression_metrics, shipped_data_path, split_indices

from cloudeasyml import TrainOptions

FOLDS = 5
EPOCHS = (20, 40, 80, 160)
WEIGHT_DECAYS = (1e-3, 1.0, 3.0)


def main() -> None:
    """Print the cross-validated R² of each (epochs, weight decay) pair and of a linear baseline."""
    data = read_csv(shipped_data_path())
    train_rows, _ = split_indices(len(data.price), 0.2, seed=0)
    folds = np.array_split(np.random.default_rng(42).permutation(train_rows), FOLDS)
    splits = [(np.sort(np.concatenate(folds[:k] + folds[k + 1 :])), np.sort(folds[k])) for k in range(FOLDS)]
    design = np.c_[np.log(data.features[:, :1]), data.features[:, 1:], np.ones(len(data.price))]
    linear = []
    for fit_rows, check_rows in splits:
        coef, *_ = np.linalg.lstsq(design[fit_rows], data.price[fit_rows], rcond=None)
        linear.append(regression_metrics(data.price[check_rows], design[check_rows] @ coef)["r2"])
    print(f"least squares: R² {np.mean(linear):.4f}")
    for epochs, decay in itertools.product(EPOCHS, WEIGHT_DECAYS):
        network.WEIGHT_DECAY = decay
        options = TrainOptions(epochs=epochs, learning_rate=1e-3, batch_size=32, seed=0)
        scores = [network.fit_rows(data, a, b, options).metrics["r2"] for a, b in splits]
        print(f"epochs {epochs:3d}  weight decay {decay:g}: R² {np.mean(scores):.4f}", flush=True)


if __name__ == "__main__":
    main()
