"""T5 building blocks: dense, RMS norm, embedding, relative position bias, attention, MLP.

Parameter names, shapes, initialisers and logical axis names are T5X's
(`t5x/examples/t5/layers.py`), so a T5X checkpoint is our parameter tree.
Numerics follow T5X too, including the parts that look odd but change results:
masks become a -1e10 additive bias (fully masked rows attend uniformly, as in
T5X), there is no 1/sqrt(head_dim) at run time (it is folded into the query
initialiser), and the RMS norm runs in float32 before casting.

Products and the RMS norms' scale go through `cot_distill.fast_paths`: plain
T5X forms everywhere, XLA:CPU kernels on the CPU backend.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cot_distill import fast_paths

Array = jax.Array
Initializer = Callable[..., Array]

# T5X's default initialisers.
KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
ATTENTION_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
RELPOS_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
EMBEDDING_INIT = nn.initializers.normal(stddev=1.0)

# Large negative bias for masked positions (T5X's value). Finite, so a fully
# masked row (a padding query) softmaxes to uniform instead of NaN.
MASK_BIAS = -1e10


def constrain(x: Array, axes: tuple[str | None, ...]) -> Array:
  """Names the activation's axes for the trainer's partitioning rules.

  A no-op unless the caller runs under `nn.logical_axis_rules`.
  """
  return nn.with_logical_constraint(x, axes)


def to_dtype(name: str | Any) -> Any:
  return jnp.dtype(name) if isinstance(name, str) else name


class Dense(nn.Module):
  """A bias-free linear layer with a 2-D kernel [in_features, out_features].

  T5X keeps every kernel 2-D (heads joined into one axis) so checkpoints are
  layout-independent; callers reshape activations around it.
  """
  features: int
  kernel_axes: tuple[str, str]
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = KERNEL_INIT
  # Result dtype; None is `dtype`. float32 with a bfloat16 `dtype` keeps the
  # float32 accumulator (used for logits).
  output_dtype: Any = None

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
        (inputs.shape[-1], self.features), self.param_dtype)
    return fast_paths.dense(inputs, kernel, dtype=self.dtype, out_dtype=self.output_dtype)


class RmsNorm(nn.Module):
  """T5's layer norm: x * rsqrt(mean(x^2) + eps) * scale; no mean, no bias."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.asarray(x, jnp.float32)
    mean_square = jnp.mean(jax.lax.square(x), axis=-1, keepdims=True)
    y = jnp.asarray(x * jax.lax.rsqrt(mean_square + self.epsilon), self.dtype)
    scale = self.param("scale", nn.with_logical_partitioning(
        nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype)
    return scale_features(y, jnp.asarray(scale, self.dtype))


def scale_features(x: Array, scale: Array) -> Array:
  """x [..., features] * scale [features] (`fast_paths.scale_features`)."""
  return fast_paths.scale_features(x, scale)


class Embed(nn.Module):
  """Token embedding shared by encoder and decoder; `attend` gives tied logits."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(EMBEDDING_INIT, ("vocab", "embed")),
        (self.num_embeddings, self.features), self.param_dtype)

  def __call__(self, tokens: Array) -> Array:
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"token ids must be integers, got {tokens.dtype}")
    # Gather, then cast: T5X's one-hot matmul gives the same values (exactly
    # one non-zero term per output), and casting only the gathered rows keeps
    # a decoding step from converting the whole table every time.
    output = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)
    return constrain(output, ("batch", "length", "embed"))

  def attend(self, query: Array, dtype: Any = jnp.float32) -> Array:
    """Float32 logits against every embedding row; operands in `dtype`.

    T5X multiplies in float32; bfloat16 operands (accumulated in float32) are
    the faster option `T5Config.logits_dtype` offers.
    """
    return fast_paths.einsum("...d,vd->...v", query, self.embedding, dtype=dtype,
                             out_dtype=jnp.float32)


@functools.lru_cache(maxsize=64)
def relative_position_bucket_table(max_length: int, bidirectional: bool,
                                   num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket of every relative position in [-max_length, max_length].

  Entry `r + max_length` is the bucket of relative position r = key - query.
  Computed once in NumPy float32 with T5X's formula (including its epsilon),
  so bucket boundaries land exactly where T5X puts them; traced code only
  gathers from this table.
  """
  relative_position = np.arange(-max_length, max_length + 1, dtype=np.int32)
  bucket = np.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  large = max_exact + (
      np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
      / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """T5 relative position bias: one (heads, buckets) table per stack."""
  num_heads: int
  num_buckets: int
  max_distance: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array, *,
               bidirectional: bool, max_length: int) -> Array:
    """Bias for positions [..., q] x [..., k] -> [batch or 1, heads, q, k].

    Packed inputs pass per-token positions so distances restart in every
    segment; `max_length` bounds |key - query| (larger distances are clipped,
    which only matters below max_distance and then only for impossible ones).
    """
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(RELPOS_INIT, ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), self.param_dtype)
    buckets = relative_position_bucket_table(
        max_length, bidirectional, self.num_buckets, self.max_distance)
    relative = key_positions[..., None, :] - query_positions[..., :, None]
    relative = jnp.clip(relative, -max_length, max_length) + max_length
    bucket = jnp.take(jnp.asarray(buckets), relative, axis=0)  # [..., q, k]
    values = jnp.take(jnp.asarray(table, self.dtype), bucket, axis=1)  # [h, ..., q, k]
    values = jnp.moveaxis(values, 0, -3)
    return values if values.ndim == 4 else values[None]


