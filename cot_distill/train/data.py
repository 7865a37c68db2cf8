"""Feeding the global batch: each host reads its shard, JAX assembles it.

The training stream is a pure function of (task, feature lengths, seed, shard,
per-host batch size): seqio shuffles with a fixed seed and repeats forever,
and tf.data runs deterministically. Resuming at step n is therefore
`dataset.skip(n)`: the iterator position is the step itself, and an
interrupted run sees exactly the batches an uninterrupted one would have.
Skipping costs reading n batches through the pipeline (seconds for a
fine-tuning run; for very long runs a cached task keeps it cheap).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Any, Iterator, Mapping

import jax
import numpy as np
import seqio

from cot_distill import errors
from cot_distill.train import partitioning

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens",
                  "decoder_target_tokens", "decoder_loss_weights",
                  "encoder_segment_ids", "decoder_segment_ids",
                  "encoder_positions", "decoder_positions")


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """What the checkpoint records about the stream, to refuse a wrong resume."""
  mixture_or_task_name: str
  task_feature_lengths: dict[str, int]
  batch_size: int
  seed: int
  pack: bool
  steps_consumed: int

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def same_stream(self, other: "DataPosition") -> bool:
    mine, theirs = self.to_dict(), other.to_dict()
    mine.pop("steps_consumed")
    theirs.pop("steps_consumed")
    return mine == theirs


def import_task_module(module_name: str | None) -> None:
  """Imports the module that registers the tasks (T5X's MIXTURE_OR_TASK_MODULE)."""
  if module_name:
    importlib.import_module(module_name)


def feature_converter(pack: bool) -> seqio.FeatureConverter:
  # Custom packing ops are T5's C++ kernels; the pure-TF packer gives the same
  # packing here without an extra dependency.
  return seqio.EncDecFeatureConverter(pack=pack, use_custom_packing_ops=False)


def model_input_shapes(task_feature_lengths: Mapping[str, int],
                       batch_size: int, pack: bool) -> dict[str, tuple[int, ...]]:
  """Shapes of the model features, for `get_initial_variables` and specs."""
  encoder = (batch_size, task_feature_lengths["inputs"])
  decoder = (batch_size, task_feature_lengths["targets"])
  shapes = {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder,
            "decoder_target_tokens": decoder, "decoder_loss_weights": decoder}
  if pack:
    shapes.update(encoder_segment_ids=encoder, encoder_positions=encoder,
                  decoder_segment_ids=decoder, decoder_positions=decoder)
  return shapes


def require_examples(*, mixture_or_task_name: str,
                     task_feature_lengths: Mapping[str, int],
                     split: str = "train", use_cached: bool = False) -> None:
  """Raises ValueError when the task yields no example at these lengths.

  The training stream repeats forever, so an empty one (every example
  dropped by the length filter, an empty file) would make the loop wait for
  its first batch forever. One pass over the finite, unshuffled pipeline
  stops at the first example, so this costs one example's preprocessing.
  """
  dataset = seqio.get_mixture_or_task(mixture_or_task_name).get_dataset(
      sequence_length=dict(task_feature_lengths), split=split,
      use_cached=use_cached, shuffle=False, num_epochs=1)
  for _ in dataset.take(1):
    return
  raise errors.ConfigurationError(
      f"task {mixture_or_task_name!r} split {split!r} yields no examples with "
      f"task_feature_lengths={dict(task_feature_lengths)}: every example was "
      "filtered out (training tasks drop examples longer than the feature "
      "lengths) or the source is empty; raise the lengths or check the data")


def train_batches(*, mixture_or_task_name: str,
                  task_feature_lengths: Mapping[str, int],
                  global_batch_size: int,
                  partitioner: partitioning.Partitioner,
                  seed: int,
                  start_step: int = 0,
                  pack: bool = True,
                  use_cached: bool = False,
                  split: str = "train") -> Iterator[dict[str, np.ndarray]]:
  """This host's part of every global batch, from `start_step` on, forever."""
  shard_info = partitioner.data_shard_info(global_batch_size)
  per_host = partitioner.per_host_batch_size(global_batch_size)
  dataset = seqio.get_dataset(
      mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths),
      feature_converter=feature_converter(pack),
      dataset_split=split,
      use_cached=use_cached,
      shuffle=True,
      num_epochs=None,
      shard_info=shard_info,
      verbose=False,
      seed=seed,
      batch_size=per_host)
  if start_step:
    logging.info("data: skipping %d batches to resume the stream", start_step)
    dataset = dataset.skip(start_step)
  dataset = dataset.prefetch(2)
  for batch in dataset.as_numpy_iterator():
    yield {name: value for name, value in batch.items() if name in MODEL_FEATURES}


def to_global_batch(local_batch: Mapping[str, np.ndarray],
                    partitioner: partitioning.Partitioner,
                    global_batch_size: int) -> dict[str, jax.Array]:
  """Assembles the hosts' shards into global arrays split over `data`."""
  sharding = partitioner.batch_sharding()
  return {
      name: jax.make_array_from_process_local_data(
          sharding, value, (global_batch_size,) + value.shape[1:])
      for name, value in local_batch.items()
  }
