"""One optimizer step: teacher-forced loss, gradient accumulation, update.

Plain module-level functions, jitted once by `compile_train_step` with
explicit in/out shardings and the state donated (its buffers are reused for
the new state, so a step needs no second copy of params + optimizer state).
The step knows nothing about chains of thought: the loss is the model
wrapper's `loss_fn`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from cot_distill.train import partitioning
from cot_distill.train.state import TrainState

Batch = Mapping[str, jax.Array]
# loss_fn(params, batch, dropout_rng) -> (loss, metrics); EncoderDecoderModel's.
LossFn = Callable[[Any, Batch, jax.Array | None], tuple[jax.Array, dict]]


def split_microbatches(batch: Batch, num_microbatches: int) -> Batch:
  """[B, ...] -> [num_microbatches, B / num_microbatches, ...], strided.

  Microbatch k takes rows k, k + n, k + 2n, ...: with the batch split over
  `data` in contiguous blocks, every microbatch row stays on the device that
  already holds it, so accumulation moves no data between devices.
  """
  def split(array):
    rows = array.shape[0]
    if rows % num_microbatches:
      raise ValueError(f"batch size {rows} is not divisible by "
                       f"num_microbatches={num_microbatches}")
    grouped = array.reshape((rows // num_microbatches, num_microbatches)
                            + array.shape[1:])
    return jnp.swapaxes(grouped, 0, 1)
  return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: LossFn, params: Any, batch: Batch,
                         dropout_rng: jax.Array | None,
                         num_microbatches: int,
                         microbatch_sharding: Any | None = None
                         ) -> tuple[Any, dict]:
  """Sums loss, metrics and gradients over microbatches (T5X semantics).

  The model's loss is a sum over tokens (optionally divided by a constant
  normalising factor), so the sum over microbatches equals the full-batch
  loss and gradient, and peak activation memory is one microbatch's.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches <= 1:
    (_, metrics), grads = grad_fn(params, batch, dropout_rng)
    return grads, metrics

  microbatches = split_microbatches(batch, num_microbatches)

  def body(carry, inputs):
    grads_sum, metrics_sum = carry
    index, microbatch = inputs
    if microbatch_sharding is not None:
      microbatch = jax.lax.with_sharding_constraint(microbatch,
                                                    microbatch_sharding)
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng,
                                                              index)
    (_, metrics), grads = grad_fn(params, microbatch, rng)
    return (jax.tree.map(jnp.add, grads_sum, grads),
            jax.tree.map(jnp.add, metrics_sum, metrics)), None

  first = jax.tree.map(lambda x: x[0], microbatches)
  metrics_shapes = jax.eval_shape(
      lambda: grad_fn(params, first, dropout_rng)[0][1])
  zeros = (jax.tree.map(jnp.zeros_like, params),
           jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shapes))
  (grads, metrics), _ = jax.lax.scan(
      body, zeros, (jnp.arange(num_microbatches), microbatches))
  return grads, metrics


NONFINITE_POLICIES = ("stop", "skip")


def train_step(state: TrainState, batch: Batch, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation,
               learning_rate: optax.Schedule, num_microbatches: int,
               dropout: bool, microbatch_sharding: Any | None = None,
               skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
  """Forward + backward + update; returns the new state and step metrics.

  Metrics are the model's sums over the batch (loss, accuracy = correct
  tokens, num_tokens, ...) plus the learning rate this step used and the
  global gradient norm before the optimizer's own clipping.

  With `skip_nonfinite`, a step whose loss or gradient norm is NaN or Inf
  keeps the previous parameters and optimizer state (the step counter still
  advances, so the data stream and schedule go on) and reports
  `skipped_nonfinite` = 1, as MaxText's and Levanter's skip options do.
  Without it the update is applied regardless; the loop stops the run.
  """
  dropout_rng = (jax.random.fold_in(jax.random.wrap_key_data(state.rng),
                                    state.step) if dropout else None)
  if dropout_rng is not None:
    dropout_rng = jax.random.key_data(dropout_rng)
  grads, metrics = accumulate_gradients(loss_fn, state.params, batch,
                                        dropout_rng, num_microbatches,
                                        microbatch_sharding)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  if "num_correct" in metrics and "num_tokens" in metrics:
    # Summed over microbatches, a per-microbatch fraction would be wrong.
    metrics["accuracy"] = metrics["num_correct"] / jnp.maximum(
        metrics["num_tokens"], 1.0)
  metrics["learning_rate"] = jnp.asarray(learning_rate(state.step), jnp.float32)
  metrics["grad_norm"] = optax.global_norm(grads)
  if skip_nonfinite:
    finite = jnp.isfinite(metrics["grad_norm"]) & jnp.isfinite(
        jnp.sum(metrics["loss"]))
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, params, state.params)
    opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    metrics["skipped_nonfinite"] = 1.0 - finite.astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def compile_train_step(*, loss_fn: LossFn,
                       optimizer: optax.GradientTransformation,
                       learning_rate: optax.Schedule,
                       partitioner: partitioning.Partitioner,
                       state_shardings: TrainState,
                       num_microbatches: int = 1,
                       dropout: bool = True,
                       skip_nonfinite: bool = False
                       ) -> Callable[[TrainState, Batch],
                                     tuple[TrainState, dict]]:
  """`train_step` jitted once: state donated, batch split over `data`.

  The logical-axis rules are in scope while tracing, so the network's
  activation constraints (`nn.with_logical_constraint`) resolve to this
  layout's mesh axes.
  """
  batch_sharding = partitioner.batch_sharding()
  microbatch_sharding = NamedSharding(partitioner.mesh,
                                      PartitionSpec(partitioning.DATA_AXIS))
  step = functools.partial(
      train_step, loss_fn=loss_fn, optimizer=optimizer,
      learning_rate=learning_rate, num_microbatches=num_microbatches,
      dropout=dropout, microbatch_sharding=microbatch_sharding,
      skip_nonfinite=skip_nonfinite)
  jitted = jax.jit(step,
                   in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, partitioner.replicated()),
                   donate_argnums=(0,))

  def run(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    with jax.set_mesh(partitioner.mesh), nn.logical_axis_rules(partitioner.rules):
      return jitted(state, batch)

  run.lower = lambda *args: _lower(jitted, partitioner, *args)
  return run


def _lower(jitted, partitioner, *args):
  with jax.set_mesh(partitioner.mesh), nn.logical_axis_rules(partitioner.rules):
    return jitted.lower(*args)
