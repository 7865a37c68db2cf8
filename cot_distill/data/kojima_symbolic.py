"""Loaders for Kojima et al.'s fixed symbolic evaluation sets.

coin_flip.json and last_letters.json are `{"examples": [{question, answer}]}`
with 500 items each and 4 names per question. To make new data of any size
or length, use `cot_distill.data.symbolic` instead; it writes the same
question format.

Caveat (last_letters): in 15 of the 500 questions a compound name such as
"Jose Antonio" or "Mary Ann" counts as one name, so the gold has 4 letters
while taking the last letter of each space-separated word (what the question
literally asks) gives 5. The gold is kept as published; those examples have
meta["answer_matches_words"] = False so evaluation can report them apart.
"""

from __future__ import annotations

import pathlib
import re

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id

COIN_FLIP_FILE = "coin_flip/coin_flip.json"
LAST_LETTERS_FILE = "last_letters/last_letters.json"
_QUOTED_WORDS = re.compile(r'"([^"]*)"')


def load_coin_flip(data_dir: pathlib.Path, split: str) -> list[Example]:
  examples = []
  for index, record in enumerate(
      readers.read_json_array(data_dir / COIN_FLIP_FILE, key="examples")):
    answer = record.field("answer").strip().lower()
    if answer not in ("yes", "no"):
      raise record.error(f"answer {answer!r} is not yes/no")
    examples.append(Example(
        id=make_id("coin_flip", split, index), dataset="coin_flip", split=split,
        question=record.field("question").strip(), answer=answer,
        answer_type=AnswerType.YES_NO))
  return examples


def load_last_letters(data_dir: pathlib.Path, split: str) -> list[Example]:
  examples = []
  for index, record in enumerate(
      readers.read_json_array(data_dir / LAST_LETTERS_FILE, key="examples")):
    # Kept as written: two golds are not plain lowercase ASCII ("yaeA" from
    # the name "Jose A", "méyl" from "José"), and the answer compares letters.
    answer = record.field("answer").strip()
    if not answer.isalpha():
      raise record.error(f"answer {answer!r} is not a string of letters")
    question = record.field("question").strip()
    quoted = _QUOTED_WORDS.search(question)
    if not quoted:
      raise record.error('question has no quoted "words" to take letters from')
    words = quoted.group(1).split()
    examples.append(Example(
        id=make_id("last_letters", split, index), dataset="last_letters",
        split=split, question=question, answer=answer,
        answer_type=AnswerType.LETTERS,
        meta={"num_words": len(words),
              "answer_matches_words": answer == "".join(word[-1] for word in words)}))
  return examples
