"""``cloudeasyml export``: PyTorch → ONNX into the artifact store, with parity checks."""

from __future__ import annotations

from typing import cast

import click
from tqdm import tqdm

from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.variants import VariantReport, ensure_variant
from cloudeasyml.services import build_catalog_from_settings
from cloudeasyml.settings import load_settings

__all__ = ("export",)


@click.command()
@click.argument("models", nargs=-1)
@click.option("--version", "version", default=None, help="Model version (default: the shipped one).")
@click.option("--force", is_flag=True, help="Export again even if the artifact exists.")
@click.option(
    "--variant",
    type=click.Choice(["float", "optimized", "int8"]),
    default="float",
    show_default=True,
    help="Also make this serving variant beside the float graph and print what it changes.",
)
def export(models: tuple[str, ...], version: str | None, force: bool, variant: str) -> None:
    """Export MODELS (default: all installed) to ONNX in the artifact store.

    Each export is checked against torch on the model's example inputs and a random batch; a model that
    differs by more than its tolerance is refused and nothing is written. Unchanged models are skipped.
    Needs torch (pip install 'cloudeasyml[export]').

    With --variant optimized or int8, the variant a deployment's config names is made too (as on its first
    load), and its accuracy change against the float graph, sizes and CPU timings are printed.
    """
    settings = load_settings()
    catalog = build_catalog_from_settings(settings)
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
        report = cast("dict[str, object]", manifest.get("export", {}) if isinstance(manifest, dict) else {})
        state = "up to date" if existed and not force else "exported"
        tqdm.write(
            f"{model.name} {target}: {state}, parity {report.get('parityErrorExamples', '?')} / "
            f"{report.get('parityErrorRandom', '?')} (tolerance {report.get('parityTolerance', '?')}), "
            f"{report.get('exportSeconds', '?')} s -> {path}"
        )
        if variant != "float":
            try:
                variant_file, variant_report = ensure_variant(model, path, variant, force=force)  # type: ignore[arg-type]
            except CloudEasyMLError as exc:
                failed += 1
                tqdm.write(click.style(f"{model.name} {target} {variant}: {exc.detail}", fg="red"))
                continue
            tqdm.write(_describe(f"{model.name} {target}", variant_report, variant_file))
    if failed:
        raise click.ClickException(f"{failed} model(s) failed to export")


def _describe(label: str, report: VariantReport, path: object) -> str:
    """What a variant changes, in a few lines."""
    lines = [
        f"{label} {report.variant}: {report.float_size_bytes:,} -> {report.variant_size_bytes:,} bytes "
        f"({report.variant_size_bytes / report.float_size_bytes:.0%} of float), "
        f"{report.quantized_weights} weights quantised -> {path}",
        f"  accuracy change vs float: parity error {report.parity_error_examples:.3g} on the examples, "
        f"{report.parity_error_random:.3g} on a random batch (relative {report.relative_error_examples:.3g} / "
        f"{report.relative_error_random:.3g})",
        f"  CPU latency ms, float -> {report.variant}: batch 1 {report.float_latency_ms_batch1:g} -> "
        f"{report.variant_latency_ms_batch1:g}, batch 32 {report.float_latency_ms_batch32:g} -> "
        f"{report.variant_latency_ms_batch32:g}; session load {report.float_load_ms:g} -> {report.variant_load_ms:g}",
    ]
    if report.note:
        lines.append(f"  note: {report.note}")
    return "\n".join(lines)
