"""SeqIO data sources: annotation runs, benchmark splits and Example lists.

All sources yield the raw feature schema of `cot_distill.preprocessors`
(scalar strings: id, dataset, split, question, answer, answer_type, choices,
rationale) and read NOTHING until a dataset or an example count is asked for,
so registering hundreds of tasks costs no I/O.

* `annotation_run_source(run_dir)` reads the run's `records.jsonl` as written
  by the annotator (DIR/records.jsonl, one CoT record per line): no conversion
  step between annotating and training.
* `benchmark_source(dataset, splits)` loads splits with the data engineer's
  `cot_distill.data.registry.load` (offline via COT_DISTILL_DATA_DIR).
* `tfds_benchmark_source(dataset, splits, tfds_data_dir)` reads the same
  splits from the prepared `cot_distill_benchmarks` TFDS builder (tasks then
  start with `preprocessors.tfds_benchmark_to_raw`).
* `examples_source(examples)` wraps Example objects in memory or a JSONL file
  of `Example.to_dict()` lines (e.g. generated symbolic splits for the demo).

`RecordsDataSource` holds the loaded rows as tensor slices, which shard by
index (any number of hosts) and shuffle exactly. That puts the text in the
graph as constants, fine up to a few hundred MB of records; beyond that, cache
the task offline (see tasks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from cot_distill import preprocessors
from cot_distill.data.example import Example

RECORDS_FILE = "records.jsonl"
RECORD_REQUIRED_FIELDS = ("id", "question", "answer", "answer_type")

Row = dict[str, str]
LoadSplit = Callable[[str], Sequence[Row]]


# ----------------------------------------------------------------------------
# Rows: one flat dict of strings per example.


def record_to_features(record: Mapping[str, Any], *, where: str = "",
                       rationale_field: str = "rationale") -> Row:
  """A CoT record or `Example.to_dict()` -> the raw feature schema.

  {"id": "gsm8k/train/3", "dataset": "gsm8k", "split": "train",
   "question": "...", "answer": "18", "answer_type": "number",
   "choices": None, "rationale": "...", "teacher": {...}, ...}
    -> {"id": "gsm8k/train/3", "dataset": "gsm8k", "split": "train",
        "question": "...", "answer": "18", "answer_type": "number",
        "choices": "", "rationale": "..."}

  Args:
    record: the parsed JSON object (extra fields are ignored).
    where: "file:line" for error messages.
    rationale_field: the field that becomes `rationale`: "rationale" for CoT
      records, "gold_rationale" to train on a dataset's own worked solutions.
  """
  missing = [k for k in RECORD_REQUIRED_FIELDS if record.get(k) in (None, "")]
  if missing:
    raise ValueError(f"{where or 'record'}: missing field(s) {missing} "
                     f"(id={record.get('id')!r})")
  choices = record.get("choices")
  return {
      "id": str(record["id"]),
      "dataset": str(record.get("dataset") or ""),
      "split": str(record.get("split") or ""),
      "question": str(record["question"]),
      "answer": str(record["answer"]),
      "answer_type": str(getattr(record["answer_type"], "value", record["answer_type"])),
      "choices": preprocessors.choices_json([c[0] for c in choices], [c[1] for c in choices])
                 if choices else "",
      "rationale": str(record.get(rationale_field) or ""),
  }


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Parsed objects of a JSON-lines file (local or gs://), blank lines skipped.

  A torn last line (a run killed mid-write) is skipped with a warning; any
  other bad line raises, naming file and line.
  """
  with tf.io.gfile.GFile(path, "r") as f:
    lines = f.read().split("\n")
  out = []
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as error:
      if number - 1 == last and not line.rstrip().endswith("}"):
        logging.warning("%s:%d: skipping torn last line", path, number)
        continue
      raise ValueError(f"{path}:{number}: not valid JSON: {error}") from error
  return out


def rows_from_jsonl(path: str, rationale_field: str = "rationale") -> list[Row]:
  """`read_jsonl` + `record_to_features`, errors naming file:line."""
  return [record_to_features(obj, where=f"{path}:{n}", rationale_field=rationale_field)
          for n, obj in enumerate(read_jsonl(path), start=1)]


def _rows_to_columns(rows: Sequence[Row]) -> dict[str, np.ndarray]:
  return {key: np.array([row[key] for row in rows], dtype=object)
          for key in preprocessors.RAW_FEATURE_KEYS}


def in_validation(example_id: str, fraction: float) -> bool:
  """Stable id-hash split: all samples of one question land on the same side."""
  digest = hashlib.sha256(example_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


# ----------------------------------------------------------------------------
# The DataSource.


class RecordsDataSource(seqio.DataSource):
  """A seqio DataSource over rows produced by `load_split(split)` on demand.

  Loading happens in `get_dataset` / `num_input_examples`, never in the
  constructor. Rows are re-read per `get_dataset` call (so a finished
  annotation run is seen in full); the count is cached after the first read.
  """

  def __init__(self, load_split: LoadSplit, splits: Iterable[str],
               description: str = "", caching_permitted: bool = True):
    super().__init__(splits=splits, caching_permitted=caching_permitted)
    self._load_split = load_split
    self._description = description
    self._counts: dict[str, int] = {}

  def __repr__(self):
    return f"RecordsDataSource({self._description or self.splits})"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # Rows are sliced by index, so any ShardInfo works.

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def rows(self, split: str) -> list[Row]:
    if split not in self.splits:
      raise ValueError(f"{self!r} has no split {split!r}; splits: {self.splits}")
    rows = list(self._load_split(split))
    self._counts[split] = len(rows)
    return rows

  def num_input_examples(self, split: str) -> int:
    if split not in self._counts:
      self.rows(split)
    return self._counts[split]

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *,
                  sequence_length=None, use_cached=False, num_epochs=1,
                  ) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # Unused, as in seqio sources.
    rows = self.rows(split)
    if shard_info is not None:
      rows = rows[shard_info.index::shard_info.num_shards]
    if not rows:
      spec = {k: tf.TensorSpec([], tf.string) for k in preprocessors.RAW_FEATURE_KEYS}
      return tf.data.Dataset.from_generator(lambda: iter(()), output_signature=spec)
    ds = tf.data.Dataset.from_tensor_slices(_rows_to_columns(rows))
    if shuffle:
      ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return ds


