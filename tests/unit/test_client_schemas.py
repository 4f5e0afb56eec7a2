"""The client's result Structs name exactly the fields the server's OpenAPI document gives its answers, so that a
field added, renamed or dropped on either side fails here rather than in a user's program."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cloudeasyml.app import create_app
from cloudeasyml.client import schemas
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.domain.inference import PredictResponse
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, Settings

SERVER_NAMES = {
    schemas.Model: "ModelRead",
    schemas.QualityMetric: "QualityMetric",
    schemas.ModelLimits: "ModelLimits",
    schemas.Pricing: "Pricing",
    schemas.ServingConfig: "ServingConfig",
    schemas.TensorSpec: "TensorSpec",
    schemas.Deployment: "DeploymentRead",
    schemas.TrafficRoute: "TrafficRoute",
    schemas.ApiKey: "ApiKeyRead",
    schemas.ApiKeyCreated: "ApiKeyCreated",
    schemas.Usage: "UsageReport",
    schemas.ModelUsage: "ModelUsage",
    schemas.UsageGroup: "UsageGroup",
    schemas.VersionUsage: "VersionUsage",
    schemas.Quota: "QuotaReport",
    schemas.Revision: "RevisionRead",
    schemas.File: "FileRead",
    schemas.Batch: "BatchRead",
    schemas.BatchCounts: "BatchCounts",
    schemas.Invoice: "Invoice",
    schemas.InvoiceLine: "InvoiceLine",
    schemas.InvoiceSummary: "InvoiceSummary",
    schemas.UsageRecord: "UsageRecordRead",
    schemas.UsageRecordPage: "RecordPage",
}


@pytest.fixture(name="components", scope="module")
def fx_components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    # Building the app touches no database; the URL is only remembered.
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('schema')) / 'unused.db'}"
    app = create_app(Settings(database=DatabaseSettings(url=url)), get_plugin_manager(load_entrypoints=False))
    return app.openapi_schema.to_schema()["components"]["schemas"]


def _wire_fields(cls: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    """The Struct's field names on the wire, and those it requires."""
    fields = msgspec.structs.fields(cls)
    required = {f.encode_name for f in fields if f.required}
    return {f.encode_name for f in fields}, required


def test_every_result_struct_of_the_client_is_checked() -> None:
    exported = (getattr(schemas, name) for name in schemas.__all__)
    results = {cls for cls in exported if isinstance(cls, type)} - {schemas.Prediction}
    assert results == set(SERVER_NAMES)


@pytest.mark.parametrize("cls", list(SERVER_NAMES), ids=lambda cls: cls.__name__)
def test_the_client_reads_the_fields_the_server_sends(components: dict[str, dict], cls: type[msgspec.Struct]) -> None:
    server = components[SERVER_NAMES[cls]]
    names, required = _wire_fields(cls)
    assert names == set(server["properties"])
    if cls is schemas.ServingConfig:
        # Every field has a default on the server (so none is "required" in its schema), and every one is sent.
        assert ServingConfig.__struct_config__.omit_defaults is False
        return
    assert required <= set(server.get("required", []))  # never require what the server may leave out


def test_the_prediction_struct_matches_the_servers_predict_response() -> None:
    names, _ = _wire_fields(schemas.Prediction)
    assert names == {f.encode_name for f in msgspec.structs.fields(PredictResponse)}
