"""Importers: existing teacher outputs -> CoT records, through the same filter.

Two sources:

* Kojima et al.'s GPT-3 (text-davinci-002) zero-shot-CoT and zero-shot
  (direct-answer) logs for all twelve of their datasets (`KOJIMA_DATASETS`
  maps their names and `--dataset_path` files to our registry datasets and
  splits; parsed by `kojima_logs`). Records in a log follow a shuffled
  DataLoader order, so each is aligned to its dataset Example by question
  text, undoing their rewriting (`alignment`: appended answer choices,
  whitespace, quotes; stem plus choice set when options were reordered).
  The judged text is the full generation: CoT + " " + trigger + stage-2
  answer (a direct-answer run: its trigger + answer, and the answer text is
  also the record's rationale). Each record keeps the log's index, gold and
  verdict under `source`.
* A generic JSON Lines file whose question / rationale / answer fields are
  named by flags; questions are aligned to a registry dataset, or the lines
  themselves supply gold answers (with an answer type).

Both report their alignment in the manifest (`alignment`: aligned per
method, unaligned per reason with the first log indices or line numbers,
records whose own gold answer differs from ours), and an import that aligns
nothing is an error, never an empty "complete" run.

An import is small and deterministic, so it is written whole: records and
dropped files are each replaced atomically, then the manifest is written
with status "complete". A kill before that leaves no complete manifest and
the next run redoes the import from scratch: nothing is lost or duplicated.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Mapping, Sequence

from cot_distill.data.example import AnswerType, Example, make_id
from cot_distill.teacher import alignment as alignment_lib
from cot_distill.teacher import filtering
from cot_distill.teacher import kojima_logs
from cot_distill.teacher import records as records_lib
from cot_distill.teacher import runner

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KojimaDataset:
  """Our registry dataset for one of Kojima et al.'s `--dataset` names.

  `split_by_file` maps the basename of the log's `dataset_path` to our split
  (their code reads the file it is given, so GSM8K's train.jsonl is our
  train split).
  """

  dataset: str
  split_by_file: Mapping[str, str]


# Kojima log `dataset=` value (their spelling) -> our dataset and splits.
KOJIMA_DATASETS = {
    "gsm8k": KojimaDataset("gsm8k", {"test.jsonl": "test", "train.jsonl": "train"}),
    "svamp": KojimaDataset("svamp", {"SVAMP.json": "test"}),
    "multiarith": KojimaDataset("multiarith", {"MultiArith.json": "test"}),
    "addsub": KojimaDataset("addsub", {"AddSub.json": "test"}),
    "singleeq": KojimaDataset("singleeq", {"questions.json": "test"}),
    "aqua": KojimaDataset("aqua", {"test.json": "test"}),
    "commonsensqa": KojimaDataset("commonsenseqa", {"dev_rand_split.jsonl": "dev",
                                                    "train_rand_split.jsonl": "train"}),
    "strategyqa": KojimaDataset("strategyqa_bigbench", {"task.json": "train"}),
    "bigbench_date": KojimaDataset("date_understanding", {"task.json": "test"}),
    "object_tracking": KojimaDataset("tracking_shuffled_objects", {"task.json": "test"}),
    "coin_flip": KojimaDataset("coin_flip", {"coin_flip.json": "test"}),
    "last_letters": KojimaDataset("last_letters", {"last_letters.json": "test"}),
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
  flagged = collections.Counter(r["verification"]["reason"] for r in kept
                                if (r.get("verification") or {}).get("passed") is False)
  counts = {"questions": questions, "questions_done": questions,
            "samples": len(kept) + len(dropped), "kept": len(kept),
            "dropped": {reason: reasons.get(reason, 0) for reason in records_lib.DROP_REASONS}}
  if any("verification" in r for r in kept + dropped):
    counts["verifier_flagged"] = dict(sorted(flagged.items()))
  return counts


def _tokens(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  totals = {"prompt_tokens": 0, "completion_tokens": 0}
  for record in records:
    for key in totals:
      totals[key] += int((record.get("usage") or {}).get(key) or 0)
  return totals


# ---------------------------------------------------------------------------
# Kojima et al.'s logs.


def log_target(log: kojima_logs.KojimaLog, *, dataset: str | None = None,
               split: str | None = None) -> tuple[str, str]:
  """(our dataset, split) of a log, checked against the requested ones.

  The log says which it is: its Namespace's `dataset=` and the file of
  `dataset_path=`. A `dataset`/`split` the caller gives must agree; a split
  is taken from the caller only when the log's file names none we know.
  """
  if log.dataset not in KOJIMA_DATASETS:
    raise ImportSourceError(f"{log.path}: unknown log dataset {log.dataset!r}; "
                            f"known: {sorted(KOJIMA_DATASETS)}")
  entry = KOJIMA_DATASETS[log.dataset]
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  our_splits = registry.splits(entry.dataset)
  log_split = entry.split_by_file.get(os.path.basename(log.dataset_path))
  if log_split is None and len(our_splits) == 1:
    log_split = our_splits[0]
  described = (f"{log.path} is a log of Kojima dataset {log.dataset!r} "
               f"(dataset_path={log.dataset_path!r}), i.e. our {entry.dataset!r}"
               + (f" split {log_split!r}" if log_split else ""))
  if dataset is not None and dataset != entry.dataset:
    raise ImportSourceError(f"{described}; it does not match --dataset {dataset}"
                            + (f" --split {split}" if split else ""))
  if split is not None and log_split is not None and split != log_split:
    raise ImportSourceError(f"{described}; it does not match --dataset "
                            f"{dataset or entry.dataset} --split {split}")
  if log_split is None:
    if split is None:
      raise ImportSourceError(f"{described}; its file names no split of ours "
                              f"({', '.join(our_splits)}): give --split")
    if split not in our_splits:
      raise ImportSourceError(f"{described}; --split {split} is not one of "
                              f"{', '.join(our_splits)}")
    log_split = split
  return entry.dataset, log_split


def import_kojima_log(log_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      examples: Sequence[Example] | None = None,
                      data_dir: str | None = None, dataset: str | None = None,
                      split: str | None = None, verify: str = "off") -> dict[str, Any]:
  """Imports one zero-shot-CoT or zero-shot log; returns the manifest.

  `verify` runs the rationale verifier as `filtering.classify_samples` does
  ("off", "report" or "filter").

  Args:
    log_path: a Kojima et al. log file.
    out_dir: run directory to write.
    examples: the dataset's examples (default: loaded from the registry with
      `data_dir`, by the log's own `dataset=` and `dataset_path=`).
    dataset, split: when given, must match the log's (`log_target`).

  Raises:
    ImportSourceError: unknown dataset, a dataset/split that does not match
      the log, or no record aligned (the message counts them per reason).
  """
  log = kojima_logs.parse_log(log_path)
  dataset, split = log_target(log, dataset=dataset, split=split)
  if examples is None:
    from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
    examples = registry.load(dataset, split, data_dir=data_dir)
  aligner = alignment_lib.Aligner(examples)
  report = alignment_lib.AlignmentReport()
  direct = log.is_direct
  prompt = {"template_id": "kojima-zero-shot" if direct else "kojima-zero-shot-cot",
            "template_hash": hashlib.sha256(
                (log.zero_shot_trigger if direct else f"{log.cot_trigger}\x00{log.trigger}"
                 ).encode()).hexdigest()[:16],
            "exemplar_set_id": None, "hinted": False, "style": "completion",
            "mode": "zero_shot_direct" if direct else "zero_shot"}
  kept, dropped = [], []
  agreement = collections.Counter()
  for record in log.records:
    aligned = report.add(aligner.align(record.question, record.gold), record.index)
    if aligned is None:
      continue
    sample = filtering.Sample(
        index=0, rationale=record.answer_text.strip() if direct else record.cot,
        judged_text=log.completion(record),
        extra={"answer_completion": record.answer_text,
               "source": {"log": os.path.basename(os.fspath(log_path)),
                          "log_index": record.index, "log_line": record.line,
                          "log_question": record.question,
                          "alignment": aligned.method,
                          "log_prediction": record.pred_mode, "log_gold": record.gold,
                          "log_correct": record.log_correct}})
    question_kept, question_dropped = filtering.classify_samples(
        aligned.example, [sample], teacher=KOJIMA_TEACHER, prompt=prompt, verify=verify)
    kept += question_kept
    dropped += question_dropped
    agreement[(bool(question_kept), record.log_correct)] += 1
  summary = report.describe(os.fspath(log_path), f"{dataset}/{split}")
  if report.aligned == 0:
    raise ImportSourceError(f"nothing to import: {summary}")
  if report.aligned < report.records:
    logger.warning("%s", summary)
  manifest = {
      "format_version": 1, "kind": "import", "status": "complete",
      "created_at": records_lib.utc_now(), "updated_at": records_lib.utc_now(),
      "config": {"source": "kojima_log", "log": os.path.abspath(log_path),
                 "log_sha256": _file_sha256(log_path)},
      "teacher": dict(KOJIMA_TEACHER), "prompt": prompt,
      "dataset": {"name": dataset, "split": split, "examples": len(examples),
                  "fingerprint": runner.dataset_fingerprint(examples)},
      "counts": _counts(kept, dropped, report.aligned),
      "tokens": _tokens(kept + dropped),
      "alignment": report.to_dict("log_indices"),
      "log": {"dataset": log.dataset, "method": log.method,
              "records": len(log.records), "accuracy_percent": log.accuracy,
              "log_correct": sum(r.log_correct for r in log.records),
              "unaligned_records": report.records - report.aligned,
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
                        predicted_field, aligner, report, dataset, split, answer_type):
  """Groups the file's lines by question: {question: (Example, samples)}.

  With an `aligner`, each distinct question is aligned once (its later
  lines are more samples of it) and every line is counted in `report`.
  """
  grouped: dict[str, tuple[Example, list[filtering.Sample]]] = {}
  aligned_questions: dict[str, alignment_lib.Alignment | str] = {}
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
      if aligner is not None:
        key = alignment_lib.text_key(question)
        if key not in aligned_questions:
          aligned_questions[key] = aligner.align(question)
        result = report.add(aligned_questions[key], line_number)
        if result is None:
          continue
        example = result.example
      else:
        example = grouped.get(normalize_question(question), (None,))[0] or Example(
            id=make_id(dataset, split, len(grouped)), dataset=dataset, split=split,
            question=question, answer=_field_value(line, answer_field, where),
            answer_type=AnswerType(answer_type))
      judged = rationale
      if predicted_field:
        judged = f"{rationale} The answer is {_field_value(line, predicted_field, where)}."
      entry = grouped.setdefault(example.id if aligner is not None
                                 else normalize_question(example.question), (example, []))
      entry[1].append(filtering.Sample(
          index=len(entry[1]), rationale=rationale, judged_text=judged,
          extra={"source": {"file": os.path.basename(os.fspath(path)), "line": line_number}}))
  return grouped


def import_jsonl(path: str | os.PathLike, out_dir: str | os.PathLike, *,
                 question_field: str = "question", rationale_field: str = "rationale",
                 answer_field: str | None = "answer", predicted_field: str | None = None,
                 examples: Sequence[Example] | None = None,
                 dataset: str = "jsonl", split: str = "train",
                 answer_type: str | None = None, teacher_model: str = "unknown",
                 verify: str = "off") -> dict[str, Any]:
  """Imports teacher CoTs from a JSONL file; returns the manifest.

  `verify` runs the rationale verifier ("off", "report" or "filter").

  Args:
    path: the JSONL file, one generated chain of thought per line (several
      lines may share a question: they become sample 0, 1, ... of it).
    question_field, rationale_field: field names (dots reach nested fields).
    answer_field: the gold answer's field; used when `examples` is None.
    predicted_field: optional field with the teacher's final answer, appended
      to the judged text as "The answer is X." (for rationales without one).
    examples: align each line to these by question (`alignment`); gold
      answers then come from the dataset and `answer_field` is ignored.
    dataset, split: name the records when `examples` is None.
    answer_type: AnswerType value; required when `examples` is None.
    teacher_model: recorded as the teacher's model name.
  """
  aligner = alignment_lib.Aligner(examples) if examples is not None else None
  report = alignment_lib.AlignmentReport()
  if aligner is None and (answer_type is None or answer_field is None):
    raise ImportSourceError("without a dataset to align to, give --answer-field and --answer-type")
  config = {"source": "jsonl", "path": os.path.abspath(path), "sha256": _file_sha256(path),
            "question_field": question_field, "rationale_field": rationale_field,
            "answer_field": answer_field, "predicted_field": predicted_field,
            "dataset": dataset, "split": split, "answer_type": answer_type}
  grouped = _read_jsonl_samples(
      path, question_field=question_field, rationale_field=rationale_field,
      answer_field=answer_field, predicted_field=predicted_field, aligner=aligner,
      report=report, dataset=dataset, split=split, answer_type=answer_type)
  if aligner is not None:
    summary = report.describe(os.fspath(path), f"{dataset}/{split}")
    if report.aligned == 0:
      raise ImportSourceError(f"nothing to import: {summary}")
    if report.aligned < report.records:
      logger.warning("%s", summary)
  elif not grouped:
    raise ImportSourceError(f"nothing to import: {path} has no lines")
  kept, dropped = [], []
  prompt = {"template_id": "imported", "template_hash": None, "exemplar_set_id": None,
            "hinted": None, "style": None, "mode": None}
  for example, samples in grouped.values():
    teacher = {"model": teacher_model, "temperature": None, "top_p": None,
               "max_tokens": None, "n": len(samples), "seed": None, "endpoint": None}
    question_kept, question_dropped = filtering.classify_samples(
        example, samples, teacher=teacher, prompt=prompt, verify=verify)
    kept += question_kept
    dropped += question_dropped
  manifest = {
      "format_version": 1, "kind": "import", "status": "complete",
      "created_at": records_lib.utc_now(), "updated_at": records_lib.utc_now(),
      "config": config, "teacher": {"model": teacher_model}, "prompt": prompt,
      "dataset": {"name": dataset, "split": split,
                  "examples": len(examples) if examples is not None else len(grouped)},
      "counts": _counts(kept, dropped, len(grouped)),
      "tokens": _tokens(kept + dropped),
      "unaligned_lines": report.records - report.aligned,
  }
  if aligner is not None:
    manifest["alignment"] = report.to_dict("lines")
  return _write_import(out_dir, kept, dropped, manifest)
