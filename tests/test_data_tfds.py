"""TFDS builder: prepare small benchmarks offline, read them with TFDS and SeqIO."""

from __future__ import annotations

import pytest
import seqio
import tensorflow_datasets as tfds

from cot_distill.data import registry, tfds_builders  # importing registers the builder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir):
  """date_understanding prepared from an explicit source_dir (choices + meta)."""
  tfds_dir = tmp_path_factory.mktemp("tfds")
  builder = tfds.builder("cot_distill_benchmarks/date_understanding", data_dir=str(tfds_dir),
                         source_dir=str(data_dir))
  builder.download_and_prepare()
  return tfds_dir


def test_builder_has_one_config_per_registry_dataset():
  configs = {config.name for config in tfds_builders.CotDistillBenchmarks.BUILDER_CONFIGS}
  assert configs == set(registry.DATASETS)
  assert tfds_builders.BUILDER_NAME in tfds.list_builders()


def test_tfds_load_round_trips_examples(prepared, data_dir):
  dataset = tfds.load("cot_distill_benchmarks/date_understanding:1.0.0", split="test",
                      data_dir=str(prepared))
  records = list(tfds.as_numpy(dataset))
  expected = registry.load("date_understanding", "test", data_dir)
  assert len(records) == len(expected) == 369
  # Source order is kept (disable_shuffling), and every field survives.
  assert [tfds_builders.features_to_example(record) for record in records] == expected


def test_seqio_tfds_data_source_reads_it(prepared):
  source = seqio.TfdsDataSource(tfds_name="cot_distill_benchmarks/date_understanding:1.0.0",
                                tfds_data_dir=str(prepared))
  assert set(source.splits) == {"test"}
  assert source.num_input_examples("test") == 369
  first = next(source.get_dataset("test", shuffle=False).as_numpy_iterator())
  assert first["id"] == b"date_understanding/test/0"
  assert list(first["choice_labels"]) == [b"A", b"B", b"C", b"D", b"E", b"F"]


def test_manual_dir_is_the_fallback_source(tmp_path, data_dir):
  builder = tfds.builder("cot_distill_benchmarks/coin_flip", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir)))
  records = list(tfds.as_numpy(builder.as_dataset(split="test")))
  assert len(records) == 500
  assert records[0]["answer"] == b"yes" and records[0]["choices"].size == 0