def mask_to_bias(mask: Array, dtype: Any) -> Array:
  """Boolean mask -> additive bias of 0 (keep) or MASK_BIAS (drop), as T5X."""
  return jnp.where(mask, jnp.zeros((), dtype), jnp.full((), MASK_BIAS, dtype))


def _broadcast_dropout(weights: Array, dropout_rate: float, dropout_rng: Array | None,
                       dtype: Any) -> Array:
  if dropout_rng is None or dropout_rate <= 0.0:
    return weights
  # Same key dropped for every query position (T5's broadcast dropout).
  keep_prob = 1.0 - dropout_rate
  shape = list(weights.shape)
  shape[-2] = 1
  keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
  return weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))


def dot_product_attention(query: Array, key: Array, value: Array, bias: Array | None,
                          *, dtype: Any, float32_logits: bool, dropout_rate: float,
                          dropout_rng: Array | None, heads_major: bool = False) -> Array:
  """softmax(q k^T + bias) v; query [batch, q, heads, head_dim].

  Keys and values are [batch, k, heads, head_dim], or [batch, heads, k,
  head_dim] with `heads_major` (the decoding cache's layout: the attention
  dots then read the cache in place instead of transposing it every step).
  """
  if float32_logits:
    query = query.astype(jnp.float32)
    key = key.astype(jnp.float32)
  if heads_major:
    # Decoding: keys and values are the heads-major cache.
    weights = jnp.einsum("bqhd,bhkd->bhqk", query, key)
  else:
    weights = fast_paths.attention_logits(query, key)
  if bias is not None:
    weights = weights + bias.astype(weights.dtype)
  weights = jax.nn.softmax(weights).astype(dtype)
  weights = _broadcast_dropout(weights, dropout_rate, dropout_rng, dtype)
  if heads_major:
    return jnp.einsum("bhqk,bhkd->bqhd", weights, value)
  return fast_paths.attention_mix(weights, value)


