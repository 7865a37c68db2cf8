"""The train state and how it is laid out on the mesh.

Follows `flax/examples/lm1b/utils.py`: shapes first (`jax.eval_shape`), then
logical specs, then shardings, then `jit(init, out_shardings=...)`, so no
array ever exists unsharded, not even for a moment on one device. The same
abstract state (shapes + shardings) is the target that checkpoints restore
onto, which is what lets a run saved on one mesh resume on another.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from cot_distill.model import param_tree
from cot_distill.model import scanned
from cot_distill.train import partitioning


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed as a whole.

  `rng` is the run's base dropout key; step `n` uses `fold_in(rng, n)`, so the
  random stream after a resume is the one an uninterrupted run would see.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _spec_for_state_leaf(names: tuple[str, ...], leaf: Any,
                         params_by_path: Mapping[tuple[str, ...], tuple]
                         ) -> PartitionSpec:
  """The spec of one optimizer-state leaf, inferred from its parameter.

  Optimizer states mirror the parameter tree under a prefix (`mu`, `nu`,
  `v_row`, ...), so the leaf's parameter is the longest path suffix that names
  one. Same shape: same spec. One axis fewer (Adafactor's factored row and
  column statistics): the parameter's spec without that axis. Else (counts,
  placeholders): replicated.
  """
  for start in range(len(names)):
    if names[start:] in params_by_path:
      shape, spec = params_by_path[names[start:]]
      break
  else:
    return PartitionSpec()
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  if tuple(leaf.shape) == tuple(shape):
    return PartitionSpec(*spec)
  if len(leaf.shape) == len(shape) - 1:
    # A scanned network's stacked layer axis is never the one dropped
    # (optimizers.py factors per layer), even where its size repeats.
    layer_axis = scanned.layer_axis(names[start:])
    candidates = [axis for axis in range(len(shape))
                  if tuple(shape[:axis] + shape[axis + 1:]) == tuple(leaf.shape)
                  and axis != layer_axis]
    if candidates:
      # optax's v_row drops the largest axis, v_col the second largest; of
      # equal sizes, argsort ranks the later axis as the larger.
      axis = candidates[0] if "v_col" in names else candidates[-1]
      return PartitionSpec(*(spec[:axis] + spec[axis + 1:]))
  return PartitionSpec()


def optimizer_state_specs(opt_state_shapes: Any, param_shapes: Any,
                          param_specs: Any) -> Any:
  """Logical specs for an optax state, so it is sharded like the params."""
  flat_params = jax.tree_util.tree_flatten_with_path(param_shapes)[0]
  flat_specs = jax.tree.leaves(
      param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  params_by_path = {
      param_tree.path_names(path): (tuple(leaf.shape), spec)
      for (path, leaf), spec in zip(flat_params, flat_specs)
  }
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: _spec_for_state_leaf(
          param_tree.path_names(path), leaf, params_by_path),
      opt_state_shapes)


def _none_to_replicated(spec: Any) -> PartitionSpec:
  return PartitionSpec() if spec is None else spec


def abstract_state_and_specs(
    init_variables: Callable[[jax.Array], Mapping[str, Any]],
    optimizer: optax.GradientTransformation,
) -> tuple[TrainState, TrainState]:
  """Shapes and logical specs of the state, without allocating anything.

  `init_variables(rng)` returns the model's variables with
  `nn.LogicallyPartitioned` leaves (EncoderDecoderModel.get_initial_variables).
  """
  rng_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  boxed = jax.eval_shape(init_variables, rng_shape)["params"]
  param_specs = jax.tree.map(
      _none_to_replicated, nn.get_partition_spec(boxed),
      is_leaf=lambda x: x is None or isinstance(x, PartitionSpec))
  param_shapes = nn.unbox(boxed)
  opt_shapes = jax.eval_shape(optimizer.init, param_shapes)
  shapes = TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32), params=param_shapes,
      opt_state=opt_shapes, rng=rng_shape)
  specs = TrainState(
      step=PartitionSpec(), params=param_specs,
      opt_state=optimizer_state_specs(opt_shapes, param_shapes, param_specs),
      rng=PartitionSpec())
  return shapes, specs


def state_shardings(partitioner: partitioning.Partitioner,
                    shapes: TrainState, specs: TrainState) -> TrainState:
  return partitioner.logical_to_sharding(specs, shapes)


def with_shardings(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that carry their sharding: a checkpoint-restore target."""
  return jax.tree.map(
      lambda shape, sharding: jax.ShapeDtypeStruct(
          shape.shape, shape.dtype, sharding=sharding), shapes, shardings)


def create_train_state(
    init_variables: Callable[[jax.Array], Mapping[str, Any]],
    optimizer: optax.GradientTransformation,
    shardings: TrainState,
    seed: int,
    initial_params: Any | None = None,
) -> TrainState:
  """Initialises the state directly in its sharded layout.

  With `initial_params` (already placed with `shardings.params`), the random
  initialisation of the parameters is skipped and the optimizer starts from
  them.
  """
  def init(rng_data, params):
    init_rng, dropout_rng = jax.random.split(jax.random.wrap_key_data(rng_data))
    if params is None:
      params = nn.unbox(init_variables(jax.random.key_data(init_rng))["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      rng=jax.random.key_data(dropout_rng))

  rng_data = jax.random.key_data(jax.random.key(seed))
  params_sharding = None if initial_params is None else shardings.params
  jitted = jax.jit(init, in_shardings=(None, params_sharding),
                   out_shardings=shardings)
  return jitted(rng_data, initial_params)
