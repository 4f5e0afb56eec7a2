"""``cloudeasyml doctor``: can this machine serve? Each check prints OK, WARN or FAIL, and what to do when not OK."""

from __future__ import annotations

import sys

import click
import msgspec

from cloudeasyml.cli.diagnostics import CHECKS, Finding, run_checks
from cloudeasyml.settings import load_settings

__all__ = ("doctor",)

_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


def _progress(name: str) -> None:
    """A transient 'checking ...' line, on a terminal only (scripts and logs get the results alone)."""
    click.echo(f"\r\033[Kchecking {name}...", nl=False, err=True)


def _print(finding: Finding) -> None:
    # click.secho drops the colour when stdout is not a terminal.
    click.secho(f"{finding.status:<4}", fg=_COLOURS[finding.status], bold=True, nl=False)
    click.echo(f" {finding.check:<12} {finding.summary}")
    if finding.fix:
        click.echo(f"{'':17}fix: {finding.fix}")


@click.command(
    epilog="Checks, in order: " + ", ".join(name for name, _ in CHECKS) + ". Settings come from the same "
    "CLOUDEASYML_* variables as `cloudeasyml serve`: run it where, and as whom, the server runs."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts) instead of lines.")
def doctor(as_json: bool) -> None:
    """Check that this machine can serve, and say what to do about what is wrong.

    Checks the database (reachable, migrated to this release's head), the plugins (which failed to load, and
    why), every installed model version's exported graph (or torch to export it), onnxruntime's providers
    (whether CUDA really loads), Redis when configured, the artifact directory (writable), free disk and the
    memory budget. Each prints OK, WARN or FAIL with a fix.

    Exit status: 0 when nothing FAILs (warnings included), 1 otherwise.
    """
    interactive = not as_json and sys.stderr.isatty()
    findings = run_checks(load_settings(), progress=_progress if interactive else None)
    if interactive:
        click.echo("\r\033[K", nl=False, err=True)
    failed = any(f.status == "FAIL" for f in findings)
    if as_json:
        document = {"ok": not failed, "checks": findings}
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        for finding in findings:
            _print(finding)
        counts = {status: sum(f.status == status for f in findings) for status in _COLOURS}
        click.echo(f"\n{counts['OK']} ok, {counts['WARN']} warning(s), {counts['FAIL']} failure(s)")
    if failed:
        raise SystemExit(1)
