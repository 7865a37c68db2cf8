"""Cross-entropy with z-loss, label smoothing and loss normalisation (T5X semantics).

The numbers must match T5X's `t5x/losses.py` exactly (the fixture checks the
summed loss), so the conventions are T5X's: the loss is a SUM over weighted
target tokens unless a `loss_normalizing_factor` divides it, and the returned
loss already includes the z-loss term.
"""

from __future__ import annotations

import enum
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@jax.custom_vjp
def cross_entropy_with_logits(logits: Array, soft_targets: Array,
                              z_loss: float) -> tuple[Array, Array]:
  """Per-token cross-entropy (+ z_loss * log(Z)^2) and the z-loss alone.

  The custom gradient is the closed form softmax - targets (plus the z-loss
  term), cheaper and steadier in bfloat16 than differentiating logsumexp.
  """
  log_z = jax.scipy.special.logsumexp(logits, axis=-1)
  loss = -jnp.sum(soft_targets * (logits - log_z[..., None]), axis=-1)
  total_z_loss = z_loss * jax.lax.square(log_z)
  return loss + total_z_loss, total_z_loss


def _cross_entropy_forward(logits, soft_targets, z_loss):
  max_logit = jnp.max(logits, axis=-1, keepdims=True)
  exp_shifted = jnp.exp(logits - max_logit)
  sum_exp = jnp.sum(exp_shifted, axis=-1, keepdims=True)
  log_softmax = logits - max_logit - jnp.log(sum_exp)
  log_z = jnp.squeeze(jnp.log(sum_exp) + max_logit, axis=-1)
  total_z_loss = z_loss * jax.lax.square(log_z)
  loss = -jnp.sum(soft_targets * log_softmax, axis=-1) + total_z_loss
  residuals = (soft_targets, z_loss, exp_shifted / sum_exp, log_softmax, log_z)
  return (loss, total_z_loss), residuals


def _cross_entropy_backward(residuals, gradients):
  soft_targets, z_loss, probabilities, log_softmax, log_z = residuals
  gradient = gradients[0]  # the z-loss output is for logging only
  derivative = (1 + 2 * z_loss * log_z)[..., None] * probabilities - soft_targets
  logits_gradient = gradient[..., None] * derivative
  targets_gradient = -gradient[..., None] * log_softmax
  return (logits_gradient.astype(probabilities.dtype),
          targets_gradient.astype(soft_targets.dtype), jnp.zeros(()))


