"""What the audit log keeps of batch jobs, for both batch APIs (``/batches`` and OpenAI's ``/v1/batches``)."""

from __future__ import annotations

from typing import Any

from cloudeasyml.db.models import BatchJob
from cloudeasyml.domain.audit import AuditTrail, created, diff
from cloudeasyml.domain.batch.jobs import BatchService
from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = ("batch_created", "cancel_audited")


def batch_created(job: BatchJob, spec: DeploymentSpec) -> dict[str, Any]:
    """The changes of a new job: what it runs on what, and until when (its lines are not recorded)."""
    return created(
        {
            "deploymentId": spec.id,
            "deployment": spec.name,
            "modelVersion": spec.model_version,
            "inputFileId": job.input_file_id,
            "endpoint": job.endpoint,
            "expiresAt": job.expires_at,
            "metadata": job.meta,
        }
    )


async def cancel_audited(batches: BatchService, audit: AuditTrail, batch_id: str) -> BatchJob:
    """Cancel a job and record it (``batch.cancelled``, its status from and to) when its status changed."""
    before = (await batches.get(batch_id)).status
    job = await batches.cancel(batch_id)
    if job.status != before:
        audit.record("batch.cancelled", "batch", job.id, diff({"status": before}, {"status": job.status}))
    return job