class MultiHeadAttention(nn.Module):
  """T5 attention with T5X's param tree: query/key/value/out kernels.

  Decoding keeps its state in the flax "cache" collection, heads-major
  [batch, heads, length, head_dim] so the attention dots read it in place:
  - self-attention: `cached_key`/`cached_value`, written at `decode_index`;
  - cross-attention: the projected encoder keys and values, computed once by
    the cache-initialising call, since the encoder output never changes.
  """
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  float32_logits: bool = False

  def _project(self, name: str, inputs: Array, kernel_init: Initializer) -> Array:
    projected = Dense(self.num_heads * self.head_dim, ("embed", "joined_kv"),
                      dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=kernel_init, name=name)(inputs)
    projected = projected.reshape(projected.shape[:-1] + (self.num_heads, self.head_dim))
    return constrain(projected, ("batch", "length", "heads", "kv"))

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None, bias: Array | None, *,
               deterministic: bool = True, decode: bool = False,
               decode_index: Array | None = None, cache_length: int | None = None,
               cross: bool = False) -> Array:
    # No runtime 1/sqrt(head_dim): T5 folds it into the query initialiser.
    depth_scaling = np.sqrt(self.head_dim).astype(np.float32)
    query_init = lambda *args: ATTENTION_KERNEL_INIT(*args) / depth_scaling
    query = self._project("query", inputs_q, query_init)

    heads_major = False
    if decode and cross:
      key, value, heads_major = self._cross_cache(inputs_kv)
    else:
      key = self._project("key", inputs_kv, ATTENTION_KERNEL_INIT)
      value = self._project("value", inputs_kv, ATTENTION_KERNEL_INIT)
      if decode:
        key, value, heads_major = self._self_cache(key, value, decode_index, cache_length)

    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    x = dot_product_attention(query, key, value, bias, dtype=self.dtype,
                              float32_logits=self.float32_logits,
                              dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
                              heads_major=heads_major)
    x = x.reshape(x.shape[:-2] + (self.num_heads * self.head_dim,))
    return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=ATTENTION_KERNEL_INIT,
                 name="out")(x)

  def _self_cache(self, key: Array, value: Array, decode_index: Array | None,
                  cache_length: int | None):
    """Stores this step's key/value; returns (keys, values, heads_major).

    The cache-initialising call only creates zeros [batch, heads,
    cache_length, head_dim] and attends over its own input (its output is
    discarded); later calls see one position at a time and attend over the
    whole cache (positions not yet written are masked by the caller's bias).
    """
    if not self.has_variable("cache", "cached_key"):
      if cache_length is None:
        raise ValueError("initialising the decoding cache needs its length")
      shape = (key.shape[0], self.num_heads, cache_length, self.head_dim)
      self.put_variable("cache", "cached_key", jnp.zeros(shape, key.dtype))
      self.put_variable("cache", "cached_value", jnp.zeros(shape, value.dtype))
      return key, value, False
    cached_key = self.variable("cache", "cached_key")
    cached_value = self.variable("cache", "cached_value")
    if key.shape[1] != 1:
      raise ValueError(f"cached decoding feeds one position per step, got "
                       f"{key.shape[1]} (cache length {cached_key.value.shape[2]})")
    start = (0, 0, decode_index, 0)
    cached_key.value = jax.lax.dynamic_update_slice(
        cached_key.value, jnp.swapaxes(key, 1, 2).astype(cached_key.value.dtype), start)
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, jnp.swapaxes(value, 1, 2).astype(cached_value.value.dtype), start)
    return cached_key.value, cached_value.value, True

  def _cross_cache(self, encoded: Array | None):
    """Encoder keys/values, projected once by the cache-initialising call."""
    if self.has_variable("cache", "cached_cross_key"):
      return (self.get_variable("cache", "cached_cross_key"),
              self.get_variable("cache", "cached_cross_value"), True)
    if encoded is None:
      raise ValueError("the cache-initialising decode call needs the encoder output")
    key = self._project("key", encoded, ATTENTION_KERNEL_INIT)
    value = self._project("value", encoded, ATTENTION_KERNEL_INIT)
    self.put_variable("cache", "cached_cross_key", jnp.swapaxes(key, 1, 2))
    self.put_variable("cache", "cached_cross_value", jnp.swapaxes(value, 1, 2))
    return key, value, False


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    # T5X takes flax's gelu, whose default is the tanh approximation.
    "gelu": functools.partial(nn.gelu, approximate=True),
    "silu": nn.silu,
    "linear": lambda x: x,
}


class MlpBlock(nn.Module):
  """Feed-forward block: wi (one activation) or gated wi_0, wi_1, ...; then wo."""
  intermediate_dim: int
  activations: Sequence[str] = ("relu",)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, deterministic: bool = True) -> Array:
    hidden = None
    for index, activation in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{index}"
      x = Dense(self.intermediate_dim, ("embed", "mlp"), dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)(inputs)
      x = _ACTIVATIONS[activation](x)
      hidden = x if hidden is None else hidden * x
    hidden = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=deterministic)
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    return Dense(inputs.shape[-1], ("mlp", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="wo")(hidden)
