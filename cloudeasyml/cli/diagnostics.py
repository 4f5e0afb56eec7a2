"""The checks of ``cloudeasyml doctor``: each looks at one thing a server needs, for real, and says what to do when
it is wrong. Nothing here changes anything (the artifact-directory check writes a file and removes it).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from cloudeasyml.db.engine import create_engine
from cloudeasyml.db.models import Deployment
from cloudeasyml.migrations_path import alembic_config
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.machine import memory_limit_bytes
from cloudeasyml.runtime.probe import probe_providers
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.services import build_catalog_from_settings, memory_budget_bytes
from cloudeasyml.settings import Settings

__all__ = ("CHECKS", "Finding", "Status", "run_checks")

Status = Literal["OK", "WARN", "FAIL"]

MIB = 2**20
DISK_WARN_BYTES = 1024 * MIB
"""Less free than this where exports and the usage journal are written: a warning (one export can take hundreds of
MiB)."""
DISK_FAIL_BYTES = 100 * MIB
"""Less free than this: a failure (the journal and the next export will not fit)."""


class Finding(msgspec.Struct, frozen=True):
    """One result: what was checked, how it went, and what to do about it when it is not OK."""

    check: str
    status: Status
    summary: str
    fix: str | None = None


@dataclass
class Context:
    """What the checks learn and share, in order (the database check counts deployments asking for CUDA)."""

    settings: Settings
    catalog: ModelCatalog | None = None
    cuda_deployments: int | None = None
    """Deployments whose config asks for ``cuda``: None when the database could not be read."""


def _safe_url(url: str) -> str:
    """A URL without its password (secrets never reach terminals or logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (Redis): hide the password by hand
        parts = urlsplit(url)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[1]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return url


def _scrub(message: str, url: str) -> str:
    """An error message with the URL's password taken out, should the driver have quoted it."""
    password = urlsplit(url.replace("+asyncpg", "")).password
    return message.replace(password, "***") if password else message


def _known_revisions() -> tuple[frozenset[str], frozenset[str]]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(scripts.get_heads()), frozenset(s.revision for s in scripts.walk_revisions())


async def _read_database(url: str, timeout: float) -> tuple[set[str], int | None]:
    """The schema's revisions and, when the deployment table is there, how many deployments ask for CUDA."""
    engine = create_engine(url, pool_size=1, connect_timeout=timeout)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            current: set[str] = set()
            if "alembic_version" in tables:
                current = {row[0] for row in await connection.execute(text("SELECT version_num FROM alembic_version"))}
            cuda = None
            if "deployment" in tables:
                # An operator's view across tenants: only the device of each config is looked at.
                configs = await connection.execute(select(Deployment.config))
                cuda = sum(1 for (config,) in configs if isinstance(config, dict) and config.get("device") == "cuda")
            return current, cuda
    finally:
        await engine.dispose()


def check_database(context: Context) -> list[Finding]:
    """The database answers, and its schema is at this release's migration head."""
    settings = context.settings
    url = settings.database_url
    shown = _safe_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            return [
                Finding(
                    "database",
                    "FAIL",
                    f"no SQLite database at {path}",
                    "run `cloudeasyml db upgrade` to create it, or point CLOUDEASYML_DATABASE_URL at yours",
                )
            ]
    timeout = settings.database.connect_timeout_seconds
    try:
        current, context.cuda_deployments = asyncio.run(asyncio.wait_for(_read_database(url, timeout), timeout + 5))
    except Exception as exc:  # any failure to connect or read means the server could not either
        reason = _scrub(f"{type(exc).__name__}: {exc}".strip().rstrip(":"), url)
        return [
            Finding(
                "database",
                "FAIL",
                f"cannot reach {shown}: {reason}",
                "check that the database server is running and reachable from here, and CLOUDEASYML_DATABASE_URL "
                "(host, port, name, user, password)",
            )
        ]
    found = [Finding("database", "OK", f"{shown} answers")]
    heads, known = _known_revisions()
    if current == heads:
        found.append(Finding("migrations", "OK", f"schema at head {', '.join(sorted(heads))}"))
    elif not current:
        found.append(
            Finding("migrations", "FAIL", "the database has no schema (never migrated)", "run `cloudeasyml db upgrade`")
        )
    elif not current & known:
        found.append(
            Finding(
                "migrations",
                "WARN",
                f"schema at {', '.join(sorted(current))}, from a newer release than this one "
                f"(head {', '.join(sorted(heads))})",
                "upgrade cloudeasyml to the release that migrated it; this one may not understand its tables",
            )
        )
    else:
        found.append(
            Finding(
                "migrations",
                "FAIL",
                f"schema at {', '.join(sorted(current))}, behind this release's head {', '.join(sorted(heads))}",
                "back the database up, then run `cloudeasyml db upgrade`",
            )
        )
    return found


def check_plugins(context: Context) -> list[Finding]:
    """Every installed plugin loads and its models are valid (else: which failed, and why)."""
    catalog = context.catalog = build_catalog_from_settings(context.settings)
    found: list[Finding] = []
    names = [entry.model.name for entry in catalog]
    if names:
        found.append(Finding("plugins", "OK", f"{len(names)} model(s) installed: {', '.join(names)}"))
    else:
        found.append(
            Finding(
                "plugins",
                "WARN" if not catalog.failures else "FAIL",
                "no models installed",
                "pip install a model plugin (e.g. plugin_packages/cloudeasyml-housing); `cloudeasyml plugins list`",
            )
        )
    for failure in catalog.failures:
        found.append(
            Finding(
                "plugins",
                "FAIL",
                f"plugin {failure.plugin!r} ({failure.source}) failed: {failure.error}",
                f"fix or reinstall the package that provides it, or skip it with "
                f"CLOUDEASYML_PLUGINS__BLOCKED={failure.plugin}",
            )
        )
    return found


def check_artifacts(context: Context) -> list[Finding]:
    """Every version of every installed model has its exported graph, or can be exported here on first use."""
    settings = context.settings
    catalog = context.catalog if context.catalog is not None else build_catalog_from_settings(settings)
    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path), export_on_load=settings.runtime.export_on_load)
    found: list[Finding] = []
    ready = 0
    for entry in catalog:
        model = entry.model
        for version in resolver.versions(model):
            try:
                graph = resolver.find(model, version)
            except Exception as exc:  # unreadable weights or store: this version cannot serve
                found.append(
                    Finding(
                        "artifacts",
                        "FAIL",
                        f"{model.name} {version}: {type(exc).__name__}: {exc}",
                        f"check the artifact store {settings.artifact_path}",
                    )
                )
                continue
            if graph is not None:
                ready += 1
            elif resolver.exports_on_load():
                found.append(
                    Finding(
                        "artifacts",
                        "WARN",
                        f"{model.name} {version} is not exported; its first request will export it (torch is "
                        "installed here), and wait for it",
                        f"run `cloudeasyml export {model.name}` ahead of serving",
                    )
                )
            else:
                why = "export on first use is off" if not settings.runtime.export_on_load else "torch is not installed"
                found.append(
                    Finding(
                        "artifacts",
                        "FAIL",
                        f"{model.name} {version} has no exported graph in {settings.artifact_path} and {why}: its "
                        "deployments answer 503",
                        f"run `cloudeasyml export {model.name}` where torch is installed (pip install "
                        "'cloudeasyml[export]') with the same CLOUDEASYML_RUNTIME__ARTIFACT_DIR",
                    )
                )
    if not found:
        found.append(Finding("artifacts", "OK", f"{ready} model version(s) exported in {settings.artifact_path}"))
    return found