cross_entropy_with_logits.defvjp(_cross_entropy_forward, _cross_entropy_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def sparse_cross_entropy_with_logits(logits: Array, targets: Array,
                                     z_loss: float) -> tuple[Array, Array]:
  """`cross_entropy_with_logits` for one-hot targets given as ids.

  Same numbers without building the [tokens, vocab] one-hot targets; the
  gradient softmax * (1 + 2 z log Z) - onehot is one elementwise pass over
  the logits, written in the logits' dtype.
  """
  (loss, total_z_loss), _ = _sparse_forward(logits, targets, z_loss)
  return loss, total_z_loss


def _sparse_forward(logits, targets, z_loss):
  max_logit = jnp.max(logits, axis=-1, keepdims=True)
  sum_exp = jnp.sum(jnp.exp(logits - max_logit), axis=-1, keepdims=True)
  log_z = jnp.squeeze(jnp.log(sum_exp) + max_logit, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  total_z_loss = z_loss * jax.lax.square(log_z)
  loss = log_z - target_logit + total_z_loss
  return (loss, total_z_loss), (logits, targets, log_z)


def _sparse_backward(z_loss, residuals, gradients):
  logits, targets, log_z = residuals
  gradient = gradients[0]  # the z-loss output is for logging only
  scale = gradient * (1 + 2 * z_loss * log_z)
  probabilities = jnp.exp(logits - log_z[..., None])
  is_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == (
      targets[..., None])
  logits_gradient = scale[..., None] * probabilities - jnp.where(
      is_target, gradient[..., None], 0.0)
  targets_gradient = np.zeros(targets.shape, jax.dtypes.float0)
  return logits_gradient.astype(logits.dtype), targets_gradient


sparse_cross_entropy_with_logits.defvjp(_sparse_forward, _sparse_backward)


def compute_weighted_cross_entropy(
    logits: Array, targets: Array, weights: Array | None = None,
    label_smoothing: float = 0.0, z_loss: float = 0.0,
    loss_normalizing_factor: float | Array | None = None) -> tuple[Array, Array, Array]:
  """(summed loss incl. z-loss, summed z-loss, weight sum) over a batch.

  Label smoothing moves `label_smoothing` of the target mass uniformly onto the
  other classes and subtracts the smoothed distribution's entropy, so a
  perfect prediction still scores 0.
  """
  if logits.ndim != targets.ndim + 1:
    raise ValueError(f"logits {logits.shape} and targets {targets.shape} do not match")
  vocab_size = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low_confidence = (1.0 - confidence) / (vocab_size - 1)
  normalizing_constant = -(
      confidence * np.log(confidence)
      + (vocab_size - 1) * low_confidence * np.log(low_confidence + 1e-20))
  if label_smoothing == 0.0:
    total_loss, total_z_loss = sparse_cross_entropy_with_logits(
        logits, targets.astype(jnp.int32), z_loss)
  else:
    soft_targets = jax.nn.one_hot(targets, vocab_size, dtype=logits.dtype)
    soft_targets = soft_targets * (confidence - low_confidence) + low_confidence
    total_loss, total_z_loss = cross_entropy_with_logits(logits, soft_targets, z_loss)
    total_loss = total_loss - normalizing_constant
  weight_sum = jnp.asarray(np.prod(targets.shape), jnp.float32)
  if weights is not None:
    total_loss = total_loss * weights
    total_z_loss = total_z_loss * weights
    weight_sum = jnp.sum(weights)
  if loss_normalizing_factor is not None:
    total_loss = total_loss / loss_normalizing_factor
    total_z_loss = total_z_loss / loss_normalizing_factor
  return jnp.sum(total_loss), jnp.sum(total_z_loss), weight_sum


class SpecialLossNormalizingFactor(enum.Enum):
  """Batch-dependent normalisers (T5X names, usable as strings in gin).

  NUM_REAL_TARGET_TOKENS: divide by the sum of loss weights.
  NUM_TOTAL_TARGET_TOKENS: divide by batch * target length (padding included).
  AVERAGE_PER_SEQUENCE: average each sequence over its tokens, then average
    the sequences, so long rationales do not outweigh short answers.
  """
  NUM_REAL_TARGET_TOKENS = 1
  NUM_TOTAL_TARGET_TOKENS = 2
  AVERAGE_PER_SEQUENCE = 3


def _sum_weights_per_segment(positions: Array, segment_ids: Array,
                             weights: Array) -> Array:
  """For packed rows: each token's weight sum over its own segment [B, L]."""
  same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
  same_segment = same_segment & (segment_ids[:, :, None] != 0)
  del positions  # segments are identified by id; positions are not needed
  return jnp.einsum("bqk,bk->bq", same_segment.astype(weights.dtype), weights)


def get_loss_normalizing_factor_and_weights(
    loss_normalizing_factor: float | str | SpecialLossNormalizingFactor | None,
    batch: Mapping[str, Array]) -> tuple[float | Array | None, Array | None]:
  """Resolves a (possibly special) normalising factor into (factor, weights)."""
  weights = batch.get("decoder_loss_weights")
  if loss_normalizing_factor is None or not isinstance(
      loss_normalizing_factor, (str, SpecialLossNormalizingFactor)):
    return loss_normalizing_factor, weights
  if isinstance(loss_normalizing_factor, str):
    try:
      loss_normalizing_factor = SpecialLossNormalizingFactor[loss_normalizing_factor.upper()]
    except KeyError:
      raise ValueError(
          f"unknown loss_normalizing_factor {loss_normalizing_factor!r}; use a number or "
          f"one of {[f.name for f in SpecialLossNormalizingFactor]}") from None
  if weights is None:
    weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  if loss_normalizing_factor is SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS:
    return jnp.sum(weights), weights
  if loss_normalizing_factor is SpecialLossNormalizingFactor.NUM_TOTAL_TARGET_TOKENS:
    return float(np.prod(batch["decoder_target_tokens"].shape)), weights
  if "decoder_segment_ids" in batch:
    per_token = _sum_weights_per_segment(batch.get("decoder_positions"),
                                         batch["decoder_segment_ids"], weights)
  else:
    per_token = jnp.sum(weights, axis=-1, keepdims=True)
  weights = jnp.where(per_token > 0, weights / jnp.where(per_token > 0, per_token, 1), 0.0)
  return jnp.sum(weights), weights
