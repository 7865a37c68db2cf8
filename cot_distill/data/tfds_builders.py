"""TFDS builder `cot_distill_benchmarks`: one BuilderConfig per benchmark.

Importing this module registers the builder with TFDS under the name
`cot_distill_benchmarks`; the config is the registry name (gsm8k, svamp,
mawps, ...) and the splits are the registry's (train/test, fold0_train, ...).
Examples are prepared offline from a local data directory through the same
loaders as `cot_distill.data.registry.load`, so ids and answers are identical.

Prepare, then read with TFDS or SeqIO (import this module first so TFDS knows
the builder):

    import cot_distill.data.tfds_builders  # registers the builder
    builder = tfds.builder("cot_distill_benchmarks/gsm8k", data_dir=TFDS_DIR,
                           source_dir="/path/to/shared/data")
    builder.download_and_prepare()
    source = seqio.TfdsDataSource(tfds_name="cot_distill_benchmarks/gsm8k:1.0.0",
                                  tfds_data_dir=TFDS_DIR)

or from a shell:

    cot-distill datasets prepare gsm8k svamp --tfds-dir TFDS_DIR --data-dir /path/to/data
    # equivalent TFDS CLI; note the `tfds` script of tensorflow-datasets 4.9.10
    # imports apache_beam at start-up, so it needs `pip install apache-beam`:
    tfds build cot_distill_benchmarks --imports cot_distill.data.tfds_builders \\
        --config gsm8k --manual_dir /path/to/data --data_dir TFDS_DIR

Reading an already prepared dataset works without the import (TFDS rebuilds
the builder from the files' metadata); preparing one needs it.

Source directory precedence: the `source_dir` builder argument, TFDS's
manual dir (`--manual_dir`, `DownloadConfig(manual_dir=...)`) when it exists,
then `registry.resolve_data_dir()` (env COT_DISTILL_DATA_DIR, download cache).

Features (all strings, so SeqIO preprocessors can pass them through):
id, question, answer, answer_type, choices (option texts), choice_labels
("A", "B", ...; empty for open answers), gold_rationale ("" when the dataset
has none) and meta (the Example's meta as a JSON string).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Iterator

import tensorflow_datasets as tfds
from etils import epath

from cot_distill.data import registry
from cot_distill.data.example import Example

BUILDER_NAME = "cot_distill_benchmarks"
DATASET_VERSION = "1.0.0"


def example_features(example: Example) -> dict[str, object]:
  """The TFDS feature dict of one Example (the inverse is `features_to_example`)."""
  choices = example.choices or ()
  return {
      "id": example.id,
      "question": example.question,
      "answer": example.answer,
      "answer_type": example.answer_type.value,
      "choices": [text for _, text in choices],
      "choice_labels": [label for label, _ in choices],
      "gold_rationale": example.gold_rationale or "",
      "meta": json.dumps(dict(example.meta), ensure_ascii=False, sort_keys=True),
  }


def features_to_example(features: dict[str, object]) -> Example:
  """Rebuilds an Example from a decoded TFDS record (bytes or str values)."""
  def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

  dataset, split, _ = text(features["id"]).split("/")
  labels = [text(label) for label in features["choice_labels"]]
  choices = tuple(zip(labels, (text(choice) for choice in features["choices"])))
  return Example(
      id=text(features["id"]), dataset=dataset, split=split,
      question=text(features["question"]), answer=text(features["answer"]),
      answer_type=text(features["answer_type"]), choices=choices or None,
      gold_rationale=text(features["gold_rationale"]) or None,
      meta=json.loads(text(features["meta"])))


class CotDistillBenchmarks(tfds.core.GeneratorBasedBuilder):
  """The reasoning benchmarks of cot-distill, read from their original files."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "Loaders over the pinned original files (shared/data/SOURCES.md)."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=info.name, description=info.description)
      for info in registry.DATASETS.values()
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the benchmark files in the layout of shared/data (e.g. gsm8k/test.jsonl), "
      "for instance with `cot-distill datasets download NAME --data-dir DIR`, and pass "
      "DIR as the manual dir or as the builder argument source_dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 finds this through `importlib_resources`, a package it only
    # requires on Python < 3.9, so on 3.11 the lookup fails; the answer is
    # simply this module's file.
    return epath.Path(__file__)

  def __init__(self, *, source_dir: str | os.PathLike[str] | None = None, **kwargs):
    self._source_dir = pathlib.Path(source_dir) if source_dir else None
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    info = registry.get_info(self.builder_config.name)
    text = tfds.features.Text()
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "id": text,
            "question": text,
            "answer": text,
            "answer_type": text,
            "choices": tfds.features.Sequence(tfds.features.Text()),
            "choice_labels": tfds.features.Sequence(tfds.features.Text()),
            "gold_rationale": text,
            "meta": text,
        }),
        homepage=info.homepage,
        # Keep source-file order (ids 0, 1, 2, ...): evaluation and debugging
        # read the same order as `registry.load`.
        disable_shuffling=True,
        description=f"{info.description}. Licence: {info.licence}.",
    )

  def _source(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    if self._source_dir is not None:
      return self._source_dir
    try:
      return pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # no manual dir given, or it is empty
      return registry.resolve_data_dir()

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = self._source(dl_manager)
    name = self.builder_config.name
    return {split: self._generate_examples(name, split, source)
            for split in registry.splits(name)}

  def _generate_examples(self, name: str, split: str, source: pathlib.Path
                         ) -> Iterator[tuple[str, dict[str, object]]]:
    for example in registry.load(name, split, source):
      yield example.id, example_features(example)
