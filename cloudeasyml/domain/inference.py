"""A prediction, end to end: deployment → model → decode → batch → price → meter."""

from __future__ import annotations

import time
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
from cloudeasyml.domain.routing import Router, needs_routing
from cloudeasyml.domain.shadow import ShadowRunner
from cloudeasyml.errors import (
    DeploymentUnloadedError,
    InvalidInputError,
    MalformedRequestError,
    ModelNotReadyError,
    NotFoundError,
)
from cloudeasyml.metering.meter import Meter, Usage
from cloudeasyml.metering.metrics import Metrics
from cloudeasyml.metering.outcomes import OutcomeRecord, OutcomeRecorder
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
    model_version: str
    """The version that served it (the route picked), not necessarily the deployment's first."""


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
        outcomes: OutcomeRecorder | None = None,
    ) -> None:
        self._catalog = catalog
        self._outcomes = outcomes
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
        self._router = Router()
        # Processing ms per line of each model version's last batch chunk here (what the next chunk holds against
        # the spend cap for its time); one float per model version served, so no bound is needed.
        self._batch_ms_per_item: dict[tuple[str, str], float] = {}
        self.shadows = ShadowRunner(registry, quota, metrics, self._limits)
        """This process's shadow copies (``close`` them at shutdown)."""

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
            model_version=served.model_version,
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
        if context is None:
            context = RequestContext()
        result, request_id = await self.execute(
            principal, spec, entry, len(inputs), lambda loaded: self.run(loaded, inputs), context
        )
        return Served(result=result, request_id=request_id, model_version=context.model_version or spec.model_version)

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
        """The one path of every protocol: pick the route (a deployment with a traffic split), reserve a place
        under the tenant's caps, load, ``run(loaded)``, then bill and commit the reservation; any failure (an
        exception, a deadline, a cancelled task) releases it. Last, shadow routes get their copies (``ShadowRunner``:
        after this returns, never delaying or failing it).

        ``context`` (the edge's, with the request's id and routing key) is filled in with the deployment, the model,
        the version and variant that served and the item count, for the answer's ``X-Model-Version`` and the access
        log; without one, the request gets a fresh id. A context of ``mode`` shadow is a shadow copy: ``spec`` is
        its route, it takes no place under the request cap and is billed as shadow usage or not (``bill_shadow``).
        A live request, once billed, leaves its cost and processing time in ``context`` (the answer's ``X-Usage-*``
        headers). ``kind`` ``batch``: a batch job's chunk, billed at the batch price.

        Returns:
            The result and the usage record's request id.

        Raises:
            RequestCapReachedError, SpendCapReachedError: The tenant is past a monthly cap (nothing runs).
        """
        if context is None:
            context = RequestContext()
        live = context.mode == "live"
        # Outcomes (for the experiment report) only where versions are compared: a shadow copy, or a live request
        # of a deployment with several routes (decided below, before its route is picked). A single-version
        # deployment records none and pays for this one assignment.
        observed = not live
        copies = None
        if live and needs_routing(spec):  # a single-version deployment: one length check, nothing else
            observed = len(spec.traffic) > 1
            plan = self._router.plan(spec)
            spec = plan.pick(context.routing_key)
            copies = plan.copies() if plan.shadows else None
        context.tenant_id = principal.tenant_id
        context.deployment_id = spec.id
        context.model_name = spec.model_name
        context.model_version = spec.model_version
        context.variant = spec.config.variant
        context.items = items
        # Admission prices the request by the version that serves it. A shadow copy is no request of the tenant's.
        reservation = await self.admit(principal, spec, entry, items=items, kind=kind) if live else None
        started = time.perf_counter() if observed else 0.0
        loaded: LoadedDeployment | None = None
        try:
            try:
                loaded = await self.load(spec, entry, plan=principal.plan)
                result = await run(loaded)
            except DeploymentUnloadedError:
                # Evicted for memory (or deleted) between lookup and queueing, or replaced by a new revision (whose
                # switch retired the unit this request looked up before it): if it still exists, look it up again
                # (a live request on the route its key or the dice give now; a shadow copy on its own route).
                current = await self._directory.by_id(principal, spec.id)
                if live:
                    spec = self._router.plan(current).pick(context.routing_key) if needs_routing(current) else current
                    context.model_version, context.variant = spec.model_version, spec.config.variant
                loaded = await self.load(spec, entry, plan=principal.plan)
                result = await run(loaded)
            if live:
                cost = self.bill(principal, loaded, result, items, context.request_id, kind=kind)
                context.cost, context.processing_ms = cost, result.processing_ms
            else:
                await self._bill_shadow(principal, loaded, result, items, context.request_id)
        except BaseException as exc:
            if reservation is not None:
                await reservation.release()
            if observed and isinstance(exc, Exception):  # a failed run counts against its version (not a cancel)
                self.record_outcome(context, loaded, items, started, None, type(exc).__name__)
            raise
        if reservation is not None:
            await reservation.commit(cost)
        if observed:
            self.record_outcome(context, loaded, items, started, result.outputs, None)
        if copies:
            self.shadows.copy(
                principal,
                copies,
                loaded,
                context,
                lambda who, shadow_spec, shadow_context: self.execute(
                    who, shadow_spec, entry, items, run, shadow_context
                ),
            )
        return result, context.request_id

    def record_outcome(
        self,
        context: RequestContext,
        loaded: LoadedDeployment | None,
        items: int,
        started: float,
        outputs: list[Any] | None,
        error: str | None,
    ) -> None:
        """Queue what the version that ran (``loaded.spec``: the route's version and variant) answered, or the error
        it failed with, for the experiment report; the recorder writes it behind the answer.
        """
        if self._outcomes is None:  # a service built without a recorder (a tool, a bench)
            return
        assert context.tenant_id is not None and context.deployment_id is not None
        self._outcomes.record(
            OutcomeRecord(
                request_id=context.request_id,
                tenant_id=context.tenant_id,
                deployment_id=context.deployment_id,
                model_version=loaded.spec.model_version if loaded is not None else context.model_version or "",
                variant=loaded.spec.config.variant if loaded is not None else context.variant,
                mode=context.mode,
                shadow_of=context.shadow_of,
                items=items,
                outputs=outputs,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=error,
                created_at=utc_now(),
            )
        )

    async def _bill_shadow(
        self, principal: Principal, loaded: LoadedDeployment, result: BatchResult, items: int, request_id: str
    ) -> None:
        """Meter a shadow copy as ``kind`` shadow usage, counted in the tenant's spend (never as a request), or not
        at all on a plan without ``bill_shadow``.
        """
        if self._limits.for_plan(principal.plan).bill_shadow:
            cost = self.bill(principal, loaded, result, items, request_id, kind="shadow")
            await self._quota.add_spend(principal.tenant_id, cost)

    async def admit(
        self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry, *, items: int = 1, kind: str = "online"
    ) -> Reservation | None:
        """Reserve the request's place under its tenant's monthly caps, holding its minimum cost against the spend
        cap; None for a tenant without caps. Past a cap: ``RequestCapReachedError`` (429) or
        ``SpendCapReachedError`` (402).

        The minimum of an online request is the model's per-request price. A batch chunk (``kind`` batch) holds what
        its ``items`` lines will cost: each line's batch price, plus their processing time as the model's last chunk
        here took per line (``batch_hold``), so a job pauses before the chunk that would pass the cap rather than
        after it.
        """
        if kind == "batch":
            minimum = self.batch_hold(principal, spec, entry, items)
        else:
            minimum = self._pricing.for_plan(principal.plan, entry.model, spec.model_version).per_request
        return await self._quota.reserve(principal.tenant_id, minimum)

    def batch_hold(self, principal: Principal, spec: DeploymentSpec, entry: CatalogEntry, items: int) -> Decimal:
        """The cost a batch chunk of ``items`` lines is expected to have: exact for the per-line price, estimated
        for the time-based part (the model version's last batch chunk in this process, per line; none before it).
        """
        pricing = self._pricing.for_batch(principal.plan, entry.model, spec.model_version)
        per_item_ms = self._batch_ms_per_item.get((spec.model_name, spec.model_version), 0.0)
        return price(pricing, CostInputs(requests=items, processing_ms=per_item_ms * items))

    def entry_for(self, spec: DeploymentSpec) -> CatalogEntry:
        """The deployment's model; a model uninstalled since the deployment was made is not ready."""
        try:
            return self._catalog.get(spec.model_name)
        except NotFoundError as exc:
            raise ModelNotReadyError(f"model {spec.model_name!r} of deployment {spec.name!r} is not installed") from exc

    async def load(self, spec: DeploymentSpec, entry: CatalogEntry, *, plan: str) -> LoadedDeployment:
        """The unit serving ``spec`` (a deployment, or one route of it), loaded (lazily, once) within its tenant's
        ``plan``'s cap of loaded units.
        """
        loaded = self._registry.get_loaded(spec)
        if loaded is not None:
            return loaded
        most = self._limits.for_plan(plan).max_loaded_deployments
        return await self._registry.load(spec, entry.model, tenant_cap=most)

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
        """Price and meter one successful request under ``request_id`` at the version of the unit that served it
        (``loaded.spec``); returns its cost. ``kind``: ``online``; ``shadow`` for a shadow copy (metered apart, not
        counted in the request metrics); ``batch`` for one batch chunk (each item a request at the batch price).
        """
        spec = loaded.spec
        gpu_ms = result.processing_ms if loaded.on_gpu else 0.0
        if kind == "batch":
            pricing = self._pricing.for_batch(principal.plan, loaded.model, spec.model_version)
            work = CostInputs(requests=items, processing_ms=result.processing_ms, gpu_ms=gpu_ms)
            self._batch_ms_per_item[(spec.model_name, spec.model_version)] = result.processing_ms / max(items, 1)
        else:
            pricing = self._pricing.for_plan(principal.plan, loaded.model, spec.model_version)
            work = CostInputs(processing_ms=result.processing_ms, gpu_ms=gpu_ms)
        cost = price(pricing, work)
        if kind != "shadow":
            self._metrics.record_success(spec.model_name, spec.model_version, items, result.processing_ms, float(cost))
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
            raise InvalidInputError(_located(str(exc), "$.inputs")) from exc
        except msgspec.DecodeError as exc:  # e.g. invalid UTF-8 in a string, which the envelope left raw
            raise MalformedRequestError(f"malformed JSON in inputs: {exc}") from exc

    def convert_inputs(self, entry: CatalogEntry, values: list[Any], at: str, *, single: bool = False) -> list[Any]:
        """Inputs a protocol decoded itself (plain JSON values), checked against the model's input type as
        ``/predict``'s are; errors name their path from the body's root, ``at`` being where the inputs lie
        (``$.input`` for OpenAI's body). ``single``: the body held one input at ``at`` rather than a list there.
        """
        try:
            return msgspec.convert(values, entry.inputs_type)
        except msgspec.ValidationError as exc:
            message = str(exc).replace("- at `$[0]", "- at `$", 1) if single else str(exc)
            raise InvalidInputError(_located(message, at)) from exc


def _located(message: str, at: str) -> str:
    """A msgspec message with its path (``- at `$[0].x```) made a path from the body's root (``$.inputs[0].x``)."""
    if "- at `$" in message:
        return message.replace("- at `$", f"- at `{at}", 1)
    return f"{message} - at `{at}`"
