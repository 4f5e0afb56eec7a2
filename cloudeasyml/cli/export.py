"""``cloudeasyml export``: PyTorch → ONNX into the artifact store, with parity checks."""

from __future__ import annotations

import click
from tqdm import tqdm

from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.settings import load_settings

__all__ = ("export",)


@click.command()
@click.argument("models", nargs=-1)
@click.option("--version", "version", default=None, help="Model version (default: the shipped one).")
@click.option("--force", is_flag=True, help="Export again even if the artifact exists.")
def export(models: tuple[str, ...], version: str | None, force: bool) -> None:
    """Export MODELS (default: all installed) to ONNX in the artifact store.

    Each export is checked against torch on the model's example inputs and a random batch; a model that
    differs by more than its tolerance is refused and nothing is written. Unchanged models are skipped.
    Needs torch (pip install 'cloudeasyml[export]').
    """
    settings = load_settings()
    catalog = build_catalog(get_plugin_manager(blocked=settings.plugins.blocked))
    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path))
    try:
        entries = [catalog.get(name) for name in models] if models else list(catalog)
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    failed = 0
    bar = tqdm(entries, desc="exporting", unit="model", disable=None)
    for entry in bar:
        model = entry.model
        bar.set_postfix_str(model.name)
        target = version or model.version
        try:
            existed = resolver.find(model, target) is not None
            path, manifest = resolver.export(model, target, force=force)
        except CloudEasyMLError as exc:
            failed += 1
            tqdm.write(click.style(f"{model.name} {target}: {exc.detail}", fg="red"))
            continue
        report = manifest.get("export", {}) if isinstance(manifest, dict) else {}
        state = "up to date" if existed and not force else "exported"
        tqdm.write(
            f"{model.name} {target}: {state}, parity {report.get('parityErrorExamples', '?')} / "
            f"{report.get('parityErrorRandom', '?')} (tolerance {report.get('parityTolerance', '?')}), "
            f"{report.get('exportSeconds', '?')} s -> {path}"
        )
    if failed:
        raise click.ClickException(f"{failed} model(s) failed to export")
