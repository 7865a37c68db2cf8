"""Loaders for the BIG-bench option tasks: date understanding and tracking
shuffled objects (three objects), both from Kojima et al.'s copies.

Options (the keys of `target_scores`) become lettered choices and the gold
answer is the letter of the option scored 1. In the date file the correct
option comes first in 364 of 369 examples, so (like Kojima et al.) we
shuffle the date options; unlike them we shuffle deterministically, seeded
by the example index, so ids, choices and letters are identical on every
run. meta["source_options"] keeps the file's order. Tracking options are
already balanced (250 per position) and stay in file order.
"""

from __future__ import annotations

import pathlib
import random
import string

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id

DATE_FILE = "bigbench_date/task.json"
TRACKING_FILE = "bigbench_object_tracking/task.json"


def _lettered_options(record: readers.Record, shuffle_seed: str | None
                      ) -> tuple[tuple[tuple[str, str], ...], str, list[str]]:
  scores = record.field("target_scores", dict)
  options = list(scores)
  correct = [option for option, score in scores.items() if score == 1]
  if len(correct) != 1 or any(score not in (0, 1) for score in scores.values()):
    raise record.error(f"target_scores must score exactly one option 1, got {scores}")
  if len(options) > len(string.ascii_uppercase):
    raise record.error(f"too many options ({len(options)})")
  ordered = list(options)
  if shuffle_seed is not None:
    random.Random(shuffle_seed).shuffle(ordered)
  choices = tuple(zip(string.ascii_uppercase, ordered))
  answer = next(letter for letter, option in choices if option == correct[0])
  return choices, answer, options


def _load_options_task(path: pathlib.Path, dataset: str, split: str,
                       answer_type: AnswerType, shuffle: bool) -> list[Example]:
  examples = []
  for index, record in enumerate(readers.read_json_array(path, key="examples")):
    seed = f"{dataset}/{index}" if shuffle else None
    choices, answer, source_options = _lettered_options(record, seed)
    examples.append(Example(
        id=make_id(dataset, split, index), dataset=dataset, split=split,
        question=record.field("input").strip(), answer=answer,
        answer_type=answer_type, choices=choices,
        meta={"source_options": source_options}))
  return examples


def load_date_understanding(data_dir: pathlib.Path, split: str) -> list[Example]:
  """Options are MM/DD/YYYY dates (5 or 6), shuffled per example (see above)."""
  return _load_options_task(data_dir / DATE_FILE, "date_understanding", split,
                            AnswerType.DATE_OPTION, shuffle=True)


def load_tracking_shuffled_objects(data_dir: pathlib.Path, split: str) -> list[Example]:
  """Three options such as "orange ball."; the question ends "Alice has the"."""
  return _load_options_task(data_dir / TRACKING_FILE, "tracking_shuffled_objects",
                            split, AnswerType.OPTION_TEXT, shuffle=False)
