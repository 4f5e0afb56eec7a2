"""``cloudeasyml serve``: run the HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import MutableMapping
from pathlib import Path

import click
import msgspec
import uvicorn

from cloudeasyml.api.http_protocol import CoalescingHttpToolsProtocol
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.deployments import DeploymentRequest, DeploymentService
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.errors import CloudEasyMLError, ConflictError
from cloudeasyml.metering.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.services import build_catalog_from_settings
from cloudeasyml.settings import Settings, load_settings

__all__ = ("multiprocess_metrics_dir", "serve")

DEMO_TENANT = "demo"
DEMO_MODEL = "housing"


class _Demo(msgspec.Struct):
    key: str
    deployment_id: str | None
    example: object


async def _create_demo(settings: Settings) -> _Demo:
    """The demo tenant, its owner key and, when the housing plugin is installed, a housing deployment."""
    catalog = build_catalog_from_settings(settings)
    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path))
    async with one_transaction(settings.database_url) as session:
        new = await create_tenant(session, DEMO_TENANT, "owner@demo.local")
        try:
            entry = catalog.get(DEMO_MODEL)
        except CloudEasyMLError:
            return _Demo(key=new.key, deployment_id=None, example=None)
        row = await DeploymentService(session, new.tenant.id, catalog, resolver).create(
            DeploymentRequest(model_name=DEMO_MODEL, name=DEMO_MODEL)
        )
        example = msgspec.to_builtins(entry.model.example_inputs()[0])
        return _Demo(key=new.key, deployment_id=str(row.id), example=example)


def _print_demo(base: str, settings: Settings) -> None:
    try:
        demo = asyncio.run(_create_demo(settings))
    except ConflictError:
        click.echo("demo tenant exists; its owner key was printed on first run (another: cloudeasyml tenants create)")
        return
    auth = f"-H 'Authorization: Bearer {demo.key}'"
    click.secho(f"demo tenant created; owner key (shown once): {demo.key}", fg="green")
    click.echo("try it:")
    click.echo(f"  curl -s {auth} {base}/models")
    if demo.deployment_id is not None:
        body = json.dumps({"deploymentId": demo.deployment_id, "inputs": [demo.example]})
        click.echo(f"  curl -s {auth} -H 'Content-Type: application/json' -d {shlex.quote(body)} {base}/predict")
    click.echo(f"  curl -s {auth} {base}/usage")


def multiprocess_metrics_dir(settings: Settings, workers: int, environ: MutableMapping[str, str]) -> Path | None:
    """With several workers and no ``PROMETHEUS_MULTIPROC_DIR`` of the operator's, point it at a fresh
    ``CLOUDEASYML_HOME/prometheus`` (emptied: values of an earlier run must not add to this one's), so that every
    worker's metrics are summed on ``/metrics``. The workers inherit the variable (they are started after this).
    Returns the directory set up, or None (one worker, or the operator's own directory: theirs to empty).
    """
    if workers <= 1 or environ.get(MULTIPROC_ENV):
        return None
    path = settings.home_dir / "prometheus"
    prepare_multiprocess_dir(path)
    environ[MULTIPROC_ENV] = str(path)
    return path


@click.command()
@click.option("--host", default=None, help="Bind address (CLOUDEASYML_SERVER__HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CLOUDEASYML_SERVER__PORT, default 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (CLOUDEASYML_SERVER__WORKERS, default 1).")
@click.option(
    "--demo", is_flag=True, help="On first run, create a 'demo' tenant with a housing deployment and print its key."
)
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Serve the API with uvicorn. Run `cloudeasyml db upgrade` first."""
    settings = load_settings()
    host = host or settings.server.host
    port = port or settings.server.port
    base = f"http://{host}:{port}"
    if demo:
        _print_demo(base, settings)
    click.echo(
        f"CloudEasyML on {base}  (web console: {base}/console, API docs: {base}/schema, "
        f"Swagger UI: {base}/schema/swagger)"
    )
    workers = workers or settings.server.workers
    multiprocess_metrics_dir(settings, workers, os.environ)
    uvicorn.run(
        "cloudeasyml.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        # The protocol applies the other limits of settings.server (header size, count and deadline, body and
        # keep-alive timeouts, connection cap) itself; the shutdown timeout is the server's.
        http=CoalescingHttpToolsProtocol,
        # uvicorn annotates these as int but uses them as seconds for asyncio timers, where fractions work.
        timeout_keep_alive=settings.server.keep_alive_timeout_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.server.graceful_shutdown_seconds,  # type: ignore[arg-type]
    )
