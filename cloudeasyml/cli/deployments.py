"""``cloudeasyml deployments``: a tenant's deployments over HTTP, for operators scripting rollouts.

Unlike ``tenants`` (which writes the database directly), these commands call a running server with an API key, as
any client does: the server validates, warms the new revision before it serves, and tells its other processes.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from typing import Any

import click
import httpx
import msgspec

__all__ = ("deployments",)

DEFAULT_URL = "http://127.0.0.1:8000"


class _Client:
    """The server's deployments API with one key; a problem answer becomes a ``click.ClickException``."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"{method} {self._http.base_url}{path}: {exc}") from exc
        if response.status_code >= 400:
            raise _Problem(response)
        return response.json() if response.content else None

    def deployment_id(self, ref: str) -> str:
        """A deployment's id from its id or its name."""
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        for deployment in self.call("GET", "/deployments"):
            if deployment["name"] == ref:
                return str(deployment["id"])
        raise click.ClickException(f"no deployment named {ref!r}")


class _Problem(click.ClickException):
    """A problem-details answer: printed whole (JSON) on stderr, exit status 1."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            self.problem = response.json()
        except ValueError:
            self.problem = {"status": response.status_code, "detail": response.text}
        title = self.problem.get("title", "Error") if isinstance(self.problem, dict) else "Error"
        detail = self.problem.get("detail", "") if isinstance(self.problem, dict) else str(self.problem)
        super().__init__(f"{response.status_code} {title}: {detail}")

    def show(self, file: Any = None) -> None:
        click.echo(msgspec.json.encode(self.problem).decode(), err=True)
        super().show(file)


def _options(ctx: click.Context) -> dict[str, Any]:
    """The ``deployments`` group's options (``--url``, ``--key``, ``--json``, ``--timeout``)."""
    return ctx.parent.params if ctx.parent is not None else {}


def _client(ctx: click.Context) -> _Client:
    options = _options(ctx)
    if not options.get("key"):
        raise click.UsageError("an API key is needed: --key or CLOUDEASYML_API_KEY")
    return _Client(options["url"], options["key"], options["timeout"])


def _as_json(ctx: click.Context) -> bool:
    return bool(_options(ctx).get("as_json"))


def _routes(traffic: Sequence[dict[str, Any]]) -> str:
    """A split as one cell: ``1.0.0=90 1.1.0=10 1.0.0/int8=5(shadow)``."""
    cells = []
    for route in traffic:
        name = route["modelVersion"] + (f"/{route['variant']}" if route.get("variant") else "")
        cells.append(f"{name}={route['weight']}" + ("(shadow)" if route.get("mode") == "shadow" else ""))
    return " ".join(cells)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _show(ctx: click.Context, value: Any, table: Any) -> None:
    if _as_json(ctx):
        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    else:
        table(value)


def _deployment_table(items: list[dict[str, Any]]) -> None:
    _table(
        [
            [d["id"], d["name"], d["modelName"], str(d["revision"]), d["config"]["variant"], _routes(d["traffic"])]
            + ["yes" if d["loaded"] else "no"]
            for d in items
        ],
        ["ID", "NAME", "MODEL", "REVISION", "VARIANT", "TRAFFIC", "LOADED"],
    )


def _revision_table(items: list[dict[str, Any]]) -> None:
    def changed(changes: dict[str, Any]) -> str:
        parts = [f"modelVersion {c['from']}->{c['to']}" for k, c in changes.items() if k == "modelVersion"]
        parts += [f"{name} {c['from']}->{c['to']}" for name, c in changes.get("config", {}).items()]
        if "traffic" in changes:
            parts.append(f"traffic {_routes(changes['traffic']['from'])} -> {_routes(changes['traffic']['to'])}")
        return "; ".join(parts) or "-"

    _table(
        [
            [
                ("*" if r["current"] else " ") + str(r["number"]),
                r["action"],
                r["createdAt"],
                r["createdByKeyId"] or "-",
                str(r["requests"]),
                _routes(r["traffic"]),
                changed(r["changes"]),
            ]
            for r in items
        ],
        ["REV", "ACTION", "CREATED", "BY KEY", "REQUESTS", "TRAFFIC", "CHANGES"],
    )


def _json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from exc


_EXAMPLE = """\b
A canary rollout, scripted (NEW: a version made by `cloudeasyml train`):
  export CLOUDEASYML_API_KEY=sk_...
  cloudeasyml deployments update housing-prod --traffic \\
    '[{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": "'$NEW'", "weight": 10}]'
  cloudeasyml deployments revisions housing-prod
  cloudeasyml deployments promote housing-prod --model-version $NEW   # or: abort ...
  cloudeasyml deployments rollback housing-prod                       # undo the last change
"""


