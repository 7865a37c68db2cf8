"""Importers: existing teacher outputs -> CoT records, through the same filter.

Two sources:

* Kojima et al.'s GPT-3 (text-davinci-002) zero-shot-CoT logs
  (`shared/data/teacher_outputs/*.log`, parsed by `kojima_logs`). Records in
  a log follow a shuffled DataLoader order, so each is aligned to its dataset
  Example by whitespace-normalised question text (SOURCES.md: gsm8k test,
  svamp, strategyqa_bigbench, coin_flip and last_letters all align 100%). The
  judged text is the full generation: CoT + " " + trigger + stage-2 answer.
* A generic JSON Lines file whose question / rationale / answer fields are
  named by flags; questions are aligned to a registry dataset, or the lines
  themselves supply gold answers (with an answer type).

An import is small and deterministic, so it is written whole: records and
dropped files are each replaced atomically, then the manifest is written
with status "complete". A kill before that leaves no complete manifest and
the next run redoes the import from scratch: nothing is lost or duplicated.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Mapping, Sequence

from cot_distill.data.example import AnswerType, Example, make_id
from cot_distill.teacher import filtering
from cot_distill.teacher import kojima_logs
from cot_distill.teacher import records as records_lib
from cot_distill.teacher import runner

logger = logging.getLogger(__name__)

# Kojima log `dataset=` value -> (our dataset, split).
KOJIMA_DATASETS = {
    "gsm8k": ("gsm8k", "test"),
    "svamp": ("svamp", "test"),
    "strategyqa": ("strategyqa_bigbench", "train"),
    "coin_flip": ("coin_flip", "test"),
    "last_letters": ("last_letters", "test"),
}
KOJIMA_TEACHER = {"model": "text-davinci-002", "temperature": 0.0, "top_p": 1.0,
                  "max_tokens": 128, "n": 1, "seed": None, "endpoint": "completions"}


class ImportSourceError(ValueError):
  """An input that cannot be imported; the message names file and line."""


def normalize_question(text: str) -> str:
  return " ".join(text.split())


def _file_sha256(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class _QuestionIndex:
  """Finds Examples by normalised question. A question text that occurs
  several times in a dataset (StrategyQA's BIG-bench copy has such
  repeats) maps to its examples in order, one per lookup."""

  def __init__(self, examples: Sequence[Example]):
    self._by_question: dict[str, list[Example]] = collections.defaultdict(list)
    for example in examples:
      self._by_question[normalize_question(example.question)].append(example)
    self._used: collections.Counter = collections.Counter()

  def take(self, question: str) -> Example | None:
    """The next unused example with this question, or None."""
    key = normalize_question(question)
    candidates = self._by_question.get(key, [])
    if self._used[key] >= len(candidates):
      return None
    self._used[key] += 1
    return candidates[self._used[key] - 1]

  def first(self, question: str) -> Example | None:
    """The first example with this question (lines may repeat a question)."""
    candidates = self._by_question.get(normalize_question(question))
    return candidates[0] if candidates else None


def _write_import(out_dir: str | os.PathLike, kept: list[dict], dropped: list[dict],
                  manifest: dict[str, Any]) -> dict[str, Any]:
  directory = pathlib.Path(out_dir)
  previous = records_lib.read_manifest(directory)
  if previous is not None and previous.get("config") != manifest["config"]:
    raise ValueError(f"{directory / records_lib.MANIFEST_FILE}: holds a different run "
                     f"({previous.get('kind')}); choose a new --out")
  if previous is not None and previous.get("status") == "complete":
    logger.info("%s is already complete; nothing to do", directory)
    return previous
  directory.mkdir(parents=True, exist_ok=True)
  records_lib.write_records_atomically(directory / records_lib.RECORDS_FILE, kept)
  records_lib.write_records_atomically(directory / records_lib.DROPPED_FILE, dropped)
  records_lib.write_json_atomically(directory / records_lib.MANIFEST_FILE, manifest)
  return manifest


def _counts(kept: list[dict], dropped: list[dict], questions: int) -> dict[str, Any]:
  reasons = collections.Counter(r["drop_reason"] for r in dropped)
  return {"questions": questions, "questions_done": questions,
          "samples": len(kept) + len(dropped), "kept": len(kept),
          "dropped": {reason: reasons.get(reason, 0) for reason in records_lib.DROP_REASONS}}


def _tokens(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  totals = {"prompt_tokens": 0, "completion_tokens": 0}
  for record in records:
    for key in totals:
      totals[key] += int((record.get("usage") or {}).get(key) or 0)
  return totals


# ---------------------------------------------------------------------------
# Kojima et al.'s logs.


def import_kojima_log(log_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      examples: Sequence[Example] | None = None,
                      data_dir: str | None = None) -> dict[str, Any]:
  """Imports one zero-shot-CoT log; returns the manifest.

  Args:
    log_path: a Kojima et al. log file.
    out_dir: run directory to write.
    examples: the dataset's examples (default: loaded from the registry with
      `data_dir`, by the log's own `dataset=` setting).
  """
  log = kojima_logs.parse_log(log_path)
  if log.dataset not in KOJIMA_DATASETS:
    raise ImportSourceError(f"{log_path}: unknown log dataset {log.dataset!r}; "
                       f"known: {sorted(KOJIMA_DATASETS)}")
  dataset, split = KOJIMA_DATASETS[log.dataset]
  if examples is None:
    from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
    examples = registry.load(dataset, split, data_dir=data_dir)
  by_question = _QuestionIndex(examples)
  prompt = {"template_id": "kojima-zero-shot-cot",
            "template_hash": hashlib.sha256(
                f"{log.cot_trigger}\x00{log.trigger}".encode()).hexdigest()[:16],
            "exemplar_set_id": None, "hinted": False, "style": "completion",
            "mode": "zero_shot"}
  kept, dropped, unaligned = [], [], []
  agreement = collections.Counter()
  for record in log.records:
    example = by_question.take(record.question)
    if example is None:
      unaligned.append(record.index)
      continue
    sample = filtering.Sample(
        index=0, rationale=record.cot, judged_text=log.completion(record),
        extra={"answer_completion": record.answer_text,
               "source": {"log": os.path.basename(os.fspath(log_path)),
                          "log_index": record.index, "log_line": record.line,
                          "log_prediction": record.pred_mode, "log_gold": record.gold,
                          "log_correct": record.log_correct}})
    question_kept, question_dropped = filtering.classify_samples(
        example, [sample], teacher=KOJIMA_TEACHER, prompt=prompt)
    kept += question_kept
    dropped += question_dropped
    agreement[(bool(question_kept), record.log_correct)] += 1
  if unaligned:
    logger.warning("%s: %d log records matched no %s/%s question (log indices %s...)",
                   log_path, len(unaligned), dataset, split, unaligned[:10])
  manifest = {
      "format_version": 1, "kind": "import", "status": "complete",
      "created_at": records_lib.utc_now(), "updated_at": records_lib.utc_now(),
      "config": {"source": "kojima_log", "log": os.path.abspath(log_path),
                 "log_sha256": _file_sha256(log_path)},
      "teacher": dict(KOJIMA_TEACHER), "prompt": prompt,
      "dataset": {"name": dataset, "split": split, "examples": len(examples),
                  "fingerprint": runner.dataset_fingerprint(examples)},
      "counts": _counts(kept, dropped, len(log.records) - len(unaligned)),
      "tokens": _tokens(kept + dropped),
      "log": {"records": len(log.records), "accuracy_percent": log.accuracy,
              "log_correct": sum(r.log_correct for r in log.records),
              "unaligned_records": len(unaligned),
              "kept_and_log_correct": agreement[(True, True)],
              "kept_but_log_wrong": agreement[(True, False)],
              "dropped_but_log_correct": agreement[(False, True)],
              "dropped_and_log_wrong": agreement[(False, False)]},
  }
  return _write_import(out_dir, kept, dropped, manifest)


# ---------------------------------------------------------------------------
# Generic JSON Lines.


def _field_value(line: Mapping[str, Any], field: str, where: str) -> str:
  value = line
  for part in field.split("."):  # "output.text" reaches into nested objects.
    if not isinstance(value, Mapping) or part not in value:
      raise ImportSourceError(f"{where}: missing field {field!r}")
    value = value[part]
  if value is None:
    raise ImportSourceError(f"{where}: field {field!r} is null")
  return str(value)


def _read_jsonl_samples(path, *, question_field, rationale_field, answer_field,
                        predicted_field, by_question, dataset, split, answer_type):
  """Groups the file's lines by question: ({question: (Example, samples)}, unaligned)."""
  grouped: dict[str, tuple[Example, list[filtering.Sample]]] = {}
  unaligned = 0
  with open(path, encoding="utf-8") as f:
    for line_number, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      where = f"{path}:{line_number}"
      try:
        line = json.loads(raw)
      except json.JSONDecodeError as error:
        raise ImportSourceError(f"{where}: invalid JSON: {error.msg}") from None
      question = _field_value(line, question_field, where)
      rationale = _field_value(line, rationale_field, where)
      if by_question is not None:
        example = by_question.first(question)
        if example is None:
          unaligned += 1
          continue
      else:
        example = grouped.get(normalize_question(question), (None,))[0] or Example(
            id=make_id(dataset, split, len(grouped)), dataset=dataset, split=split,
            question=question, answer=_field_value(line, answer_field, where),
            answer_type=AnswerType(answer_type))
      judged = rationale
      if predicted_field:
        judged = f"{rationale} The answer is {_field_value(line, predicted_field, where)}."
      entry = grouped.setdefault(normalize_question(example.question), (example, []))
      entry[1].append(filtering.Sample(
          index=len(entry[1]), rationale=rationale, judged_text=judged,
          extra={"source": {"file": os.path.basename(os.fspath(path)), "line": line_number}}))
  return grouped, unaligned


