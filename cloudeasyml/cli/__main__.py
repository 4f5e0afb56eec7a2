"""``python -m cloudeasyml.cli``."""

from cloudeasyml.cli.main import cli

cli()
