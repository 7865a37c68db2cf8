"""Loaders for the lettered multiple-choice sets: AQuA and CommonsenseQA.

The gold answer is the choice letter; `choices` keeps (letter, text) pairs
in the file's order, and the question text excludes them (prompt builders
append "Answer Choices: (A) ..." themselves).
"""

from __future__ import annotations

import pathlib
import re

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id

AQUA_FILE = "aqua/test.json"
COMMONSENSEQA_FILES = {"train": "commonsenseqa/train_rand_split.jsonl",
                       "dev": "commonsenseqa/dev_rand_split.jsonl"}
_AQUA_OPTION = re.compile(r"^([A-E])\)(.*)$", re.DOTALL)


def _check_answer(record: readers.Record, answer: str,
                  choices: list[tuple[str, str]]) -> None:
  labels = [label for label, _ in choices]
  if answer not in labels:
    raise record.error(f"gold answer {answer!r} is not one of the choice labels {labels}")


def load_aqua(data_dir: pathlib.Path, split: str) -> list[Example]:
  """AQuA test (JSON Lines despite the .json name); options "A)5(√3 + 1)"."""
  examples = []
  for index, record in enumerate(readers.read_jsonl(data_dir / AQUA_FILE)):
    choices = []
    for option in record.field("options", list):
      match = _AQUA_OPTION.match(option) if isinstance(option, str) else None
      if not match:
        raise record.error(f"option {option!r} is not of the form 'A)text'")
      choices.append((match.group(1), match.group(2).strip()))
    answer = record.field("correct").strip()
    _check_answer(record, answer, choices)
    examples.append(Example(
        id=make_id("aqua", split, index), dataset="aqua", split=split,
        question=record.field("question").strip(), answer=answer,
        answer_type=AnswerType.MULTIPLE_CHOICE, choices=tuple(choices),
        gold_rationale=record.field("rationale").strip()))
  return examples


def load_commonsenseqa(data_dir: pathlib.Path, split: str) -> list[Example]:
  """CommonsenseQA 'train' or 'dev' (the random split; dev is the usual test)."""
  examples = []
  for index, record in enumerate(
      readers.read_jsonl(data_dir / COMMONSENSEQA_FILES[split])):
    question = readers.Record(record.path, record.line, record.field("question", dict))
    choices = []
    for choice in question.field("choices", list):
      choice_record = readers.Record(record.path, record.line, choice)
      choices.append((choice_record.field("label"), choice_record.field("text")))
    answer = record.field("answerKey")
    _check_answer(record, answer, choices)
    examples.append(Example(
        id=make_id("commonsenseqa", split, index), dataset="commonsenseqa",
        split=split, question=question.field("stem").strip(), answer=answer,
        answer_type=AnswerType.MULTIPLE_CHOICE, choices=tuple(choices),
        meta={"source_id": record.field("id"),
              "question_concept": question.field("question_concept")}))
  return examples
