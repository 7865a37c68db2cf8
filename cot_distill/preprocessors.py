"""SeqIO preprocessors: CoT records and benchmark examples -> {inputs, targets}.

Two layers:

* Pure Python functions on one record (`cot_example`, `answer_only_example`,
  `multitask_examples`, `eval_example`, `clean_rationale`, ...). They hold all
  the text decisions, call the shared `cot_distill.answers` helpers (so the
  answer sentence the student learns is the one the judge reads back), and are
  unit-tested on plain strings.
* `tf.data` preprocessors for `seqio.Task` (`format_examples`,
  `filter_by_token_length`) that apply them inside the input pipeline.

Raw feature schema (what every source in `cot_distill.seqio_sources` yields;
all scalar tf.string, "" where absent):

  id, dataset, split, question, answer, answer_type,
  choices     JSON text of [[label, text], ...], or "" without choices,
  rationale   the teacher's chain of thought, verbatim ("" for gold examples).

After `format_examples` an example has `inputs`, `targets` and the fields the
metrics need to call `judge`: id, answer, answer_type, choices.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from cot_distill import answers

# The source -> preprocessor contract (see module docstring).
RAW_FEATURE_KEYS = ("id", "dataset", "split", "question", "answer",
                    "answer_type", "choices", "rationale")
# Carried past formatting so eval metrics can call `answers.judge`.
SCORING_FEATURE_KEYS = ("id", "answer", "answer_type", "choices")

TARGET_FORMATS = ("cot", "answer_only", "multitask")
# Distilling-step-by-step style task prefixes. Only LABEL_PREFIX is used at
# inference: a multitask student is asked for the label, never the rationale.
LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "
# Kojima et al.'s way of showing options to the model (AQuA, CommonsenseQA).
CHOICES_HEADER = "Answer Choices:"

Record = Mapping[str, Any]
TextPair = dict[str, str]


# ----------------------------------------------------------------------------
# Pure text functions.


def collapse_whitespace(text: str) -> str:
  """Runs of whitespace (newlines included) -> one space, ends stripped.

  T5's SentencePiece model cannot represent newlines (it normalises them to
  spaces), so collapsing here makes the `*_pretokenized` strings equal to what
  the model actually sees.

  "Natalia sold 48.\\n\\nThen  24." -> "Natalia sold 48. Then 24."
  """
  return " ".join(text.split())


def clean_rationale(rationale: str) -> str:
  """The teacher's chain of thought without its own answer sentence.

  The student target appends exactly one normalised answer sentence, so the
  teacher's ("So the answer is $18.") is dropped first (by the shared
  `answers.strip_answer_sentence`), then whitespace is collapsed.

  " She eats 3.\\nShe has 16 - 3 = 13 left.\\nSo the answer is $13."
    -> "She eats 3. She has 16 - 3 = 13 left."
  """
  return collapse_whitespace(answers.strip_answer_sentence(rationale or ""))


def parse_choices(choices: str | Sequence[Sequence[str]] | None,
                  ) -> tuple[tuple[str, str], ...] | None:
  """Choices from the raw feature (JSON text or "") or a list of pairs.

  '[["A", "ignore"], ["B", "enforce"]]' -> (("A", "ignore"), ("B", "enforce"))
  "" -> None
  """
  if choices is None or (isinstance(choices, (str, bytes)) and not choices):
    return None
  if isinstance(choices, bytes):
    choices = choices.decode("utf-8")
  if isinstance(choices, str):
    choices = json.loads(choices)
  if choices is None:
    return None
  return tuple((str(label), str(text)) for label, text in choices)


def format_question(question: str, choices=None) -> str:
  """The model input: the question, with choices appended Kojima-style.

  ("Which is largest?", (("A", "2"), ("B", "7")))
    -> "Which is largest? Answer Choices: (A) 2 (B) 7"
  """
  text = collapse_whitespace(question)
  parsed = parse_choices(choices)
  if parsed:
    options = " ".join(f"({label}) {collapse_whitespace(option)}"
                       for label, option in parsed)
    text = f"{text} {CHOICES_HEADER} {options}"
  return text


def canonical_answer(answer: str, answer_type: str) -> str:
  """The gold answer as the student should write it ("Yes" -> "yes")."""
  normal = answers.normalize_gold(answer, answer_type)
  if normal is None:
    raise ValueError(f"answer {answer!r} cannot be written as a {answer_type} answer")
  return normal


def cot_example(record: Record) -> TextPair:
  """`cot` format: question -> cleaned rationale + one answer sentence.

  {"question": "Tom has 3 apples and buys 2. How many?", "answer": "5",
   "answer_type": "number", "choices": "",
   "rationale": "Tom starts with 3.\\n3 + 2 = 5.\\nSo the answer is 5."}
    -> {"inputs": "Tom has 3 apples and buys 2. How many?",
        "targets": "Tom starts with 3. 3 + 2 = 5. The answer is 5."}
  """
  sentence = answers.answer_sentence(record["answer"], record["answer_type"])
  rationale = clean_rationale(record.get("rationale") or "")
  return {"inputs": format_question(record["question"], record.get("choices")),
          "targets": f"{rationale} {sentence}" if rationale else sentence}


def answer_only_example(record: Record) -> TextPair:
  """`answer_only` format (the paper's baseline): question -> the answer.

  {"question": "Is the sky blue?", "answer": "Yes", "answer_type": "yes_no", ...}
    -> {"inputs": "Is the sky blue?", "targets": "yes"}
  """
  return {"inputs": format_question(record["question"], record.get("choices")),
          "targets": canonical_answer(record["answer"], record["answer_type"])}


def multitask_examples(record: Record) -> list[TextPair]:
  """`multitask` format: one label example and one rationale example.

  {"question": "Tom has 3 apples and buys 2. How many?", "answer": "5",
   "answer_type": "number", "rationale": "3 + 2 = 5. The answer is 5."}
    -> [{"inputs": "[label] Tom has 3 apples and buys 2. How many?",
         "targets": "5"},
        {"inputs": "[rationale] Tom has 3 apples and buys 2. How many?",
         "targets": "3 + 2 = 5."}]

  A record whose cleaned rationale is empty gives only the label example.
  """
  question = format_question(record["question"], record.get("choices"))
  out = [{"inputs": LABEL_PREFIX + question,
          "targets": canonical_answer(record["answer"], record["answer_type"])}]
  rationale = clean_rationale(record.get("rationale") or "")
  if rationale:
    out.append({"inputs": RATIONALE_PREFIX + question, "targets": rationale})
  return out


def eval_example(record: Record, input_prefix: str = "") -> TextPair:
  """Evaluation format: question (optionally prefixed) -> gold answer sentence.

  Scoring never reads `targets` (metrics judge the prediction against the kept
  `answer` field), so one target serves students of every format. A gold
  answer that cannot be written in its type's canonical form (ASDiv has
  "Mrs. Hilt" among its numbers) keeps its raw text here rather than failing
  the whole split; the judge then counts no prediction correct for it.

  ({"question": "Is the sky blue?", "answer": "yes", "answer_type": "yes_no"},
   input_prefix="[label] ")
    -> {"inputs": "[label] Is the sky blue?", "targets": "The answer is yes."}
  """
  inputs = input_prefix + format_question(record["question"], record.get("choices"))
  if answers.normalize_gold(record["answer"], record["answer_type"]) is None:
    return {"inputs": inputs,
            "targets": f"The answer is {collapse_whitespace(record['answer'])}."}
  return {"inputs": inputs,
          "targets": answers.answer_sentence(record["answer"], record["answer_type"])}


def format_record(record: Record, target_format: str,
                  input_prefix: str = "") -> list[TextPair]:
  """All {inputs, targets} pairs one record yields in `target_format`.

  `target_format` is one of TARGET_FORMATS or "eval" (see `eval_example`).
  """
  if target_format == "cot":
    return [cot_example(record)]
  if target_format == "answer_only":
    return [answer_only_example(record)]
  if target_format == "multitask":
    return multitask_examples(record)
  if target_format == "eval":
    return [eval_example(record, input_prefix)]
  raise ValueError(f"unknown target format {target_format!r}; "
                   f"expected one of {TARGET_FORMATS + ('eval',)}")


# ----------------------------------------------------------------------------
# tf.data preprocessors.


# Records formatted per Python call: one numpy_function call per example
# would cost more than the formatting itself.
FORMAT_BATCH_SIZE = 64


def _python_formatter(target_format: str, input_prefix: str
                      ) -> Callable[..., tuple[np.ndarray, ...]]:
  """A numpy_function body over a batch of raw records.

  Takes one [B] array per RAW_FEATURE_KEYS; returns (inputs[K], targets[K],
  source row[K]) for the K >= B pairs the batch yields, in record order.
  """

  def formatter(*columns):
    inputs, targets, rows = [], [], []
    for row, values in enumerate(zip(*columns)):
      record = {key: value.decode("utf-8") if isinstance(value, bytes) else str(value)
                for key, value in zip(RAW_FEATURE_KEYS, values)}
      try:
        pairs = format_record(record, target_format, input_prefix)
      except Exception as error:  # Name the record; tf would only show the op.
        raise ValueError(f"record {record['id']!r} ({target_format}): {error}") from error
      for pair in pairs:
        inputs.append(pair["inputs"].encode("utf-8"))
        targets.append(pair["targets"].encode("utf-8"))
        rows.append(row)
    return (np.array(inputs, dtype=object), np.array(targets, dtype=object),
            np.array(rows, dtype=np.int64))

  return formatter


def format_examples(dataset: tf.data.Dataset, target_format: str,
                    input_prefix: str = "") -> tf.data.Dataset:
  """Raw records -> {inputs, targets, id, answer, answer_type, choices}.

  Applies `format_record` to each record (in a numpy_function, so the text
  rules live in one Python place; FORMAT_BATCH_SIZE records per call), in
  order, one example per pair ("multitask" gives two per record). Features
  not in SCORING_FEATURE_KEYS are dropped.

  {"id": "gsm8k/train/0", "question": "Tom has 3 apples and buys 2. How many?",
   "answer": "5", "answer_type": "number", "choices": "",
   "rationale": "3 + 2 = 5. So the answer is 5.", "dataset": ..., "split": ...}
    -> ("cot") {"inputs": "Tom has 3 apples and buys 2. How many?",
                "targets": "3 + 2 = 5. The answer is 5.",
                "id": "gsm8k/train/0", "answer": "5", "answer_type": "number",
                "choices": ""}
  """
  format_record({"question": "", "answer": "1", "answer_type": "number"},
                target_format)  # A bad format fails here, not mid-pipeline.
  formatter = _python_formatter(target_format, input_prefix)

  def format_batch(batch):
    inputs, targets, rows = tf.numpy_function(
        formatter, [batch[key] for key in RAW_FEATURE_KEYS],
        (tf.string, tf.string, tf.int64), stateful=False)
    inputs.set_shape([None])
    targets.set_shape([None])
    rows.set_shape([None])
    kept = {key: tf.gather(batch[key], rows) for key in SCORING_FEATURE_KEYS}
    return {"inputs": inputs, "targets": targets, **kept}

  return (dataset.batch(FORMAT_BATCH_SIZE)
          .map(format_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .unbatch())


def choices_json(labels: Sequence[str], texts: Sequence[str]) -> str:
  """The `choices` raw feature from parallel label/text lists ("" when empty).

  (["A", "B"], ["ignore", "enforce"]) -> '[["A", "ignore"], ["B", "enforce"]]'
  """
  if len(labels) != len(texts):
    raise ValueError(f"{len(labels)} choice labels for {len(texts)} choice texts")
  return json.dumps([[str(l), str(t)] for l, t in zip(labels, texts)]) if labels else ""


def tfds_benchmark_to_raw(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`cot_distill_benchmarks` TFDS features -> the raw feature schema.

  {"id": "aqua/test/0", "question": ..., "answer": "A",
   "answer_type": "multiple_choice", "choices": ["5", "6"],
   "choice_labels": ["A", "B"], "gold_rationale": "...", "meta": "{...}"}
    -> {"id": "aqua/test/0", "dataset": "aqua", "split": "test",
        "question": ..., "answer": "A", "answer_type": "multiple_choice",
        "choices": '[["A", "5"], ["B", "6"]]', "rationale": "..."}

  Identical to what `seqio_sources.benchmark_source` yields for the same
  Example, so a task reads the same strings from either source.
  """

  def to_json(labels, texts):
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return choices_json([text(l) for l in labels], [text(t) for t in texts]).encode("utf-8")

  def convert(example):
    choices = tf.numpy_function(to_json, [example["choice_labels"], example["choices"]],
                                tf.string, stateful=False)
    choices.set_shape([])
    parts = tf.strings.split(example["id"], "/")
    return {"id": example["id"], "dataset": parts[0], "split": parts[1],
            "question": example["question"], "answer": example["answer"],
            "answer_type": example["answer_type"], "choices": choices,
            "rationale": example["gold_rationale"]}

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def filter_by_token_length(
    dataset: tf.data.Dataset,
    output_features: Mapping[str, seqio.Feature],
    sequence_length: Mapping[str, int] | None = None,
    max_input_tokens: int | None = None,
    max_target_tokens: int | None = None,
) -> tf.data.Dataset:
  """Drops tokenised examples that would not fit, instead of truncating them.

  Truncating a CoT target would cut off its answer sentence and teach the
  student to stop mid-thought, so training tasks drop such examples. A limit
  is `max_*_tokens` when given, else `sequence_length[key]` (T5X's
  TASK_FEATURE_LENGTHS), else none. The EOS that `append_eos_after_trim` adds
  later counts against the limit.

  With targets limit 6 (EOS included): targets [71, 19, 3] kept (4 tokens),
  targets [8, 1525, 19, 3, 5, 6] dropped (7 tokens).
  """
  limits = {}
  for key, explicit in (("inputs", max_input_tokens), ("targets", max_target_tokens)):
    limit = explicit if explicit is not None else (sequence_length or {}).get(key)
    if limit is not None:
      limits[key] = (int(limit), 1 if output_features[key].add_eos else 0)
  if not limits:
    return dataset

  def fits(example):
    ok = tf.constant(True)
    for key, (limit, eos) in limits.items():
      ok = tf.logical_and(ok, tf.size(example[key]) + eos <= limit)
    return ok

  return dataset.filter(fits)
