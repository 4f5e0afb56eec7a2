"""Installed model plugins."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromPath

from cloudeasyml.api.schemas import ModelLimits, ModelRead
from cloudeasyml.plugins.catalog import CatalogEntry
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.services import Services

__all__ = ("ModelController", "model_read")


def model_read(entry: CatalogEntry, resolver: ArtifactResolver) -> ModelRead:
    """The public description of an installed model."""
    model = entry.model
    return ModelRead(
        name=model.name,
        version=model.version,
        versions=resolver.versions(model),
        description=model.description or (type(model).__doc__ or "").strip(),
        task=model.task,
        plugin=entry.plugin,
        source=entry.source,
        input_schema=msgspec.json.schema(model.input_type),
        output_schema=msgspec.json.schema(model.output_type),
        example_input=msgspec.to_builtins(model.example_inputs()[0]),
        pricing=model.pricing,
        serving=model.serving,
        limits=ModelLimits(
            max_items_per_request=model.max_items_per_request,
            max_batch_items=model.max_batch_items,
            max_characters_per_item=model.max_characters_per_item,
            max_tokens_per_item=model.max_tokens_per_item,
        ),
        input_tensors=list(model.input_tensors),
        output_tensors=list(model.output_tensors),
        quality_metric=model.quality_metric,
    )


class ModelController(Controller):
    """``GET /models`` and ``GET /models/{name}``: any valid key may read them."""

    path = "/models"
    tags = ["Models"]

    @get("/", summary="List installed models")
    async def list_models(self, request: Request[Any, Any, Any]) -> list[ModelRead]:
        """Every installed, valid model (plugins that failed to load are left out and logged)."""
        services: Services = request.app.state.services
        return [model_read(entry, services.resolver) for entry in services.catalog]

    @get("/{name:str}", summary="Describe one model")
    async def get_model(self, request: Request[Any, Any, Any], name: FromPath[str]) -> ModelRead:
        """One model's metadata, schemas, example input, pricing and serving defaults."""
        services: Services = request.app.state.services
        return model_read(services.catalog.get(name), services.resolver)
