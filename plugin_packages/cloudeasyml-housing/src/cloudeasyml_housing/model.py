"""The ``housing`` model: sale price of a house in Windsor, Ontario (1987) from its features.

Serving needs numpy and msgspec only; torch is imported inside ``build_module`` and ``train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import numpy as np

from cloudeasyml import (
    ModelPlugin,
    Pricing,
    QualityMetric,
    ServingConfig,
    TensorSpec,
    TrainOptions,
    TrainProgress,
    TrainResult,
    Weights,
)
from cloudeasyml_housing.dataset import read_csv

if TYPE_CHECKING:
    import torch

__all__ = ("FEATURE_FIELDS", "HouseFeatures", "HousePrice", "HousingModel")


class HouseFeatures(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One house to price. Every field is required; the bounds reject impossible houses, not unusual ones.

    The training data span lots of 1,650–16,200 sq ft, 1–6 bedrooms, 1–4 bathrooms, 1–4 stories and 0–3
    garage places: predictions for houses outside those ranges are extrapolations.
    """

    lot_size: Annotated[float, msgspec.Meta(gt=0, le=1_000_000, description="Lot size in square feet.")]
    bedrooms: Annotated[int, msgspec.Meta(ge=0, le=20, description="Number of bedrooms.")]
    bathrooms: Annotated[int, msgspec.Meta(ge=0, le=10, description="Number of full bathrooms.")]
    stories: Annotated[int, msgspec.Meta(ge=1, le=10, description="Number of stories, basement excluded.")]
    garage_places: Annotated[int, msgspec.Meta(ge=0, le=10, description="Number of garage places.")]
    driveway: Annotated[bool, msgspec.Meta(description="The house has a driveway.")]
    recreation_room: Annotated[bool, msgspec.Meta(description="The house has a recreation room.")]
    full_basement: Annotated[bool, msgspec.Meta(description="The house has a full finished basement.")]
    gas_hot_water: Annotated[bool, msgspec.Meta(description="The house heats its water with gas.")]
    air_conditioning: Annotated[bool, msgspec.Meta(description="The house has central air conditioning.")]
    preferred_area: Annotated[bool, msgspec.Meta(description="The house is in a preferred neighbourhood.")]


class HousePrice(msgspec.Struct, frozen=True, rename="camel"):
    """The predicted sale price."""

    price: Annotated[
        float,
        msgspec.Meta(description="Predicted sale price in THOUSANDS of Canadian dollars, 1987 (64.5 = $64,500)."),
    ]


FEATURE_FIELDS: tuple[str, ...] = tuple(HouseFeatures.__struct_fields__)
"""``HouseFeatures`` attributes in the graph's column order (the same order as ``dataset.FEATURE_COLUMNS``)."""


