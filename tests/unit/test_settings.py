"""Settings from the environment."""

from __future__ import annotations

import msgspec
import pytest

from cloudeasyml.settings import load_settings


def test_defaults_are_a_sqlite_file_in_the_home_directory() -> None:
    settings = load_settings({"CLOUDEASYML_HOME": "/srv/ceml"})
    assert settings.database_url == "sqlite+aiosqlite:////srv/ceml/cloudeasyml.db"
    assert str(settings.artifact_path) == "/srv/ceml/artifacts"


def test_environment_variables_override_nested_settings() -> None:
    settings = load_settings(
        {
            "CLOUDEASYML_DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "CLOUDEASYML_SERVER__PORT": "9000",
            "CLOUDEASYML_PLUGINS__BLOCKED": "a,b",
            "CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD": "false",
            "UNRELATED": "x",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.server.port == 9000 and settings.plugins.blocked == ("a", "b")
    assert settings.runtime.export_on_load is False


def test_v2_tensor_bounds_are_read_and_checked() -> None:
    v2 = load_settings({"CLOUDEASYML_V2__MAX_TENSOR_ELEMENTS": "10", "CLOUDEASYML_V2__MAX_TENSOR_DIMS": "3"}).v2
    assert (v2.max_tensor_elements, v2.max_tensor_dims, v2.max_request_elements) == (10, 3, 8_388_608)
    with pytest.raises(msgspec.ValidationError):
        load_settings({"CLOUDEASYML_V2__MAX_TENSOR_DIMS": "0"})


def test_bad_values_are_reported() -> None:
    with pytest.raises(msgspec.ValidationError):
        load_settings({"CLOUDEASYML_SERVER__PORT": "eighty"})


def test_instances_split_the_cpus_between_their_threads_unless_threads_are_set(monkeypatch) -> None:
    from cloudeasyml.core.serving import ServingConfig
    from cloudeasyml.runtime import config
    from cloudeasyml.runtime.config import session_threads

    monkeypatch.setattr(config, "available_cpus", lambda: 8)
    assert session_threads(ServingConfig()) == 0  # one instance: onnxruntime's choice
    assert session_threads(ServingConfig(instances=2)) == 4
    assert session_threads(ServingConfig(instances=3)) == 2
    assert session_threads(ServingConfig(instances=16)) == 1
    assert session_threads(ServingConfig(instances=2, intra_op_threads=3)) == 3
