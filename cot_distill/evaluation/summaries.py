"""From prediction records to the per-task numbers in summary.json.

Everything here reads only the saved records (see `predictions.py`), so a
summary can be recomputed, or checked by hand, from predictions.jsonl.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

from cot_distill import answers
from cot_distill.evaluation import statistics
from cot_distill.evaluation.predictions import Scorer


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def _length_statistics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Mean generated length in words and (when known) model tokens.

  For CoT students this is the mean chain-of-thought length; for answer-only
  students it shows the outputs really are short.
  """
  words = [r["num_words"] for r in records]
  tokens = [r["num_tokens"] for r in records if r.get("num_tokens") is not None]
  result: dict[str, Any] = {
      "mean_generated_words": _mean(words),
      "mean_generated_tokens": _mean(tokens) if len(tokens) == len(records) else None,
  }
  if words:
    low, high = statistics.bootstrap_interval(words)
    result["mean_generated_words_interval"] = [low, high]
  return result


def self_consistency_curve(records: Sequence[Mapping[str, Any]],
                           scorer: Scorer, prefix: str = ""
                           ) -> dict[str, list[Any]] | None:
  """Accuracy of a majority vote over the first k samples, k = 1..K.

  k = 1 is plain sampling; the curve shows how much voting buys. Returns None
  when the records hold a single decode per example.
  """
  if not records or "samples" not in records[0]:
    return None
  num_samples = min(len(r["samples"]) for r in records)
  ks, accuracies, intervals = [], [], []
  for k in range(1, num_samples + 1):
    flags = []
    for record in records:
      answers = [s[f"{prefix}predicted"] for s in record["samples"][:k]]
      example = _ExampleView(record)
      _, correct = scorer.voted_answer(answers, example)
      flags.append(correct)
    result = statistics.accuracy(flags)
    ks.append(k)
    accuracies.append(result.value)
    intervals.append([result.low, result.high])
  return {"k": ks, "accuracy": accuracies, "interval": intervals}


class _ExampleView:
  """The two Example fields `Scorer.voted_answer` reads, from a record."""

  def __init__(self, record: Mapping[str, Any]):
    self.answer = record["gold"]
    self.answer_type = record["answer_type"]


def _calculator_statistics(records: Sequence[Mapping[str, Any]]
                           ) -> dict[str, Any]:
  flags = [bool(r["calculator_correct"]) for r in records]
  sources = collections.Counter(
      answers.answer_source(r.get("calculator_rule")) for r in records)
  changed = sum(1 for r in records if r.get("calculator_corrections"))
  return {
      "accuracy": statistics.accuracy(flags).to_dict(),
      "answer_found_rate": sources["marker"] / len(records),
      "answer_fallback_rate": sources["fallback"] / len(records),
      "examples_with_corrections": changed,
      # Examples the calculator turned from wrong to right, and vice versa:
      # the net gain alone would hide a calculator that also breaks answers.
      "fixed": sum(1 for r in records
                   if r["calculator_correct"] and not r["correct"]),
      "broken": sum(1 for r in records
                    if r["correct"] and not r["calculator_correct"]),
  }


def _faithful_statistics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Faithful-CoT accuracy: the answer is right AND the chain passes the
  rationale verifier; and why the right-but-unfaithful chains failed."""
  unfaithful = collections.Counter(
      (r.get("verification") or {}).get("reason") for r in records
      if r["correct"] and not r["faithful"])
  return {"faithful_accuracy": statistics.accuracy(
              [bool(r["faithful"]) for r in records]).to_dict(),
          "unfaithful_correct": dict(sorted(unfaithful.items()))}


def summarise_task(records: Sequence[Mapping[str, Any]],
                   scorer: Scorer | None = None) -> dict[str, Any]:
  """The summary.json entry for one task's prediction records.

  `scorer` is needed only for self-consistency curves (it holds the vote
  and the answer comparison).
  """
  if not records:
    return {"num_examples": 0, "accuracy": statistics.accuracy([]).to_dict(),
            "answer_found_rate": math.nan, "answer_fallback_rate": math.nan}
  flags = [bool(r["correct"]) for r in records]
  # Found means stated: only marker rules count (`answers.answer_source`).
  sources = collections.Counter(answers.answer_source(r["rule"]) for r in records)
  summary: dict[str, Any] = {
      "num_examples": len(records),
      "accuracy": statistics.accuracy(flags).to_dict(),
      "answer_found": sources["marker"],
      "answer_found_rate": sources["marker"] / len(records),
      "answer_fallback": sources["fallback"],
      "answer_fallback_rate": sources["fallback"] / len(records),
      "rule_counts": dict(sorted(collections.Counter(
          r["rule"] for r in records).items())),
  }
  summary.update(_length_statistics(records))
  if "faithful" in records[0]:
    summary.update(_faithful_statistics(records))
  if "calculator_correct" in records[0]:
    summary["calculator"] = _calculator_statistics(records)
  if "samples" in records[0]:
    all_samples = [s for r in records for s in r["samples"]]
    summary["num_samples"] = min(len(r["samples"]) for r in records)
    # Expected accuracy of ONE sampled chain (no voting), over all samples.
    summary["sample_accuracy"] = (
        sum(1 for s in all_samples if s["correct"]) / len(all_samples))
    if scorer is not None:
      summary["self_consistency"] = self_consistency_curve(records, scorer)
      if "calculator_correct" in records[0]:
        summary["calculator"]["self_consistency"] = self_consistency_curve(
            records, scorer, prefix="calculator_")
  else:
    summary["num_samples"] = 1
  return summary
