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
import datetime
import functools
import hashlib
import json
import logging
import pathlib
from typing import Any, Callable, Mapping, Protocol, Sequence

import gin
import tqdm

from cot_distill.data.example import Example
from cot_distill.evaluation import checkpoint_predictor
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation import summaries
from cot_distill.evaluation.checkpoint_predictor import DecodeSettings
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


def calculator_pass(text: str) -> predictions_lib.CalculatorOutcome:
  """The answers engineer's calculator (calculator.py) in the scorer's terms."""
  from cot_distill.evaluation import calculator  # pylint: disable=g-import-not-at-top
  result = calculator.correct_arithmetic(text)
  return predictions_lib.CalculatorOutcome(result.text, len(result.corrections))


def verify_chain(example, text: str, predicted: str | None):
  """The rationale verifier on a student's chain (no hint: students see none)."""
  from cot_distill import verifier  # pylint: disable=g-import-not-at-top
  return verifier.verify(question=example.question, chain=text, answer=predicted,
                         answer_type=example.answer_type, dataset=example.dataset,
                         choices=example.choices)


def default_scorer(*, calculator: bool = False,
                   num_samples: int = 1, verify: bool = False) -> Scorer:
  """The production scorer: the shared judge, the calculator, the vote, and
  (for chain-of-thought students) the rationale verifier."""
  from cot_distill import answers  # pylint: disable=g-import-not-at-top
  calculator_function = calculator_pass if calculator else None
  vote_function = None
  if num_samples > 1:
    from cot_distill.evaluation import self_consistency  # pylint: disable=g-import-not-at-top
    vote_function = self_consistency.majority_vote
  return Scorer(judge=answers.judge, match=answers.answers_match,
                calculator=calculator_function, vote=vote_function,
                verify=verify_chain if verify else None)


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


def rescore(task: EvaluationTask, records: Sequence[Mapping[str, Any]],
            scorer: Scorer) -> list[dict[str, Any]]:
  """Judge saved generations again with the current scorer.

  Decoding is the expensive part and is fixed by the fingerprint; judging
  is cheap, so a finished evaluation picks up an improved extractor or a
  newly requested calculator pass without decoding again.
  """
  by_id = {record["id"]: record for record in records}
  rescored = []
  for example, model_input in zip(task.examples, task.inputs):
    record = by_id.get(example.id)
    if record is None:
      raise ValueError(f"{task.name}: saved predictions lack {example.id}; "
                       "delete the task directory to decode again")
    saved = record.get("samples") or [record]
    generations = [Generation(s["generated"], s.get("num_tokens"))
                   for s in saved]
    rescored.append(scorer.score_example(example, model_input, generations))
  return rescored