def check_onnxruntime(context: Context) -> list[Finding]:
    """The providers of onnxruntime, and whether a session asked for CUDA really gets it."""
    report = probe_providers()
    if report.cuda_loads:
        loaded = f"onnxruntime {report.version}: CUDA loads ({report.session_providers[0]})"
        return [Finding("onnxruntime", "OK", loaded)]
    if not report.cuda_listed:
        why = "this onnxruntime build has no CUDA provider"
    elif report.error:
        why = f"a session could not be opened: {report.error}"
    else:
        why = "listed, but a session on it fell back to the CPU: no GPU, or its CUDA/cuDNN libraries did not load"
    catalog = context.catalog
    models = [e.model.name for e in catalog if e.model.serving.device == "cuda"] if catalog is not None else []
    asking = []
    if models:
        asking.append(f"model default(s) {', '.join(models)}")
    if context.cuda_deployments:
        asking.append(f"{context.cuda_deployments} deployment(s)")
    summary = f"onnxruntime {report.version}, providers {', '.join(report.available)}: CUDA not available, {why}"
    if asking:
        return [
            Finding(
                "onnxruntime",
                "FAIL",
                f"{summary}; yet {' and '.join(asking)} ask for device cuda",
                "install the CUDA and cuDNN versions onnxruntime-gpu needs (onnxruntime's log above names the missing "
                "library), or set those deployments' device to auto or cpu",
            )
        ]
    return [Finding("onnxruntime", "OK", f"{summary}; serving on the CPU")]


