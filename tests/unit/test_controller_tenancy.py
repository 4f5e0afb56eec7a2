"""Tenancy is applied in one place: ``cloudeasyml.api.deps`` builds every tenant-scoped service from the caller's
principal. A controller that reads ``tenant_id`` off a principal (or anything else), or builds a tenant-scoped
service itself, could pick a tenant by hand; this reads the controllers' source and refuses both."""

from __future__ import annotations

import ast
from pathlib import Path

import cloudeasyml.api.controllers
from cloudeasyml.api import deps

CONTROLLERS = Path(cloudeasyml.api.controllers.__file__).parent

SCOPED_SERVICES = {
    "ApiKeyService",
    "AuditLog",
    "AuditTrail",
    "BatchService",
    "DeploymentService",
    "ExperimentService",
    "FeedbackService",
    "InvoiceService",
    "RevisionService",
    "FileService",
    "UsageService",
    "WebhookEndpointService",
}
"""The services whose constructor takes a tenant id; only ``api.deps`` may build them."""


def _tenant_choices(source: str, filename: str) -> list[str]:
    """Every place in ``source`` where code reads a tenant id or builds a tenant-scoped service."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr == "tenant_id":
            found.append(f"{where} reads .tenant_id")
        elif isinstance(node, ast.Constant) and node.value in {"tenant_id", "tenantId"}:
            found.append(f"{where} names {node.value!r} (getattr, a dict key, a query)")
        elif isinstance(node, ast.Call) and _called_name(node.func) in SCOPED_SERVICES:
            found.append(f"{where} builds a tenant-scoped service")
    return found


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def test_no_controller_picks_a_tenant_itself() -> None:
    sources = sorted(CONTROLLERS.glob("*.py"))
    assert len(sources) >= 5  # the folder was found
    found = [hit for path in sources for hit in _tenant_choices(path.read_text(), path.name)]
    assert found == []


def test_the_check_catches_what_it_refuses() -> None:
    """The check itself: each way of choosing a tenant by hand is seen."""
    samples = {
        "request.user.tenant_id": "reads .tenant_id",
        "getattr(principal, 'tenant_id')": "names 'tenant_id'",
        "ApiKeyService(session, uuid.uuid4())": "builds a tenant-scoped service",
        "deployments.DeploymentService(session, tenant, catalog, resolver)": "builds a tenant-scoped service",
    }
    for code, reason in samples.items():
        hits = _tenant_choices(code, "sample.py")
        assert len(hits) == 1 and reason in hits[0], code


def test_the_providers_are_where_tenancy_is_applied() -> None:
    """``api.deps`` is the one module in ``api`` that reads the tenant off the caller, once per scoped service."""
    source = Path(deps.__file__).read_text()
    reads = [hit for hit in _tenant_choices(source, "deps.py") if "reads .tenant_id" in hit]
    assert len(reads) == len(SCOPED_SERVICES)
