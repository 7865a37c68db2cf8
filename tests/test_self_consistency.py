"""Majority vote and accuracy-vs-K (cot_distill.evaluation.self_consistency)."""

from __future__ import annotations

import pytest

from cot_distill.evaluation import self_consistency
from cot_distill.evaluation.self_consistency import CurvePoint


@pytest.mark.parametrize("predictions, expected", [
    (["18", "20", "18"], "18"),
    (["20", "18", "18", "20"], "20"),      # Tie: the first to appear wins.
    (["18", "20", "20", "18"], "18"),
    ([None, None, "7", None], "7"),         # None abstains while any answer exists.
    ([None, "7", None, "8", None, None], "7"),
    ([None, None], None),
    ([], None),
    (["yes"], "yes"),
])
def test_majority_vote(predictions, expected):
  assert self_consistency.majority_vote(predictions) == expected


def test_majority_vote_with_grouping_key_reports_first_member():
  predictions = ["18.0", "18", "20", "20"]
  assert self_consistency.majority_vote(predictions) == "20"
  assert self_consistency.majority_vote(predictions, key=float) == "18.0"


def test_vote_on_texts_extracts_first():
  texts = ["3 + 4 = 7. The answer is 7.", "The answer is $7.00.",
           "I am not sure.", "The answer is 8."]
  assert self_consistency.vote_on_texts(texts, "number") == "7"


def test_accuracy_curve_on_fixed_samples():
  samples = [
      ["18", "20", "20", "20", "18"],  # gold 18: right at k=1 and k=2 (tie).
      [None, "5", "5", "6", "6"],      # gold 5: k=1 abstains, then right.
      ["no", "yes", "yes", "no", "no"],  # gold no: wrong only at k=3.
  ]
  golds = ["18", "5", "no"]
  types = ["number", "number", "yes_no"]
  curve = self_consistency.accuracy_curve(samples, golds, types)
  assert [point.k for point in curve] == [1, 2, 3, 4, 5]
  # k=1: 18 ok, None wrong, no ok. k=2: 18 (tie, first) ok, 5 ok, no (tie) ok.
  # k=3: 20 wrong, 5 ok, yes wrong. k=4: 20 wrong, 5 ok, tie no/yes -> no ok.
  # k=5: 20 wrong, tie 5/6 -> 5 ok, no ok.
  assert [point.correct for point in curve] == [2, 3, 1, 2, 2]
  assert curve[1] == CurvePoint(k=2, correct=3, total=3)
  assert curve[1].accuracy == 1.0


def test_accuracy_curve_compares_numbers_numerically_and_limits_k():
  samples = [["18", "18"], ["40000", "7", "7"]]
  curve = self_consistency.accuracy_curve(samples, ["18.0", "40,000"], "number")
  assert curve == [CurvePoint(1, 2, 2), CurvePoint(2, 2, 2)]  # k stops at 2.
  assert self_consistency.accuracy_curve(samples, ["18", "7"], "number", max_k=1) == [
      CurvePoint(1, 1, 2)]


def test_accuracy_curve_rejects_mismatched_input():
  with pytest.raises(ValueError, match="2 sample lists but 1 gold"):
    self_consistency.accuracy_curve([["1"], ["2"]], ["1"], "number")
  with pytest.raises(ValueError, match="question 1 has no samples"):
    self_consistency.accuracy_curve([["1"], []], ["1", "2"], "number")
  assert self_consistency.accuracy_curve([], [], "number") == []
