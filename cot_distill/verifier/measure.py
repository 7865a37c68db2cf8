"""Precision and recall of the verifier, measured two ways.

    python -m cot_distill.verifier.measure synthetic [--per-length 100]
    python -m cot_distill.verifier.measure labels tests/testdata/verifier_gpt3_labels.jsonl \\
        --logs ../shared/data/teacher_outputs --data-dir ../shared/data

`synthetic`: the local teacher's chains with known injected errors. For
coin-flip and last-letter questions of 1-6 people/words it writes, from a
hinted prompt, one correct chain and one right-answer-wrong-step chain per
question, and counts how many of each the verifier fails.

`labels`: hand labels of real GPT-3 chains (text-davinci-002, Kojima et
al.'s zero-shot-CoT logs) that the answer filter keeps. Each label line is
{"id", "log", "step_error", "note"}; the chains are read from the logs, not
stored with the labels. A chain has a step error when a step it states is
wrong (arithmetic, a misread fact, a state, a reversed relation, a
conclusion that contradicts its steps); a chain that stops before its last
step, skips steps, or leaves the final sum to the answer stage does not.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import pathlib
import random
import sys
import tempfile
from typing import Any, Iterable

from cot_distill import answers
from cot_distill import verifier


@dataclasses.dataclass(frozen=True)
class Score:
  """Flagged chains against the truth: tp (flagged, wrong), fp, fn, tn."""

  tp: int
  fp: int
  fn: int
  tn: int

  @property
  def precision(self) -> float | None:
    return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

  @property
  def recall(self) -> float | None:
    return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

  @property
  def false_positive_rate(self) -> float | None:
    return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

  def to_dict(self) -> dict[str, Any]:
    return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
            "precision": self.precision, "recall": self.recall,
            "false_positive_rate": self.false_positive_rate}


def score(pairs: Iterable[tuple[bool, bool]]) -> Score:
  """`pairs` of (truly wrong, flagged)."""
  counts = collections.Counter(pairs)
  return Score(tp=counts[(True, True)], fp=counts[(False, True)],
               fn=counts[(True, False)], tn=counts[(False, False)])


def synthetic(per_length: int = 100, seed: int = 0) -> dict[str, Score]:
  """Per task, the verifier against the local teacher's injected errors."""
  from cot_distill.data import symbolic  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import synthetic as teacher  # pylint: disable=g-import-not-at-top
  generators = {symbolic.COIN_FLIP_DATASET: symbolic.generate_coin_flip,
                symbolic.LAST_LETTERS_DATASET: symbolic.generate_last_letters}
  scores = {}
  for dataset, generate in generators.items():
    pairs = []
    for length in range(1, 7):
      for example in generate(per_length, length, seed, "train"):
        prompt = f"Q: {example.question}\nAnswer: {example.answer}\nA:"
        for step_rate in (0.0, 1.0):
          rng = random.Random(f"{seed}|{example.id}|{step_rate}")
          solution = teacher.solve(prompt, rng, error_rate=0.0, vary_wording=True,
                                   step_error_rate=step_rate)
          verdict = answers.judge(solution.text, example.answer, example.answer_type)
          result = verifier.verify(question=example.question, chain=solution.text,
                                   answer=verdict.predicted, answer_type=example.answer_type,
                                   dataset=dataset, hinted=True)
          pairs.append((solution.error is not None, not result.passed))
    scores[dataset] = score(pairs)
  return scores


def read_labels(path: str | pathlib.Path) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def labelled(labels_path: str | pathlib.Path, logs_dir: str | pathlib.Path,
             data_dir: str | pathlib.Path) -> tuple[dict[str, Score], list[dict[str, Any]]]:
  """Per dataset, the verifier against hand labels; and one row per chain."""
  from cot_distill.teacher import importers  # pylint: disable=g-import-not-at-top
  labels = read_labels(labels_path)
  by_log = collections.defaultdict(dict)
  for label in labels:
    by_log[label["log"]][label["id"]] = label
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for log, wanted in sorted(by_log.items()):
      out = pathlib.Path(scratch) / log
      importers.import_kojima_log(pathlib.Path(logs_dir) / log, out, data_dir=str(data_dir),
                                  verify="report")
      records = {}
      for name in ("records.jsonl", "dropped.jsonl"):
        with open(out / name, encoding="utf-8") as f:
          for line in f:
            record = json.loads(line)
            if record["id"] in wanted:
              records[record["id"]] = record
      for id_, label in wanted.items():
        record = records.get(id_)
        if record is None or "verification" not in record:
          raise ValueError(f"{labels_path}: {id_} is not a chain the answer filter keeps "
                           f"in {log}")
        check = record["verification"]
        rows.append({"id": id_, "dataset": record["dataset"],
                     "step_error": bool(label["step_error"]),
                     "flagged": not check["passed"], "reason": check.get("reason"),
                     "detail": check.get("detail"), "note": label.get("note")})
  scores = {}
  for dataset in sorted({row["dataset"] for row in rows}):
    scores[dataset] = score((r["step_error"], r["flagged"]) for r in rows
                            if r["dataset"] == dataset)
  scores["all"] = score((r["step_error"], r["flagged"]) for r in rows)
  return scores, rows


def _print(scores: dict[str, Score]) -> None:
  def percent(value):
    return "  n/a" if value is None else f"{100 * value:5.1f}"
  print(f"{'set':<18}{'chains':>7}{'wrong':>7}{'flagged':>8}{'precision':>10}{'recall':>8}"
        f"{'FP rate':>9}")
  for name, s in scores.items():
    print(f"{name:<18}{s.tp + s.fp + s.fn + s.tn:>7}{s.tp + s.fn:>7}{s.tp + s.fp:>8}"
          f"{percent(s.precision):>10}{percent(s.recall):>8}{percent(s.false_positive_rate):>9}")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  synthetic_parser = sub.add_parser("synthetic")
  synthetic_parser.add_argument("--per-length", type=int, default=100)
  synthetic_parser.add_argument("--seed", type=int, default=0)
  labels_parser = sub.add_parser("labels")
  labels_parser.add_argument("labels")
  labels_parser.add_argument("--logs", required=True)
  labels_parser.add_argument("--data-dir", required=True)
  labels_parser.add_argument("--show", action="store_true", help="print every labelled error")
  args = parser.parse_args(argv)
  if args.command == "synthetic":
    _print(synthetic(args.per_length, args.seed))
    return 0
  scores, rows = labelled(args.labels, args.logs, args.data_dir)
  _print(scores)
  if args.show:
    for row in rows:
      if row["step_error"] or row["flagged"]:
        print(f"{row['id']}: labelled {'wrong' if row['step_error'] else 'sound'}, "
              f"{'flagged ' + str(row['reason']) if row['flagged'] else 'passed'}: "
              f"{row['note'] or row['detail']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
