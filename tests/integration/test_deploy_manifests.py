"""The deploy/ folder: both kustomize overlays render and wire probes, autoscaling, disruption budget and the
migration Job to the API Deployment, and batch worker pods (``cloudeasyml worker``) sharing its image, settings,
database and artifact volume; the compose file has its services; the Dockerfile copies files that exist;
the artifact seeding script copies without overwriting. Needs kubectl for the overlays (skipped without it)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from cloudeasyml.settings import load_settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")


@cache
def _render(overlay: str) -> tuple[dict, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(name="objects", params=OVERLAYS)
def fx_objects(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in _render(request.param)}


def _one(objects: dict[tuple[str, str], dict], kind: str) -> dict:
    found = [doc for (k, _), doc in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


API = ("Deployment", "cloudeasyml")
WORKER = ("Deployment", "cloudeasyml-worker")


def _container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def _port_matches(probe_port: object, container: dict) -> bool:
    return any(probe_port in (port.get("name"), port["containerPort"]) for port in container["ports"])


def test_deployment_probes_use_health_and_readiness_on_the_container_port(objects) -> None:
    deployment = objects[API]
    api = _container(deployment["spec"]["template"]["spec"], "api")
    assert api["command"] == ["cloudeasyml", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(port["containerPort"] == 8000 for port in api["ports"])
    liveness, readiness = api["livenessProbe"]["httpGet"], api["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/health" and _port_matches(liveness["port"], api)
    assert readiness["path"] == "/health/ready" and _port_matches(readiness["port"], api)
    assert api["resources"]["requests"] and api["resources"]["limits"]
    service = _one(objects, "Service")
    assert _port_matches(service["spec"]["ports"][0]["targetPort"], api)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_pods_run_as_non_root_with_a_read_only_root_and_writable_volumes(objects) -> None:
    deployment = objects[API]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod.get("initContainers", []):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    api = _container(pod, "api")
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    settings = next(doc for (kind, _), doc in objects.items() if kind == "ConfigMap")["data"]
    # The data directory and /tmp are emptyDirs; the artifact directory is the shared ReadWriteMany claim.
    assert "emptyDir" in volumes[mounts[settings["CLOUDEASYML_HOME"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    claim = volumes[mounts[settings["CLOUDEASYML_RUNTIME__ARTIFACT_DIR"]]]["persistentVolumeClaim"]["claimName"]
    assert objects[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    env_from = {next(iter(ref.values()))["name"] for ref in api["envFrom"]}
    assert ("ConfigMap", next(n for n in env_from if n.startswith("cloudeasyml-settings"))) in objects
    assert "cloudeasyml-database" in env_from


def test_hpa_and_pdb_target_the_deployment(objects) -> None:
    deployment = objects[API]
    hpa = _one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    pdb = _one(objects, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


def test_migration_job_runs_db_upgrade_with_the_same_image_and_settings(objects) -> None:
    job = _one(objects, "Job")
    deployment = objects[API]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["cloudeasyml", "db", "upgrade"]
    api = _container(deployment["spec"]["template"]["spec"], "api")
    assert migrate["image"] == api["image"]
    assert migrate["envFrom"] == api["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_batch_workers_share_the_image_settings_database_and_artifact_volume_but_no_traffic(objects) -> None:
    worker, api = objects[WORKER], objects[API]
    pod, api_pod = worker["spec"]["template"]["spec"], api["spec"]["template"]["spec"]
    container, api_container = _container(pod, "worker"), _container(api_pod, "api")
    assert container["command"] == ["cloudeasyml", "worker"]
    assert container["image"] == api_container["image"]
    assert container["envFrom"] == api_container["envFrom"]  # the same settings and database Secret
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert worker["spec"]["replicas"] >= 1
    # Non-root, read-only root; the artifact directory (models and batch files) is the API pods' shared claim.
    assert pod["securityContext"]["runAsNonRoot"] is True
    for each in pod["containers"] + pod.get("initContainers", []):
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
    settings = next(doc for (kind, _), doc in objects.items() if kind == "ConfigMap")["data"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    api_volumes = {v["name"]: v for v in api_pod["volumes"]}
    api_mounts = {m["mountPath"]: m["name"] for m in api_container["volumeMounts"]}
    artifact_dir = settings["CLOUDEASYML_RUNTIME__ARTIFACT_DIR"]
    claim = volumes[mounts[artifact_dir]]["persistentVolumeClaim"]["claimName"]
    assert claim == api_volumes[api_mounts[artifact_dir]]["persistentVolumeClaim"]["claimName"]
    assert "emptyDir" in volumes[mounts[settings["CLOUDEASYML_HOME"]]]  # its usage journal
    assert "emptyDir" in volumes[mounts["/tmp"]]
    (seed,) = pod["initContainers"]
    assert seed["command"] == next(c for c in api_pod["initContainers"] if c["name"] == "seed-artifacts")["command"]
    # Its pods are not the API's: the Service, autoscaler and disruption budget select and scale the API only.
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not _one(objects, "Service")["spec"]["selector"].items() <= labels.items()
    assert not _one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]


def test_only_the_gpu_overlay_requests_a_gpu() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    for overlay in OVERLAYS:
        rendered = {(doc["kind"], doc["metadata"]["name"]): doc for doc in _render(overlay)}
        for key, container in ((API, "api"), (WORKER, "worker")):
            pod = rendered[key]["spec"]["template"]["spec"]
            limits = _container(pod, container)["resources"]["limits"]
            if overlay == "gpu":
                assert int(limits["nvidia.com/gpu"]) == 1
                assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
            else:
                assert "nvidia.com/gpu" not in limits


def test_compose_has_postgres_app_and_a_migrate_step_the_app_waits_for() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "app", "migrate"} <= services.keys()
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "cloudeasyml db upgrade" in " ".join(services["migrate"]["command"])
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["app"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DEPLOY / services["app"]["build"]["context"] / "pyproject.toml").is_file()
    assert {"pgdata", "artifacts"} <= compose["volumes"].keys()
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["app"]["environment"]["CLOUDEASYML_REDIS__URL"] == "redis://redis:6379/0"


def test_shutdown_timeouts_fit_in_the_grace_periods() -> None:
    """SIGTERM comes after the preStop sleep; requests in flight are cut at the graceful-shutdown timeout, which
    must leave time for the lifespan shutdown before Kubernetes (or Docker) sends SIGKILL."""
    base = DEPLOY / "k8s" / "base"
    env = dict(
        line.split("=", 1) for line in (base / "settings.env").read_text().splitlines() if line and line[0] != "#"
    )
    graceful = load_settings(env).server.graceful_shutdown_seconds
    spec = yaml.safe_load((base / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "api"]
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + graceful + 5 <= spec["terminationGracePeriodSeconds"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert graceful + 5 <= float(compose["services"]["app"]["stop_grace_period"].rstrip("s"))


def test_dockerfile_copies_only_files_that_exist() -> None:
    sources = []
    for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert "alembic.ini" in sources and "migrations/" in sources
    # Dockerfile.dockerignore is an allow-list: whatever is copied must be allowed into the build context.
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is not allowed by Dockerfile.dockerignore"


def test_seed_artifacts_copies_missing_files_and_keeps_existing_ones(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("seed_artifacts", DEPLOY / "docker" / "seed_artifacts.py")
    assert spec is not None and spec.loader is not None
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    source, target = tmp_path / "image", tmp_path / "shared"
    for name, body in {"m/1/abc/model.onnx": b"graph", "m/1/abc/manifest.json": b"{}"}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(body)
    (target / "m/1/abc").mkdir(parents=True)
    (target / "m/1/abc/manifest.json").write_bytes(b"kept")
    assert seed.main([str(source), str(target)]) == 0
    assert (target / "m/1/abc/model.onnx").read_bytes() == b"graph"
    assert (target / "m/1/abc/manifest.json").read_bytes() == b"kept"
    assert sorted(p.name for p in (target / "m/1/abc").iterdir()) == ["manifest.json", "model.onnx"]
    assert seed.seed(source, target) == (0, 2)
