"""Optimizers and learning-rate schedules, with T5X's fine-tuning defaults.

Gin hands the trainer an optimizer *factory* (`@optimizers.adafactor`, no
parentheses) and a schedule; the trainer calls the factory with the schedule,
so the learning rate that is logged is the one the optimizer uses.
"""

from __future__ import annotations

from typing import Protocol

import jax.numpy as jnp
import optax


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
  is the same choice T5X's logical factor rules make.
  """
  return optax.adafactor(
      learning_rate=learning_rate,
      min_dim_size_to_factor=min_dim_size_to_factor,
      decay_rate=decay_rate,
      decay_offset=step_offset,
      multiply_by_parameter_scale=multiply_by_parameter_scale,
      clipping_threshold=clipping_threshold,
      momentum=momentum,
      weight_decay_rate=weight_decay_rate,
      eps=1e-30,
      factored=factored)


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
