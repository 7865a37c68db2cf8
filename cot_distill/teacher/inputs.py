"""Checks on the examples a user hands to `annotate --examples FILE`.

Why a module of its own: a hand-written or converted JSONL file is where an
annotation run meets user data, and a bad line must end the run before any
request is paid for, with a message naming the file, the line and the field
(`examples.jsonl:3: field 'question': must be a non-empty string, got
null`), never a traceback from deep inside the prompt builder. The checks
are per answer type, because the answer judge compares per type: a yes/no
question whose gold answer is "5" could never keep a single chain of
thought.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

from cot_distill.data.example import AnswerType, Example

_NUMBER = re.compile(r"^[-+]?\$?(\d{1,3}(,\d{3})+|\d*)(\.\d+)?%?$|^[-+]?\d+/\d+$")
_LABELED_TYPES = (AnswerType.MULTIPLE_CHOICE, AnswerType.DATE_OPTION, AnswerType.OPTION_TEXT)
_REQUIRED = ("id", "dataset", "split", "question", "answer", "answer_type")


class InputError(ValueError):
  """A user input file that cannot be used; the message names file:line: field."""


def _describe(value: Any) -> str:
  return "null" if value is None else repr(value)[:60]


def check_example(data: Any) -> Example:
  """An `Example` from one parsed JSON line, or `ValueError("field 'x': ...")`."""
  if not isinstance(data, Mapping):
    raise ValueError(f"must be a JSON object, got {type(data).__name__}")
  for name in _REQUIRED:
    if name not in data:
      raise ValueError(f"field {name!r}: missing")
  fields = dict(data)
  try:
    answer_type = AnswerType(fields["answer_type"])
  except ValueError:
    raise ValueError(f"field 'answer_type': must be one of "
                     f"{[t.value for t in AnswerType]}, got "
                     f"{_describe(fields['answer_type'])}") from None
  answer = fields["answer"]
  if (answer_type == AnswerType.NUMBER and isinstance(answer, (int, float))
      and not isinstance(answer, bool)):
    fields["answer"] = answer = str(answer)
  for name in ("id", "dataset", "split", "question", "answer"):
    value = fields[name]
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f"field {name!r}: must be a non-empty string, got {_describe(value)}")
  choices = fields.get("choices")
  if choices is not None:
    if (not isinstance(choices, list) or not choices
        or not all(isinstance(c, (list, tuple)) and len(c) == 2
                   and all(isinstance(part, str) for part in c) for c in choices)):
      raise ValueError("field 'choices': must be a list of [label, text] string pairs, got "
                       f"{_describe(choices)}")
  for name in ("gold_rationale",):
    if fields.get(name) is not None and not isinstance(fields[name], str):
      raise ValueError(f"field {name!r}: must be a string or null, got {_describe(fields[name])}")
  if fields.get("meta") is not None and not isinstance(fields["meta"], Mapping):
    raise ValueError(f"field 'meta': must be an object, got {_describe(fields['meta'])}")
  _check_answer(answer_type, answer.strip(), choices)
  return Example.from_dict(fields)


def _check_answer(answer_type: AnswerType, answer: str, choices) -> None:
  """Per-type checks of the gold answer."""
  problem = None
  if answer_type == AnswerType.YES_NO and answer.lower() not in ("yes", "no"):
    problem = "a yes_no question needs 'yes' or 'no'"
  elif answer_type == AnswerType.NUMBER and not _NUMBER.match(answer):
    problem = "a number question needs a number ('72', '-3.5', '1,000', '3/4')"
  elif answer_type == AnswerType.LETTERS and (not answer or any(c.isspace() for c in answer)):
    problem = "a letters question needs one word of letters"
  elif answer_type in _LABELED_TYPES:
    if not choices:
      raise ValueError(f"field 'choices': a {answer_type.value} question needs choices")
    labels = [label for label, _ in choices]
    if answer not in labels:
      problem = f"must be one of the choice labels {labels}"
  if problem:
    raise ValueError(f"field 'answer': {problem}, got {answer!r:.60}")


def read_examples_file(path: str | os.PathLike) -> list[Example]:
  """Reads a JSONL file of `Example.to_dict()` objects, checking every line.

  Raises:
    InputError: a line is not JSON, lacks a field, has a field of the wrong
      type or an answer its answer type cannot have, ids repeat, or the file
      holds no example at all.
  """
  examples = []
  first_line: dict[str, int] = {}
  try:
    handle = open(path, encoding="utf-8")
  except FileNotFoundError:
    raise InputError(f"{path}: no such examples file") from None
  except IsADirectoryError:
    raise InputError(f"{path}: is a directory, not an examples file") from None
  with handle:
    for line_number, line in enumerate(handle, 1):
      if not line.strip():
        continue
      try:
        data = json.loads(line)
      except ValueError as error:
        raise InputError(f"{path}:{line_number}: not JSON: {error}") from None
      try:
        example = check_example(data)
      except (ValueError, TypeError) as error:
        raise InputError(f"{path}:{line_number}: {error}") from None
      if example.id in first_line:
        raise InputError(f"{path}:{line_number}: field 'id': {example.id!r} repeats line "
                         f"{first_line[example.id]}")
      first_line[example.id] = line_number
      examples.append(example)
  if not examples:
    raise InputError(f"{path}: holds no examples (an empty input is an error: nothing "
                     "would be annotated)")
  return examples
