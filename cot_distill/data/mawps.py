"""Loader for MAWPS as pre-processed by the SVAMP authors (5-fold CV CSVs).

The CSVs mask every number as `number0`, `number1`, ... with the values in
the space-separated `Numbers` column; we put the values back so the question
reads as the original problem (in the CSV's tokenised spelling, e.g.
"cake . The"). Splits are `fold{k}_train` / `fold{k}_dev`; each fold holds
all 1,921 problems, so ids repeat content across folds by design.
"""

from __future__ import annotations

import pathlib
import re

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id
from cot_distill.data.number_format import canonical_number

NUM_FOLDS = 5
HEADER = ("Question", "Numbers", "Equation", "Answer", "group_nums", "Body",
          "Ques_Statement")
SPLITS = tuple(f"fold{fold}_{part}" for fold in range(NUM_FOLDS)
               for part in ("train", "dev"))
_MASK = re.compile(r"number(\d+)")
_SPLIT_PATTERN = re.compile(r"^fold(\d+)_(train|dev)$")


def split_file(split: str) -> str:
  """'fold3_dev' -> 'mawps/cv_mawps/fold3/dev.csv'."""
  match = _SPLIT_PATTERN.match(split)
  if not match:
    raise ValueError(f"not a MAWPS split: {split!r}")
  return f"mawps/cv_mawps/fold{match.group(1)}/{match.group(2)}.csv"


def unmask_question(masked: str, numbers: list[str]) -> str:
  """Substitutes `numberK` with `numbers[K]`; raises IndexError if K is out of range."""
  return _MASK.sub(lambda match: numbers[int(match.group(1))], masked)


def load_mawps(data_dir: pathlib.Path, split: str) -> list[Example]:
  """One fold's train or dev part; numbers written canonically ("8.0" -> "8")."""
  fold = int(_SPLIT_PATTERN.match(split).group(1))
  examples = []
  for index, record in enumerate(readers.read_csv(data_dir / split_file(split), HEADER)):
    row = record.data
    try:
      numbers = [canonical_number(value) for value in row["Numbers"].split()]
      answer = canonical_number(row["Answer"])
    except ValueError as error:
      raise record.error(f"bad number: {error}") from None
    try:
      question = unmask_question(row["Question"], numbers)
    except IndexError:
      raise record.error(
          f"question uses a mask beyond the {len(numbers)} values in 'Numbers'") from None
    examples.append(Example(
        id=make_id("mawps", split, index), dataset="mawps", split=split,
        question=question.strip(), answer=answer, answer_type=AnswerType.NUMBER,
        meta={"fold": fold, "masked_question": row["Question"],
              "numbers": numbers, "equation": row["Equation"]}))
  return examples