def evaluate_task(task: EvaluationTask, predictor: Predictor, scorer: Scorer,
                  task_dir: pathlib.Path, *, batch_size: int,
                  settings: Mapping[str, Any]) -> dict[str, Any]:
  """Decode, judge and summarise one task; resumable, and free when done.

  If TASK_DIR already holds a complete predictions.jsonl with the same
  fingerprint, its generations are re-scored without decoding.
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
    logging.info("%s: predictions already complete in %s; re-scoring them",
                 task.name, task_dir)
    records = rescore(task, predictions_lib.read_predictions(writer.final_path),
                      scorer)
    predictions_lib.write_jsonl_atomic(writer.final_path, records)
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


# ----------------------------------------------------------------------------
# The whole evaluation: tasks x checkpoint(s) -> OUT_DIR.

TARGET_FORMATS = ("cot", "answer_only", "multitask")
SUMMARY_FILE = "summary.json"
PredictorFactory = Callable[[str, DecodeSettings, int], Predictor]


def model_inputs(examples: Sequence[Example], target_format: str) -> list[str]:
  """Encoder input texts, built by the same functions as the SeqIO tasks.

  Training inputs come from `preprocessors.format_question` (question plus
  Kojima-style choices) and eval tasks add `seqio_tasks.eval_input_prefix`
  ("[label] " for multitask students), so a student is asked exactly what
  it was trained to answer.
  """
  from cot_distill import preprocessors  # pylint: disable=g-import-not-at-top
  from cot_distill import seqio_tasks  # pylint: disable=g-import-not-at-top
  prefix = seqio_tasks.eval_input_prefix(target_format)
  return [prefix + preprocessors.format_question(example.question,
                                                 example.choices)
          for example in examples]


def infer_target_format(training_task: str | None) -> str | None:
  """"cot_distill.gsm8k.gpt3.cot" -> "cot" (task names end in the format)."""
  if not training_task:
    return None
  last = training_task.rsplit(".", 1)[-1]
  return last if last in TARGET_FORMATS else None


def _checkpoint_predictor(checkpoint: str, decode: DecodeSettings,
                          batch_size: int, *, layout: str | None = None,
                          num_partitions: int | None = None,
                          num_devices: int | None = None) -> Predictor:
  return checkpoint_predictor.CheckpointPredictor.from_checkpoint(
      checkpoint, decode=decode, batch_size=batch_size, layout=layout,
      num_partitions=num_partitions, num_devices=num_devices)


def _describe(checkpoint: str):
  try:
    return checkpoint_predictor.describe_checkpoint(checkpoint)
  except FileNotFoundError:
    return None


def _default_label(checkpoint: str, target_format: str,
                   decode: DecodeSettings) -> str:
  path = pathlib.Path(str(checkpoint).replace("{fold}", "*"))
  name = path.name
  if name.startswith("checkpoint_") or name.isdigit():
    name = f"{path.parent.name}@{name.removeprefix('checkpoint_')}"
  label = f"{name} [{target_format}]"
  if decode.num_samples > 1:
    label += f" sc{decode.num_samples}"
  return label


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What an evaluation will decode, resolved before any model is loaded."""

  specs: tuple[Any, ...]  # task_selection.TaskSpec
  checkpoint_of: dict[str, str]  # task name -> checkpoint path
  descriptions: dict[str, Any]  # path -> CheckpointDescription | None
  training_task: str | None
  target_format: str

  @property
  def model_config(self) -> dict[str, Any]:
    description = next((d for d in self.descriptions.values() if d), None)
    return description.model_config if description else {}


def _plan(checkpoint: str, tasks: Sequence[str], split: str | None,
          target_format: str | None) -> _Plan:
  from cot_distill.evaluation import cross_validation  # pylint: disable=g-import-not-at-top
  from cot_distill.evaluation import task_selection  # pylint: disable=g-import-not-at-top
  specs = task_selection.resolve(
      list(tasks), split=split,
      cross_validation=cross_validation.is_template(checkpoint))
  checkpoint_of = {
      spec.name: (cross_validation.fold_checkpoint(checkpoint, spec.fold)
                  if spec.fold is not None else checkpoint) for spec in specs}
  descriptions = {path: _describe(path) for path in set(checkpoint_of.values())}
  known = [d for d in descriptions.values() if d]
  training_task = known[0].training_task if known else None
  target_format = target_format or infer_target_format(training_task)
  if target_format not in TARGET_FORMATS:
    raise ValueError(
        f"cannot tell the checkpoint's target format from its training task "
        f"{training_task!r}; pass --target-format ({', '.join(TARGET_FORMATS)})")
  return _Plan(tuple(specs), checkpoint_of, descriptions, training_task,
               target_format)


