"""Loaders for ASDiv (whole set and its 5-fold splits) and ASDiv-A.

ASDiv.xml holds 2,305 `<Problem ID Grade Source>` elements with `<Body>`,
`<Question>`, `<Solution-Type>`, `<Answer>` ("9 (apples)") and `<Formula>`.
We parse with expat directly (not ElementTree) to know each problem's line.

Answers: "<value> (<unit>)", several joined by "; ". A single numeric value
becomes the canonical number; a terminating fraction ("5/2") its decimal.
219 of the 2,305 whole-set answers are not a single number (names, "3:4", clock
times, "8; 40"); they keep their text with units removed and
meta["answer_is_number"] = False, so numeric evaluation can skip them.
ASDiv-A (the arithmetic subset, folds in nfolds/asdiv-a) is all numeric, and
the loader checks that.
"""

from __future__ import annotations

import dataclasses
import fractions
import pathlib
import re
from typing import Any
from xml.parsers import expat

from cot_distill.data import readers
from cot_distill.data.errors import DataFormatError
from cot_distill.data.example import AnswerType, Example, make_id
from cot_distill.data.number_format import canonical_number

XML_FILE = "asdiv/ASDiv.xml"
NUM_FOLDS = 5
FOLD_SPLITS = tuple(f"fold{fold}" for fold in range(NUM_FOLDS))
_CHILDREN = ("Body", "Question", "Solution-Type", "Answer", "Formula")
_ANSWER_PART = re.compile(r"^\s*(?P<value>[^()]*?)\s*(\((?P<unit>[^()]*)\))?\s*$")
_FRACTION = re.compile(r"^(-?\d+)/(\d+)$")


def fold_file(subset: str, split: str) -> str:
  """subset 'asdiv-a' or 'asdiv-w'; split 'fold0'.. -> relative path."""
  return f"asdiv/nfolds/{subset}/{split}.txt"


@dataclasses.dataclass(frozen=True)
class Problem:
  """One `<Problem>` element: attributes, child texts/attributes, line."""

  line: int
  attributes: dict[str, str]
  texts: dict[str, str]
  child_attributes: dict[str, dict[str, str]]


def read_problems(path: pathlib.Path) -> list[Problem]:
  """All `<Problem>` elements of ASDiv.xml in file order."""
  text = readers.read_text(path)
  parser = expat.ParserCreate()
  problems: list[Problem] = []
  state: dict[str, Any] = {"problem": None, "child": None, "buffer": []}

  def start(name: str, attributes: dict[str, str]) -> None:
    if name == "Problem":
      state["problem"] = Problem(parser.CurrentLineNumber, dict(attributes), {}, {})
    elif state["problem"] is not None and name in _CHILDREN:
      state["child"], state["buffer"] = name, []
      state["problem"].child_attributes[name] = dict(attributes)

  def characters(data: str) -> None:
    if state["child"] is not None:
      state["buffer"].append(data)

  def end(name: str) -> None:
    if name == state["child"]:
      state["problem"].texts[name] = "".join(state["buffer"])
      state["child"] = None
    elif name == "Problem" and state["problem"] is not None:
      problems.append(state["problem"])
      state["problem"] = None

  parser.StartElementHandler = start
  parser.EndElementHandler = end
  parser.CharacterDataHandler = characters
  try:
    parser.Parse(text, True)
  except expat.ExpatError as error:
    raise DataFormatError(path, error.lineno,
                          f"malformed XML: {expat.ErrorString(error.code)}") from None
  return problems


def parse_answer(text: str) -> tuple[str, list[str], bool]:
  """'9 (apples)' -> ('9', ['apples'], True); 'Bob' -> ('Bob', [], False).

  Returns (answer, units, is_number). Several values are joined by "; ".
  """
  values, units = [], []
  for part in text.split(";"):
    match = _ANSWER_PART.match(part)
    value = match.group("value") if match else part.strip()
    if match and match.group("unit"):
      units.append(match.group("unit").strip())
    values.append(_canonical_or_text(value))
  numeric = [value for value, is_number in values if is_number]
  is_number = len(values) == 1 and len(numeric) == 1
  return "; ".join(value for value, _ in values), units, is_number


def _canonical_or_text(value: str) -> tuple[str, bool]:
  value = value.strip()
  try:
    return canonical_number(value), True
  except ValueError:
    pass
  match = _FRACTION.match(value)
  if match and int(match.group(2)) != 0:
    fraction = fractions.Fraction(int(match.group(1)), int(match.group(2)))
    denominator = fraction.denominator
    for prime in (2, 5):
      while denominator % prime == 0:
        denominator //= prime
    if denominator == 1:  # terminating decimal: exact
      return canonical_number(str(fraction.numerator / fraction.denominator)), True
  return value, False


def _to_example(problem: Problem, path: pathlib.Path, dataset: str, split: str,
                index: int) -> Example:
  missing = [name for name in ("Body", "Question", "Answer") if name not in problem.texts]
  if missing or "ID" not in problem.attributes:
    what = missing or ["ID attribute"]
    raise DataFormatError(path, problem.line, f"<Problem> lacks {', '.join(what)}")
  answer, units, is_number = parse_answer(problem.texts["Answer"])
  return Example(
      id=make_id(dataset, split, index), dataset=dataset, split=split,
      question=f"{problem.texts['Body'].strip()} {problem.texts['Question'].strip()}",
      answer=answer, answer_type=AnswerType.NUMBER,
      meta={"source_id": problem.attributes["ID"],
            "grade": problem.attributes.get("Grade"),
            "solution_type": problem.texts.get("Solution-Type", "").strip(),
            "formula": problem.texts.get("Formula", "").strip(),
            "raw_answer": problem.texts["Answer"].strip(),
            "answer_units": units, "answer_is_number": is_number})


def load_asdiv(data_dir: pathlib.Path, split: str) -> list[Example]:
  """Split 'test' = the whole set in file order; 'fold0'..'fold4' = asdiv-w folds."""
  path = data_dir / XML_FILE
  problems = read_problems(path)
  if split == "test":
    return [_to_example(problem, path, "asdiv", split, index)
            for index, problem in enumerate(problems)]
  return _load_fold(data_dir, problems, "asdiv-w", "asdiv", split)


def load_asdiv_a(data_dir: pathlib.Path, split: str) -> list[Example]:
  """ASDiv-A fold `split` ('fold0'..'fold4'), in the fold file's order."""
  problems = read_problems(data_dir / XML_FILE)
  return _load_fold(data_dir, problems, "asdiv-a", "asdiv_a", split)


def _load_fold(data_dir: pathlib.Path, problems: list[Problem], subset: str,
               dataset: str, split: str) -> list[Example]:
  xml_path = data_dir / XML_FILE
  by_id = {problem.attributes.get("ID"): problem for problem in problems}
  examples = []
  for index, record in enumerate(readers.read_lines(data_dir / fold_file(subset, split))):
    problem = by_id.get(record.data)
    if problem is None:
      raise record.error(f"problem id {record.data!r} is not in {xml_path}")
    example = _to_example(problem, xml_path, dataset, split, index)
    if dataset == "asdiv_a" and not example.meta["answer_is_number"]:
      raise record.error(f"ASDiv-A problem {record.data} has a non-numeric answer "
                         f"{example.meta['raw_answer']!r}")
    examples.append(example)
  return examples