class HousingModel(ModelPlugin[HouseFeatures, HousePrice]):
    """Sale price of a house from its lot size, rooms and amenities: a small MLP trained on 546 real sales.

    The graph takes the raw features (booleans as 0/1) and returns the price in thousands of Canadian
    dollars; the log of the lot size and the standardisation happen inside it.
    """

    name = "housing"
    version = "1.0.0"
    description = (
        "Predicts the sale price (thousands of CAD, 1987) of a house in Windsor, Ontario from its lot size, "
        "rooms and amenities. An MLP trained on Ecdat's Housing data (546 sales; Anglin & Gencay 1996)."
    )
    task = "regression"
    # Feedback ``value``: the sale price in thousands of dollars, as the prediction's ``price``.
    quality_metric = QualityMetric.regression("price")
    input_type = HouseFeatures
    output_type = HousePrice
    input_tensors = (TensorSpec("features", "FP32", (-1, len(FEATURE_FIELDS)), ("batch",)),)
    output_tensors = (TensorSpec("price", "FP32", (-1, 1), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.0001"), per_second=Decimal("0.002"))
    # One batch of 128 houses costs about as much as one house; a short window lets busy clients share it.
    # One intra-op thread: an 11-input MLP gains nothing from a thread pool, and waking its threads on a busy
    # machine cost latency (p50 7.6-8.6 -> 5.2-5.9 ms, p99 35-45 -> 30-35 ms while another tenant loaded the CPUs).
    serving = ServingConfig(max_batch_size=128, max_batch_delay_ms=1.0, intra_op_threads=1)
    # 11 floats an input: a run of 4096 takes well under a millisecond and a few hundred kB.
    max_items_per_request = 4096
    max_batch_items = 4096

    def cost_units(self, items: list[HouseFeatures]) -> int:
        """Every input costs the same: the item count."""
        return len(items)

    def example_inputs(self) -> list[HouseFeatures]:
        """Three houses like those in the data: typical, large in a preferred area, small starter."""
        return [
            HouseFeatures(
                lot_size=5850, bedrooms=3, bathrooms=1, stories=2, garage_places=1, driveway=True,
                recreation_room=False, full_basement=True, gas_hot_water=False, air_conditioning=False,
                preferred_area=False,
            ),
            HouseFeatures(
                lot_size=8250, bedrooms=4, bathrooms=2, stories=2, garage_places=2, driveway=True,
                recreation_room=True, full_basement=True, gas_hot_water=False, air_conditioning=True,
                preferred_area=True,
            ),
            HouseFeatures(
                lot_size=3000, bedrooms=2, bathrooms=1, stories=1, garage_places=0, driveway=False,
                recreation_room=False, full_basement=False, gas_hot_water=False, air_conditioning=False,
                preferred_area=False,
            ),
        ]  # fmt: skip

    def build_module(self, weights: Weights) -> torch.nn.Module:
        """The ``HousingRegressor`` with ``weights`` loaded, in eval mode (imports torch)."""
        from cloudeasyml_housing.network import module_from_weights

        return module_from_weights(weights)

    def to_arrays(self, items: list[HouseFeatures]) -> dict[str, np.ndarray]:
        """``features``: float32 ``[len(items), 11]``, booleans as 0/1."""
        rows = [[getattr(item, field) for field in FEATURE_FIELDS] for item in items]
        return {"features": np.array(rows, dtype=np.float32).reshape(len(items), len(FEATURE_FIELDS))}

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[HousePrice]:
        """One ``HousePrice`` per row of ``price``."""
        # str() of a float32 is its shortest round-tripping decimal, so clients see 64.832, not 64.83200073242188.
        return [HousePrice(price=float(str(value))) for value in np.asarray(outputs["price"], np.float32)[:, 0]]

    def random_arrays(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """Random valid houses over (and a little beyond) the training data's ranges."""
        columns = [
            np.exp(rng.uniform(np.log(1000), np.log(25_000), batch_size)),  # lot size
            rng.integers(1, 7, batch_size),  # bedrooms
            rng.integers(1, 5, batch_size),  # bathrooms
            rng.integers(1, 5, batch_size),  # stories
            rng.integers(0, 4, batch_size),  # garage places
            *(rng.integers(0, 2, batch_size) for _ in range(6)),  # the six yes/no features
        ]
        return {"features": np.stack(columns, axis=1).astype(np.float32)}

    def train(self, data: Path, options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
        """Train a fresh model on a CSV shaped like the shipped ``data/housing.csv`` (prices in dollars).

        Training starts from scratch rather than from the shipped weights: the shipped weights have seen
        every row of the shipped data outside its own held-out split, so fine-tuning them and holding out a
        different split would report optimistic metrics, and a new data set needs new scaling statistics.
        ``metrics`` (``rmse`` and ``mae`` in thousands of dollars, ``r2``) are measured on the held-out split.

        Raises:
            ValueError: the CSV lacks columns, holds a bad value, or is too small for the split.
        """
        from cloudeasyml_housing.network import fit

        return fit(read_csv(Path(data)), options, progress)