# ----------------------------------------------------------------------------
# Source factories.


def records_path(run_dir: str | os.PathLike) -> str:
  """`run_dir/records.jsonl`, or `run_dir` itself when it is a .jsonl file."""
  path = os.fspath(run_dir)
  return path if path.endswith(".jsonl") else os.path.join(path, RECORDS_FILE)


def annotation_run_source(run_dir: str | os.PathLike | Callable[[], str],
                          validation_fraction: float = 0.0,
                          description: str = "") -> RecordsDataSource:
  """The CoT records of one annotation run, split "train" (and "validation").

  Args:
    run_dir: the run directory (or its records.jsonl), or a zero-argument
      function returning it, resolved at read time (so an environment variable
      such as COT_DISTILL_RUNS_DIR can be set after the registry is imported).
    description: shown in the source's repr (defaults to the path).
    validation_fraction: share of QUESTIONS (by id hash, all samples of a
      question together) held out as split "validation"; 0 gives "train" only.
  """
  resolve = run_dir if callable(run_dir) else (lambda: os.fspath(run_dir))

  def load_split(split: str) -> list[Row]:
    path = records_path(resolve())
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(
          f"no CoT records at {path}: run `cot-distill annotate ... --out DIR` "
          "or point COT_DISTILL_RUNS_DIR / the task's run_dir at the run")
    rows = rows_from_jsonl(path)
    _warn_about_eval_splits(path, rows)
    if validation_fraction <= 0:
      return rows
    held_out = split == "validation"
    return [r for r in rows if in_validation(r["id"], validation_fraction) == held_out]

  splits = ("train", "validation") if validation_fraction > 0 else ("train",)
  description = description or ("run dir resolved at read time" if callable(run_dir)
                                 else os.fspath(run_dir))
  return RecordsDataSource(load_split, splits, description=description)


def _warn_about_eval_splits(path: str, rows: Sequence[Row]) -> None:
  """Training on records of a non-train split spends that split as eval data."""
  splits = sorted({r["split"] for r in rows if r["split"] not in ("", "train")})
  if splits:
    logging.warning(
        "%s: CoT records come from split(s) %s; a student trained on them must "
        "not be evaluated on those splits (leakage: use only as a plumbing "
        "check or evaluate elsewhere).", path, splits)


def benchmark_source(dataset: str, splits: Sequence[str],
                     data_dir: str | None = None) -> RecordsDataSource:
  """Benchmark splits from `cot_distill.data.registry.load` (gold examples).

  `rationale` holds the dataset's own worked solution (`gold_rationale`).
  """

  def load_split(split: str) -> list[Row]:
    from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
    return [record_to_features(e.to_dict(), where=e.id, rationale_field="gold_rationale")
            for e in registry.load(dataset, split, data_dir=data_dir)]

  return RecordsDataSource(load_split, splits, description=f"{dataset} {list(splits)}")


def tfds_benchmark_source(dataset: str, splits: Sequence[str],
                          tfds_data_dir: str) -> seqio.TfdsDataSource:
  """Benchmark splits from the prepared TFDS builder `cot_distill_benchmarks`.

  Prepare first (`tfds build cot_distill_benchmarks --imports
  cot_distill.data.tfds_builders --config NAME --manual_dir DATA --data_dir DIR`);
  reading never prepares (read_only). Yields TFDS features: put
  `preprocessors.tfds_benchmark_to_raw` first in the task's preprocessors.
  """
  from cot_distill.data import tfds_builders  # pylint: disable=g-import-not-at-top
  return seqio.TfdsDataSource(
      tfds_name=f"{tfds_builders.BUILDER_NAME}/{dataset}:{tfds_builders.DATASET_VERSION}",
      tfds_data_dir=tfds_data_dir, splits=list(splits), read_only=True)


def examples_source(examples: Sequence[Example] | str | os.PathLike,
                    split: str = "test") -> RecordsDataSource:
  """One split from Example objects, or a JSONL file of `Example.to_dict()`.

  `rationale` holds the examples' `gold_rationale`.
  """
  if isinstance(examples, (str, os.PathLike)):
    path = os.fspath(examples)
    return RecordsDataSource(lambda _: rows_from_jsonl(path, "gold_rationale"), [split],
                             description=path)

  def load_split(_):  # Iterated on first read: `examples` may generate lazily.
    return [record_to_features(e.to_dict(), where=e.id, rationale_field="gold_rationale")
            for e in examples]

  return RecordsDataSource(load_split, [split], description="in-memory examples")
