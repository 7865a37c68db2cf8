"""Loaders for StrategyQA: the original release and Kojima's BIG-bench copy.

Both hold the same 2,290 questions (the official train set): `strategyqa`
train/dev is eladsegal's unofficial 90/10 split of it, `strategyqa_bigbench`
is the whole set in BIG-bench format (the file the teacher log ran on). Never
train on one and evaluate on the other; `cot_distill.data.leakage` shows it.
gold_rationale is the annotated facts in both (the BIG-bench `target` is
"Yes. " / "No. " followed by those facts).
"""

from __future__ import annotations

import pathlib

from cot_distill.data import readers
from cot_distill.data.example import AnswerType, Example, make_id

STRATEGYQA_FILES = {"train": "strategyqa/train.json", "dev": "strategyqa/dev.json"}
BIGBENCH_FILE = "strategyqa_bigbench/task.json"


def load_strategyqa(data_dir: pathlib.Path, split: str) -> list[Example]:
  """Original format; the per-annotator Wikipedia `evidence` is not kept."""
  examples = []
  for index, record in enumerate(
      readers.read_json_array(data_dir / STRATEGYQA_FILES[split])):
    facts = [fact.strip() for fact in record.field("facts", list)]
    examples.append(Example(
        id=make_id("strategyqa", split, index), dataset="strategyqa", split=split,
        question=record.field("question").strip(),
        answer="yes" if record.field("answer", bool) else "no",
        answer_type=AnswerType.YES_NO, gold_rationale=" ".join(facts),
        meta={"source_id": record.field("qid"), "term": record.field("term"),
              "description": record.field("description"), "facts": facts,
              "decomposition": list(record.field("decomposition", list))}))
  return examples


def load_strategyqa_bigbench(data_dir: pathlib.Path, split: str) -> list[Example]:
  """BIG-bench copy; the answer is the option of `target_scores` scored 1."""
  examples = []
  for index, record in enumerate(
      readers.read_json_array(data_dir / BIGBENCH_FILE, key="examples")):
    scores = record.field("target_scores", dict)
    if sorted(scores) != ["No", "Yes"] or sorted(scores.values()) != [0, 1]:
      raise record.error(f"target_scores {scores} is not one of Yes/No scored 1")
    answer = "yes" if scores["Yes"] == 1 else "no"
    target = record.field("target").strip()
    prefix = "Yes." if answer == "yes" else "No."
    if not target.startswith(prefix):
      raise record.error(f"target {target[:20]!r}... does not start with {prefix!r}")
    examples.append(Example(
        id=make_id("strategyqa_bigbench", split, index), dataset="strategyqa_bigbench",
        split=split, question=record.field("input").strip(), answer=answer,
        answer_type=AnswerType.YES_NO,
        gold_rationale=target[len(prefix):].strip() or None))
  return examples
