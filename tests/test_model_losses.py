"""Loss semantics (T5X's): z-loss, label smoothing, normalising factors, custom gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import losses


def _reference(logits, targets, weights, smoothing, z_loss):
  """Plain NumPy cross-entropy against smoothed targets, minus their entropy."""
  vocab = logits.shape[-1]
  log_z = np.log(np.exp(logits).sum(-1))
  log_probs = logits - log_z[..., None]
  on, off = 1.0 - smoothing, smoothing / (vocab - 1)
  soft = np.full(logits.shape, off)
  np.put_along_axis(soft, targets[..., None], on, axis=-1)
  entropy = -(on * np.log(on) + (vocab - 1) * off * np.log(off + 1e-20))
  per_token = -(soft * log_probs).sum(-1) - entropy + z_loss * log_z**2
  return (per_token * weights).sum(), (z_loss * log_z**2 * weights).sum()


@pytest.mark.parametrize("smoothing,z_loss", [(0.0, 0.0), (0.0, 1e-4), (0.1, 1e-4)])
def test_weighted_cross_entropy_matches_reference(smoothing, z_loss):
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(2, 5, 7)) * 3
  targets = rng.randint(0, 7, size=(2, 5))
  weights = (rng.rand(2, 5) > 0.3).astype(np.float64)
  loss, total_z, weight_sum = losses.compute_weighted_cross_entropy(
      jnp.asarray(logits, jnp.float32), jnp.asarray(targets), jnp.asarray(weights, jnp.float32),
      label_smoothing=smoothing, z_loss=z_loss)
  expected_loss, expected_z = _reference(logits, targets, weights, smoothing, z_loss)
  assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
  assert float(total_z) == pytest.approx(expected_z, rel=1e-5, abs=1e-9)
  assert float(weight_sum) == weights.sum()


def test_custom_gradient_equals_autodiff():
  rng = np.random.RandomState(1)
  logits = jnp.asarray(rng.normal(size=(3, 6)) * 2, jnp.float32)
  soft = jax.nn.one_hot(jnp.array([1, 4, 0]), 6) * 0.9 + 0.1 / 6

  def plain(x):
    log_z = jax.scipy.special.logsumexp(x, axis=-1)
    return jnp.sum(-jnp.sum(soft * (x - log_z[:, None]), -1) + 1e-3 * log_z**2)

  custom = jax.grad(lambda x: jnp.sum(losses.cross_entropy_with_logits(x, soft, 1e-3)[0]))
  np.testing.assert_allclose(custom(logits), jax.grad(plain)(logits), atol=1e-6)


def test_sparse_cross_entropy_equals_the_one_hot_form_and_its_gradient():
  rng = np.random.RandomState(2)
  logits = jnp.asarray(rng.normal(size=(2, 5, 11)) * 3, jnp.float32)
  targets = jnp.asarray(rng.randint(0, 11, size=(2, 5)), jnp.int32)
  one_hot = jax.nn.one_hot(targets, 11)
  sparse = losses.sparse_cross_entropy_with_logits(logits, targets, 1e-3)
  dense = losses.cross_entropy_with_logits(logits, one_hot, 1e-3)
  for got, want in zip(sparse, dense):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  weights = jnp.asarray(rng.uniform(size=(2, 5)), jnp.float32)
  grad_sparse = jax.grad(lambda x: jnp.sum(
      losses.sparse_cross_entropy_with_logits(x, targets, 1e-3)[0] * weights))(logits)
  grad_dense = jax.grad(lambda x: jnp.sum(
      losses.cross_entropy_with_logits(x, one_hot, 1e-3)[0] * weights))(logits)
  np.testing.assert_allclose(grad_sparse, grad_dense, atol=1e-6)


def test_special_normalizing_factors():
  weights = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
  batch = {"decoder_target_tokens": jnp.array([[5, 6, 7, 0], [5, 0, 0, 0]]),
           "decoder_loss_weights": weights}
  factor, _ = losses.get_loss_normalizing_factor_and_weights("NUM_REAL_TARGET_TOKENS", batch)
  assert float(factor) == 4.0
  factor, _ = losses.get_loss_normalizing_factor_and_weights("num_total_target_tokens", batch)
  assert float(factor) == 8.0
  factor, per_sequence = losses.get_loss_normalizing_factor_and_weights(
      "AVERAGE_PER_SEQUENCE", batch)
  np.testing.assert_allclose(per_sequence, [[1 / 3, 1 / 3, 1 / 3, 0], [1, 0, 0, 0]])
  assert float(factor) == pytest.approx(2.0)
  with pytest.raises(ValueError, match="unknown loss_normalizing_factor"):
    losses.get_loss_normalizing_factor_and_weights("PER_TOKEN", batch)


def test_average_per_sequence_packed_equals_unpacked():
  """Packed rows weight each segment by 1/its length, as separate rows would."""
  packed = {"decoder_target_tokens": jnp.array([[5, 6, 7, 8, 9, 0]]),
            "decoder_loss_weights": jnp.array([[1.0, 1, 1, 1, 1, 0]]),
            "decoder_segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]]),
            "decoder_positions": jnp.array([[0, 1, 2, 0, 1, 0]])}
  _, weights = losses.get_loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", packed)
  np.testing.assert_allclose(weights, [[1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2, 0]])


def test_model_loss_fn_normalising_options():
  from cot_distill.model.config import get_config  # pylint: disable=g-import-not-at-top
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  config = get_config("t5_1_1_tiny", vocab_size=32, dtype="float32")
  summed = EncoderDecoderModel(config)
  params = nn.unbox(summed.get_initial_variables(
      jax.random.PRNGKey(0), {"encoder_input_tokens": (1, 4), "decoder_input_tokens": (1, 4)}))
  targets = jnp.array([[3, 4, 5, 1, 0, 0], [6, 1, 0, 0, 0, 0]])
  batch = {"encoder_input_tokens": jnp.array([[7, 8, 9, 1, 0, 0]] * 2),
           "decoder_target_tokens": targets,
           "decoder_input_tokens": jnp.pad(targets[:, :-1], ((0, 0), (1, 0))),
           "decoder_loss_weights": (targets > 0).astype(jnp.float32)}
  loss, metrics = summed.loss_fn(params["params"], batch, None)
  assert float(metrics["num_tokens"]) == 6.0
  assert float(metrics["cross_ent_loss"] + metrics["z_loss"]) == pytest.approx(float(loss))
  per_token = EncoderDecoderModel(config, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
  assert float(per_token.loss_fn(params["params"], batch, None)[0]) == pytest.approx(
      float(loss) / 6, rel=1e-6)
  smoothed = EncoderDecoderModel(config, label_smoothing=0.1)
  assert float(smoothed.loss_fn(params["params"], batch, None)[0]) != pytest.approx(float(loss))
  eval_loss, _ = summed.eval_fn(params["params"], batch)
  assert float(eval_loss) == float(loss)
