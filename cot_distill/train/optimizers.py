"""Optimizers and learning-rate schedules, with T5X's fine-tuning defaults.

Gin hands the trainer an optimizer *factory* (`@optimizers.adafactor`, no
parentheses) and a schedule; the trainer calls the factory with the schedule,
so the learning rate that is logged is the one the optimizer uses.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cot_distill import fast_paths
from cot_distill.model import param_tree
from cot_distill.model import scanned


class OptimizerFactory(Protocol):
  """Builds a gradient transformation around a learning-rate schedule."""

  def __call__(self, learning_rate: optax.Schedule
               ) -> optax.GradientTransformation:
    ...


# Schedules. `step` is the number of updates already applied (0 for the first).


def constant_schedule(value: float = 1e-3) -> optax.Schedule:
  """T5X fine-tuning: a constant 1e-3 with Adafactor (`finetune.gin`)."""
  return optax.constant_schedule(value)


def rsqrt_decay_schedule(base_learning_rate: float = 1.0,
                         warmup_steps: int = 10_000) -> optax.Schedule:
  """T5X pre-training ('constant * rsqrt_decay'): base / sqrt(max(step, warmup)).

  Constant at base / sqrt(warmup) for the first `warmup_steps` (0.01 for T5's
  1.0 and 10k), then inverse square-root decay.
  """
  if warmup_steps < 1:
    raise ValueError(f"rsqrt_decay_schedule: warmup_steps must be >= 1, got "
                     f"{warmup_steps}")

  def schedule(step):
    return base_learning_rate * jnp.reciprocal(
        jnp.sqrt(jnp.maximum(step, warmup_steps).astype(jnp.float32)))

  return schedule


def warmup_cosine_schedule(peak_learning_rate: float = 1e-3,
                           warmup_steps: int = 1_000,
                           decay_steps: int = 100_000,
                           end_learning_rate: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to the peak, then cosine decay to the end value.

  `decay_steps` counts the whole schedule, warm-up included (optax's
  convention); past it the rate stays at `end_learning_rate`.
  """
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_learning_rate,
      warmup_steps=warmup_steps, decay_steps=decay_steps,
      end_value=end_learning_rate)


# Optimizers.


def _mean_of_squares(x: jax.Array, axis: int) -> jax.Array:
  """`jnp.mean(x ** 2, axis)`, through `fast_paths.mean_of_squares`.

  Every factored Adafactor statistic needs one mean over a matrix's leading
  axis, which XLA:CPU's own reduction made most of the optimizer's time; the
  CPU form (`cot_distill.model.row_sums`) only changes the summation order.
  Elsewhere, and with `cpu_fast_paths=off`, it is optax's `jnp.mean`.
  """
  return fast_paths.mean_of_squares(x, axis)


def _layer_axis(path) -> int | None:
  """The stacked layer axis of the parameter at a tree path (scanned layers)."""
  return scanned.layer_axis(param_tree.path_names(path))


def _other_axes(ndim: int, layer_axis: int | None) -> tuple[int, ...] | None:
  """Every axis but the layer axis (None: all axes, an unstacked parameter)."""
  if layer_axis is None:
    return None
  return tuple(axis for axis in range(ndim) if axis != layer_axis)