async def _ping(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


def check_redis(context: Context) -> list[Finding]:
    """Redis answers, when one is configured."""
    url = context.settings.redis.url
    if not url:
        return [Finding("redis", "OK", "not configured: rate limits and quotas are counted by each process alone")]
    try:
        asyncio.run(_ping(url))
    except Exception as exc:  # refused, timed out, wrong password: the servers would fall back to local counts
        return [
            Finding(
                "redis",
                "FAIL",
                f"cannot reach {_safe_url(url)}: {type(exc).__name__}: {_scrub(str(exc), url)}",
                "start Redis or correct CLOUDEASYML_REDIS__URL (unset it to run one process without Redis)",
            )
        ]
    return [Finding("redis", "OK", f"{_safe_url(url)} answers")]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_artifact_dir(context: Context) -> list[Finding]:
    """The artifact directory is writable (exports and variants are written there), or can be created."""
    path = context.settings.artifact_path
    target = path if path.exists() else _nearest_existing(path)
    fix = (
        f"make {path} writable by the user running cloudeasyml ({getpass.getuser()}), or point "
        "CLOUDEASYML_RUNTIME__ARTIFACT_DIR elsewhere"
    )
    if not target.is_dir():
        return [Finding("artifact_dir", "FAIL", f"{path}: {target} is not a directory", fix)]
    try:
        # A real write, not os.access: root passes every permission check, a read-only mount does not.
        handle, name = tempfile.mkstemp(prefix=".doctor-", dir=target)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        return [Finding("artifact_dir", "FAIL", f"{path} is not writable: {exc.strerror or exc}", fix)]
    where = "writable" if target == path else f"does not exist yet; {target} is writable, so it will be created"
    return [Finding("artifact_dir", "OK", f"{path} {where}")]


def check_disk(context: Context) -> list[Finding]:
    """Free space where the server writes: the artifact store and the usage journal."""
    settings = context.settings
    paths = {_nearest_existing(settings.artifact_path), _nearest_existing(settings.journal_path)}
    found: list[Finding] = []
    for path in sorted(paths):
        free = shutil.disk_usage(path).free
        status: Status = "FAIL" if free < DISK_FAIL_BYTES else "WARN" if free < DISK_WARN_BYTES else "OK"
        fix = None if status == "OK" else f"free space on the file system of {path}, or move the directory"
        found.append(Finding("disk", status, f"{free / 2**30:.1f} GiB free at {path}", fix))
    return found


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(context: Context) -> list[Finding]:
    """The loaded models' memory budget against what the process may use and what is free now."""
    settings = context.settings
    limit = memory_limit_bytes()
    budget = memory_budget_bytes(settings, limit)
    workers = max(1, settings.server.workers)
    total = budget * workers
    knob = "CLOUDEASYML_RUNTIME__MEMORY_BUDGET_MB or __MEMORY_BUDGET_FRACTION"
    if not budget:
        return [
            Finding(
                "memory",
                "WARN",
                "no memory budget: loaded models are never unloaded to make room, and may outgrow the machine",
                f"set {knob}",
            )
        ]
    summary = f"budget {budget / MIB:.0f} MiB x {workers} worker(s)"
    if limit is not None and total > limit:
        return [
            Finding(
                "memory",
                "FAIL",
                f"{summary} is more than the {limit / MIB:.0f} MiB this process may use: it would be killed before "
                "the budget unloads anything",
                f"lower {knob}, or give the container more memory",
            )
        ]
    available = _available_memory()
    if available is not None and total > available:
        return [
            Finding(
                "memory",
                "WARN",
                f"{summary} is more than the {available / MIB:.0f} MiB free now",
                f"free memory on this machine or lower {knob}",
            )
        ]
    free = f", {available / MIB:.0f} MiB free now" if available is not None else ""
    limit_text = f" of a {limit / MIB:.0f} MiB limit" if limit is not None else ""
    return [Finding("memory", "OK", f"{summary}{limit_text}{free}")]


CHECKS: tuple[tuple[str, Callable[[Context], list[Finding]]], ...] = (
    ("database", check_database),
    ("plugins", check_plugins),
    ("artifacts", check_artifacts),
    ("onnxruntime", check_onnxruntime),
    ("redis", check_redis),
    ("artifact_dir", check_artifact_dir),
    ("disk", check_disk),
    ("memory", check_memory),
)
"""In order: the plugins check builds the catalog the artifacts and onnxruntime checks read; the database check
counts the deployments asking for CUDA."""


def run_checks(settings: Settings, progress: Callable[[str], None] | None = None) -> list[Finding]:
    """Every check's findings, in order; a check that breaks is a failure of its own, never a crash."""
    context = Context(settings)
    findings: list[Finding] = []
    for name, check in CHECKS:
        if progress is not None:
            progress(name)
        try:
            findings.extend(check(context))
        except Exception as exc:  # a bug or a surprise in one check must not hide the others' results
            findings.append(Finding(name, "FAIL", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings
