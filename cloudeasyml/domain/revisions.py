"""A deployment's revisions: every change (``PATCH``, rollback, promote, abort) is worked out as a ``RevisionPlan``
against the revision the deployment is at, then stored as a new revision in one compare-and-set on the deployment
row. Every query filters on ``tenant_id``.

Planning reads; storing writes. Between the two the caller loads and warms the new revision's units (see
``domain.rollout``), so that no transaction is held open while a model loads; a change stored meanwhile by another
caller makes ``apply`` refuse with a conflict (read again, then retry).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute, single_route
from cloudeasyml.db.models import Deployment, DeploymentRevision, UsageRecord
from cloudeasyml.domain.deployments import DeploymentService, merge_config, stored_traffic, traffic_of
from cloudeasyml.domain.webhooks.events import deployment_data, emit
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError
from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = (
    "DeploymentChange",
    "RevisionAction",
    "RevisionPlan",
    "RevisionService",
    "RevisionSummary",
)

RevisionAction = Literal["create", "update", "rollback", "promote", "abort"]


class DeploymentChange(msgspec.Struct, frozen=True, kw_only=True):
    """What ``PATCH /deployments/{id}`` asks to change; absent fields stay as they are.

    ``model_version`` alone makes the deployment a single-version deployment of that version (any split is
    dropped); with ``traffic`` it must be that split's first live version. ``variant`` is short for
    ``config.variant``. ``config`` holds overrides merged onto the current config.
    """

    model_version: str | None = None
    variant: str | None = None
    config: dict[str, Any] | None = None
    traffic: list[TrafficRoute] | None = None


class RevisionPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A new revision worked out against revision ``base``, not stored yet."""

    deployment_id: uuid.UUID
    base: int
    """The revision the deployment was at when planned: ``apply`` stores the plan only if it still is."""
    action: RevisionAction
    model_version: str
    config: ServingConfig
    traffic: tuple[TrafficRoute, ...]
    """The whole split, at least one route (``traffic_of``'s form)."""
    changes: dict[str, Any]
    """What differs from revision ``base`` (see ``DeploymentRevision.changes``); never empty."""

    def spec_after(self, current: DeploymentSpec) -> DeploymentSpec:
        """The runtime's view of the deployment (``current``, at revision ``base``) once the plan is stored."""
        return msgspec.structs.replace(
            current,
            model_version=self.model_version,
            config=self.config,
            traffic=self.traffic,
            revision=self.base + 1,
        )


class RevisionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A stored revision with the requests it served."""

    row: DeploymentRevision
    requests: int
    """Usage records of the deployment's answered requests (shadow copies not counted) from this revision's
    ``created_at`` to the next one's (to now for the current revision), as written to the database."""


