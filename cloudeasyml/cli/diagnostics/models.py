"""Doctor checks of what serves: the plugins, their models' exported graphs, and onnxruntime's CUDA."""

from __future__ import annotations

from cloudeasyml.cli.diagnostics.findings import Context, Finding
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.probe import probe_providers
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.services import build_catalog_from_settings

__all__ = ("check_artifacts", "check_onnxruntime", "check_plugins")


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
