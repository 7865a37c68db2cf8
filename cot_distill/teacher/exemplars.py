"""Few-shot exemplar sets: the worked examples shown to the teacher.

Exemplar sets are data, not code. The project ships one default set per task
family in `cot_distill/teacher/exemplars/*.json`, written for this project in
the style of each benchmark's TRAINING data (never drawn from a test split:
an exemplar taken from the evaluation set would leak its answer into every
annotation). Users can pass their own file in either of two formats:

1. Ours: `{"name": ..., "source": ..., "exemplars": [{"question", "answer",
   "rationale", "choices"?}]}` (or a bare list of exemplar objects), where
   `rationale` is the reasoning WITHOUT the final "The answer is X." sentence
   (the prompt template appends it, so hinted and unhinted prompts share one
   set) and `choices` is a list of `[label, text]` pairs.
2. reasoning-teacher's `few_shot_cot_prompts.json`: `{dataset_key: {"prompt":
   "Q: ...\\nA: ... The answer is X.\\nQ: ..."}}`. The prompt string is split
   back into exemplars; multiple-choice options stay inside the question text
   there, exactly as written.

Every set has a content id (`ExemplarSet.id`): a hash of its exemplars, so a
record says exactly which worked examples produced it, whatever the file was
called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
from typing import Any, Mapping, Sequence

# Default exemplar set (a file in exemplars/) for each dataset name.
DEFAULT_SET_FOR_DATASET = {
    "gsm8k": "arithmetic",
    "svamp": "arithmetic",
    "multiarith": "arithmetic",
    "addsub": "arithmetic",
    "singleeq": "arithmetic",
    "asdiv": "arithmetic",
    "asdiv_a": "arithmetic",
    "mawps": "arithmetic",
    "aqua": "aqua",
    "strategyqa": "strategyqa",
    "strategyqa_bigbench": "strategyqa",
    "commonsenseqa": "commonsenseqa",
    "coin_flip": "coin_flip",
    "coin_flip_gen": "coin_flip",
    "last_letters": "last_letters",
    "last_letters_gen": "last_letters",
    "date_understanding": "date_understanding",
    "tracking_shuffled_objects": "tracking_shuffled_objects",
}

# Our dataset names -> keys of reasoning-teacher's few_shot_cot_prompts.json.
REASONING_TEACHER_KEYS = {
    "gsm8k": "gsm8k",
    "svamp": "svamp",
    "multiarith": "multiarith",
    "addsub": "addsub",
    "singleeq": "single_eq",
    "asdiv": "gsm8k",
    "asdiv_a": "gsm8k",
    "mawps": "gsm8k",
    "aqua": "aqua",
    "strategyqa": "strategy_qa",
    "strategyqa_bigbench": "strategy_qa",
    "commonsenseqa": "commonsense_qa",
    "coin_flip": "coin_flip",
    "coin_flip_gen": "coin_flip",
    "last_letters": "last_letter_concatenation",
    "last_letters_gen": "last_letter_concatenation",
    "date_understanding": "date_understanding",
}

_ANSWER_SENTENCE_RE = re.compile(r"^(?P<rationale>.*?)\s*The answer is (?P<answer>.+?)\.?\s*$",
                                 re.DOTALL)


class ExemplarFileError(ValueError):
  """An exemplar file that cannot be read; the message names file and field."""


@dataclasses.dataclass(frozen=True)
class Exemplar:
  """One worked example.

  Attributes:
    question: question text (options excluded when `choices` is set).
    answer: the answer as written in "The answer is X." (a number, yes/no, a
      choice letter, a letter string).
    rationale: the chain of thought, without the final answer sentence.
    choices: `(label, text)` pairs for multiple-choice questions, else None.
  """

  question: str
  answer: str
  rationale: str
  choices: tuple[tuple[str, str], ...] | None = None

  def to_dict(self) -> dict[str, Any]:
    return {"question": self.question, "answer": self.answer,
            "rationale": self.rationale,
            "choices": [list(c) for c in self.choices] if self.choices else None}


@dataclasses.dataclass(frozen=True)
class ExemplarSet:
  """An ordered set of exemplars with a name and where it came from."""

  name: str
  exemplars: tuple[Exemplar, ...]
  source: str = ""

  @property
  def id(self) -> str:
    """Content hash (16 hex chars of SHA-256) of the exemplars, in order."""
    canonical = json.dumps([e.to_dict() for e in self.exemplars],
                           sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

  def __len__(self) -> int:
    return len(self.exemplars)


def _exemplar_from_mapping(item: Any, where: str) -> Exemplar:
  if not isinstance(item, Mapping):
    raise ExemplarFileError(f"{where}: expected an object, got {type(item).__name__}")
  for field in ("question", "answer", "rationale"):
    if not isinstance(item.get(field), str) or not item[field].strip():
      raise ExemplarFileError(f"{where}: field {field!r} must be a non-empty string")
  choices = item.get("choices")
  if choices is not None:
    try:
      choices = tuple((str(label), str(text)) for label, text in choices)
    except (TypeError, ValueError):
      raise ExemplarFileError(f"{where}: 'choices' must be a list of [label, text]") from None
  return Exemplar(question=item["question"].strip(), answer=item["answer"].strip(),
                  rationale=item["rationale"].strip(), choices=choices)


def parse_prompt_string(prompt: str, where: str) -> tuple[Exemplar, ...]:
  """Splits a "Q: ...\\nA: ... The answer is X." prompt into exemplars."""
  blocks = re.split(r"(?:^|\n)Q: ", prompt.strip())
  exemplars = []
  for number, block in enumerate(b for b in blocks if b.strip()):
    if "\nA: " not in block:
      raise ExemplarFileError(f"{where}: exemplar {number + 1} has no '\\nA: ' line")
    question, answer_part = block.split("\nA: ", 1)
    match = _ANSWER_SENTENCE_RE.match(answer_part.strip())
    if not match:
      raise ExemplarFileError(
          f"{where}: exemplar {number + 1} does not end with 'The answer is X.'")
    exemplars.append(Exemplar(question=question.strip(),
                              answer=match.group("answer").strip(),
                              rationale=match.group("rationale").strip()))
  if not exemplars:
    raise ExemplarFileError(f"{where}: no exemplars found")
  return tuple(exemplars)


def _set_from_json(data: Any, dataset: str | None, where: str, name: str) -> ExemplarSet:
  if isinstance(data, list):
    return ExemplarSet(name, tuple(_exemplar_from_mapping(item, f"{where}[{i}]")
                                   for i, item in enumerate(data)), where)
  if not isinstance(data, Mapping):
    raise ExemplarFileError(f"{where}: expected a JSON object or list")
  if "exemplars" in data:
    items = data["exemplars"]
    if not isinstance(items, list) or not items:
      raise ExemplarFileError(f"{where}: 'exemplars' must be a non-empty list")
    exemplars = tuple(_exemplar_from_mapping(item, f"{where}: exemplars[{i}]")
                      for i, item in enumerate(items))
    return ExemplarSet(str(data.get("name", name)), exemplars,
                       str(data.get("source", where)))
  # reasoning-teacher format: one prompt string per dataset key.
  if dataset is None:
    raise ExemplarFileError(f"{where}: file holds several datasets; name one")
  key = dataset if dataset in data else REASONING_TEACHER_KEYS.get(dataset)
  if key not in data:
    raise ExemplarFileError(
        f"{where}: no prompt for dataset {dataset!r} (keys: {sorted(data)})")
  entry = data[key]
  prompt = entry.get("prompt") if isinstance(entry, Mapping) else entry
  if not isinstance(prompt, str):
    raise ExemplarFileError(f"{where}: {key}.prompt must be a string")
  return ExemplarSet(f"{name}:{key}", parse_prompt_string(prompt, f"{where}: {key}.prompt"),
                     f"{where} [{key}]")


def load_exemplar_file(path: str | os.PathLike, dataset: str | None = None) -> ExemplarSet:
  """Reads an exemplar file in either supported format (module docstring).

  Args:
    path: a JSON file.
    dataset: our dataset name; selects the entry in a multi-dataset file.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as error:
    raise ExemplarFileError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
  return _set_from_json(data, dataset, path, os.path.splitext(os.path.basename(path))[0])


