"""The one decode path: a host batch in, host tokens out, the model on a mesh.

Both users of decoding come through here: the trainer's periodic eval
(`inference.make_predict_fn`) and `cot-distill evaluate`
(`evaluation.checkpoint_predictor.CheckpointPredictor`). So a checkpoint is
decoded with the layout it was trained with (data parallel, model parallel or
FSDP over the run's mesh), and a student too large for one device evaluates
on the slice that trained it.

The steps:
* `param_shardings`: where every parameter lives, from the model's T5X
  logical axis names and the partitioner's rules (the trainer's own mapping,
  so evaluation restores exactly the layout training saved from).
* `place_params`: puts parameters read on the host (a T5X import) onto those
  shardings; orbax restores trainer checkpoints onto them directly.
* `decode`: every host passes the same encoder tokens; the rows are split
  over the `data` mesh axis, `predict_batch` runs under the mesh and the
  logical-axis rules, and the tokens are gathered back to every host.

Rows are padded to a multiple of the data-parallel size and the padding is
dropped from the output. With `jax_threefry_partitionable` (JAX's default)
a random draw depends on its position, not on how the array is sharded or
how many rows follow it, so sampled decodes do not change with the mesh or
the padding: a 1-device and an 8-device run with the same seed agree.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from cot_distill.train import partitioning

# Shapes for tracing the parameter tree; relative position buckets make the
# parameters independent of sequence lengths.
_TRACE_SHAPES = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}


def round_up_rows(rows: int, partitioner: partitioning.Partitioner) -> int:
  """The smallest multiple of the data-parallel size that holds `rows`."""
  size = partitioner.data_parallel_size
  return -(-max(rows, 1) // size) * size


def param_shardings(model: Any, partitioner: partitioning.Partitioner) -> Any:
  """NamedShardings of the model's parameters under the partitioner's rules.

  Traced with `jax.eval_shape`, so nothing is allocated: the logical specs
  (`embed`, `mlp`, `heads`, `vocab`, ...) come from the network's boxes and
  go through the same `logical_to_sharding` as the training state.
  """
  rng = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  boxed = jax.eval_shape(
      lambda key: model.get_initial_variables(key, _TRACE_SHAPES), rng)["params"]
  specs = jax.tree.map(
      lambda spec: PartitionSpec() if spec is None else spec,
      nn.get_partition_spec(boxed),
      is_leaf=lambda x: x is None or isinstance(x, PartitionSpec))
  return partitioner.logical_to_sharding(specs, nn.unbox(boxed))


def _place(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  if isinstance(value, jax.Array):
    if value.sharding.is_equivalent_to(sharding, value.ndim):
      return value
    return jax.device_put(value, sharding)
  # Host values (numpy, from a T5X import): every host holds the whole array
  # and hands each of its devices its slice, which works across hosts too.
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding,
                                      lambda index: value[index])


def place_params(params: Any, shardings: Any) -> Any:
  """`params` laid out as `shardings` (a tree of the same structure)."""
  return jax.tree.map(_place, params, shardings)


def _pad_rows(values: np.ndarray, rows: int) -> np.ndarray:
  if values.shape[0] == rows:
    return values
  padding = np.zeros((rows - values.shape[0],) + values.shape[1:], values.dtype)
  return np.concatenate([values, padding])


def _to_host(value: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(value))
  # Every host gets the whole output, whichever devices hold its rows.
  return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def decode(model: Any, params: Any, partitioner: partitioning.Partitioner,
           encoder_tokens: np.ndarray, **decode_kwargs: Any
           ) -> tuple[np.ndarray, np.ndarray]:
  """Decodes `encoder_tokens` [rows, length] with `params` on the mesh.

  Args:
    model: an EncoderDecoderModel.
    params: its parameters, placed with `param_shardings` (or any placement:
      jit moves them, at a cost).
    partitioner: the mesh and logical-axis rules to decode under.
    encoder_tokens: the same host array on every host; any number of rows
      (padded here to a multiple of the data-parallel size).
    **decode_kwargs: `EncoderDecoderModel.predict_batch` settings
      (max_decode_length, decode_method, num_decodes, rng, temperature,
      top_k, top_p, beam_size, alpha, ...).

  Returns:
    (tokens int32 [rows, num_decodes, max_decode_length], scores float32
    [rows, num_decodes]) as host numpy arrays, on every host. Best first
    for beam search.
  """
  encoder_tokens = np.asarray(encoder_tokens, np.int32)
  rows = encoder_tokens.shape[0]
  padded = _pad_rows(encoder_tokens, round_up_rows(rows, partitioner))
  batch = {"encoder_input_tokens": jax.make_array_from_callback(
      padded.shape, partitioner.batch_sharding(), lambda index: padded[index])}
  decode_kwargs.pop("return_scores", None)
  with jax.set_mesh(partitioner.mesh), nn.logical_axis_rules(partitioner.rules):
    tokens, scores = model.predict_batch(params, batch, return_scores=True,
                                         **decode_kwargs)
  tokens, scores = _to_host(tokens), _to_host(scores)
  if tokens.ndim == 2:  # predict_batch drops the decode axis for one decode
    tokens, scores = tokens[:, None], scores[:, None]
  return tokens[:rows], scores[:rows]
