"""``cloudeasyml``: operate the platform."""

from __future__ import annotations

import logging

import click

import cloudeasyml
from cloudeasyml.cli.batches import batches, worker
from cloudeasyml.cli.db import db
from cloudeasyml.cli.deployments import deployments
from cloudeasyml.cli.doctor import doctor
from cloudeasyml.cli.export import export
from cloudeasyml.cli.operators import operators
from cloudeasyml.cli.plugins import plugins
from cloudeasyml.cli.serve import serve
from cloudeasyml.cli.tenants import tenants
from cloudeasyml.cli.train import train

__all__ = ("cli",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(cloudeasyml.__version__, prog_name="cloudeasyml")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def cli(verbose: bool) -> None:
    """CloudEasyML: serve ML models to many tenants over REST, with API keys, metering and billing.

    Settings come from CLOUDEASYML_* environment variables (see the README); the default database is a
    SQLite file under ~/.cloudeasyml (CLOUDEASYML_HOME).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


cli.add_command(db)
cli.add_command(tenants)
cli.add_command(operators)
cli.add_command(deployments)
cli.add_command(serve)
cli.add_command(plugins)
cli.add_command(export)
cli.add_command(train)
cli.add_command(doctor)
cli.add_command(batches)
cli.add_command(worker)