def import_jsonl(path: str | os.PathLike, out_dir: str | os.PathLike, *,
                 question_field: str = "question", rationale_field: str = "rationale",
                 answer_field: str | None = "answer", predicted_field: str | None = None,
                 examples: Sequence[Example] | None = None,
                 dataset: str = "jsonl", split: str = "train",
                 answer_type: str | None = None, teacher_model: str = "unknown"
                 ) -> dict[str, Any]:
  """Imports teacher CoTs from a JSONL file; returns the manifest.

  Args:
    path: the JSONL file, one generated chain of thought per line (several
      lines may share a question: they become sample 0, 1, ... of it).
    question_field, rationale_field: field names (dots reach nested fields).
    answer_field: the gold answer's field; used when `examples` is None.
    predicted_field: optional field with the teacher's final answer, appended
      to the judged text as "The answer is X." (for rationales without one).
    examples: align each line to these by normalised question; gold answers
      then come from the dataset and `answer_field` is ignored.
    dataset, split: name the records when `examples` is None.
    answer_type: AnswerType value; required when `examples` is None.
    teacher_model: recorded as the teacher's model name.
  """
  by_question = _QuestionIndex(examples) if examples is not None else None
  if by_question is None and (answer_type is None or answer_field is None):
    raise ImportSourceError("without a dataset to align to, give --answer-field and --answer-type")
  config = {"source": "jsonl", "path": os.path.abspath(path), "sha256": _file_sha256(path),
            "question_field": question_field, "rationale_field": rationale_field,
            "answer_field": answer_field, "predicted_field": predicted_field,
            "dataset": dataset, "split": split, "answer_type": answer_type}
  grouped, unaligned = _read_jsonl_samples(
      path, question_field=question_field, rationale_field=rationale_field,
      answer_field=answer_field, predicted_field=predicted_field, by_question=by_question,
      dataset=dataset, split=split, answer_type=answer_type)
  if unaligned:
    logger.warning("%s: %d lines matched no question of the dataset", path, unaligned)
  kept, dropped = [], []
  prompt = {"template_id": "imported", "template_hash": None, "exemplar_set_id": None,
            "hinted": None, "style": None, "mode": None}
  for example, samples in grouped.values():
    teacher = {"model": teacher_model, "temperature": None, "top_p": None,
               "max_tokens": None, "n": len(samples), "seed": None, "endpoint": None}
    question_kept, question_dropped = filtering.classify_samples(
        example, samples, teacher=teacher, prompt=prompt)
    kept += question_kept
    dropped += question_dropped
  manifest = {
      "format_version": 1, "kind": "import", "status": "complete",
      "created_at": records_lib.utc_now(), "updated_at": records_lib.utc_now(),
      "config": config, "teacher": {"model": teacher_model}, "prompt": prompt,
      "dataset": {"name": dataset, "split": split,
                  "examples": len(examples) if examples is not None else len(grouped)},
      "counts": _counts(kept, dropped, len(grouped)),
      "tokens": _tokens(kept + dropped), "unaligned_lines": unaligned,
  }
  return _write_import(out_dir, kept, dropped, manifest)
