"""``cloudeasyml train``: a new version of a model's weights, exported and ready to deploy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click
from tqdm import tqdm

from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.plugins.model import TrainOptions
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.runtime.training import train_new_version
from cloudeasyml.services import build_catalog_from_settings
from cloudeasyml.settings import load_settings

__all__ = ("train",)

_DEFAULTS = TrainOptions()


@click.command()
@click.argument("model_name", metavar="MODEL")
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="Training data file, in the format the model's README describes.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True)
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.learning_rate, show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=_DEFAULTS.validation_fraction,
    show_default=True,
)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
def train(
    model_name: str,
    data: Path,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    validation_fraction: float,
    seed: int,
) -> None:
    """Train MODEL on --data into a new version in the artifact store, export it, and print its metrics.

    Existing versions keep serving; deploy the new one with {"modelName": MODEL, "modelVersion": VERSION}.
    Needs torch (pip install 'cloudeasyml[export]').
    """
    settings = load_settings()
    catalog = build_catalog_from_settings(settings)
    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path))
    options = TrainOptions(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        validation_fraction=validation_fraction,
    )
    bar = tqdm(total=epochs, desc=f"training {model_name}", unit="epoch", disable=None)

    def progress(step: int, total: int, metrics: Mapping[str, float]) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=True)

    try:
        model = catalog.get(model_name).model
        trained = train_new_version(model, resolver, data, options, progress)
    except NotImplementedError as exc:
        raise click.ClickException(str(exc)) from exc
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    finally:
        bar.close()
    click.echo(f"{trained.model} {trained.version}")
    for name, value in trained.metrics.items():
        click.echo(f"  {name:<12} {value:.6g}")
    click.echo(
        f"  parity       {trained.export.get('parityErrorRandom')} (tolerance {trained.export.get('parityTolerance')})"
    )
    click.echo(f'deploy it: POST /deployments {{"modelName": "{trained.model}", "modelVersion": "{trained.version}"}}')
    click.echo(f"or roll a deployment to it: cloudeasyml deployments update NAME --model-version {trained.version}")