def _factored_dims(shape: tuple[int, ...], factored: bool,
                   min_dim_size_to_factor: int,
                   layer_axis: int | None = None) -> tuple[int, int] | None:
  """(second largest, largest) axis when both are big enough, as optax.

  A scanned network's stacked layer axis is never factored and never
  chosen (T5X's `factor_rules` treat "layers" as a batch axis): a stacked
  kernel [embed, layers, mlp] factors embed and mlp, per layer, exactly as
  each unstacked [embed, mlp] kernel does.
  """
  axes = [axis for axis in range(len(shape)) if axis != layer_axis]
  if not factored or len(axes) < 2:
    return None
  order = [axes[index] for index in np.argsort([shape[axis] for axis in axes])]
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def scale_by_factored_rms(*, factored: bool = True, decay_rate: float = 0.8,
                          step_offset: int = 0, min_dim_size_to_factor: int = 128,
                          epsilon: float = 1e-30) -> optax.GradientTransformation:
  """Adafactor's factored second-moment scaling, state-compatible with optax.

  Same state (`optax.FactoredState`) and formulas as
  `optax.scale_by_factored_rms`, so checkpoints move between the two; the
  column means go through `_mean_of_squares`. Stacked (scanned) layer
  parameters are factored per layer (`_factored_dims`).
  """
  def init(params):
    def leaf_state(path, param):
      dims = _factored_dims(param.shape, factored, min_dim_size_to_factor,
                            _layer_axis(path))
      empty = jnp.zeros((1,), param.dtype)
      if dims is None:
        return empty, empty, jnp.zeros_like(param)
      second, largest = dims
      return (jnp.zeros(np.delete(param.shape, largest), param.dtype),
              jnp.zeros(np.delete(param.shape, second), param.dtype), empty)
    states = jax.tree_util.tree_map_with_path(leaf_state, params)
    pick = lambda index: jax.tree.map(lambda _, state: state[index], params, states)  # pylint: disable=unnecessary-lambda-assignment
    return optax.FactoredState(count=jnp.zeros([], jnp.int32), v_row=pick(0),
                               v_col=pick(1), v=pick(2))

  def update(grads, state, params):
    if params is None:
      raise ValueError("scale_by_factored_rms needs the parameters")
    step = jnp.asarray(state.count - step_offset + 1, jnp.float32)
    decay = 1.0 - step ** (-decay_rate)

    def leaf_update(path, grad, v_row, v_col, v, param):
      dtype = param.dtype
      dims = _factored_dims(param.shape, factored, min_dim_size_to_factor,
                            _layer_axis(path))
      empty = jnp.zeros((1,), dtype)
      if dims is None:
        new_v = (decay * v + (1.0 - decay) * (jnp.square(grad) + epsilon)).astype(dtype)
        return grad * new_v ** -0.5, empty, empty, new_v
      second, largest = dims
      # mean(g^2 + eps) = mean(g^2) + eps; adding eps after the mean avoids
      # materialising g^2 + eps.
      row_mean = _mean_of_squares(grad, largest) + epsilon
      col_mean = _mean_of_squares(grad, second) + epsilon
      new_row = (decay * v_row + (1.0 - decay) * row_mean).astype(dtype)
      new_col = (decay * v_col + (1.0 - decay) * col_mean).astype(dtype)
      # A mean over the row statistic's remaining factored axis: over the
      # whole vector for a matrix, per layer for a stacked kernel.
      row_axis = second - 1 if second > largest else second
      row_factor = (new_row / jnp.mean(new_row, axis=row_axis, keepdims=True)) ** -0.5
      col_factor = new_col ** -0.5
      scaled = (grad * jnp.expand_dims(row_factor, axis=largest)
                * jnp.expand_dims(col_factor, axis=second))
      return scaled, new_row, new_col, empty

    results = jax.tree_util.tree_map_with_path(
        leaf_update, grads, state.v_row, state.v_col, state.v, params)
    pick = lambda index: jax.tree.map(lambda _, result: result[index], grads, results)  # pylint: disable=unnecessary-lambda-assignment
    return pick(0), optax.FactoredState(count=optax.safe_increment(state.count),
                                        v_row=pick(1), v_col=pick(2), v=pick(3))

  return optax.GradientTransformation(init, update)


def _block_rms(x: jax.Array, path) -> jax.Array:
  """RMS of a parameter block: the whole array, or each layer of a stacked one."""
  axes = _other_axes(x.ndim, _layer_axis(path))
  return jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=axes is not None))


