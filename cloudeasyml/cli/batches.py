"""``cloudeasyml batches``: submit a JSON Lines file as a batch job, follow it, download its results (over HTTP,
with an API key), and ``cloudeasyml worker``: run batch workers without serving HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec

from cloudeasyml.settings import load_settings

__all__ = ("batches", "worker")

FINAL = ("completed", "failed", "cancelled", "expired")
_URL = click.option(
    "--url",
    envvar="CLOUDEASYML_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The server ($CLOUDEASYML_URL).",
)
_KEY = click.option("--api-key", envvar="CLOUDEASYML_API_KEY", required=True, help="An API key ($CLOUDEASYML_API_KEY).")


def _client(url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"
        )
    return response.json() if response.content else None


def _summary(job: dict[str, Any]) -> str:
    counts = job["counts"]
    line = f"{job['id']}  {job['status']}  {counts['completed']} done, {counts['failed']} failed of {counts['total']}"
    if job.get("message"):
        line += f"  ({job['message']})"
    return line


def _follow(client: httpx.Client, job: dict[str, Any], interval: float) -> dict[str, Any]:
    """Show a progress bar until the job ends; the job as it ended."""
    total = max(1, job["counts"]["total"])
    shown = 0
    with click.progressbar(length=total, label=job["id"], file=sys.stderr) as bar:
        while True:
            counts = job["counts"]
            done = counts["completed"] + counts["failed"]
            bar.update(done - shown)
            shown = done
            if job["status"] in FINAL:
                return job
            time.sleep(interval)
            job = _check(client.get(f"/batches/{job['id']}"))


@click.group()
def batches() -> None:
    """Batch jobs: run every line of a JSON Lines file on a deployment, in the background, at the batch price.

    \b
    Each line: {"input": <one input of the model>, "customId": "optional id"}

    \b
    Example:
      cloudeasyml batches submit points.jsonl --deployment <id> --wait
      cloudeasyml batches download <batch id> -o results.jsonl
    """  # noqa: D301 - "\b" (a backspace) keeps click from rewrapping the paragraph


@batches.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--deployment", "deployment_id", required=True, help="The deployment's id.")
@click.option("--window", default=None, help="Completion window in hours, e.g. 24h (default: the server's).")
@click.option("--wait/--no-wait", default=False, help="Follow the job with a progress bar until it ends.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls with --wait.")
@_URL
@_KEY
def submit(
    file: Path, deployment_id: str, window: str | None, wait: bool, interval: float, url: str, api_key: str
) -> None:
    """Upload FILE and start a batch job on a deployment; prints the job's id."""
    with _client(url, api_key) as client, file.open("rb") as handle:
        uploaded = _check(
            client.post(
                "/files", content=handle, params={"filename": file.name}, headers={"Content-Type": "application/jsonl"}
            )
        )
        body: dict[str, Any] = {"deploymentId": deployment_id, "inputFileId": uploaded["id"]}
        if window:
            body["completionWindow"] = window
        job = _check(client.post("/batches", json=body))
        click.echo(job["id"])
        if wait:
            job = _follow(client, job, interval)
            click.echo(_summary(job), err=True)
            if job["status"] != "completed":
                sys.exit(1)


@batches.command()
@click.argument("batch_id")
@click.option("--wait/--no-wait", default=False, help="Follow the job with a progress bar until it ends.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_URL
@_KEY
def status(batch_id: str, wait: bool, interval: float, as_json: bool, url: str, api_key: str) -> None:
    """Show a job's status and counts."""
    with _client(url, api_key) as client:
        job = _check(client.get(f"/batches/{batch_id}"))
        if wait:
            job = _follow(client, job, interval)
    click.echo(msgspec.json.format(msgspec.json.encode(job)).decode() if as_json else _summary(job))


@batches.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@click.option("--errors", is_flag=True, help="Download the error file instead of the output file.")
@_URL
@_KEY
def download(batch_id: str, output: Path | None, errors: bool, url: str, api_key: str) -> None:
    """Download an ended job's output (one line per completed input line, in input order) or its errors."""
    with _client(url, api_key) as client:
        job = _check(client.get(f"/batches/{batch_id}"))
        file_id = job["errorFileId"] if errors else job["outputFileId"]
        if file_id is None:
            what = "no failed lines" if errors and job["status"] in FINAL else f"not ended yet ({job['status']})"
            raise click.ClickException(f"batch {batch_id} has {what}")
        with client.stream("GET", f"/files/{file_id}/content") as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            sink = output.open("wb") if output else sys.stdout.buffer
            try:
                for block in response.iter_bytes():
                    sink.write(block)
            finally:
                if output:
                    sink.close()


@click.command()
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Chunks run at once (default: CLOUDEASYML_BATCH__WORKERS, at least 1).",
)
def worker(concurrency: int | None) -> None:
    """Run batch workers only (no HTTP): for pods that take batch work off the serving pods. Uses the same settings,
    database and artifact directory as ``cloudeasyml serve``; stops cleanly on SIGTERM/SIGINT (its chunks go back).
    """
    from cloudeasyml.api.problems import problem_body
    from cloudeasyml.services import build_services

    settings = load_settings()
    workers = concurrency if concurrency is not None else max(1, settings.batch.workers)
    settings = msgspec.structs.replace(settings, batch=msgspec.structs.replace(settings.batch, workers=workers))
    # A batch pod serves no online traffic: its models load when a job needs them, not every eagerLoad one at start.
    settings = msgspec.structs.replace(
        settings, runtime=msgspec.structs.replace(settings.runtime, eager_load_on_start=False)
    )

    async def run() -> None:
        services = build_services(settings, describe_error=problem_body)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await services.start()
        click.echo(f"batch worker running {workers} chunk(s) at once; Ctrl-C to stop", err=True)
        try:
            await stop.wait()
        finally:
            await services.stop()

    asyncio.run(run())
