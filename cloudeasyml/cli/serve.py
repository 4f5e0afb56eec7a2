"""``cloudeasyml serve``: run the HTTP server."""

from __future__ import annotations

import click
import uvicorn

from cloudeasyml.cli.tenants import create_tenant_now
from cloudeasyml.errors import ConflictError
from cloudeasyml.settings import load_settings

__all__ = ("serve",)

DEMO_TENANT = "demo"


def _print_demo(base: str, database_url: str) -> None:
    try:
        new = create_tenant_now(database_url, DEMO_TENANT, "owner@demo.local")
    except ConflictError:
        click.echo(
            "demo tenant exists; its owner key was printed on first run (new tenant: cloudeasyml tenants create)"
        )
        return
    key = new.key
    click.secho(f"demo tenant created; owner key (shown once): {key}", fg="green")
    click.echo(
        f"""try it:
  curl -s -H 'Authorization: Bearer {key}' {base}/models
  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"modelName": "housing", "name": "housing"}}' {base}/deployments
  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"deploymentId": "<id from above>", "inputs": [<exampleInput from /models/housing>]}}' {base}/predict
  curl -s -H 'Authorization: Bearer {key}' {base}/usage"""
    )


@click.command()
@click.option("--host", default=None, help="Bind address (CLOUDEASYML_SERVER__HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CLOUDEASYML_SERVER__PORT, default 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (CLOUDEASYML_SERVER__WORKERS, default 1).")
@click.option("--demo", is_flag=True, help="Create a 'demo' tenant on first run and print its owner key.")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Serve the API with uvicorn. Run `cloudeasyml db upgrade` first."""
    settings = load_settings()
    host = host or settings.server.host
    port = port or settings.server.port
    base = f"http://{host}:{port}"
    if demo:
        _print_demo(base, settings.database_url)
    click.echo(f"CloudEasyML on {base}  (API docs: {base}/schema, Swagger UI: {base}/schema/swagger)")
    uvicorn.run(
        "cloudeasyml.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.server.workers,
        log_level="warning",
        access_log=False,
    )