def scale_by_param_rms(min_scale: float = 1e-3) -> optax.GradientTransformation:
  """Multiplies each update by max(RMS(param), min_scale), as optax's block version.

  `optax.scale_by_param_block_rms` computes the same value through
  `safe_root_mean_squares`, whose gradient-safe `where` writes a masked copy
  of every parameter and takes a second mean over it; the optimizer is never
  differentiated, so one mean suffices. Same (empty) state. A stacked
  (scanned) layer parameter is one block per layer, as unstacked.
  """
  def update(updates, state, params):
    if params is None:
      raise ValueError("scale_by_param_rms needs the parameters")
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u, p: u * jnp.maximum(_block_rms(p, path), min_scale),
        updates, params)
    return scaled, state

  return optax.GradientTransformation(optax.init_empty_state, update)


def clip_by_block_rms(threshold: float) -> optax.GradientTransformation:
  """`optax.clip_by_block_rms` (same formula and empty state), per layer when stacked.

  Each block's update is divided by max(1, RMS / threshold); a stacked
  (scanned) layer parameter is clipped layer by layer, as its unstacked
  layers would be.
  """
  def update(updates, state, params=None):
    del params
    clipped = jax.tree_util.tree_map_with_path(
        lambda path, u: u / jnp.maximum(1.0, _block_rms(u, path) / threshold), updates)
    return clipped, state

  return optax.GradientTransformation(optax.init_empty_state, update)


def adafactor(learning_rate: optax.Schedule,
              *,
              decay_rate: float = 0.8,
              step_offset: int = 0,
              clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True,
              factored: bool = True,
              min_dim_size_to_factor: int = 128,
              momentum: float | None = None,
              weight_decay_rate: float | None = None
              ) -> optax.GradientTransformation:
  """Adafactor with T5X's defaults (`t5x/adafactor.py`, `finetune.gin`).

  Second-moment decay 1 - (step + 1)^-0.8, update clipping at RMS 1.0,
  updates scaled by the parameter's RMS (floored at 1e-3), factored second
  moments for matrices whose two largest dims are >= 128, no momentum.
  optax factors a matrix over its two largest dims; for T5's 2-D kernels that
  is the same choice T5X's logical factor rules make. The chain and its state
  are `optax.adafactor`'s, with `scale_by_factored_rms`, `clip_by_block_rms`
  and `scale_by_param_rms` above in place of optax's (same values, fewer
  passes over the parameters). With scanned layers each stacked parameter is
  treated layer by layer (factoring, clipping, parameter scale), so the
  update equals the unscanned run's (T5X: "layers" is a batch axis of its
  factor rules).
  """
  chain = [scale_by_factored_rms(factored=factored, decay_rate=decay_rate,
                                 step_offset=step_offset,
                                 min_dim_size_to_factor=min_dim_size_to_factor,
                                 epsilon=1e-30)]
  if clipping_threshold is not None:
    chain.append(clip_by_block_rms(clipping_threshold))
  chain.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
  if multiply_by_parameter_scale:
    chain.append(scale_by_param_rms())
  if momentum is not None:
    chain.append(optax.ema(momentum, debias=False))
  if weight_decay_rate is not None:
    chain.append(optax.add_decayed_weights(weight_decay_rate))
  chain.append(optax.scale(-1))
  return optax.chain(*chain)


def adamw(learning_rate: optax.Schedule,
          *,
          b1: float = 0.9,
          b2: float = 0.999,
          eps: float = 1e-8,
          weight_decay: float = 0.0,
          max_grad_norm: float | None = None) -> optax.GradientTransformation:
  """AdamW; weight decay 0 by default, as Hugging Face's Trainer.

  `max_grad_norm` clips the global gradient norm before the update.
  """
  transform = optax.adamw(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                          weight_decay=weight_decay)
  if max_grad_norm is not None:
    transform = optax.chain(optax.clip_by_global_norm(max_grad_norm),
                            transform)
  return transform


def as_schedule(learning_rate: float | optax.Schedule) -> optax.Schedule:
  """Lets gin (or a test) pass a plain number for a constant rate."""
  if callable(learning_rate):
    return learning_rate
  return optax.constant_schedule(float(learning_rate))
