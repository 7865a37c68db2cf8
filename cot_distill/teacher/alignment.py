"""Aligning imported teacher questions to our dataset Examples.

Imported teacher outputs (Kojima et al.'s logs, a JSONL of CoTs) carry the
question text the teacher saw, not our example ids, and in an order of their
own (Kojima's DataLoader shuffled). So each question is looked up by its
text. Their authors rewrote questions before prompting, and the lookup undoes
exactly that:

* **appended answer choices.** The choice datasets end with
  `Answer Choices: (A) x (B) y ...` (object tracking with
  `\\nWhich choice is true ? Answer Choices: ...`); `split_choices` separates
  the stem from the lettered options;
* **whitespace and quotes.** AQuA options went through
  `.replace("(", " (").replace(")", ") ")`, questions were `.strip()`ped,
  line breaks vary; typographic quotes may be straightened. `text_key`
  drops all whitespace, applies Unicode NFKC and maps curly quotes to
  straight ones, so none of that matters.

A question then matches an example whose stem key is equal and whose choices
(for the choice types) are the same in the same order ("normalised_question")
or the same set in another order ("stem_and_choice_set": Kojima shuffled the
date options with an unseeded shuffle, we shuffle with a seeded one). In the
second case the example is re-lettered to the source's order, because the
teacher's text refers to the source's letters; its original choices and
answer are kept in `meta["dataset_lettering"]`.

Why a record did not align is always one of `UNALIGNED_REASONS`.
"""

from __future__ import annotations

import collections
import dataclasses
import string
import unicodedata
from typing import Sequence

from cot_distill import answers
from cot_distill.data.example import Example

CHOICES_MARKER = "Answer Choices:"
_TRACKING_QUESTION = "Which choice is true ?"
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'",
                         "\u00b4": "'", "`": "'"})

NORMALISED_QUESTION = "normalised_question"
STEM_AND_CHOICE_SET = "stem_and_choice_set"
ALIGNMENT_METHODS = (NORMALISED_QUESTION, STEM_AND_CHOICE_SET)
UNALIGNED_REASONS = {
    "question_not_in_dataset": (
        "no example has this question, even after normalising whitespace, "
        "quotes and appended answer choices"),
    "choices_differ": (
        "the question's stem is in the dataset, but with another set of "
        "answer choices"),
    "already_aligned": (
        "every example with this question was taken by an earlier record "
        "(the source repeats it more often than the dataset has it)"),
}

Choices = tuple[tuple[str, str], ...]


def text_key(text: str) -> str:
  """The comparison form of a question or option (see module docstring)."""
  return "".join(unicodedata.normalize("NFKC", text).translate(_QUOTES).split())


def split_choices(question: str) -> tuple[str, Choices | None]:
  """("stem", (("A", "x"), ...)) of a question with appended lettered choices.

  The listing after the last "Answer Choices:" is read label by label,
  (A), (B), ... in order, so option text holding other parentheses survives.
  A question without such a listing comes back whole, with None.
  """
  before, marker, listing = question.rpartition(CHOICES_MARKER)
  start = listing.find("(A)") if marker else -1
  if start < 0 or listing[:start].strip():
    return question, None
  choices = []
  labels = string.ascii_uppercase
  for index, label in enumerate(labels):
    following = (listing.find(f"({labels[index + 1]})", start + 3)
                 if index + 1 < len(labels) else -1)
    choices.append((label, listing[start + 3:following if following >= 0 else None].strip()))
    if following < 0:
      break
    start = following
  stem = before.rstrip()
  if stem.endswith(_TRACKING_QUESTION):
    stem = stem[:-len(_TRACKING_QUESTION)]
  return stem.strip(), tuple(choices)


@dataclasses.dataclass(frozen=True)
class Alignment:
  """One source question's match: the example (re-lettered if needed) and how."""

  example: Example
  method: str
  gold_agrees: bool  # The source's own gold answer equals ours.


def _choice_keys(choices: Choices | None) -> list[str]:
  return [text_key(text) for _, text in choices or ()]


def _reletter(example: Example, source_choices: Choices) -> Example:
  """The example with its choices in the source's order and letters."""
  remaining = list(example.choices)  # Pairs taken one by one: texts may repeat.
  choices, answer = [], None
  for label, text in source_choices:
    ours = next(pair for pair in remaining if text_key(pair[1]) == text_key(text))
    remaining.remove(ours)
    choices.append((label, ours[1]))
    if ours[0] == example.answer:
      answer = label
  choices = tuple(choices)
  meta = dict(example.meta)
  meta["dataset_lettering"] = {"choices": [list(c) for c in example.choices],
                               "answer": example.answer}
  return dataclasses.replace(example, choices=choices, answer=answer, meta=meta)


class Aligner:
  """Matches source questions to examples, each example at most once."""

  def __init__(self, examples: Sequence[Example]):
    self._by_stem: dict[str, list[Example]] = collections.defaultdict(list)
    for example in examples:
      self._by_stem[text_key(example.question)].append(example)
    self._used: set[str] = set()

  def align(self, question: str, gold: str | None = None) -> Alignment | str:
    """The Alignment for `question`, or the reason (a UNALIGNED_REASONS key).

    `gold`, the source's own gold answer, picks among examples that share
    the question, and is checked against ours (`Alignment.gold_agrees`).
    """
    stem, choices = split_choices(question)
    candidates = self._by_stem.get(text_key(stem)) or self._by_stem.get(text_key(question))
    if not candidates:
      return "question_not_in_dataset"
    free = [e for e in candidates if e.id not in self._used]
    if not free:
      return "already_aligned"
    ordered = [e for e in free if _choice_keys(e.choices) == _choice_keys(choices)]
    if ordered:
      pool, method = ordered, NORMALISED_QUESTION
    else:
      wanted = sorted(_choice_keys(choices))
      pool = [e for e in free if e.choices and sorted(_choice_keys(e.choices)) == wanted]
      method = STEM_AND_CHOICE_SET
      if not pool or choices is None:
        return "choices_differ"
      pool = [_reletter(e, choices) for e in pool]
    agreeing = [e for e in pool if gold is not None and _gold_agrees(e, gold)]
    chosen = (agreeing or pool)[0]
    self._used.add(chosen.id)
    return Alignment(chosen, method, gold is None or bool(agreeing))


def _gold_agrees(example: Example, gold: str) -> bool:
  return answers.answers_match(gold, example.answer, example.answer_type)


@dataclasses.dataclass
class AlignmentReport:
  """Counts of an import's alignment, for the manifest and the command line."""

  records: int = 0
  by_method: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  unaligned: dict[str, list[int]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  gold_differs: list[int] = dataclasses.field(default_factory=list)

  def add(self, result: Alignment | str, where: int) -> Alignment | None:
    """Counts one source record (`where`: its log index or line number)."""
    self.records += 1
    if isinstance(result, str):
      self.unaligned[result].append(where)
      return None
    self.by_method[result.method] += 1
    if not result.gold_agrees:
      self.gold_differs.append(where)
    return result

  @property
  def aligned(self) -> int:
    return sum(self.by_method.values())

  def to_dict(self, unit: str = "log_indices") -> dict:
    return {
        "records": self.records, "aligned": self.aligned,
        "by_method": {m: self.by_method.get(m, 0) for m in ALIGNMENT_METHODS},
        "unaligned": {r: len(self.unaligned.get(r, ())) for r in UNALIGNED_REASONS},
        f"unaligned_{unit}": {r: v[:20] for r, v in self.unaligned.items() if v},
        "gold_differs": len(self.gold_differs),
        f"gold_differs_{unit}": self.gold_differs[:20],
    }

  def describe(self, source: str, target: str) -> str:
    """One line: "N of M records aligned ...; K not: reason=count (meaning)"."""
    text = f"{source}: {self.aligned} of {self.records} records aligned to {target}"
    missing = {r: len(v) for r, v in self.unaligned.items() if v}
    if missing:
      text += "; not aligned: " + "; ".join(
          f"{r}={n} ({UNALIGNED_REASONS[r]}; first: {self.unaligned[r][:5]})"
          for r, n in sorted(missing.items()))
    if self.gold_differs:
      text += (f"; {len(self.gold_differs)} aligned records' own gold answer differs "
               f"from ours (first: {self.gold_differs[:5]})")
    return text
