"""Feeding the global batch: each host reads its shards, JAX assembles it.

The training stream is a pure function of (task, feature lengths, seed,
global batch size, input shards): every input shard is a seqio shard that is
shuffled with the fixed seed, repeats forever and runs deterministically in
tf.data, and global batch b is the concatenation of the shards' batch b in
row order (see `input_shards.py`). The number of processes does not enter
it, so a run may resume on another number of hosts, as long as each of them
still holds whole input shards. Resuming at step n is therefore
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
import tensorflow as tf

from cot_distill import errors
from cot_distill.train import input_shards as input_shards_lib
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
  # None in checkpoints written before it was recorded (their stream was cut
  # into one shard per data-reading host).
  input_shards: int | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def same_stream(self, other: "DataPosition") -> bool:
    mine, theirs = self.to_dict(), other.to_dict()
    # An older checkpoint's shard count is unknown: compare the rest.
    unknown = None in (mine["input_shards"], theirs["input_shards"])
    for position in (mine, theirs):
      position.pop("steps_consumed")
      if unknown:
        position.pop("input_shards")
    return mine == theirs


def check_input_shards(saved: DataPosition, current: DataPosition) -> None:
  """Refuses to resume a stream cut into a different number of input shards.

  The default number follows the hosts of the slice, so a resume on another
  slice would otherwise change every later batch without being asked to.
  """
  if saved.input_shards is None or saved.input_shards == current.input_shards:
    return
  raise errors.UserError(
      f"the checkpoint's data stream was read as input_shards="
      f"{saved.input_shards}, this run reads input_shards="
      f"{current.input_shards} (the default follows the number of hosts "
      "holding different batch rows), so every batch from here on would "
      "differ from the saved run's. To continue the saved stream, bind "
      f"trainer.train.input_shards = {saved.input_shards} (it must give each "
      "host whole shards on this mesh); to train on with another sharding, "
      "start a new MODEL_DIR with INITIAL_CHECKPOINT_PATH pointing at this "
      "one.")


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


def _shard_dataset(shard: int, plan: input_shards_lib.InputShardPlan, *,
                   mixture_or_task_name: str,
                   task_feature_lengths: Mapping[str, int], seed: int,
                   pack: bool, use_cached: bool, split: str) -> Any:
  """Input shard `shard`: its block of every global batch, forever."""
  dataset = seqio.get_dataset(
      mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths),
      feature_converter=feature_converter(pack),
      dataset_split=split,
      use_cached=use_cached,
      shuffle=True,
      num_epochs=None,
      shard_info=plan.shard_info(shard),
      verbose=False,
      seed=seed,
      batch_size=plan.shard_batch_size)
  return dataset.map(lambda batch: {name: value for name, value in batch.items()
                                    if name in MODEL_FEATURES})


def _concatenate_rows(*batches: Mapping[str, Any]) -> dict[str, Any]:
  return {name: tf.concat([batch[name] for batch in batches], axis=0)
          for name in batches[0]}


def train_batches(*, mixture_or_task_name: str,
                  task_feature_lengths: Mapping[str, int],
                  plan: input_shards_lib.InputShardPlan,
                  seed: int,
                  start_step: int = 0,
                  pack: bool = True,
                  use_cached: bool = False,
                  split: str = "train") -> Iterator[dict[str, np.ndarray]]:
  """This host's part of every global batch, from `start_step` on, forever.

  `plan` (input_shards.plan_input_shards) names the shards this host holds;
  their batches are concatenated in shard order, which is the order of the
  host's rows in the global batch.
  """
  logging.info(
      "data: process %d reads input shards %s of %d (%d rows each, %d of "
      "every global batch)", jax.process_index(), list(plan.local_shards),
      plan.num_shards, plan.shard_batch_size, plan.local_batch_size)
  shards = [_shard_dataset(shard, plan,
                           mixture_or_task_name=mixture_or_task_name,
                           task_feature_lengths=task_feature_lengths,
                           seed=seed, pack=pack, use_cached=use_cached,
                           split=split)
            for shard in plan.local_shards]
  dataset = shards[0]
  if len(shards) > 1:
    dataset = tf.data.Dataset.zip(tuple(shards)).map(_concatenate_rows)
  if start_step:
    logging.info("data: skipping %d batches to resume the stream", start_step)
    dataset = dataset.skip(start_step)
  dataset = dataset.prefetch(2)
  yield from dataset.as_numpy_iterator()


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
