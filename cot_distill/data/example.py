"""The one record type every benchmark loader produces.

Everything downstream (prompt building, filtering, SeqIO tasks, evaluation)
takes an `Example`, so a new dataset only needs a loader that yields them.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping


class AnswerType(str, enum.Enum):
  """How a gold answer is written and compared (see `cot_distill.answers`)."""

  NUMBER = "number"  # GSM8K, SVAMP, MAWPS, ...: compared numerically.
  YES_NO = "yes_no"  # StrategyQA, coin flip: "yes" / "no".
  MULTIPLE_CHOICE = "multiple_choice"  # AQuA, CommonsenseQA: a letter "A".."E".
  DATE_OPTION = "date_option"  # BIG-bench date understanding: a letter for an MM/DD/YYYY option.
  LETTERS = "letters"  # last-letter concatenation: a string such as "nkre".
  OPTION_TEXT = "option_text"  # tracking shuffled objects: a letter for a free-text option.


@dataclasses.dataclass(frozen=True)
class Example:
  """A supervised question with its gold answer.

  Attributes:
    id: stable and unique, `{dataset}/{split}/{index}` with the index counted in
      source-file order, so ids survive re-downloads and re-runs.
    dataset: registry name, e.g. "gsm8k".
    split: e.g. "train", "test", "fold0".
    question: the full question text as the model sees it (choices excluded).
    answer: the gold answer in canonical form: a number string without
      thousands separators ("40000", "2.5"), "yes"/"no", a choice letter, or a
      letter string.
    answer_type: how `answer` is compared, see `AnswerType`.
    choices: for multiple-choice types, `(label, text)` pairs in order, e.g.
      (("A", "ignore"), ("B", "enforce"), ...); None otherwise.
    gold_rationale: the dataset's own worked solution when it has one
      (GSM8K, AQuA, StrategyQA facts), else None.
    meta: anything else worth keeping (source ids, equations, fold, ...);
      JSON-serialisable.
  """

  id: str
  dataset: str
  split: str
  question: str
  answer: str
  answer_type: AnswerType
  choices: tuple[tuple[str, str], ...] | None = None
  gold_rationale: str | None = None
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "answer_type", AnswerType(self.answer_type))
    if self.choices is not None:
      object.__setattr__(
          self, "choices", tuple((str(l), str(t)) for l, t in self.choices))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict (enum as its string value, choices as lists)."""
    out = dataclasses.asdict(self)
    out["answer_type"] = self.answer_type.value
    out["choices"] = ([list(c) for c in self.choices]
                      if self.choices is not None else None)
    out["meta"] = dict(self.meta)
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "Example":
    """Inverse of `to_dict`; ignores keys that are not Example fields, so a
    CoT record (a superset) can be read back as its Example."""
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [n for n in ("id", "dataset", "split", "question", "answer",
                           "answer_type") if n not in data]
    if missing:
      raise ValueError(f"Example record lacks field(s) {missing}: {dict(data)!r:.200}")
    kwargs = {k: v for k, v in data.items() if k in names}
    if kwargs.get("choices") is not None:
      kwargs["choices"] = tuple(tuple(c) for c in kwargs["choices"])
    kwargs["meta"] = dict(kwargs.get("meta") or {})
    return cls(**kwargs)


def make_id(dataset: str, split: str, index: int) -> str:
  return f"{dataset}/{split}/{index}"
