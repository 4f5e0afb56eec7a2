"""``POST /feedback``: the ground truth of an answered request."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, post
from litestar.params import Body

from cloudeasyml.api.auth import requires_any_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.domain.feedback import FeedbackCreate, FeedbackRead, FeedbackService

__all__ = ("FeedbackController",)


class FeedbackController(Controller):
    """Feedback on the caller's tenant's answers (``feedback`` is scoped to it: see ``api.deps``)."""

    path = "/feedback"
    tags = ["Experiments"]
    dependencies = MANAGEMENT

    @post(
        "/",
        summary="Report the true label or value of an answered request",
        guards=[requires_any_scope("feedback:write", "predict")],
        dependencies=WRITES,
        status_code=201,
    )
    async def give_feedback(
        self, feedback: Injected[FeedbackService], data: Annotated[FeedbackCreate, Body()]
    ) -> Response[FeedbackRead]:
        """Record the truth of the answer ``requestId`` (its ``label`` for a classifier, its ``value`` otherwise; a
        list with one per item for a request of several items), for the experiment report's quality figures.

        201 with the stored feedback; the same feedback again: 200 with the same row; other feedback for a request that
        has some: 409 (feedback is written once). An id that is unknown, another tenant's, or answered before the
        retention period (``outcomes.retention_days``) is a 404.
        """
        stored, created = await feedback.record(data)
        return Response(stored, status_code=201 if created else 200)
