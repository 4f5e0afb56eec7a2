"""Build-time check of the runtime image (run by the Dockerfile as the app user; exits non-zero on any problem).

- torch is not installed, and nothing on the serving path imports torch, transformers or onnxscript;
- every installed plugin loads, and the requirements of the platform and of every plugin are met (the
  packages installed with ``--no-deps`` on purpose are not themselves checked: their requirements pull torch);
- Alembic finds ``alembic.ini`` and ``migrations/`` (so ``cloudeasyml db upgrade`` and ``/health/ready`` work);
- every model has an exported artifact in ``CLOUDEASYML_RUNTIME__ARTIFACT_DIR`` for its shipped weights, and
  runs its example inputs through onnxruntime on the CPU.

It uses the environment only; no database is needed.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import sys

BLOCKED = ("torch", "transformers", "onnxscript", "sentence_transformers")


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]  # noqa: D102
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported by the serving path")
        return None


def _unmet_requirements(dist_name: str) -> list[str]:
    from packaging.requirements import Requirement

    problems = []
    for line in importlib.metadata.requires(dist_name) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{dist_name} needs {requirement}, which is not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{dist_name} needs {requirement}, installed {installed}")
    return problems


def main() -> int:
    """Run every check; print what was found; 0 when all pass."""
    problems: list[str] = []
    if importlib.util.find_spec("torch") is not None:
        problems.append("torch is installed in the runtime image (serving needs onnxruntime only)")
    sys.meta_path.insert(0, _NoTorch())

    import msgspec

    from cloudeasyml.db.readiness import expected_heads
    from cloudeasyml.runtime.artifacts import ArtifactStore
    from cloudeasyml.runtime.resolver import ArtifactResolver
    from cloudeasyml.runtime.session import open_session
    from cloudeasyml.services import build_catalog_from_settings
    from cloudeasyml.settings import load_settings

    settings = load_settings()
    heads = expected_heads()
    if not heads:
        problems.append("no Alembic head found: alembic.ini / migrations/ are not where migrations_path.py looks")
    print(f"migrations: head {sorted(heads)}")

    problems.extend(_unmet_requirements("cloudeasyml"))
    plugin_dists = {
        dist.metadata["Name"]
        for dist in importlib.metadata.distributions()
        if any(ep.group == "cloudeasyml" for ep in dist.entry_points)
    }
    for name in sorted(plugin_dists):
        problems.extend(_unmet_requirements(name))

    catalog = build_catalog_from_settings(settings)
    for failure in catalog.failures:
        problems.append(f"plugin failed to load: {msgspec.to_builtins(failure)}")
    if len(catalog) == 0:
        problems.append("no models installed")

    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path), export_on_load=False)
    for entry in catalog:
        model = entry.model
        path = resolver.find(model, model.version)
        if path is None:
            digest = resolver.weights_digest(model, model.version)
            expected = resolver.store.onnx_path(model.name, model.version, digest)
            problems.append(f"{model.name} {model.version}: no artifact at {expected}")
            continue
        examples = model.example_inputs()
        session = open_session(path, device="cpu")
        predictions = model.from_outputs(session.run(model.to_arrays(examples)))
        if len(predictions) != len(examples):
            problems.append(f"{model.name}: {len(examples)} example inputs gave {len(predictions)} predictions")
        msgspec.json.encode(predictions)
        size = path.stat().st_size
        print(f"model {model.name} {model.version}: {path} ({size:,} bytes), {len(examples)} examples ran")

    leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    if leaked:
        problems.append(f"imported on the serving path: {leaked}")
    print(f"plugins: {', '.join(sorted(plugin_dists)) or 'none'}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
