"""How the experiment report reads answers: the metric's field, raw-tensor rows, and a shadow's agreement for labels,
numbers and embeddings."""

from __future__ import annotations

import math

import pytest

from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.domain.experiment_figures import Arm, agreement_of, answer_of, quality_of, score_items
from tests.support.tiny_model import TinyModel

LABEL = QualityMetric.accuracy("label")


def test_the_metric_reads_its_field_by_python_or_wire_name_and_unwraps_tensor_rows() -> None:
    price = QualityMetric.regression("sale_price")
    assert answer_of({"salePrice": 3.5}, price) == 3.5
    assert answer_of({"sale_price": [3.5]}, price) == 3.5  # a V2 row of shape [1]
    assert answer_of({"score": 2.0}, None) == 2.0  # one field and no metric: that field
    assert answer_of([0.1, 0.2], None) == [0.1, 0.2]


def test_a_shadow_agreement_per_kind_ofanswer_of() -> None:
    labels = [({"label": "positive"}, {"label": "positive"}), ({"label": "negative"}, {"label": "positive"})]
    by_label = agreement_of(labels, LABEL)
    assert by_label is not None and by_label.same_label_rate == 0.5 and by_label.mean_cosine is None
    numbers = agreement_of([({"score": 1.0}, {"score": 1.5}), ({"score": 2.0}, {"score": 1.0})], None)
    assert numbers is not None and numbers.mean_absolute_difference == pytest.approx(0.75)
    vectors = agreement_of([([1.0, 0.0], [1.0, 0.0]), ([1.0, 0.0], [0.0, 1.0])], QualityMetric.score("cosine"))
    assert vectors is not None and vectors.pairs == 2 and vectors.mean_cosine == pytest.approx(0.5)
    assert agreement_of([], None) is None


def test_accuracy_counts_equal_labels_and_items_pair_with_their_own_truth() -> None:
    arm = Arm()

    class Classifier(TinyModel):
        quality_metric = LABEL

    score_items(arm, Classifier(), [{"label": "a"}, {"label": "b"}, {"label": "c"}], ["a", "x", "c"])
    quality = quality_of(arm, LABEL)
    assert quality is not None and quality.samples == 3 and quality.accuracy is not None
    assert quality.accuracy.value == pytest.approx(2 / 3)


def test_a_score_metric_uses_the_plugins_quality_score_and_skips_what_it_refuses() -> None:
    metric = QualityMetric.score("closeness", higher_is_better=True)

    class Scored(TinyModel):
        quality_metric = metric

        def quality_score(self, prediction: object, truth: object) -> float:
            if not isinstance(truth, float):
                raise ValueError("a number, please")
            return -abs(prediction["score"] - truth)  # type: ignore[index]

    arm = Arm()
    score_items(arm, Scored(), [{"score": 1.0}, {"score": 2.0}], [1.5, "bad"])
    assert arm.scores == [-0.5]
    quality = quality_of(arm, metric)
    assert quality is not None and quality.metric == "closeness" and quality.score is not None
    assert math.isclose(quality.score.value, -0.5)
