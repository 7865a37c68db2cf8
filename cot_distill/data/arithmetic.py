"""Loaders for the arithmetic word-problem sets with free-number answers.

GSM8K (OpenAI's JSONL), SVAMP, and the three MAWPS-era sets MultiArith,
AddSub and SingleEq in the JSON-array format Kojima et al. ship. Every loader
reads the original file unmodified and returns `Example`s in file order.
"""

from __future__ import annotations

import pathlib
import re

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id
from cot_distill.data.number_format import canonical_number

GSM8K_FILES = {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}
SVAMP_FILE = "svamp/SVAMP.json"
MULTIARITH_FILE = "multiarith/MultiArith.json"
ADDSUB_FILE = "addsub/AddSub.json"
SINGLEEQ_FILE = "singleeq/questions.json"

# GSM8K's calculator annotations, e.g. "48/2 = <<48/2=24>>24": the part in
# angle brackets is for a calculator tool, not prose, so the gold rationale
# drops it (the annotated text stays in meta["annotated_solution"]).
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_GSM8K_ANSWER_MARKER = "#### "


def strip_calculator_annotations(solution: str) -> str:
  """'48/2 = <<48/2=24>>24 clips' -> '48/2 = 24 clips'."""
  return _CALCULATOR_ANNOTATION.sub("", solution)


def _number_field(record: readers.Record, value) -> str:
  try:
    return canonical_number(value)
  except ValueError as error:
    raise record.error(str(error)) from None


def load_gsm8k(data_dir: pathlib.Path, split: str) -> list[Example]:
  """GSM8K: gold = the number after '#### ' (thousands separators removed).

  gold_rationale is the worked solution without the final '#### N' line and
  without calculator annotations; meta keeps the annotated solution verbatim.
  """
  examples = []
  for index, record in enumerate(readers.read_jsonl(data_dir / GSM8K_FILES[split])):
    question = record.field("question")
    solution_text = record.field("answer")
    solution, marker, gold = solution_text.rpartition(_GSM8K_ANSWER_MARKER)
    if not marker:
      raise record.error("field 'answer' has no '#### <number>' final line")
    solution = solution.rstrip()
    examples.append(Example(
        id=make_id("gsm8k", split, index), dataset="gsm8k", split=split,
        question=question.strip(), answer=_number_field(record, gold.strip()),
        answer_type=AnswerType.NUMBER,
        gold_rationale=strip_calculator_annotations(solution),
        meta={"annotated_solution": solution}))
  return examples


def load_svamp(data_dir: pathlib.Path, split: str) -> list[Example]:
  """SVAMP: question = Body + " " + Question, as Kojima et al. and the logs."""
  examples = []
  for index, record in enumerate(readers.read_json_array(data_dir / SVAMP_FILE)):
    body = record.field("Body").strip()
    question = record.field("Question").strip()
    examples.append(Example(
        id=make_id("svamp", split, index), dataset="svamp", split=split,
        question=f"{body} {question}",
        answer=_number_field(record, record.field("Answer", (int, float))),
        answer_type=AnswerType.NUMBER,
        meta={"source_id": record.field("ID"),
              "equation": record.field("Equation"),
              "problem_type": record.field("Type")}))
  return examples


def _load_equation_set(data_dir: pathlib.Path, relative_path: str,
                       dataset: str, split: str) -> list[Example]:
  """The shared format of MultiArith, AddSub and SingleEq.

  Fields: iIndex, sQuestion, lEquations, lSolutions (numbers or number
  strings, one per unknown; every problem here has exactly one).
  """
  examples = []
  for index, record in enumerate(readers.read_json_array(data_dir / relative_path)):
    solutions = record.field("lSolutions", list)
    if len(solutions) != 1:
      raise record.error(f"field 'lSolutions' has {len(solutions)} values, expected 1")
    examples.append(Example(
        id=make_id(dataset, split, index), dataset=dataset, split=split,
        question=record.field("sQuestion").strip(),
        answer=_number_field(record, solutions[0]),
        answer_type=AnswerType.NUMBER,
        meta={"source_index": record.field("iIndex", int),
              "equations": list(record.field("lEquations", list))}))
  return examples


def load_multiarith(data_dir: pathlib.Path, split: str) -> list[Example]:
  return _load_equation_set(data_dir, MULTIARITH_FILE, "multiarith", split)


def load_addsub(data_dir: pathlib.Path, split: str) -> list[Example]:
  return _load_equation_set(data_dir, ADDSUB_FILE, "addsub", split)


def load_singleeq(data_dir: pathlib.Path, split: str) -> list[Example]:
  return _load_equation_set(data_dir, SINGLEEQ_FILE, "singleeq", split)
