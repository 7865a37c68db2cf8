"""Every cot-distill SeqIO task and mixture, registered by `register_all()`.

Names (all lower case, dots between parts):

  cot_distill.{dataset}.{teacher}.{format}   training on an annotation run
                                             (runs.py), format in cot,
                                             answer_only, multitask
  cot_distill.{dataset}.gold.{format}        training on gold data, no teacher
                                             (answer_only; cot/multitask where
                                             the train split has worked solutions)
  cot_distill.eval.{dataset}.{split}         evaluation, judged by the shared
                                             extractor (accuracy, answer found)
  cot_distill.eval.{dataset}.{split}.multitask   the same with the "[label] "
                                             input prefix a multitask student needs
  cot_distill.{group}.{teacher}.{format}     mixture of training tasks of a
                                             dataset group, rate = #examples
  cot_distill.eval.{group}[.multitask]       mixture of eval tasks (equal rates)

Nothing here reads a file: sources load on first use, and the tables below
are plain data. Registering again replaces every task and mixture, so calling
`register_all` twice (or importing the package under two names) is harmless,
and a test or a T5X user can re-register with another vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import seqio

from cot_distill import preprocessors
from cot_distill import seqio_tasks
from cot_distill.data import registry as data_registry
from cot_distill.data import symbolic

from . import runs as runs_lib

PREFIX = "cot_distill"
# When set (at registration), benchmarks are read from the prepared TFDS
# builder `cot_distill_benchmarks` in this directory instead of the files.
TFDS_DIR_ENV = "COT_DISTILL_TFDS_DIR"

# Datasets whose `train` split (or MAWPS' per-fold train) gets gold tasks, and
# whether that split carries worked solutions usable as rationales.
GOLD_TRAINING: dict[str, dict[str, tuple[str, ...]]] = {
    # dataset -> {task-name suffix ("" for the dataset name alone): splits}
    "gsm8k": {"": ("train",)},
    "strategyqa": {"": ("train",)},
    "commonsenseqa": {"": ("train",)},
    "mawps": {f"_fold{k}": (f"fold{k}_train",) for k in range(5)},
}
GOLD_RATIONALE_DATASETS = ("gsm8k", "strategyqa")

# strategyqa_bigbench holds the same questions as strategyqa train+dev, so it
# is a source of annotations, never an evaluation set.
NOT_EVALUATED = ("strategyqa_bigbench",)


@dataclasses.dataclass(frozen=True)
class GeneratedSplit:
  """A split made by the symbolic generators (deterministic, no files)."""

  dataset: str  # symbolic.COIN_FLIP_DATASET or symbolic.LAST_LETTERS_DATASET
  split: str
  steps: int  # people (coin flip) or words (last letters)
  size: int
  seed: int = 0


# Train on 2 steps; test in distribution (2) and out of distribution (4, 6).
GENERATED_SPLITS: tuple[GeneratedSplit, ...] = tuple(
    GeneratedSplit(dataset, split, steps, size)
    for dataset in (symbolic.COIN_FLIP_DATASET, symbolic.LAST_LETTERS_DATASET)
    for split, steps, size in (("train", 2, 2000), ("test", 2, 500),
                               ("ood_4", 4, 500), ("ood_6", 6, 500)))

MIXTURE_GROUPS: dict[str, tuple[str, ...]] = {
    "arithmetic": ("gsm8k", "svamp", "multiarith", "addsub", "singleeq", "asdiv",
                   "asdiv_a", "mawps", "aqua"),
    "commonsense": ("strategyqa", "strategyqa_bigbench", "commonsenseqa",
                    "date_understanding", "tracking_shuffled_objects"),
    "symbolic": ("coin_flip", "last_letters", symbolic.COIN_FLIP_DATASET,
                 symbolic.LAST_LETTERS_DATASET),
}
# Cap on one task's example count when mixing by size (None: no cap).
MIXTURE_MAXIMUM: int | None = None


# ----------------------------------------------------------------------------
# Names.


def training_task_name(dataset: str, teacher: str, target_format: str) -> str:
  return f"{PREFIX}.{dataset}.{teacher}.{target_format}"


def eval_task_name(dataset: str, split: str, target_format: str = "cot") -> str:
  suffix = ".multitask" if target_format == "multitask" else ""
  return f"{PREFIX}.eval.{dataset}.{split}{suffix}"


def eval_splits(dataset: str) -> tuple[str, ...]:
  """Splits evaluated on: all but training splits ("train", "*_train")."""
  if dataset in NOT_EVALUATED:
    return ()
  return tuple(s for s in data_registry.splits(dataset)
               if s != "train" and not s.endswith("_train"))


def eval_task_names() -> list[str]:
  """Every eval task `register_all` registers, in its order, without registering."""
  names = []
  for target_format in ("cot", "multitask"):
    names += [eval_task_name(dataset, split, target_format)
              for dataset in data_registry.DATASETS for split in eval_splits(dataset)]
    names += [eval_task_name(spec.dataset, spec.split, target_format)
              for spec in GENERATED_SPLITS if spec.split != "train"]
  return names


# ----------------------------------------------------------------------------
# Generated symbolic data.


def generate_split(spec: GeneratedSplit):
  """The Examples of one generated split; test splits exclude train questions."""
  generate = (symbolic.generate_coin_flip
              if spec.dataset == symbolic.COIN_FLIP_DATASET
              else symbolic.generate_last_letters)
  exclude = ()
  if spec.split != "train":
    train = [s for s in GENERATED_SPLITS
             if s.dataset == spec.dataset and s.split == "train" and s.steps == spec.steps]
    exclude = [e for s in train for e in generate_split(s)]
  return generate(spec.size, spec.steps, spec.seed, spec.split, exclude=exclude)


class _LazyExamples(Sequence):
  """A sequence that generates its Examples on first access, not at import."""

  def __init__(self, spec: GeneratedSplit):
    self._spec = spec
    self._examples = None

  def _load(self):
    if self._examples is None:
      self._examples = generate_split(self._spec)
    return self._examples

  def __getitem__(self, index):
    return self._load()[index]

  def __len__(self):
    return len(self._load())


# ----------------------------------------------------------------------------
# Registration.


def _register_training(vocabulary, tfds_data_dir) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
  """All training tasks: (every name, {"teacher.format": [(dataset, name)]} to mix)."""
  names: list[str] = []
  by_key: dict[str, list[tuple[str, str]]] = {}

  def note(teacher, target_format, dataset, name):
    by_key.setdefault(f"{teacher}.{target_format}", []).append((dataset, name))

  for run in runs_lib.RUNS:
    for target_format in preprocessors.TARGET_FORMATS:
      name = training_task_name(run.dataset, run.teacher, target_format)
      seqio_tasks.register_cot_task(name, run.resolve, target_format, vocabulary)
      names.append(name)
      note(run.teacher, target_format, run.dataset, name)

  for dataset, variants in GOLD_TRAINING.items():
    formats = (preprocessors.TARGET_FORMATS if dataset in GOLD_RATIONALE_DATASETS
               else ("answer_only",))
    for suffix, splits in variants.items():
      for target_format in formats:
        name = training_task_name(dataset + suffix, "gold", target_format)
        seqio_tasks.register_gold_task(name, dataset, splits, vocabulary,
                                       target_format=target_format,
                                       tfds_data_dir=tfds_data_dir)
        names.append(name)
        if not suffix:  # CV folds overlap each other: never mixed.
          note("gold", target_format, dataset, name)

  for spec in GENERATED_SPLITS:
    if spec.split != "train":
      continue
    for target_format in preprocessors.TARGET_FORMATS:
      name = training_task_name(spec.dataset, "gold", target_format)
      seqio_tasks.register_examples_task(name, _LazyExamples(spec), vocabulary,
                                         target_format=target_format)
      names.append(name)
      note("gold", target_format, spec.dataset, name)
  return names, by_key


def _register_eval(vocabulary, tfds_data_dir) -> tuple[list[str], list[tuple[str, str, str]]]:
  """All eval tasks: (every name, (dataset, format, name) of those mixed).

  Cross-validation folds ("fold*") get tasks but stay out of the eval
  mixtures: they repeat problems of the whole-set splits.
  """
  names, mixed = [], []
  for target_format in ("cot", "multitask"):
    prefix = seqio_tasks.eval_input_prefix(target_format)
    for dataset in data_registry.DATASETS:
      for split in eval_splits(dataset):
        names.append(eval_task_name(dataset, split, target_format))
        seqio_tasks.register_benchmark_eval_task(names[-1], dataset, split, vocabulary,
                                                 tfds_data_dir=tfds_data_dir,
                                                 input_prefix=prefix)
        if not split.startswith("fold"):
          mixed.append((dataset, target_format, names[-1]))
    for spec in GENERATED_SPLITS:
      if spec.split == "train":
        continue
      names.append(eval_task_name(spec.dataset, spec.split, target_format))
      seqio_tasks.register_examples_eval_task(names[-1], _LazyExamples(spec), vocabulary,
                                              split=spec.split, input_prefix=prefix)
      mixed.append((spec.dataset, target_format, names[-1]))
  return names, mixed


def _register_mixtures(training: dict, evaluation: list) -> list[str]:
  names = []
  groups = {**MIXTURE_GROUPS, "all": None}
  for group, datasets in groups.items():
    for key, members in training.items():
      tasks = [name for dataset, name in members if datasets is None or dataset in datasets]
      if len(tasks) >= 2:
        names.append(f"{PREFIX}.{group}.{key}")
        seqio_tasks.register_mixture(names[-1], tasks, maximum=MIXTURE_MAXIMUM)
    for target_format in ("cot", "multitask"):
      tasks = [name for dataset, fmt, name in evaluation
               if fmt == target_format and (datasets is None or dataset in datasets)]
      suffix = ".multitask" if target_format == "multitask" else ""
      names.append(f"{PREFIX}.eval.{group}{suffix}")
      seqio_tasks.register_mixture(names[-1], tasks, rate=1.0)
  return names


def register_all(vocabulary: seqio.Vocabulary | None = None,
                 tfds_data_dir: str | None = None) -> dict[str, list[str]]:
  """Registers (or re-registers) every task and mixture.

  Args:
    vocabulary: defaults to `cot_distill.vocabularies.get_vocabulary()`
      (argument > gin > env COT_DISTILL_SPM_PATH > T5's vocabulary, packaged).
    tfds_data_dir: read benchmarks from the prepared `cot_distill_benchmarks`
      TFDS builder here; default env COT_DISTILL_TFDS_DIR, else (unset) the
      original files through `cot_distill.data.registry`.

  Returns:
    {"training": [...], "eval": [...], "mixtures": [...]} registered names.
  """
  tfds_data_dir = tfds_data_dir or os.environ.get(TFDS_DIR_ENV) or None
  training_names, training = _register_training(vocabulary, tfds_data_dir)
  eval_names, mixed_eval = _register_eval(vocabulary, tfds_data_dir)
  mixtures = _register_mixtures(training, mixed_eval)
  return {"training": training_names, "eval": eval_names, "mixtures": mixtures}
