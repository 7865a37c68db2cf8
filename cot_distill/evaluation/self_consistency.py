"""Self-consistency (Wang et al., 2023): sample K chains, vote on the answers.

The vote runs on answers already extracted by `cot_distill.answers`, which
are canonical ("18", not "18.0" or "$18"), so equal answers are equal
strings. Two rules make the vote deterministic and comparable across runs:

* "not found" (None) never wins while any sample has an answer: a chain
  without an answer is an abstention, not a vote for "no answer". Only when
  every sample is None is the result None.
* Ties go to the answer that appeared first among the samples. The samples'
  order is their sampling order, so the tie-break is reproducible, and with
  k = 1 the vote is simply the first sample's answer.

The accuracy-vs-K curve uses, for each k, the FIRST k samples of every
question, so the curve is a prefix curve of one sampling run (as in the
paper's plots), not an average over subsets.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Hashable, Sequence

from cot_distill import answers
from cot_distill.data.example import AnswerType


def majority_vote(predictions: Sequence[str | None], *,
                  key: Callable[[str], Hashable] | None = None) -> str | None:
  """The most common non-None answer; ties broken by first occurrence.

  Args:
    predictions: extracted answers in sampling order, None for "not found".
    key: optional grouping key (e.g. a numeric value) for answers that are
      equal without being the same string; the winning group is reported
      by its first-occurring member.

  Returns:
    The winning answer, or None when there is no non-None answer.
  """
  key = key or (lambda answer: answer)
  counts: collections.Counter = collections.Counter()
  first_member: dict[Hashable, str] = {}
  for answer in predictions:
    if answer is None:
      continue
    group = key(answer)
    counts[group] += 1
    first_member.setdefault(group, answer)
  if not counts:
    return None
  # dicts keep insertion order, so max() returns the earliest of the ties.
  winner = max(first_member, key=lambda group: counts[group])
  return first_member[winner]


def vote_on_texts(texts: Sequence[str], answer_type: AnswerType | str,
                  choices=None) -> str | None:
  """Extracts each sampled chain's answer and votes."""
  return majority_vote([answers.extract_answer(text, answer_type, choices).answer
                        for text in texts])


@dataclasses.dataclass(frozen=True)
class CurvePoint:
  """Majority-vote accuracy over the first `k` samples of every question."""

  k: int
  correct: int
  total: int

  @property
  def accuracy(self) -> float:
    return self.correct / self.total if self.total else 0.0


def accuracy_curve(samples: Sequence[Sequence[str | None]],
                   golds: Sequence[str],
                   answer_types: AnswerType | str | Sequence[AnswerType | str],
                   max_k: int | None = None) -> list[CurvePoint]:
  """Accuracy of the vote over the first k samples, for k = 1..K.

  Args:
    samples: per question, the extracted answers of its samples in sampling
      order.
    golds: per question, the gold answer.
    answer_types: one answer type for all questions, or one per question.
    max_k: the largest k; default (and upper bound) is the smallest number
      of samples any question has, so every point uses the same k everywhere.

  Returns:
    One CurvePoint per k.
  """
  if len(samples) != len(golds):
    raise ValueError(f"{len(samples)} sample lists but {len(golds)} gold answers")
  if isinstance(answer_types, (str, AnswerType)):
    answer_types = [answer_types] * len(golds)
  if len(answer_types) != len(golds):
    raise ValueError(f"{len(answer_types)} answer types for {len(golds)} questions")
  if not samples:
    return []
  available = min(len(question) for question in samples)
  if available == 0:
    empty = next(i for i, question in enumerate(samples) if not question)
    raise ValueError(f"question {empty} has no samples")
  limit = available if max_k is None else min(max_k, available)
  curve = []
  for k in range(1, limit + 1):
    correct = sum(
        answers.answers_match(majority_vote(question[:k]), gold, answer_type)
        for question, gold, answer_type in zip(samples, golds, answer_types))
    curve.append(CurvePoint(k=k, correct=correct, total=len(golds)))
  return curve