@click.group(epilog=_EXAMPLE)
@click.option(
    "--url", envvar="CLOUDEASYML_URL", default=DEFAULT_URL, show_default=True, help="The server (or CLOUDEASYML_URL)."
)
@click.option("--key", envvar="CLOUDEASYML_API_KEY", help="An API key of the tenant (or CLOUDEASYML_API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON instead of a table.")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    help="Seconds to wait for an answer (a change waits for the new revision to load).",
)
def deployments(url: str, key: str | None, as_json: bool, timeout: float) -> None:
    """A tenant's deployments on a running server: list, read, change, roll back, promote, abort.

    DEPLOYMENT is a deployment's id or name. Errors print the server's problem details (JSON) on stderr and exit
    with status 1.
    """


@deployments.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """The tenant's deployments, newest first."""
    _show(ctx, _client(ctx).call("GET", "/deployments"), _deployment_table)


@deployments.command("get")
@click.argument("deployment")
@click.pass_context
def get(ctx: click.Context, deployment: str) -> None:
    """One deployment."""
    client = _client(ctx)
    _show(ctx, client.call("GET", f"/deployments/{client.deployment_id(deployment)}"), lambda d: _deployment_table([d]))


@deployments.command("revisions")
@click.argument("deployment")
@click.pass_context
def revisions(ctx: click.Context, deployment: str) -> None:
    """Every revision: who made it, when, what changed, and the requests it served (* marks the current)."""
    client = _client(ctx)
    _show(ctx, client.call("GET", f"/deployments/{client.deployment_id(deployment)}/revisions"), _revision_table)


@deployments.command("update")
@click.argument("deployment")
@click.option("--model-version", help="Serve this version alone (drops a split).")
@click.option("--variant", type=click.Choice(["float", "optimized", "int8"]), help="The graph that serves.")
@click.option("--config", "config", help="Config overrides as JSON, e.g. '{\"maxBatchSize\": 64}'.")
@click.option("--traffic", help='A whole new split as JSON, e.g. \'[{"modelVersion": "1.0.0", "weight": 90}, ...]\'.')
@click.pass_context
def update(
    ctx: click.Context,
    deployment: str,
    model_version: str | None,
    variant: str | None,
    config: str | None,
    traffic: str | None,
) -> None:
    """Change DEPLOYMENT (a new revision, warmed before it serves); nothing to change makes no revision."""
    body = {
        "modelVersion": model_version,
        "variant": variant,
        "config": _json_option(config, "--config"),
        "traffic": _json_option(traffic, "--traffic"),
    }
    body = {name: value for name, value in body.items() if value is not None}
    if not body:
        raise click.UsageError("nothing to change: give --model-version, --variant, --config or --traffic")
    client = _client(ctx)
    answer = client.call("PATCH", f"/deployments/{client.deployment_id(deployment)}", body)
    _show(ctx, answer, lambda d: _deployment_table([d]))


@deployments.command("rollback")
@click.argument("deployment")
@click.option("--revision", type=click.IntRange(min=1), help="The revision to go back to (default: the previous).")
@click.pass_context
def rollback(ctx: click.Context, deployment: str, revision: int | None) -> None:
    """Make a new revision equal to an earlier one (same version, config and traffic)."""
    client = _client(ctx)
    body = {"revision": revision} if revision is not None else None
    answer = client.call("POST", f"/deployments/{client.deployment_id(deployment)}/rollback", body)
    _show(ctx, answer, lambda d: _deployment_table([d]))


def _route_command(action: str, help_text: str) -> None:
    @deployments.command(action, help=help_text)
    @click.argument("deployment")
    @click.option("--model-version", required=True, help="The route's version.")
    @click.option(
        "--variant",
        type=click.Choice(["float", "optimized", "int8"]),
        help="The route's variant (when the deployment serves the version as several).",
    )
    @click.pass_context
    def command(ctx: click.Context, deployment: str, model_version: str, variant: str | None) -> None:
        client = _client(ctx)
        body = {"modelVersion": model_version, **({"variant": variant} if variant else {})}
        answer = client.call("POST", f"/deployments/{client.deployment_id(deployment)}/{action}", body)
        _show(ctx, answer, lambda d: _deployment_table([d]))


_route_command("promote", "Give one version of DEPLOYMENT's traffic all of it; every other route is removed.")
_route_command(
    "abort", "Remove one version from DEPLOYMENT's traffic; its weight goes to the first live route that remains."
)