def _run_tasks(plan: _Plan, out: pathlib.Path, *, scorer: Scorer,
               predictor_factory: PredictorFactory, decode: DecodeSettings,
               batch_size: int, data_dir: str | None, limit: int | None):
  """Evaluate every planned task; returns (task summaries, evaluated)."""
  task_summaries: dict[str, dict[str, Any]] = {}
  evaluated: dict[str, tuple[Any, Sequence[Example]]] = {}
  predictors: dict[str, Predictor] = {}
  for spec in plan.specs:
    examples = spec.load(data_dir, limit)
    from_file = spec.examples_file is not None
    task = EvaluationTask(
        name=spec.name, examples=tuple(examples),
        inputs=tuple(model_inputs(examples, plan.target_format)),
        dataset=examples[0].dataset if from_file else spec.dataset,
        split=examples[0].split if from_file else spec.split, fold=spec.fold)
    evaluated[spec.name] = (spec, examples)
    path = plan.checkpoint_of[spec.name]
    description = plan.descriptions[path]
    settings = {"checkpoint": checkpoint_predictor.canonical_path(path),
                "step": description.resolved_step if description else None,
                "target_format": plan.target_format,
                "decode": decode.to_dict(), "batch_size": batch_size}
    if path not in predictors:
      predictors.clear()  # one model in memory at a time (CV folds)
      predictors[path] = _LazyPredictor(
          lambda path=path: predictor_factory(path, decode, batch_size),
          decode.num_samples)
    summary = evaluate_task(task, predictors[path], scorer, out / spec.name,
                            batch_size=batch_size, settings=settings)
    summary["predictions"] = f"{spec.name}/{predictions_lib.PREDICTIONS_FILE}"
    task_summaries[spec.name] = summary
  return task_summaries, evaluated


def _leakage(plan: _Plan, evaluated, train_data: Sequence[str],
             data_dir: str | None) -> dict[str, Any]:
  """Leakage entries: each task against its dataset's training splits, the
  given training files, and its checkpoint's own training task."""
  from cot_distill.evaluation import held_out  # pylint: disable=g-import-not-at-top
  given = held_out.examples_from_paths(train_data)
  by_training_task: dict[str | None, tuple[dict, str | None]] = {}
  training: dict[str, dict] = {}
  for name in evaluated:
    description = plan.descriptions[plan.checkpoint_of[name]]
    task_name = description.training_task if description else None
    if task_name not in by_training_task:
      by_training_task[task_name] = held_out.examples_from_training_task(task_name)
    training[name] = {**given, **by_training_task[task_name][0]}
  unchecked = sorted({reason for _, reason in by_training_task.values() if reason})
  if unchecked and not train_data:
    logging.warning("leakage check: %s; pass --train-data to check the "
                    "training examples", "; ".join(unchecked))
  checked = {group_name for groups in training.values() for _, group_name in groups}
  return {"leakage": held_out.check(evaluated, training, data_dir=data_dir),
          "training_data_checked": sorted(checked),
          "training_task_unchecked": "; ".join(unchecked) or None}


