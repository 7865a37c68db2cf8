"""Schedules and optimizers: the numbers T5X's fine-tuning recipe implies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cot_distill.train import optimizers


def test_constant_schedule_is_t5x_finetuning_default():
  schedule = optimizers.constant_schedule()
  assert [float(schedule(step)) for step in (0, 1, 10_000)] == pytest.approx(
      [1e-3] * 3)


def test_rsqrt_decay_is_flat_during_warmup_then_inverse_sqrt():
  schedule = optimizers.rsqrt_decay_schedule(base_learning_rate=1.0,
                                             warmup_steps=10_000)
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(9_999)) == pytest.approx(0.01)
  assert float(schedule(40_000)) == pytest.approx(0.005)
  with pytest.raises(ValueError, match="warmup_steps"):
    optimizers.rsqrt_decay_schedule(warmup_steps=0)


def test_warmup_cosine_rises_linearly_then_decays_to_end():
  schedule = optimizers.warmup_cosine_schedule(
      peak_learning_rate=1e-3, warmup_steps=100, decay_steps=1_100,
      end_learning_rate=1e-5)
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(5e-4)
  assert float(schedule(100)) == pytest.approx(1e-3)
  # Half-way through the cosine: (peak + end) / 2.
  assert float(schedule(600)) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-4)
  assert float(schedule(5_000)) == pytest.approx(1e-5)


def test_adafactor_first_step_is_t5x_update():
  """First step of T5X's Adafactor on a factorable matrix, computed by hand.

  Step 1 has decay 1 - 1^-0.8 = 0, so the second moment is g^2 exactly
  (a rank-one g^2 is factored without loss); g / sqrt(g^2) has RMS 1, so
  clipping at 1.0 leaves it; the step is scaled by lr * max(RMS(param), 1e-3).
  """
  rng = np.random.RandomState(0)
  param = jnp.asarray(rng.normal(size=(128, 256)) * 0.5, jnp.float32)
  grad = jnp.asarray(np.outer(rng.uniform(0.5, 2, 128),
                              rng.uniform(-2, 2, 256)), jnp.float32)
  tx = optimizers.adafactor(optimizers.constant_schedule(1e-3))
  state = tx.init(param)
  assert state[0].v_row.shape == (128,) and state[0].v_col.shape == (256,)
  updates, _ = tx.update(grad, state, param)
  rms = float(jnp.sqrt(jnp.mean(param ** 2)))
  expected = -1e-3 * rms * jnp.sign(grad)
  np.testing.assert_allclose(updates, expected, rtol=1e-3)


def test_adafactor_clips_large_relative_updates():
  """A second step whose gradient jumps 100x is clipped to update RMS 1."""
  param = jnp.ones((4,), jnp.float32)
  tx = optimizers.adafactor(optimizers.constant_schedule(1.0),
                            multiply_by_parameter_scale=False)
  state = tx.init(param)
  _, state = tx.update(jnp.full((4,), 0.01), state, param)
  updates, _ = tx.update(jnp.full((4,), 1.0), state, param)
  assert float(jnp.sqrt(jnp.mean(updates ** 2))) == pytest.approx(1.0, rel=1e-4)


def test_adamw_matches_optax_and_clips_global_norm():
  params = {"w": jnp.ones((3,))}
  grads = {"w": jnp.asarray([3.0, 4.0, 0.0])}
  tx = optimizers.adamw(optimizers.constant_schedule(0.1), max_grad_norm=1.0)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.0))
  ours, _ = tx.update(grads, tx.init(params), params)
  theirs, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(ours["w"], theirs["w"])
  # First Adam step: -lr * sign(g) where g != 0.
  np.testing.assert_allclose(ours["w"], [-0.1, -0.1, 0.0], atol=1e-6)


def test_as_schedule_accepts_numbers_and_schedules():
  assert float(optimizers.as_schedule(0.5)(123)) == 0.5
  schedule = optimizers.rsqrt_decay_schedule()
  assert optimizers.as_schedule(schedule) is schedule
  assert jax.numpy.asarray(schedule(1)).dtype == jnp.float32


def test_adafactor_equals_optax_adafactor_with_the_same_state():
  """Our faster factored scaling and parameter scale change no number that matters."""
  rng = np.random.default_rng(0)
  params = {"odd_rows": jnp.asarray(rng.standard_normal((301, 129)), jnp.float32),
            "wide": jnp.asarray(rng.standard_normal((129, 300)), jnp.float32),
            "vector": jnp.asarray(rng.standard_normal((7,)), jnp.float32),
            "rank3": jnp.asarray(rng.standard_normal((3, 200, 150)), jnp.float32),
            "zeros": jnp.zeros((5,), jnp.float32)}
  reference = optax.adafactor(
      learning_rate=optax.constant_schedule(1e-3), min_dim_size_to_factor=128,
      decay_rate=0.8, decay_offset=0, multiply_by_parameter_scale=True,
      clipping_threshold=1.0, momentum=None, weight_decay_rate=None, eps=1e-30,
      factored=True)
  ours = optimizers.adafactor(optimizers.constant_schedule(1e-3))
  state_ref, state_ours = reference.init(params), ours.init(params)
  assert jax.tree.structure(state_ref) == jax.tree.structure(state_ours)
  assert jax.tree.map(jnp.shape, state_ref) == jax.tree.map(jnp.shape, state_ours)
  params_ref = params_ours = params
  for _ in range(3):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    updates_ref, state_ref = reference.update(grads, state_ref, params_ref)
    updates_ours, state_ours = ours.update(grads, state_ours, params_ours)
    for a, b in zip(jax.tree.leaves(updates_ref), jax.tree.leaves(updates_ours)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)
    params_ref = optax.apply_updates(params_ref, updates_ref)
    params_ours = optax.apply_updates(params_ours, updates_ours)
