"""A prediction, end to end: deployment → model → decode → batch → price → meter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.pricing import CostInputs, price
from cloudeasyml.domain.deployment_directory import DeploymentDirectory
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.quota import QuotaGuard, Reservation
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.errors import (
    DeploymentUnloadedError,
    InvalidInputError,
    MalformedRequestError,
    ModelNotReadyError,
    NotFoundError,
)
from cloudeasyml.metering.meter import Meter, Usage
from cloudeasyml.metering.metrics import Metrics
from cloudeasyml.metering.pricing_book import PricingBook
from cloudeasyml.plugins.catalog import CatalogEntry, ModelCatalog
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import BatchResult
from cloudeasyml.runtime.registry import DeploymentSpec, LoadedDeployment, ServingRegistry
from cloudeasyml.settings import LimitsSettings

__all__ = ("TOO_DEEP", "InferenceService", "PredictResponse", "Served", "check_items", "decode_json")

TOO_DEEP = "malformed JSON: nested too deeply"
"""The detail of a body nested past the decoder's depth (msgspec raises ``RecursionError`` there)."""


class _Envelope(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A predict body, with ``inputs`` left raw until the deployment (and so the input type) is known."""

    inputs: msgspec.Raw
    deployment_id: uuid.UUID | None = None


class PredictResponse(msgspec.Struct, rename="camel"):
    """The answer to ``POST /predict``."""

    predictions: list[Any]
    model_name: str
    model_version: str
    deployment_id: uuid.UUID
    processing_time_ms: float
    """This request's share of its batch's processing time: what it is billed for."""
    request_id: str


class Served(msgspec.Struct, frozen=True):
    """A request that ran and was billed."""

    result: BatchResult
    request_id: str


def check_items(model: ModelPlugin, count: int) -> None:
    """Refuse a request with no inputs or more than the model's ``max_items_per_request`` (422), before it runs."""
    if not 1 <= count <= model.max_items_per_request:
        raise InvalidInputError(
            f"`inputs` holds {count} items; model {model.name!r} takes 1 to {model.max_items_per_request} per request"
        )


def decode_json(body: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode a request body: malformed JSON is a ``MalformedRequestError`` (400), valid JSON of the wrong shape
    an ``InvalidInputError`` (422) with msgspec's message, which names the path (``$.inputs[0].bedrooms``).
    JSON nested deeper than the decoder's recursion allows (about 1000 levels) is malformed too.
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise MalformedRequestError(f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise MalformedRequestError(TOO_DEEP) from None


class InferenceService:
    """Serves predictions for authenticated callers. Holds no per-request state."""

    def __init__(
        self,
        catalog: ModelCatalog,
        directory: DeploymentDirectory,
        registry: ServingRegistry,
        meter: Meter,
        *,
        pricing: PricingBook,
        metrics: Metrics,
        quota: QuotaGuard,
        limits: LimitsSettings | None = None,
    ) -> None:
        self._catalog = catalog
        self._limits = limits if limits is not None else LimitsSettings()
        self._quota = quota
        self._metrics = metrics
        self._pricing = pricing
        self._directory = directory
        self._registry = registry
        self._meter = meter
        self._envelope_decoder = msgspec.json.Decoder(_Envelope)
        self._inputs_decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._encoder = msgspec.json.Encoder()

    async def predict(
        self,
        principal: Principal,
        body: bytes,
        deployment_id: uuid.UUID | None = None,
        context: RequestContext | None = None,
    ) -> bytes:
        """Decode, run and bill one request; returns the encoded ``PredictResponse``."""
        envelope = decode_json(body, self._envelope_decoder)
        deployment_id = deployment_id or envelope.deployment_id
        if deployment_id is None:
            raise InvalidInputError("Object missing required field `deploymentId`")
        spec = await self._directory.by_id(principal, deployment_id)
        entry = self.entry_for(spec)
        inputs = self._decode_inputs(entry, envelope.inputs)
        served = await self.infer(principal, spec, entry, inputs, context)
        response = PredictResponse(
            predictions=served.result.outputs,
            model_name=spec.model_name,
            model_version=spec.model_version,
            deployment_id=spec.id,
            processing_time_ms=round(served.result.processing_ms, 3),
            request_id=served.request_id,
        )
        return self._encoder.encode(response)

    async def infer(
        self,
        principal: Principal,
        spec: DeploymentSpec,
        entry: CatalogEntry,
        inputs: list[Any],
        context: RequestContext | None = None,
    ) -> Served:
        """Run decoded inputs on a deployment (loading it if needed) and bill the request."""
        check_items(entry.model, len(inputs))
        result, request_id = await self.execute(
            principal, spec, entry, len(inputs), lambda loaded: self.run(loaded, inputs), context
        )
        return Served(result=result, request_id=request_id)

    async def execute(
        self,
        principal: Principal,
        spec: DeploymentSpec,
        entry: CatalogEntry,
        items: int,
        run: Callable[[LoadedDeployment], Awaitable[BatchResult]],
        context: RequestContext | None = None,
        *,
        kind: str = "online",
    ) -> tuple[BatchResult, str]:
        """The one path of every protocol: reserve a place under the tenant's caps, load, ``run(loaded)``, then
        bill and commit the reservation; any failure (an exception, a deadline, a cancelled task) releases it.

        ``context`` (the edge's, with the request's id) is filled in with the deployment, model and item count for
        the access log; without one, the request gets a fresh id.

        Returns:
            The result and the usage record's request id.

        Raises:
            RequestCapReachedError, SpendCapReachedError: The tenant is past a monthly cap (nothing runs).
        """
        if context is None:
            context = RequestContext()
        context.tenant_id = principal.tenant_id
        context.deployment_id = spec.id
        context.model_name = spec.model_name
        context.model_version = spec.model_version
        context.items = items
        reservation = await self.admit(principal, spec, entry)
        try:
            loaded = await self.load(spec, entry, plan=principal.plan)
            try:
                result = await run(loaded)
            except DeploymentUnloadedError:
                # Evicted for memory (or deleted) between lookup and queueing: if it still exists, load it again.
                spec = await self._directory.by_id(principal, spec.id)
                loaded = await self.load(spec, entry, plan=principal.plan)
                result = await run(loaded)
            cost = self.bill(principal, loaded, result, items, context.request_id, kind=kind)
        except BaseException:
            if reservation is not None:
                await reservation.release()
            raise
        if reservation is not None:
            await reservation.commit(cost)
        return result, context.request_id

    async def admit(self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry) -> Reservation | None:
        """Reserve the request's place under its tenant's monthly caps, holding the model's minimum cost against
        the spend cap; None for a tenant without caps. Past a cap: ``RequestCapReachedError`` (429) or
        ``SpendCapReachedError`` (402).
        """
        minimum: Decimal = self._pricing.for_plan(principal.plan, entry.model, spec.model_version).per_request
        return await self._quota.reserve(principal.tenant_id, minimum)

    def entry_for(self, spec: DeploymentSpec) -> CatalogEntry:
        """The deployment's model; a model uninstalled since the deployment was made is not ready."""
        try:
            return self._catalog.get(spec.model_name)
        except NotFoundError as exc:
            raise ModelNotReadyError(f"model {spec.model_name!r} of deployment {spec.name!r} is not installed") from exc

    async def load(self, spec: DeploymentSpec, entry: CatalogEntry, *, plan: str) -> LoadedDeployment:
        """The deployment, loaded (lazily, once) within its tenant's ``plan``'s cap of loaded deployments."""
        most = self._limits.for_plan(plan).max_loaded_deployments
        return self._registry.get_loaded(spec.id) or await self._registry.load(spec, entry.model, tenant_cap=most)

    async def run(self, loaded: LoadedDeployment, inputs: list[Any]) -> BatchResult:
        """Batch and run; a plugin's ``ValueError`` on the content of an input is the client's error."""
        try:
            return await loaded.predict(inputs)
        except ValueError as exc:
            raise InvalidInputError(f"the model rejected the inputs: {exc}") from exc

    def bill(
        self,
        principal: Principal,
        loaded: LoadedDeployment,
        result: BatchResult,
        items: int,
        request_id: str,
        *,
        kind: str = "online",
    ) -> Decimal:
        """Price and meter one successful request (or, ``kind="batch"``, one batch chunk: each item a request at
        the batch price) under ``request_id``; returns its cost.
        """
        spec = loaded.spec
        gpu_ms = result.processing_ms if loaded.on_gpu else 0.0
        if kind == "batch":
            pricing = self._pricing.for_batch(principal.plan, loaded.model, spec.model_version)
            work = CostInputs(requests=items, processing_ms=result.processing_ms, gpu_ms=gpu_ms)
        else:
            pricing = self._pricing.for_plan(principal.plan, loaded.model, spec.model_version)
            work = CostInputs(processing_ms=result.processing_ms, gpu_ms=gpu_ms)
        cost = price(pricing, work)
        self._metrics.record_success(spec.model_name, items, result.processing_ms, float(cost))
        self._meter.record(
            Usage(
                request_id=request_id,
                tenant_id=principal.tenant_id,
                api_key_id=principal.key_id,
                deployment_id=spec.id,
                deployment_name=spec.name,
                model_name=spec.model_name,
                model_version=spec.model_version,
                items=items,
                processing_ms=result.processing_ms,
                gpu_ms=gpu_ms,
                cost=cost,
                created_at=utc_now(),
                kind=kind,
            )
        )
        return cost

    def _decode_inputs(self, entry: CatalogEntry, raw: msgspec.Raw) -> list[Any]:
        """The ``inputs`` array, decoded with the model's own types; errors name their path from the body's root."""
        decoder = self._inputs_decoders.get(entry.model.name)
        if decoder is None:
            decoder = self._inputs_decoders[entry.model.name] = msgspec.json.Decoder(entry.inputs_type)
        try:
            return decoder.decode(raw)
        except RecursionError:
            raise MalformedRequestError(TOO_DEEP) from None
        except msgspec.ValidationError as exc:
            message = str(exc)
            if "- at `$" in message:
                message = message.replace("- at `$", "- at `$.inputs", 1)
            else:
                message = f"{message} - at `$.inputs`"
            raise InvalidInputError(message) from exc
        except msgspec.DecodeError as exc:  # e.g. invalid UTF-8 in a string, which the envelope left raw
            raise MalformedRequestError(f"malformed JSON in inputs: {exc}") from exc
