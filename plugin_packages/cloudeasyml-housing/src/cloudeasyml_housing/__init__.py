"""CloudEasyML's ``housing`` model plugin: house sale prices from a small MLP trained on real sales.

Installing the distribution registers the ``housing`` entry point in the ``cloudeasyml`` group; the host
then calls ``cloudeasyml_register_models`` below. Importing this package never imports torch.
"""

from __future__ import annotations

from cloudeasyml import RegisterModel, hookimpl
from cloudeasyml_housing.model import HouseFeatures, HousePrice, HousingModel

__all__ = ("HouseFeatures", "HousePrice", "HousingModel", "cloudeasyml_register_models")


@hookimpl
def cloudeasyml_register_models(register: RegisterModel) -> None:
    """Register the ``housing`` model (weights are loaded later, by the host, when first needed)."""
    register(HousingModel())