@gin.configurable(denylist=["predictor_factory", "scorer"])
def evaluate(*, checkpoint: str, tasks: Sequence[str], out_dir: str,
             split: str | None = None, limit: int | None = None,
             batch_size: int = 32, decode_method: str = "greedy",
             num_samples: int = 1, temperature: float = 0.7, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, beam_size: int = 4,
             alpha: float = 0.6,
             max_input_length: int | None = None,
             max_decode_length: int | None = None, calculator: bool = False,
             target_format: str | None = None, data_dir: str | None = None,
             train_data: Sequence[str] = (), label: str | None = None,
             layout: str | None = None, num_partitions: int | None = None,
             num_devices: int | None = None,
             predictor_factory: PredictorFactory | None = None,
             scorer: Scorer | None = None) -> dict[str, Any]:
  """Evaluate a checkpoint (or one per fold) on tasks; write OUT_DIR.

  Args:
    checkpoint: MODEL_DIR, a checkpoint_<step> dir or a T5X checkpoint; with
      "{fold}" in it, one checkpoint per cross-validation fold.
    tasks: task specs (see task_selection.py): "gsm8k", "strategyqa:dev",
      "NAME=examples.jsonl".
    out_dir: gets <task>/predictions.jsonl and summary.json.
    split: split for every registry task without an explicit one.
    limit: first N examples per task (quick checks; the summary says so).
    batch_size: examples decoded together (the last batch is padded).
    decode_method, num_samples, temperature, top_k, top_p, seed, beam_size,
      alpha: decoding ("greedy", "sample" or "beam");
      num_samples > 1 (with "sample") adds self-consistency voting.
    max_input_length, max_decode_length: default to the training task's
      feature lengths from model_config.json.
    calculator: also score every output after the calculator pass.
    target_format: cot / answer_only / multitask; default from the
      training task name in model_config.json.
    data_dir: benchmark files (see cot_distill.data.registry).
    train_data: annotation run dirs or JSONL files the model trained on, for
      the leakage check (the registry's training split is always checked).
    label: the model's name in reports.
    layout, num_partitions: the mesh to restore and decode on, as
      `partitioning.Partitioner` takes them ("data_parallel",
      "model_parallel", "fsdp"); default: the training run's (recorded in
      model_config.json), else data parallel over all devices. In float32
      decodes do not depend on it, so it is not part of the resume
      fingerprint.
    num_devices: decode on the first N devices only (one host); default all.
    predictor_factory, scorer: injection points for tests.

  Returns:
    The summary (also written to OUT_DIR/summary.json).
  """
  from cot_distill.evaluation import cross_validation  # pylint: disable=g-import-not-at-top
  decode = DecodeSettings(method=decode_method, num_samples=num_samples,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          seed=seed, max_input_length=max_input_length,
                          max_decode_length=max_decode_length,
                          beam_size=beam_size, alpha=alpha)
  plan = _plan(checkpoint, tasks, split, target_format)
  out = pathlib.Path(out_dir)
  task_summaries, evaluated = _run_tasks(
      plan, out, decode=decode, batch_size=batch_size, data_dir=data_dir,
      limit=limit,
      scorer=scorer or default_scorer(calculator=calculator,
                                      num_samples=num_samples,
                                      verify=plan.target_format != "answer_only"),
      predictor_factory=predictor_factory or functools.partial(
          _checkpoint_predictor, layout=layout, num_partitions=num_partitions,
          num_devices=num_devices))
  summary = {
      "kind": "evaluation",
      "label": label or _default_label(checkpoint, plan.target_format, decode),
      "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "checkpoint": str(checkpoint),
      "checkpoints": dict(plan.checkpoint_of),
      "steps": {path: (d.resolved_step if d else None)
                for path, d in plan.descriptions.items()},
      "model": (plan.model_config.get("model")
                or plan.model_config.get("t5config")),
      "training_task": plan.training_task,
      "target_format": plan.target_format,
      "decode": {**decode.to_dict(), "batch_size": batch_size},
      "calculator": bool(calculator),
      "limit": limit,
      "tasks": task_summaries,
      "cross_validation": cross_validation.aggregate(task_summaries),
      **_leakage(plan, evaluated, train_data, data_dir),
  }
  predictions_lib.write_json_atomic(out / SUMMARY_FILE, summary)
  _write_tensorboard(out, summary)
  # As T5X does: the gin bindings in force, next to the results they made.
  operative = gin.operative_config_str()
  if operative.strip():
    (out / "config.gin").write_text(operative, encoding="utf-8")
  return summary


def _write_tensorboard(out: pathlib.Path, summary: Mapping[str, Any]) -> None:
  """Accuracy (and faithful-CoT accuracy) per task as TensorBoard scalars in
  OUT_DIR/tensorboard, at the checkpoint's step, beside the training curves."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  steps = [s for s in (summary.get("steps") or {}).values() if s is not None]
  scalars = {}
  for name, task in summary["tasks"].items():
    scalars[f"eval/{name}/accuracy"] = task["accuracy"]["accuracy"]
    if task.get("faithful_accuracy"):
      scalars[f"eval/{name}/faithful_cot_accuracy"] = task["faithful_accuracy"]["accuracy"]
  if not scalars:
    return
  writer = metric_writers.create_default_writer(str(out / "tensorboard"),
                                                asynchronous=False)
  writer.write_scalars(max(steps) if steps else 0, scalars)
  writer.flush()
  writer.close()


class _LazyPredictor:
  """Builds the real predictor on first use, so a finished evaluation that
  only re-scores saved predictions never loads the checkpoint."""

  def __init__(self, build: Callable[[], Predictor], num_samples: int):
    self._build = build
    self._predictor: Predictor | None = None
    self.num_samples = num_samples

  def __call__(self, inputs: Sequence[str], *,
               batch_index: int) -> list[list[Generation]]:
    if self._predictor is None:
      self._predictor = self._build()
    return self._predictor(inputs, batch_index=batch_index)
