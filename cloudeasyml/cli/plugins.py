"""``cloudeasyml plugins``: what is installed."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from cloudeasyml.plugins.scaffold import scaffold_plugin
from cloudeasyml.services import build_catalog_from_settings
from cloudeasyml.settings import load_settings

__all__ = ("plugins",)


@click.group()
def plugins() -> None:
    """Model plugins (pip packages with a `cloudeasyml` entry point)."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: models and failures.")
def list_plugins(as_json: bool) -> None:
    """List installed models, their versions and where they came from, and plugins that failed to load."""
    catalog = build_catalog_from_settings(load_settings())
    models = [
        {
            "model": e.model.name,
            "version": e.model.version,
            "task": e.model.task,
            "plugin": e.plugin,
            "source": e.source,
        }
        for e in catalog
    ]
    failures = [msgspec.to_builtins(f) for f in catalog.failures]
    if as_json:
        sys.stdout.write(msgspec.json.encode({"models": models, "failures": failures}).decode() + "\n")
        return
    if not models:
        click.echo("no models installed (pip install a plugin, e.g. plugin_packages/cloudeasyml-housing)")
    for m in models:
        click.echo(f"{m['model']:<16} {m['version']:<10} {m['task']:<20} {m['source']} (entry point {m['plugin']})")
    for f in failures:
        click.secho(f"FAILED {f['plugin']} ({f['source']}): {f['error']}", fg="red", err=True)


@plugins.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to create the package.",
)
def new_plugin(name: str, directory: Path) -> None:
    """Create cloudeasyml-NAME/: a model plugin package that installs, exports, serves and passes its test."""
    try:
        root = scaffold_plugin(name, directory)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {root}")
    click.echo(f"next: pip install -c constraints.txt -e {root}  &&  cloudeasyml plugins list")
