"""The torch side of the housing model: the module and its training loop.

This module imports torch at the top, so the plugin imports it only inside ``build_module`` and ``train``:
serving the exported ONNX graph never needs it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cloudeasyml import TrainOptions, TrainProgress, TrainResult, Weights
from cloudeasyml_housing.dataset import HousingData, regression_metrics, split_indices

__all__ = ("HIDDEN", "WEIGHT_DECAY", "HousingRegressor", "fit", "fit_rows", "module_from_weights")

N_FEATURES = 11
HIDDEN = (32, 16)
WEIGHT_DECAY = 1.0
"""AdamW's decoupled weight decay. 546 rows are few enough for a 1k-parameter MLP to overfit; 1.0 beat 1e-3
and 3.0 in 5-fold cross-validation on the training rows (``scripts/cross_validate.py``)."""


class HousingRegressor(nn.Module):
    """Raw house features in, sale price in thousands of dollars out.

    ``forward`` takes the lot size's logarithm (prices grow with it less than linearly, and it keeps huge
    lots from dominating), standardises every feature with buffers fitted on the training rows, runs an
    MLP ``11 → 32 → 16 → 1`` and maps its standardised output back to thousands of dollars.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(N_FEATURES))
        self.register_buffer("feature_std", torch.ones(N_FEATURES))
        self.register_buffer("price_mean", torch.zeros(1))
        self.register_buffer("price_std", torch.ones(1))
        layers: list[nn.Module] = []
        width = N_FEATURES
        for hidden in HIDDEN:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``features`` ``[batch, 11]`` to prices ``[batch, 1]`` in thousands of dollars."""
        return self.net(self.standardise(features)) * self.price_std + self.price_mean

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """The MLP's input: log lot size, then every column centred and scaled."""
        logged = torch.cat((torch.log(features[:, :1]), features[:, 1:]), dim=1)
        return (logged - self.feature_mean) / self.feature_std

    def fit_scaling(self, features: torch.Tensor, price: torch.Tensor) -> None:
        """Set the standardisation buffers from training rows."""
        logged = torch.cat((torch.log(features[:, :1]), features[:, 1:]), dim=1)
        std = logged.std(dim=0)
        # A column that never varies in the training rows carries no information; scale it by 1, not 0.
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.feature_mean.copy_(logged.mean(dim=0))
        self.price_mean.fill_(float(price.mean()))
        self.price_std.fill_(max(float(price.std()), 1e-6))


def module_from_weights(weights: Weights) -> HousingRegressor:
    """A ``HousingRegressor`` in eval mode with ``weights`` loaded (every key must match)."""
    module = HousingRegressor()
    module.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in weights.items()}, strict=True)
    return module.eval()


def _state_arrays(module: nn.Module) -> Weights:
    return {key: value.detach().cpu().numpy().copy() for key, value in module.state_dict().items()}


def _predict(module: HousingRegressor, features: torch.Tensor) -> np.ndarray:
    module.eval()
    with torch.inference_mode():
        return module(features)[:, 0].numpy()


def _train_epoch(
    module: HousingRegressor,
    optimiser: torch.optim.Optimizer,
    features: torch.Tensor,
    price: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    module.train()
    total = 0.0
    for batch in torch.randperm(len(features), generator=generator).split(batch_size):
        # The loss is on the standardised price, so the learning rate means the same for any currency scale.
        loss = (((module(features[batch])[:, 0] - price[batch]) / module.price_std) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += loss.item() * len(batch)
    return total / len(features)


def fit(data: HousingData, options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
    """Train a fresh ``HousingRegressor`` on ``data`` and measure it on a held-out split.

    The split is ``split_indices(len(data.price), options.validation_fraction, options.seed)``.
    """
    train_rows, held_out = split_indices(len(data.price), options.validation_fraction, options.seed)
    return fit_rows(data, train_rows, held_out, options, progress)


def fit_rows(
    data: HousingData,
    train_rows: np.ndarray,
    held_out: np.ndarray,
    options: TrainOptions,
    progress: TrainProgress | None = None,
) -> TrainResult:
    """Train a fresh ``HousingRegressor`` on ``train_rows`` of ``data``; measure it on ``held_out``.

    The scaling buffers come from the training rows only, so nothing of the held-out rows leaks in.
    """
    if options.epochs < 1 or options.batch_size < 1 or not options.learning_rate > 0:
        raise ValueError(f"epochs and batch_size must be at least 1 and learning_rate above 0, not {options}")
    features, price = torch.from_numpy(data.features), torch.from_numpy(data.price)
    threads = torch.get_num_threads()
    # A 1k-parameter MLP on batches of 32 runs several times faster on one thread than on many.
    torch.set_num_threads(1)
    try:
        torch.manual_seed(options.seed)
        module = HousingRegressor()
        module.fit_scaling(features[train_rows], price[train_rows])
        optimiser = torch.optim.AdamW(module.parameters(), lr=options.learning_rate, weight_decay=WEIGHT_DECAY)
        generator = torch.Generator().manual_seed(options.seed)
        for epoch in range(1, options.epochs + 1):
            loss = _train_epoch(
                module, optimiser, features[train_rows], price[train_rows], options.batch_size, generator
            )
            if progress is not None:
                progress(epoch, options.epochs, {"loss": loss})
        predicted = _predict(module, features[held_out])
    finally:
        torch.set_num_threads(threads)
    metrics = regression_metrics(data.price[held_out], predicted)
    return TrainResult(metrics=metrics, weights=_state_arrays(module))