def _state(model_version: str, config: ServingConfig, traffic: tuple[TrafficRoute, ...]) -> dict[str, Any]:
    """A deployment's state as JSON builtins, the form ``changes`` compares."""
    return {
        "modelVersion": model_version,
        "config": msgspec.to_builtins(config),
        "traffic": msgspec.to_builtins(list(traffic)),
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{field: {"from", "to"}}`` for each field of two states that differs; ``config`` field by field."""
    changes: dict[str, Any] = {}
    if before["modelVersion"] != after["modelVersion"]:
        changes["modelVersion"] = {"from": before["modelVersion"], "to": after["modelVersion"]}
    config = {
        name: {"from": before["config"].get(name), "to": value}
        for name, value in after["config"].items()
        if before["config"].get(name) != value
    }
    if config:
        changes["config"] = config
    if before["traffic"] != after["traffic"]:
        changes["traffic"] = {"from": before["traffic"], "to": after["traffic"]}
    return changes


class RevisionService:
    """One tenant's deployment revisions, over the tenant's ``DeploymentService`` (which validates versions,
    configs and splits as at creation).
    """

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID, deployments: DeploymentService) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._deployments = deployments

    async def plan_update(self, deployment_id: uuid.UUID, change: DeploymentChange) -> RevisionPlan | None:
        """The revision a ``PATCH`` makes, validated as at creation; None when it changes nothing."""
        row = await self._deployments.get(deployment_id)
        model = self._deployments.model_of(row)
        current = msgspec.convert(row.config, ServingConfig)
        overrides = dict(change.config or {})
        if change.variant is not None:
            if overrides.get("variant", change.variant) != change.variant:
                raise InvalidInputError(
                    f"`variant` {change.variant!r} and `config.variant` {overrides['variant']!r} disagree; send one"
                )
            overrides["variant"] = change.variant
        config = merge_config(current, overrides) if overrides else current
        if change.traffic is not None:
            traffic = self._deployments.check_traffic(model, change.traffic)
            version = traffic[0].model_version
            if change.model_version is not None and change.model_version != version:
                raise InvalidInputError(
                    f"modelVersion {change.model_version!r} is not the first live route of `traffic` ({version!r}); "
                    "leave it out or make it equal"
                )
        elif change.model_version is not None:
            self._deployments.check_version(model, change.model_version)
            version, traffic = change.model_version, single_route(change.model_version)
        else:
            version, traffic = row.model_version, traffic_of(row)
        return self._plan(row, "update", version, config, traffic)

    async def plan_rollback(self, deployment_id: uuid.UUID, number: int | None = None) -> RevisionPlan | None:
        """A revision equal to revision ``number`` (default: the one before the current); None when the
        deployment is in that state already.
        """
        row = await self._deployments.get(deployment_id)
        number = row.revision - 1 if number is None else number
        if number < 1:
            raise InvalidInputError(f"deployment {row.name!r} is at revision {row.revision}: no earlier revision")
        old = await self._session.scalar(
            select(DeploymentRevision).where(
                DeploymentRevision.tenant_id == self._tenant_id,
                DeploymentRevision.deployment_id == row.id,
                DeploymentRevision.number == number,
            )
        )
        if old is None:
            raise NotFoundError(f"deployment {row.name!r} has no revision {number}")
        model = self._deployments.model_of(row)
        traffic = traffic_of(old)
        for route in traffic:  # a trained version may have been removed from the store since
            self._deployments.check_version(model, route.model_version)
        config = msgspec.convert(old.config, ServingConfig)
        return self._plan(row, "rollback", old.model_version, config, traffic)

    async def plan_promote(
        self, deployment_id: uuid.UUID, model_version: str, variant: str | None = None
    ) -> RevisionPlan | None:
        """The route of ``model_version`` (and ``variant``) takes all the traffic, live; every other route, live or
        shadow, is removed. None when it serves alone already.
        """
        row = await self._deployments.get(deployment_id)
        traffic = traffic_of(row)
        chosen = _route(row.name, traffic, model_version, variant)
        promoted = (TrafficRoute(model_version=chosen.model_version, weight=100, variant=chosen.variant),)
        config = msgspec.convert(row.config, ServingConfig)
        return self._plan(row, "promote", chosen.model_version, config, promoted)

    async def plan_abort(
        self, deployment_id: uuid.UUID, model_version: str, variant: str | None = None
    ) -> RevisionPlan:
        """Remove the route of ``model_version`` (and ``variant``); a live route's weight goes to the first live
        route that remains. The last live route cannot be aborted (promote another, or ``PATCH``).
        """
        row = await self._deployments.get(deployment_id)
        traffic = traffic_of(row)
        chosen = _route(row.name, traffic, model_version, variant)
        rest = [route for route in traffic if route is not chosen]
        if chosen.mode == "live":
            live = [route for route in rest if route.mode == "live"]
            if not live:
                raise InvalidInputError(
                    f"version {chosen.model_version!r} is the only live route of deployment {row.name!r}: "
                    "promote another version or PATCH a new one instead"
                )
            heir = live[0]
            rest[rest.index(heir)] = msgspec.structs.replace(heir, weight=heir.weight + chosen.weight)
        config = msgspec.convert(row.config, ServingConfig)
        plan = self._plan(row, "abort", rest[0].model_version, config, tuple(rest))
        assert plan is not None  # a route was removed: the traffic differs
        return plan

    def _plan(
        self,
        row: Deployment,
        action: RevisionAction,
        model_version: str,
        config: ServingConfig,
        traffic: tuple[TrafficRoute, ...],
    ) -> RevisionPlan | None:
        """The plan from ``row``'s state to this one; None when nothing differs."""
        before = _state(row.model_version, msgspec.convert(row.config, ServingConfig), traffic_of(row))
        changes = diff(before, _state(model_version, config, traffic))
        if not changes:
            return None
        return RevisionPlan(
            deployment_id=row.id,
            base=row.revision,
            action=action,
            model_version=model_version,
            config=config,
            traffic=traffic,
            changes=changes,
        )

    async def apply(self, plan: RevisionPlan, created_by_key_id: str | None) -> Deployment:
        """Store the plan as the deployment's next revision and make it the row's state, in one compare-and-set:
        ``ConflictError`` if the deployment left revision ``plan.base`` meanwhile (or a second writer got there
        first), ``NotFoundError`` if it was deleted.
        """
        traffic = stored_traffic(plan.traffic)
        config = msgspec.to_builtins(plan.config)
        number = await self._session.scalar(
            update(Deployment)
            .where(
                Deployment.tenant_id == self._tenant_id,
                Deployment.id == plan.deployment_id,
                Deployment.revision == plan.base,
            )
            .values(model_version=plan.model_version, config=config, traffic=traffic, revision=plan.base + 1)
            .returning(Deployment.revision)
        )
        if number is None:
            row = await self._deployments.get(plan.deployment_id)  # NotFoundError when deleted
            raise ConflictError(
                f"deployment {row.name!r} changed meanwhile (it is at revision {row.revision}, not {plan.base}); "
                "read it again and retry"
            )
        self._session.add(
            DeploymentRevision(
                deployment_id=plan.deployment_id,
                tenant_id=self._tenant_id,
                number=number,
                model_version=plan.model_version,
                config=config,
                traffic=traffic,
                changes=plan.changes,
                action=plan.action,
                created_by_key_id=created_by_key_id,
                created_at=utc_now(),
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:  # SQLite: two writers past the same compare-and-set
            raise ConflictError(f"deployment {plan.deployment_id} changed meanwhile; read it again and retry") from exc
        row = await self._deployments.get(plan.deployment_id)
        await self._session.refresh(row)
        data = deployment_data(row.id, row.name, row.model_name, row.model_version)
        data.update(
            revision=number, action=plan.action, changes=plan.changes, traffic=traffic, createdByKeyId=created_by_key_id
        )
        await emit(self._session, self._tenant_id, "deployment.revision.created", data)  # in the revision's transaction
        return row

    async def list(self, deployment_id: uuid.UUID) -> list[RevisionSummary]:
        """Every revision of one of the tenant's deployments, oldest first, with the requests each served."""
        row = await self._deployments.get(deployment_id)
        revision, following = DeploymentRevision, aliased(DeploymentRevision)
        until: Any = following.created_at
        requests = (
            select(func.count())
            .select_from(UsageRecord)
            .where(
                UsageRecord.tenant_id == self._tenant_id,
                UsageRecord.deployment_id == row.id,
                UsageRecord.kind == "online",  # requests answered; shadow copies are no requests
                UsageRecord.created_at >= revision.created_at,
                (following.created_at.is_(None)) | (UsageRecord.created_at < until),
            )
            .scalar_subquery()
        )
        result = await self._session.execute(
            select(revision, requests)
            .outerjoin(
                following,
                and_(
                    following.tenant_id == self._tenant_id,
                    following.deployment_id == revision.deployment_id,
                    following.number == revision.number + 1,
                ),
            )
            .where(revision.tenant_id == self._tenant_id, revision.deployment_id == row.id)
            .order_by(revision.number)
        )
        return [RevisionSummary(row=found, requests=int(count or 0)) for found, count in result.all()]


def _route(name: str, traffic: tuple[TrafficRoute, ...], model_version: str, variant: str | None) -> TrafficRoute:
    """The one route of ``model_version`` (and ``variant`` when given) in a deployment's traffic."""
    found = [
        route
        for route in traffic
        if route.model_version == model_version and (variant is None or route.variant == variant)
    ]
    if not found:
        shown = f"{model_version!r}" + (f" (variant {variant})" if variant else "")
        raise InvalidInputError(f"version {shown} is not in the traffic of deployment {name!r}")
    if len(found) > 1:
        raise InvalidInputError(
            f"deployment {name!r} serves version {model_version!r} as several variants "
            f"({', '.join(str(route.variant) for route in found)}): name one with `variant`"
        )
    return found[0]
