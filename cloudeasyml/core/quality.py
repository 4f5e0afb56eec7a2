"""How a model's answers are scored against ground truth (``POST /feedback``): a plugin's ``quality_metric``.

The experiment report (``GET /deployments/{id}/experiment``) pairs each answered item with its feedback and scores it
by the model's metric:

- ``accuracy`` (classifiers): an item is right when the prediction's ``field`` equals the feedback's ``label``; the
  report gives the accuracy with a Wilson interval and compares versions with a two-proportion z-test.
- ``regression`` (regressors): the error is the prediction's ``field`` minus the feedback's ``value``; the report gives
  RMSE and MAE with intervals and compares versions with Welch's t-test on the absolute errors.
- ``score`` (anything else): the plugin's ``quality_score(prediction, truth)`` gives each item a number; the report
  gives its mean with an interval and compares versions with Welch's t-test on the scores (``higher_is_better`` says
  which way is better).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("QualityKind", "QualityMetric")

QualityKind = Literal["accuracy", "regression", "score"]


class QualityMetric(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """What "better" means for a model's answers; see the module's docstring for each kind."""

    kind: QualityKind
    field: str | None = None
    """The prediction's field that holds the label (``accuracy``) or the value (``regression``), by its Python name
    (a Struct's attribute or a dict's key); None: the prediction itself is the label or value."""
    name: str = ""
    """The metric's name in the report (``accuracy``, ``rmse``; a ``score`` metric's own, e.g. ``ndcg``)."""
    higher_is_better: bool = True
    """``score`` only: whether a higher score is better (accuracy is; errors are not)."""

    @classmethod
    def accuracy(cls, field: str | None = None) -> QualityMetric:
        """A classifier's: the share of items whose ``field`` equals the feedback's ``label``."""
        return cls(kind="accuracy", field=field, name="accuracy")

    @classmethod
    def regression(cls, field: str | None = None) -> QualityMetric:
        """A regressor's: RMSE and MAE of ``field`` against the feedback's ``value``."""
        return cls(kind="regression", field=field, name="rmse", higher_is_better=False)

    @classmethod
    def score(cls, name: str, *, higher_is_better: bool = True) -> QualityMetric:
        """A metric of the plugin's own: ``ModelPlugin.quality_score`` scores each item."""
        return cls(kind="score", name=name, higher_is_better=higher_is_better)
