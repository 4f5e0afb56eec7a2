"""``cloudeasyml doctor`` against real parts, each failure provoked for real: a database that is not there or one
migration behind, a plugin that raises at import, a model version with no artifact and no way to export it, an
artifact directory that cannot be written, a Redis port with nothing listening, a memory budget past the machine's,
and deployments asking for a GPU that does not load; and the all-OK case."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic import command
from click.testing import CliRunner, Result

from cloudeasyml.cli.main import cli
from cloudeasyml.db.models import Deployment
from cloudeasyml.migrations_path import alembic_config
from cloudeasyml.runtime.probe import probe_providers
from tests.conftest import REDIS_URL, db_session, new_tenant
from tests.unit.test_catalog import install_plugin

BUNDLED = "housing,sentiment,minilm"
"""Installed in the development environment with no exported graphs in a test's artifact store: blocked, so that
only the tiny model (its graph seeded in the session's store) is checked."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="doctor_env")
def fx_doctor_env(migrated_url: str, artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Settings under which every check passes: a migrated database, the tiny model installed as a real plugin
    distribution with its graph in the artifact store, Redis when the run has one."""
    install_plugin(
        tmp_path / "site",
        monkeypatch,
        "doctor_tiny",
        "tiny",
        "from tests.support.tiny_model import cloudeasyml_register_models\n",
    )
    env = {
        "CLOUDEASYML_HOME": str(tmp_path / "home"),
        "CLOUDEASYML_DATABASE_URL": migrated_url,
        "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(artifact_dir),
        "CLOUDEASYML_PLUGINS__BLOCKED": BUNDLED,
        "CLOUDEASYML_REDIS__URL": REDIS_URL or "",
    }
    return env


@pytest.fixture(autouse=True)
def fx_site(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()


def _doctor(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["doctor", *args], env=env, catch_exceptions=False)


def _report(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = _doctor(env, "--json")
    return result.exit_code, msgspec.json.decode(result.stdout)


def _of(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["check"] == check]


def _failed(report: dict[str, Any]) -> set[str]:
    return {c["check"] for c in report["checks"] if c["status"] == "FAIL"}


def test_all_ok_exits_0_and_reports_every_check(doctor_env: dict) -> None:
    code, report = _report(doctor_env)
    assert code == 0 and report["ok"] is True, report
    assert _failed(report) == set()
    assert [c["check"] for c in report["checks"]][:3] == ["database", "migrations", "plugins"]
    assert {c["check"] for c in report["checks"]} == {
        "database", "migrations", "plugins", "artifacts", "onnxruntime", "redis", "artifact_dir", "disk", "memory"
    }  # fmt: skip
    assert _of(report, "plugins")[0]["summary"] == "1 model(s) installed: tiny"
    assert _of(report, "artifacts") == [
        {"check": "artifacts", "status": "OK", "summary": _of(report, "artifacts")[0]["summary"], "fix": None}
    ]
    assert "CUDA" in _of(report, "onnxruntime")[0]["summary"]
    text = _doctor(doctor_env)
    assert text.exit_code == 0 and "\x1b[" not in text.stdout + text.stderr  # no colour or progress off a terminal
    assert "OK   database" in text.stdout and "0 failure(s)" in text.stdout and "checking" not in text.stderr
    coloured = CliRunner().invoke(cli, ["doctor"], env=doctor_env, color=True)
    assert "\x1b[32m\x1b[1mOK  \x1b[0m database" in coloured.stdout


def test_an_unreachable_database_fails_without_showing_its_password(doctor_env: dict) -> None:
    url = f"postgresql+asyncpg://doctor:s3cret-pw@127.0.0.1:{_closed_port()}/nowhere"
    code, report = _report({**doctor_env, "CLOUDEASYML_DATABASE_URL": url})
    assert code == 1 and report["ok"] is False
    (database,) = _of(report, "database")
    assert (
        database["status"] == "FAIL"
        and "cannot reach" in database["summary"]
        and "CLOUDEASYML_DATABASE_URL" in (database["fix"])
    )
    assert _of(report, "migrations") == [] and _failed(report) == {"database"}
    text = _doctor({**doctor_env, "CLOUDEASYML_DATABASE_URL": url})
    assert "s3cret-pw" not in text.stdout + text.stderr and "FAIL database" in text.stdout and "fix:" in text.stdout


def test_a_missing_sqlite_file_fails_and_is_not_created(doctor_env: dict, tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    code, report = _report({**doctor_env, "CLOUDEASYML_DATABASE_URL": f"sqlite+aiosqlite:///{path}"})
    assert code == 1 and _failed(report) == {"database"} and "db upgrade" in _of(report, "database")[0]["fix"]
    assert not path.exists()


def test_a_database_one_migration_behind_fails_with_the_upgrade_to_run(doctor_env: dict, migrated_url: str) -> None:
    command.downgrade(alembic_config(migrated_url), "-1")
    code, report = _report(doctor_env)
    assert code == 1 and _failed(report) == {"migrations"}
    (migrations,) = _of(report, "migrations")
    assert "behind" in migrations["summary"] and "cloudeasyml db upgrade" in migrations["fix"]
    command.upgrade(alembic_config(migrated_url), "head")
    assert _report(doctor_env)[0] == 0


def test_a_plugin_that_raises_at_import_is_named_with_its_error(
    doctor_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path / "site", monkeypatch, "broken_dist", "broken", "raise ImportError('libfoo.so missing')\n")
    code, report = _report(doctor_env)
    assert code == 1 and _failed(report) == {"plugins"}
    failures = [c for c in _of(report, "plugins") if c["status"] == "FAIL"]
    assert len(failures) == 1 and "'broken'" in failures[0]["summary"] and "libfoo.so missing" in failures[0]["summary"]
    assert "CLOUDEASYML_PLUGINS__BLOCKED=broken" in failures[0]["fix"]
    assert any(c["status"] == "OK" and "tiny" in c["summary"] for c in _of(report, "plugins"))


@pytest.mark.parametrize("without", ["export_on_load_off", "torch_absent"])
def test_a_model_version_without_an_artifact_and_no_way_to_export_it_fails(
    doctor_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without: str
) -> None:
    env = {**doctor_env, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(tmp_path / "empty-store")}
    if without == "export_on_load_off":
        env["CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD"] = "false"
    else:
        monkeypatch.setitem(sys.modules, "torch", None)  # how Python marks a module as not importable
    code, report = _report(env)
    assert code == 1 and _failed(report) == {"artifacts"}
    (artifact,) = _of(report, "artifacts")
    assert artifact["summary"].startswith("tiny 1.0.0 has no exported graph")
    assert ("torch is not installed" in artifact["summary"]) == (without == "torch_absent")
    assert "cloudeasyml export tiny" in artifact["fix"]


def test_a_missing_artifact_with_torch_to_export_it_is_a_warning(doctor_env: dict, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    code, report = _report({**doctor_env, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(tmp_path / "empty-store")})
    assert code == 0 and [c["status"] for c in _of(report, "artifacts")] == ["WARN"]


def _not_a_directory(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "artifacts", lambda: None


def _read_only(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions; the not-a-directory case covers root")
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return directory, lambda: directory.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("make", [_not_a_directory, _read_only], ids=["under-a-file", "chmod-read-only"])
def test_an_artifact_dir_that_cannot_be_written_fails(
    doctor_env: dict, tmp_path: Path, make: Callable[[Path], tuple[Path, Callable[[], None]]]
) -> None:
    path, restore = make(tmp_path)
    try:
        code, report = _report({**doctor_env, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(path)})
    finally:
        restore()
    assert code == 1 and "artifact_dir" in _failed(report)
    (check,) = _of(report, "artifact_dir")
    assert str(path) in check["summary"] and "CLOUDEASYML_RUNTIME__ARTIFACT_DIR" in check["fix"]


def test_a_redis_url_with_nothing_listening_fails(doctor_env: dict) -> None:
    code, report = _report({**doctor_env, "CLOUDEASYML_REDIS__URL": f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"})
    assert code == 1 and _failed(report) == {"redis"}
    (redis,) = _of(report, "redis")
    assert "cannot reach" in redis["summary"] and "hunter2" not in redis["summary"]


def test_a_memory_budget_past_what_the_process_may_use_fails(doctor_env: dict) -> None:
    code, report = _report({**doctor_env, "CLOUDEASYML_RUNTIME__MEMORY_BUDGET_MB": str(2**30)})
    assert code == 1 and _failed(report) == {"memory"}


async def _deploy_on_cuda(url: str) -> None:
    tenant = await new_tenant(url)
    async with db_session(url) as session:
        session.add(
            Deployment(
                tenant_id=tenant.tenant.id,
                name="gpu",
                model_name="tiny",
                model_version="1.0.0",
                config={"device": "cuda"},
            )
        )


def test_deployments_asking_for_cuda_fail_where_cuda_does_not_load(doctor_env: dict, migrated_url: str) -> None:
    if probe_providers().cuda_loads:
        pytest.skip("CUDA loads on this machine")
    assert _report(doctor_env)[0] == 0  # CPU only, and nothing asks for a GPU: fine
    asyncio.run(_deploy_on_cuda(migrated_url))
    code, report = _report(doctor_env)
    assert code == 1 and _failed(report) == {"onnxruntime"}
    assert "1 deployment(s) ask for device cuda" in _of(report, "onnxruntime")[0]["summary"]
