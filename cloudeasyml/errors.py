"""Domain errors. They know nothing of HTTP; ``api/problems.py`` maps each to a status and a problem detail."""

from __future__ import annotations

__all__ = (
    "AuthenticationError",
    "CloudEasyMLError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "DeploymentUnloadedError",
    "ExportError",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "InvalidInputError",
    "MalformedRequestError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NotFoundError",
    "OverloadedError",
    "ParityError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PluginError",
    "RateLimitedError",
    "RequestCapReachedError",
    "RetryLaterError",
    "RolloutFailedError",
    "SpendCapReachedError",
    "StorageQuotaExceededError",
    "TenantLimitReachedError",
    "TenantSuspendedError",
    "UsageJournalError",
)


class CloudEasyMLError(Exception):
    """Base of every error the platform raises on purpose."""

    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AuthenticationError(CloudEasyMLError):
    """No credentials, or credentials that are malformed, unknown, revoked or expired."""

    title = "Unauthorized"


class PermissionDeniedError(CloudEasyMLError):
    """The caller is authenticated but its key lacks a scope the operation needs."""

    title = "Forbidden"


class TenantSuspendedError(PermissionDeniedError):
    """The caller's tenant is suspended by the platform operator: every key of it is refused until it is resumed."""


class NotFoundError(CloudEasyMLError):
    """No such resource for this tenant (another tenant's resource is reported the same way)."""

    title = "Not Found"


class ModelNotFoundError(NotFoundError):
    """No installed model plugin has that name (or version)."""


class ConflictError(CloudEasyMLError):
    """The request conflicts with existing state, e.g. a duplicate deployment name."""

    title = "Conflict"


class IdempotencyKeyReusedError(ConflictError):
    """An ``Idempotency-Key`` already used, within its window, for a request with another body, path or API key."""


class TenantLimitReachedError(ConflictError):
    """The tenant already has as many of something (deployments) as its plan allows; deleting one makes room."""


class InvalidInputError(CloudEasyMLError):
    """The request is well-formed JSON but its content is not valid for the operation."""

    title = "Unprocessable Content"


class PayloadTooLargeError(InvalidInputError):
    """An upload larger than the size limit for its kind (a batch input file: ``CLOUDEASYML_BATCH__MAX_FILE_BYTES``)."""

    title = "Content Too Large"


class StorageQuotaExceededError(ConflictError):
    """The tenant's stored files would pass its storage quota; deleting files makes room."""


class MalformedRequestError(InvalidInputError):
    """The request body is not parseable at all (e.g. not JSON)."""

    title = "Bad Request"


class RetryLaterError(CloudEasyMLError):
    """A refusal that passes: the client should retry after ``retry_after`` seconds (``Retry-After``)."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class IdempotencyKeyInUseError(ConflictError, RetryLaterError):
    """An ``Idempotency-Key`` whose first request is still running: the retry may come back once it has answered. A
    409 (the status is ``ConflictError``'s, first in the bases) with ``Retry-After``, which the Python client reads as
    "try again" for a prediction whose earlier attempt timed out.
    """


class OverloadedError(RetryLaterError):
    """A deployment's queue is full."""

    title = "Service Unavailable"


class RateLimitedError(RetryLaterError):
    """The key has used up its request rate."""

    title = "Too Many Requests"


class RequestCapReachedError(RetryLaterError):
    """The tenant has made its monthly request cap of requests (``Retry-After``: until the month ends)."""

    title = "Too Many Requests"


class SpendCapReachedError(RetryLaterError):
    """The tenant has spent its monthly spend cap (``Retry-After``: until the month ends)."""

    title = "Payment Required"


class DatabaseUnavailableError(RetryLaterError):
    """The database is down, locked or not answering in time; nothing was changed, the client may retry."""

    title = "Service Unavailable"


class UsageJournalError(CloudEasyMLError):
    """The usage journal cannot be written (disk full, read-only): a request that cannot be billed is not answered."""

    title = "Service Unavailable"


class ModelNotReadyError(CloudEasyMLError):
    """The model cannot be served right now (no artifact and no way to export it, or still loading)."""

    title = "Service Unavailable"


class RolloutFailedError(ModelNotReadyError):
    """A deployment's new revision could not be loaded or warmed: no revision was made, the old one still serves."""

    title = "Rollout Failed"


class DeploymentUnloadedError(ModelNotReadyError):
    """The deployment was unloaded (deleted, or evicted for memory) while a request was on its way to it."""


class DeadlineExceededError(CloudEasyMLError):
    """The request waited past its deadline."""

    title = "Gateway Timeout"


class PluginError(CloudEasyMLError):
    """A plugin failed to load or registered something invalid."""

    title = "Plugin Error"


class ExportError(CloudEasyMLError):
    """Export to ONNX failed or is impossible here (no torch)."""

    title = "Export Failed"


class ParityError(ExportError):
    """The exported graph's outputs differ from torch's beyond the model's tolerance."""
