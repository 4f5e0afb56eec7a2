"""``GET /deployments/{id}/experiment``: which of a deployment's versions does better."""

from __future__ import annotations

import uuid
from datetime import datetime

from litestar import Controller, get
from litestar.params import FromPath, FromQuery

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.controllers.usage import aware
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.domain.experiment import ExperimentReport, ExperimentService

__all__ = ("ExperimentController",)


class ExperimentController(Controller):
    """Experiment reports of the caller's tenant's deployments (``experiment`` is scoped to it: see ``api.deps``)."""

    path = "/deployments"
    tags = ["Experiments"]
    dependencies = MANAGEMENT

    @get(
        "/{deployment_id:uuid}/experiment",
        summary="Compare the versions a deployment serves",
        guards=[requires_scope("deployments:read")],
    )
    async def get_experiment(
        self,
        experiment: Injected[ExperimentService],
        deployment_id: FromPath[uuid.UUID],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> ExperimentReport:
        """Per version, variant and mode that served the deployment in ``[since, until)`` (ISO 8601; naive times are
        UTC; defaults: the retention period until now): requests, errors, latency percentiles, cost per 1,000 items
        and, where feedback exists, the model's quality metric with its 95 % interval; each arm against the control
        (the first live route) with a significance test, the items needed to call the observed effect, and a
        verdict; shadows against the live answers to the same requests.
        """
        return await experiment.report(
            deployment_id, aware(since, "since") if since else None, aware(until, "until") if until else None
        )
