"""The Litestar application."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ControllerRouterHandler

import cloudeasyml
from cloudeasyml.api.auth import ApiKeyMiddleware
from cloudeasyml.api.console import ConsoleController
from cloudeasyml.api.controllers.api_keys import ApiKeyController
from cloudeasyml.api.controllers.audit import AuditController
from cloudeasyml.api.controllers.batches import BatchController, FileController
from cloudeasyml.api.controllers.deployments import DeploymentController
from cloudeasyml.api.controllers.embeddings import EmbeddingsController
from cloudeasyml.api.controllers.experiment import ExperimentController
from cloudeasyml.api.controllers.feedback import FeedbackController
from cloudeasyml.api.controllers.health import HealthController
from cloudeasyml.api.controllers.inference import PREDICTION_ROUTES
from cloudeasyml.api.controllers.invoices import InvoiceController
from cloudeasyml.api.controllers.metrics import MetricsController
from cloudeasyml.api.controllers.models import ModelController
from cloudeasyml.api.controllers.openai_batches import OpenAIBatchController, OpenAIFileController
from cloudeasyml.api.controllers.operator import OperatorTenantController
from cloudeasyml.api.controllers.plans import PlanController
from cloudeasyml.api.controllers.usage import UsageController
from cloudeasyml.api.controllers.v2 import OpenInferenceController
from cloudeasyml.api.controllers.webhooks import WebhookController
from cloudeasyml.api.fast_path import PredictFastPath, fast_path_blockers
from cloudeasyml.api.platform_app import PlatformApp
from cloudeasyml.api.prediction_docs import document_prediction_routes
from cloudeasyml.api.problem_docs import document_problems
from cloudeasyml.api.problems import exception_handlers, problem_body
from cloudeasyml.api.request import PlatformRequest
from cloudeasyml.api.request_log import configure_access_log
from cloudeasyml.core.heap import freeze_startup_objects
from cloudeasyml.plugins.manager import PluginManager
from cloudeasyml.services import build_services
from cloudeasyml.settings import Settings, load_settings

__all__ = ("create_app",)

log = logging.getLogger(__name__)

ROUTES: list[ControllerRouterHandler] = [
    HealthController,
    ModelController,
    DeploymentController,
    ExperimentController,
    *PREDICTION_ROUTES,
    FeedbackController,
    ApiKeyController,
    UsageController,
    InvoiceController,
    EmbeddingsController,
    MetricsController,
    OpenInferenceController,
    WebhookController,
    FileController,
    BatchController,
    OpenAIFileController,
    OpenAIBatchController,
    OperatorTenantController,
    AuditController,
    PlanController,
    ConsoleController,
]


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="CloudEasyML",
        version=cloudeasyml.__version__,
        description="Multi-tenant model serving with API keys, metering and billing. "
        "Authenticate with `Authorization: Bearer <key>`.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={"ApiKey": SecurityScheme(type="http", scheme="bearer", description="sk_….<secret>")}
        ),
        security=[{"ApiKey": []}],
    )


GIL_SWITCH_INTERVAL_S = 0.001
"""How long a thread holding the interpreter lock keeps it from the event loop, at most (Python's default: 5 ms).
A plugin's Python pre- or post-processing in a worker thread (a tokenizer, ``from_outputs`` of a large batch) holds
the lock; the event loop waits for it after each system call, so with the default a request of another tenant
waited up to 5 ms several times over (``/health`` p99 32-41 ms under the largest sentiment requests, housing
predictions 82-89 ms; with 1 ms: see docs/security.md)."""


def create_app(
    settings: Settings | None = None, plugin_manager: PluginManager | None = None, **litestar_options: Any
) -> PlatformApp:
    """Build the app. Tests pass ``settings`` and a ``plugin_manager`` instead of patching the environment.

    ``litestar_options`` are Litestar's own (``cors_config``, ``allowed_hosts``, hooks, ``plugins``, ...), for an
    embedder's needs; ``middleware`` given there runs outside the platform's ``ApiKeyMiddleware``. Any option the
    ``POST /predict`` fast path is not known to be equivalent to leaves the fast path out (see
    ``cloudeasyml.api.fast_path``).
    """
    settings = settings if settings is not None else load_settings()
    services = build_services(settings, plugin_manager, describe_error=problem_body)
    configure_access_log(settings.server)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await services.start()
        freeze_startup_objects()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            yield
        finally:
            await services.stop()

    options: dict[str, Any] = {
        "route_handlers": ROUTES,
        "exception_handlers": exception_handlers,
        "state": State({"services": services}),
        "openapi_config": _openapi(),
        "request_max_body_size": settings.server.max_body_bytes,
        "request_class": PlatformRequest,
        "debug": False,
        **litestar_options,
    }
    options["middleware"] = [*litestar_options.get("middleware", ()), ApiKeyMiddleware]
    options["lifespan"] = [lifespan, *litestar_options.get("lifespan", ())]
    app = PlatformApp(**options)
    document_prediction_routes(app)
    document_problems(app)
    app.fast_path_blockers = tuple(fast_path_blockers(app, settings.server))
    if app.fast_path_blockers:
        log.info("POST /predict goes through Litestar's router: %s", "; ".join(app.fast_path_blockers))
    else:
        app.entry = PredictFastPath(app, app.litestar_entry)
    return app