def shipped_set_names() -> list[str]:
  folder = importlib.resources.files("cot_distill.teacher") / "exemplars"
  return sorted(entry.name[:-5] for entry in folder.iterdir()
                if entry.name.endswith(".json"))


def load_shipped_set(name: str) -> ExemplarSet:
  """One of the project's own exemplar sets by name (see `shipped_set_names`)."""
  resource = importlib.resources.files("cot_distill.teacher") / "exemplars" / f"{name}.json"
  if not resource.is_file():
    raise ExemplarFileError(f"no shipped exemplar set {name!r}; have {shipped_set_names()}")
  data = json.loads(resource.read_text(encoding="utf-8"))
  return _set_from_json(data, None, f"cot_distill/teacher/exemplars/{name}.json", name)


def default_set(dataset: str) -> ExemplarSet:
  """The shipped default exemplar set for a dataset name."""
  if dataset not in DEFAULT_SET_FOR_DATASET:
    raise ExemplarFileError(
        f"no default exemplar set for dataset {dataset!r}; pass --exemplars FILE "
        f"(known: {sorted(DEFAULT_SET_FOR_DATASET)})")
  return load_shipped_set(DEFAULT_SET_FOR_DATASET[dataset])


def resolve(dataset: str, exemplars_path: str | None = None,
            limit: int | None = None) -> ExemplarSet:
  """The exemplar set to use: a user file if given, else the shipped default;
  `limit` keeps the first k exemplars (k-shot)."""
  chosen = (load_exemplar_file(exemplars_path, dataset) if exemplars_path
            else default_set(dataset))
  if limit is not None:
    chosen = dataclasses.replace(chosen, exemplars=chosen.exemplars[:limit])
  return chosen


def check_no_overlap(chosen: ExemplarSet, questions: Sequence[str]) -> list[str]:
  """Exemplar questions that also appear (whitespace/case-normalised) among
  `questions`: an exemplar equal to an annotated or evaluated question leaks
  its answer, so the runner refuses such a set."""
  def normal(text: str) -> str:
    return " ".join(text.lower().split())
  wanted = {normal(q) for q in questions}
  return [e.question for e in chosen.exemplars if normal(e.question) in wanted]
