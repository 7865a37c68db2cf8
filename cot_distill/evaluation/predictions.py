"""One scored prediction per example, and the JSON-lines file that holds them.

A prediction record is the unit of evidence of an evaluation: every number in
summary.json and in the report can be recomputed from `predictions.jsonl`
alone, so a reader can check a claimed accuracy by hand.

Record fields (one JSON object per line):
  id, dataset, split, question, answer_type, choices, gold   the Example
  input            the exact text fed to the encoder
  generated        the decoded text (for K samples: a chain that gave the
                   voted answer, else the first sample)
  predicted, rule  the judge's extracted answer and the rule that fired
                   ("none" when nothing was found)
  correct          the judge's verdict
  num_tokens, num_words   length of `generated` (tokens of the model's
                   vocabulary, EOS excluded; whitespace-separated words)
  calculator_text, calculator_predicted, calculator_rule,
  calculator_correct, calculator_corrections   only with the calculator
  samples          only with K > 1 samples: per-sample dicts with the keys
                   above (generated, predicted, rule, correct, num_tokens,
                   num_words, calculator_*)
  vote_counts      only with K > 1: extracted answer -> number of samples

Writing is append-only and batch-aligned so a killed evaluation resumes where
it stopped (see `PredictionWriter`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cot_distill.data.example import Example

PREDICTIONS_FILE = "predictions.jsonl"
# Written while an evaluation runs; renamed to PREDICTIONS_FILE when complete.
PARTIAL_PREDICTIONS_FILE = "predictions.partial.jsonl"


@dataclasses.dataclass(frozen=True)
class Generation:
  """One decoded output. `num_tokens` is None when the predictor cannot tell
  (e.g. a test's fake predictor); lengths then fall back to words only."""

  text: str
  num_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class CalculatorOutcome:
  """What the calculator pass gives back, in the evaluator's terms."""

  text: str
  num_corrections: int


# judge(text, gold, answer_type, choices) -> object with predicted/rule/correct.
JudgeFunction = Callable[..., Any]
# match(predicted, gold, answer_type) -> bool
MatchFunction = Callable[..., bool]
CalculatorFunction = Callable[[str], CalculatorOutcome]
# verify(example, generated text, extracted answer) -> object with passed /
# to_dict() (`cot_distill.verifier.verify`).
VerifyFunction = Callable[..., Any]
# vote(list of extracted answers, None for "not found") -> winning answer.
VoteFunction = Callable[[Sequence[str | None]], str | None]


def count_words(text: str) -> int:
  return len(text.split())


@dataclasses.dataclass(frozen=True)
class Scorer:
  """The functions that turn generated text into verdicts.

  In production these are `cot_distill.answers.judge` / `answers_match`, the
  answers engineer's calculator and majority vote (see `default_scorer` in
  the evaluator); tests inject their own to check the bookkeeping alone.
  """

  judge: JudgeFunction
  match: MatchFunction
  calculator: CalculatorFunction | None = None
  vote: VoteFunction | None = None
  # The rationale verifier: with it, a correct CoT is also *faithful* when
  # its steps pass (`faithful`, `verification` in the record).
  verify: VerifyFunction | None = None

  def score_generation(self, example: Example,
                       generation: Generation) -> dict[str, Any]:
    """Judge one generated text (and its calculator-corrected version)."""
    choices = (list(example.choices) if example.choices is not None
               else None)
    verdict = self.judge(generation.text, example.answer,
                         example.answer_type, choices)
    scored: dict[str, Any] = {
        "generated": generation.text,
        "predicted": verdict.predicted,
        "rule": verdict.rule,
        "correct": bool(verdict.correct),
        "num_tokens": generation.num_tokens,
        "num_words": count_words(generation.text),
    }
    if self.verify is not None:
      scored["faithful"] = False
      if scored["correct"]:
        check = self.verify(example, generation.text, verdict.predicted)
        scored["faithful"] = bool(check.passed)
        scored["verification"] = check.to_dict()
    if self.calculator is not None:
      outcome = self.calculator(generation.text)
      corrected = self.judge(outcome.text, example.answer,
                             example.answer_type, choices)
      scored.update({
          "calculator_text": outcome.text,
          "calculator_predicted": corrected.predicted,
          "calculator_rule": corrected.rule,
          "calculator_correct": bool(corrected.correct),
          "calculator_corrections": outcome.num_corrections,
      })
    return scored

  def voted_answer(self, answers: Sequence[str | None], example: Example
                   ) -> tuple[str | None, bool]:
    """(majority answer, whether it matches gold) over extracted answers."""
    if self.vote is None:
      raise ValueError("several samples per example need a vote function")
    winner = self.vote(list(answers))
    correct = winner is not None and bool(
        self.match(winner, example.answer, example.answer_type))
    return winner, correct

  def _voted_fields(self, samples: Sequence[Mapping[str, Any]],
                    example: Example, prefix: str) -> dict[str, Any]:
    """Top-level fields for the majority answer over `samples`.

    The representative chain is the first sample that reached the voted
    answer, so `generated` always reads as a chain supporting `predicted`.
    """
    winner, correct = self.voted_answer(
        [s[f"{prefix}predicted"] for s in samples], example)
    chosen = next((s for s in samples if winner is not None
                   and s[f"{prefix}predicted"] == winner), samples[0])
    text_key = "calculator_text" if prefix else "generated"
    fields = {
        text_key: chosen[text_key],
        f"{prefix}predicted": winner,
        f"{prefix}rule": chosen[f"{prefix}rule"] if winner is not None else "none",
        f"{prefix}correct": correct,
    }
    if prefix:
      fields["calculator_corrections"] = chosen["calculator_corrections"]
    elif "faithful" in chosen:
      # The representative chain reached the voted answer; faithful when
      # that answer is right and this chain's steps pass.
      fields["faithful"] = correct and chosen["faithful"]
      fields["verification"] = chosen.get("verification")
      fields["num_tokens"] = chosen["num_tokens"]
      fields["num_words"] = chosen["num_words"]
    else:
      fields["num_tokens"] = chosen["num_tokens"]
      fields["num_words"] = chosen["num_words"]
    return fields

  def score_example(self, example: Example, model_input: str,
                    generations: Sequence[Generation]) -> dict[str, Any]:
    """The prediction record for one example (see the module docstring)."""
    if not generations:
      raise ValueError(f"{example.id}: the predictor returned no generation")
    samples = [self.score_generation(example, generation)
               for generation in generations]
    record: dict[str, Any] = {
        "id": example.id,
        "dataset": example.dataset,
        "split": example.split,
        "question": example.question,
        "answer_type": example.answer_type.value,
        "choices": ([list(c) for c in example.choices]
                    if example.choices is not None else None),
        "gold": example.answer,
        "input": model_input,
    }
    record.update(samples[0])
    if len(samples) == 1:
      return record
    record.update(self._voted_fields(samples, example, ""))
    if self.calculator is not None:
      record.update(self._voted_fields(samples, example, "calculator_"))
    record["vote_counts"] = _vote_counts(s["predicted"] for s in samples)
    record["samples"] = samples
    return record


def _vote_counts(answers: Iterable[str | None]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for answer in answers:
    if answer is not None:
      counts[answer] = counts.get(answer, 0) + 1
  return counts


def _fsync_directory(directory: pathlib.Path) -> None:
  try:
    descriptor = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def write_json_atomic(path: pathlib.Path, data: Any) -> None:
  """Write JSON to `path` via a temporary file and os.replace, so readers
  (the report, a resumed run) never see half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.tmp")
  with open(temporary, "w", encoding="utf-8") as handle:
    json.dump(data, handle, indent=2, sort_keys=False, ensure_ascii=False)
    handle.write("\n")
    handle.flush()
    os.fsync(handle.fileno())
  os.replace(temporary, path)
  _fsync_directory(path.parent)


def write_jsonl_atomic(path: pathlib.Path,
                       records: Iterable[Mapping[str, Any]]) -> None:
  """Replace a JSON-lines file in one step (tmp file + os.replace)."""
  path = pathlib.Path(path)
  temporary = path.with_name(f".{path.name}.tmp")
  with open(temporary, "w", encoding="utf-8") as handle:
    for record in records:
      handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
  os.replace(temporary, path)


def read_jsonl(path: pathlib.Path, *, tolerate_torn_tail: bool = False
               ) -> list[dict[str, Any]]:
  """Records of a JSON-lines file; a bad line is an error naming file:line.

  With `tolerate_torn_tail`, an unparsable LAST line is skipped: a file that
  another process is still appending to (an annotation run, a trainer's
  metrics) may end in half a record.
  """
  lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
  records = []
  for line_number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      if tolerate_torn_tail and line_number == len(lines):
        break
      raise ValueError(f"{path}:{line_number}: not valid JSON ({error})") from error
  return records


def read_predictions(path: pathlib.Path) -> list[dict[str, Any]]:
  """All records of a (complete) predictions file."""
  return read_jsonl(path)


class PredictionWriter:
  """Appends whole batches of records; resumes at the last complete batch.

  A run killed mid-write leaves at most one partial line and possibly a
  partial batch in the `.partial` file. On restart we keep only the complete
  batches (a multiple of batch_size records), so decoding restarts at a batch
  boundary and sampled runs draw the same random numbers per batch as an
  uninterrupted run (the RNG is folded with the batch index).
  """

  def __init__(self, directory: pathlib.Path, batch_size: int):
    self.directory = pathlib.Path(directory)
    self.batch_size = batch_size
    self.partial_path = self.directory / PARTIAL_PREDICTIONS_FILE
    self.final_path = self.directory / PREDICTIONS_FILE

  def resume(self) -> list[dict[str, Any]]:
    """Records already done by an earlier, interrupted run (batch-aligned)."""
    if not self.partial_path.exists():
      return []
    records = []
    with open(self.partial_path, encoding="utf-8") as handle:
      for line in handle:
        if not line.endswith("\n"):
          break  # torn final line of a killed write
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          break
    keep = (len(records) // self.batch_size) * self.batch_size
    records = records[:keep]
    self._rewrite(records)
    return records

  def _rewrite(self, records: Sequence[Mapping[str, Any]]) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(self.partial_path, records)

  def append_batch(self, records: Sequence[Mapping[str, Any]]) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(self.partial_path, "a", encoding="utf-8") as handle:
      handle.write(payload)
      handle.flush()
      os.fsync(handle.fileno())

  def finish(self) -> pathlib.Path:
    """Publish the complete file under its final name."""
    if not self.partial_path.exists():
      self._rewrite([])
    os.replace(self.partial_path, self.final_path)
    _fsync_directory(self.directory)
    return self.final_path


def iterate_batches(items: Sequence[Any], batch_size: int
                    ) -> Iterator[tuple[int, Sequence[Any]]]:
  """(batch_index, items) pairs in order; the last batch may be short."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  for batch_index, start in enumerate(range(0, len(items), batch_size)):
    yield batch_index, items[start:start + batch_size]
