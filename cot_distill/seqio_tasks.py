"""Building and registering cot-distill SeqIO tasks and mixtures.

The static registry (`cot_distill_tasks`, folder tasks/) and anything that
needs a task at run time (the demo registering generated data, a trainer
pointed at a fresh annotation run) call these functions. Every function:

* replaces a task or mixture already registered under the same name, so
  registering twice is harmless and the latest definition wins;
* reads nothing: sources load their data on first `get_dataset`.

`cache_task` writes a task's offline cache without Beam (see tasks/README.md).

Task pipelines (seqio runs them in order; the cache boundary is where
`cache_tasks_main` stops and `use_cached=True` resumes):

  (TFDS benchmark sources first run tfds_benchmark_to_raw)
  training:  format_examples(target_format) -> tokenize -> [cache]
             -> filter_by_token_length -> append_eos_after_trim
  eval:      format_examples("eval", input_prefix) -> tokenize -> [cache]
             -> append_eos_after_trim          (never filtered: every test
                                                example counts)

Eval tasks score with `cot_distill.metrics` (the shared judge), and so do
`cot` and `answer_only` training tasks on their validation split.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable, Sequence

import numpy as np
import seqio
import tensorflow as tf

from cot_distill import metrics
from cot_distill import preprocessors
from cot_distill import seqio_sources
from cot_distill import vocabularies
from cot_distill.data.example import Example

FEATURE_KEYS = ("inputs", "targets")


def output_features(vocabulary: seqio.Vocabulary | None = None
                    ) -> dict[str, seqio.Feature]:
  """{"inputs", "targets"} features, both with EOS, in the given vocabulary."""
  vocabulary = vocabulary or vocabularies.get_vocabulary()
  return {key: seqio.Feature(vocabulary, add_eos=True) for key in FEATURE_KEYS}


def eval_input_prefix(target_format: str) -> str:
  """What an eval input must start with for a student of `target_format`."""
  return preprocessors.LABEL_PREFIX if target_format == "multitask" else ""


def _check_format(target_format: str, allowed: Sequence[str]) -> None:
  if target_format not in allowed:
    raise ValueError(f"target_format {target_format!r} not in {tuple(allowed)}")


def training_preprocessors(target_format: str,
                           max_input_tokens: int | None = None,
                           max_target_tokens: int | None = None) -> list:
  """The training pipeline of the module docstring."""
  return [
      functools.partial(preprocessors.format_examples, target_format=target_format),
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      functools.partial(preprocessors.filter_by_token_length,
                        max_input_tokens=max_input_tokens,
                        max_target_tokens=max_target_tokens),
      seqio.preprocessors.append_eos_after_trim,
  ]


def eval_preprocessors(input_prefix: str = "") -> list:
  """The eval pipeline of the module docstring."""
  return [
      functools.partial(preprocessors.format_examples, target_format="eval",
                        input_prefix=input_prefix),
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
  ]


def add_task(name: str, source: seqio.DataSource, task_preprocessors: list,
             vocabulary: seqio.Vocabulary | None = None, *,
             scored: bool = True) -> seqio.Task:
  """Registers (or replaces) a task with our features and, if scored, metrics."""
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      output_features=output_features(vocabulary),
      preprocessors=task_preprocessors,
      postprocess_fn=metrics.postprocess_answer if scored else None,
      metric_fns=[metrics.answer_accuracy] if scored else [])


def register_cot_task(name: str, run_dir: str | os.PathLike | Callable[[], str],
                      target_format: str,
                      vocabulary: seqio.Vocabulary | None = None, *,
                      validation_fraction: float = 0.0,
                      max_input_tokens: int | None = None,
                      max_target_tokens: int | None = None) -> seqio.Task:
  """A training task over an annotation run's records.jsonl.

  Args:
    name: task name, by convention `cot_distill.{dataset}.{teacher}.{format}`.
    run_dir: annotation run directory (or its records.jsonl, or a function
      returning it at read time).
    target_format: "cot", "answer_only" or "multitask" (preprocessors.py).
    vocabulary: defaults to `vocabularies.get_vocabulary()`.
    validation_fraction: questions held out as split "validation".
    max_input_tokens, max_target_tokens: drop longer examples (EOS counted);
      None uses the feature lengths the task is read with.

  Returns:
    The registered `seqio.Task` (splits "train" [, "validation"]).
  """
  _check_format(target_format, preprocessors.TARGET_FORMATS)
  source = seqio_sources.annotation_run_source(run_dir, validation_fraction)
  return add_task(name, source,
                  training_preprocessors(target_format, max_input_tokens,
                                         max_target_tokens),
                  vocabulary, scored=target_format != "multitask")


def register_gold_task(name: str, dataset: str, splits: Sequence[str] = ("train",),
                       vocabulary: seqio.Vocabulary | None = None, *,
                       target_format: str = "answer_only",
                       data_dir: str | None = None,
                       tfds_data_dir: str | None = None,
                       max_input_tokens: int | None = None,
                       max_target_tokens: int | None = None) -> seqio.Task:
  """A training task from a benchmark's gold data (no teacher).

  "answer_only" is the paper's baseline; "cot" / "multitask" use the
  dataset's own worked solutions (`gold_rationale`, e.g. GSM8K's) as the
  rationale, a human-rationale baseline. Sources as in
  `register_benchmark_eval_task`.
  """
  _check_format(target_format, preprocessors.TARGET_FORMATS)
  source, head = _benchmark_source_and_head(dataset, splits, data_dir, tfds_data_dir)
  return add_task(name, source,
                  head + training_preprocessors(target_format, max_input_tokens,
                                                max_target_tokens),
                  vocabulary, scored=target_format != "multitask")


def register_examples_task(name: str, examples: Sequence[Example] | str | os.PathLike,
                           vocabulary: seqio.Vocabulary | None = None, *,
                           target_format: str = "answer_only",
                           split: str = "train",
                           max_input_tokens: int | None = None,
                           max_target_tokens: int | None = None) -> seqio.Task:
  """A training task from Examples (a list or a JSONL file of Example dicts).

  Rationales for "cot" / "multitask" come from `gold_rationale` (the symbolic
  generators write one), as in `register_gold_task`.
  """
  _check_format(target_format, preprocessors.TARGET_FORMATS)
  source = seqio_sources.examples_source(examples, split)
  return add_task(name, source,
                  training_preprocessors(target_format, max_input_tokens,
                                         max_target_tokens),
                  vocabulary, scored=target_format != "multitask")


def _benchmark_source_and_head(dataset: str, splits: Sequence[str],
                               data_dir: str | None, tfds_data_dir: str | None):
  """(source, preprocessors to put first): TFDS when a TFDS dir is given."""
  if tfds_data_dir:
    return (seqio_sources.tfds_benchmark_source(dataset, splits, tfds_data_dir),
            [preprocessors.tfds_benchmark_to_raw])
  return seqio_sources.benchmark_source(dataset, splits, data_dir), []


def register_benchmark_eval_task(name: str, dataset: str, split: str,
                                 vocabulary: seqio.Vocabulary | None = None, *,
                                 data_dir: str | None = None,
                                 tfds_data_dir: str | None = None,
                                 input_prefix: str = "") -> seqio.Task:
  """An eval task over one benchmark split, scored by the shared judge.

  Args:
    name: task name, by convention `cot_distill.eval.{dataset}.{split}`.
    dataset, split: a `cot_distill.data.registry` dataset and split.
    vocabulary: defaults to `vocabularies.get_vocabulary()`.
    data_dir: benchmark files (default: registry precedence, env
      COT_DISTILL_DATA_DIR); used when `tfds_data_dir` is None.
    tfds_data_dir: read the prepared `cot_distill_benchmarks` TFDS builder
      from here instead of the original files.
    input_prefix: "" for cot/answer_only students,
      `preprocessors.LABEL_PREFIX` for multitask ones (`eval_input_prefix`).
  """
  source, head = _benchmark_source_and_head(dataset, [split], data_dir, tfds_data_dir)
  return add_task(name, source, head + eval_preprocessors(input_prefix), vocabulary)


def register_examples_eval_task(name: str,
                                examples: Sequence[Example] | str | os.PathLike,
                                vocabulary: seqio.Vocabulary | None = None, *,
                                split: str = "test",
                                input_prefix: str = "") -> seqio.Task:
  """An eval task over Examples (e.g. a generated out-of-distribution split)."""
  source = seqio_sources.examples_source(examples, split)
  return add_task(name, source, eval_preprocessors(input_prefix), vocabulary)


def register_mixture(name: str, task_names: Sequence[str], *,
                     rate: str | float = "num_examples",
                     maximum: int | None = None,
                     split: str = "train") -> seqio.Mixture:
  """Registers (or replaces) a mixture of registered tasks.

  Args:
    name: mixture name.
    task_names: registered task (or mixture) names.
    rate: "num_examples" (proportional to each task's example count on
      `split`, counted lazily when the mixture is first read) or a constant
      (equal rates, e.g. for eval mixtures).
    maximum: cap on a task's count before mixing, so one large dataset does
      not drown the rest (T5's `maximum` in mixing_rate_num_examples).
    split: the split whose size sets the rate.
  """
  if not task_names:
    raise ValueError(f"mixture {name!r} needs at least one task")
  if rate == "num_examples":
    rate_fn = functools.partial(seqio.mixing_rate_num_examples,
                                maximum=maximum, split=split)
  elif isinstance(rate, (int, float)):
    rate_fn = float(rate)
  else:
    raise ValueError(f"rate must be 'num_examples' or a number, got {rate!r}")
  seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(task_names), default_rate=rate_fn)


def cache_task(task: seqio.Task | str, cache_root: str,
               splits: Sequence[str] | None = None) -> str:
  """Writes a task's pre-cache output where `use_cached=True` reads it, no Beam.

  The same files as `seqio_cache_tasks` (one TFRecord shard per split,
  `info.{split}.json`, `stats.{split}.json`, then `COMPLETED`) under
  `cache_root/{task name}`, written in this process: enough for annotation
  runs of up to a few hundred thousand records. Add `cache_root` with
  `seqio.add_global_cache_dirs` (T5X: --seqio_additional_cache_dirs).

  Returns:
    The task's cache directory.
  """
  if isinstance(task, str):
    task = seqio.get_mixture_or_task(task)
  if not task.supports_caching:
    raise ValueError(f"task {task.name} has no CacheDatasetPlaceholder")
  out_dir = os.path.join(cache_root, seqio.utils.get_task_dir_from_name(task.name))
  tf.io.gfile.makedirs(out_dir)
  completed = os.path.join(out_dir, "COMPLETED")
  if tf.io.gfile.exists(completed):
    tf.io.gfile.remove(completed)  # Stale until every split is rewritten.
  for split in splits or task.splits:
    dataset = task.preprocess_precache(
        task.source.get_dataset(split=split, shuffle=False))
    prefix = seqio.utils.get_cached_tfrecord_prefix(out_dir, split)
    stats, features = _write_shard(dataset, f"{prefix}-00000-of-00001", task)
    _write_json(seqio.utils.get_cached_info_path(out_dir, split),
                {"num_shards": 1, "features": features,
                 "seqio_version": seqio.__version__})
    _write_json(seqio.utils.get_cached_stats_path(out_dir, split), stats)
  with tf.io.gfile.GFile(completed, "w") as f:
    f.write("")
  return out_dir


def _write_shard(dataset, path: str, task: seqio.Task) -> tuple[dict, dict]:
  """Writes examples as tf.train.Examples; returns (stats, feature specs)."""
  stats = {"examples": 0}
  features = {}
  tmp_path = path + ".tmp"
  with tf.io.TFRecordWriter(tmp_path) as writer:
    for example in dataset.as_numpy_iterator():
      if not features:
        features = {key: {"shape": [None] if np.ndim(value) else [],
                          "dtype": tf.as_dtype(np.asarray(value).dtype).name
                          if np.asarray(value).dtype.kind not in "OSU" else "string"}
                    for key, value in example.items()}
      writer.write(seqio.utils.dict_to_tfexample(example).SerializeToString())
      stats["examples"] += 1
      for key, feature in task.output_features.items():
        tokens = np.asarray(example.get(key, []))
        if tokens.dtype.kind == "i":
          count = int(np.sum((tokens != feature.vocabulary.eos_id) & (tokens != 0)))
          stats[f"{key}_tokens"] = stats.get(f"{key}_tokens", 0) + count
          stats[f"{key}_max_tokens"] = max(stats.get(f"{key}_max_tokens", 0), count)
  tf.io.gfile.rename(tmp_path, path, overwrite=True)
  return stats, features


def _write_json(path: str, data) -> None:
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
