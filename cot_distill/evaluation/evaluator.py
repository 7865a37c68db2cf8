"""Decode a benchmark split, judge every output, save and summarise.

The loop is model-agnostic: it takes a `Predictor` (input texts -> generated
texts), so the bookkeeping (batching, resume, scoring, calculator, voting,
summary) is tested with a fake predictor, and the same loop runs a real
checkpoint through `checkpoint_predictor.CheckpointPredictor`.

Output of `evaluate_task` in TASK_DIR:
  predictions.jsonl   one record per example (see predictions.py)
  task_summary.json   the task's numbers (see summaries.py) plus the
                      fingerprint of what was evaluated
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
from typing import Any, Mapping, Protocol, Sequence

import tqdm

from cot_distill.data.example import Example
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation import summaries
from cot_distill.evaluation.predictions import Generation, Scorer

TASK_SUMMARY_FILE = "task_summary.json"
FINGERPRINT_FILE = "fingerprint.json"


class Predictor(Protocol):
  """Generates `num_samples` outputs for each input text.

  `batch_index` lets a sampling predictor fold its RNG per batch, so a
  resumed evaluation draws the same samples as an uninterrupted one.
  """

  num_samples: int

  def __call__(self, inputs: Sequence[str], *,
               batch_index: int) -> list[list[Generation]]:
    ...


@dataclasses.dataclass(frozen=True)
class EvaluationTask:
  """One (benchmark, split[, fold]) to decode; `name` is its output folder."""

  name: str
  examples: tuple[Example, ...]
  inputs: tuple[str, ...]
  dataset: str
  split: str
  fold: int | None = None

  def __post_init__(self):
    if len(self.examples) != len(self.inputs):
      raise ValueError(f"task {self.name}: {len(self.examples)} examples but "
                       f"{len(self.inputs)} model inputs")


def default_scorer(*, calculator: bool = False,
                   num_samples: int = 1) -> Scorer:
  """The production scorer: the shared judge, the calculator, the vote."""
  from cot_distill import answers  # pylint: disable=g-import-not-at-top
  calculator_function = None
  if calculator:
    from cot_distill.evaluation import calculator_adapter  # pylint: disable=g-import-not-at-top
    calculator_function = calculator_adapter.correct_text
  vote_function = None
  if num_samples > 1:
    from cot_distill.evaluation import self_consistency  # pylint: disable=g-import-not-at-top
    vote_function = self_consistency.majority_vote
  return Scorer(judge=answers.judge, match=answers.answers_match,
                calculator=calculator_function, vote=vote_function)


def fingerprint(task: EvaluationTask, settings: Mapping[str, Any]) -> str:
  """A hash of what decides the predictions: model, decoding, inputs.

  A resumed run continues only if its fingerprint equals the saved one, so
  predictions of two different checkpoints are never mixed in one file.
  """
  digest = hashlib.sha256()
  digest.update(json.dumps(dict(settings), sort_keys=True,
                           default=str).encode())
  for example, model_input in zip(task.examples, task.inputs):
    digest.update(example.id.encode() + b"\0" + model_input.encode() + b"\0")
  return digest.hexdigest()


def _load_fingerprint(task_dir: pathlib.Path) -> str | None:
  path = task_dir / FINGERPRINT_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())["fingerprint"]
  except (json.JSONDecodeError, KeyError):
    return None


def _decode_records(task: EvaluationTask, predictor: Predictor,
                    scorer: Scorer, writer: predictions_lib.PredictionWriter,
                    batch_size: int) -> list[dict[str, Any]]:
  """Decode and score every batch not already in the writer's partial file."""
  records = writer.resume()
  first_batch = len(records) // batch_size
  if records:
    logging.info("%s: resuming after %d saved predictions", task.name,
                 len(records))
  pairs = list(zip(task.examples, task.inputs))
  total_batches = -(-len(pairs) // batch_size)
  progress = tqdm.tqdm(total=len(pairs), initial=len(records), unit="ex",
                       desc=f"evaluate {task.name}", dynamic_ncols=True)
  try:
    for batch_index, batch in predictions_lib.iterate_batches(pairs, batch_size):
      if batch_index < first_batch:
        continue
      generations = predictor([model_input for _, model_input in batch],
                              batch_index=batch_index)
      if len(generations) != len(batch):
        raise RuntimeError(
            f"{task.name} batch {batch_index}/{total_batches}: predictor gave "
            f"{len(generations)} outputs for {len(batch)} inputs")
      batch_records = [scorer.score_example(example, model_input, outputs)
                       for (example, model_input), outputs
                       in zip(batch, generations)]
      writer.append_batch(batch_records)
      records.extend(batch_records)
      progress.update(len(batch))
      correct = sum(1 for r in records if r["correct"])
      progress.set_postfix(accuracy=f"{correct / len(records):.3f}")
  finally:
    progress.close()
  return records


def evaluate_task(task: EvaluationTask, predictor: Predictor, scorer: Scorer,
                  task_dir: pathlib.Path, *, batch_size: int,
                  settings: Mapping[str, Any]) -> dict[str, Any]:
  """Decode, judge and summarise one task; resumable, and free when done.

  If TASK_DIR already holds a complete predictions.jsonl with the same
  fingerprint, the predictions are re-scored from disk without decoding.
  """
  task_dir = pathlib.Path(task_dir)
  task_dir.mkdir(parents=True, exist_ok=True)
  task_fingerprint = fingerprint(task, settings)
  writer = predictions_lib.PredictionWriter(task_dir, batch_size)
  saved_fingerprint = _load_fingerprint(task_dir)
  if saved_fingerprint != task_fingerprint:
    for stale in (writer.partial_path, writer.final_path):
      stale.unlink(missing_ok=True)
    predictions_lib.write_json_atomic(
        task_dir / FINGERPRINT_FILE,
        {"fingerprint": task_fingerprint, "settings": dict(settings)})
  if writer.final_path.exists():
    logging.info("%s: predictions already complete in %s", task.name, task_dir)
    records = predictions_lib.read_predictions(writer.final_path)
  else:
    records = _decode_records(task, predictor, scorer, writer, batch_size)
    writer.finish()
  summary = {
      "task": task.name,
      "dataset": task.dataset,
      "split": task.split,
      "fold": task.fold,
      "predictions": predictions_lib.PREDICTIONS_FILE,
      **summaries.summarise_task(records, scorer),
  }
  predictions_lib.write_json_atomic(task_dir / TASK_SUMMARY_FILE, summary)
  return summary
