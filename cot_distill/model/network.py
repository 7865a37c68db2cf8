"""The T5 encoder-decoder network, with T5X's parameter tree.

    token_embedder/embedding                              [vocab, embed]
    encoder/relpos_bias/rel_embedding                     [heads, buckets]
    encoder/layers_N/{pre_attention_layer_norm, pre_mlp_layer_norm}/scale
    encoder/layers_N/attention/{query, key, value, out}/kernel
    encoder/layers_N/mlp/{wi | wi_0, wi_1, ...; wo}/kernel
    encoder/encoder_norm/scale
    decoder/relpos_bias/rel_embedding
    decoder/layers_N/{pre_self_attention_layer_norm, pre_cross_attention_layer_norm,
                      pre_mlp_layer_norm}/scale
    decoder/layers_N/{self_attention, encoder_decoder_attention}/{query, key, value, out}/kernel
    decoder/layers_N/mlp/...
    decoder/decoder_norm/scale
    decoder/logits_dense/kernel                           (untied configs only)

With `T5Config.scan_layers` each stack applies one layer under `nn.scan`:
`{encoder,decoder}/layers/...` replaces `layers_N`, every per-layer
parameter stacked on axis 1 (`scanned.PARAM_SCAN_AXIS`, logical axis
"layers"), e.g. `encoder/layers/attention/query/kernel` [embed, layers,
joined_kv]; `scanned.py` converts between the two trees.

Only the network lives here; losses and decoding live in `models.py` and
`decoding.py` (the T5X split between network and model interface).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cot_distill.model import layers
from cot_distill.model import scanned
from cot_distill.model.config import T5Config

Array = jax.Array


def _dtypes(config: T5Config) -> dict[str, Any]:
  return dict(dtype=layers.to_dtype(config.dtype),
              param_dtype=layers.to_dtype(config.param_dtype))


# Rematerialisation per layer (`T5Config.remat_policy`): which activations a
# layer keeps for the backward pass; the rest are recomputed. "minimal" is
# T5X's: keep the products without batch dimensions (the weight products),
# recompute attention and elementwise work.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat(layer_class: type[nn.Module], policy: str, static_argnums: tuple[int, ...],
          prevent_cse: bool = True):
  """`layer_class` itself for "none", else wrapped in `nn.remat` with the policy.

  `nn.remat` keeps the class name, so the parameter tree is unchanged.
  `static_argnums` count `self` as argument 0. Under `nn.scan` pass
  `prevent_cse=False`: the scan's loop already keeps XLA from merging the
  recomputation with the forward pass, and the barriers would only cost.
  """
  if policy == "none":
    return layer_class
  return nn.remat(layer_class, policy=REMAT_POLICIES[policy], static_argnums=static_argnums,
                  prevent_cse=prevent_cse)


def scan_layers(layer_class: type[nn.Module], num_layers: int, num_broadcast: int):
  """`layer_class` applied `num_layers` times under `nn.scan` (T5X's scalable_t5 way).

  The layer's first argument is the carry (the activations); the other
  `num_broadcast` positional arguments are the same for every layer. Each
  layer gets its own slice of the stacked parameters (axis
  `scanned.PARAM_SCAN_AXIS`, logical name "layers" added to the boxes, so
  the partitioning rules see it) and of the decoding cache (axis
  `scanned.CACHE_SCAN_AXIS`, in front of the rows); "params" and "dropout"
  rngs are split per layer.
  """
  return nn.scan(
      layer_class,
      variable_axes={"params": scanned.PARAM_SCAN_AXIS, "cache": scanned.CACHE_SCAN_AXIS},
      split_rngs={"params": True, "dropout": True},
      in_axes=(nn.broadcast,) * num_broadcast,
      length=num_layers,
      metadata_params={nn.PARTITION_NAME: scanned.LAYER_AXIS_NAME})


def _positions(tokens: Array, positions: Array | None) -> Array:
  if positions is not None:
    return positions.astype(jnp.int32)
  return jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, inputs: Array, bias: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    dropout = lambda x: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        x, deterministic=deterministic)
    x = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg),
                       name="pre_attention_layer_norm")(inputs)
    x = layers.MultiHeadAttention(
        cfg.num_heads, cfg.head_dim, **_dtypes(cfg), dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits, name="attention")(
            x, x, bias, deterministic=deterministic)
    x = dropout(x) + inputs
    y = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg), name="pre_mlp_layer_norm")(x)
    y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate,
                        **_dtypes(cfg), name="mlp")(y, deterministic=deterministic)
    y = dropout(y) + x
    y = layers.constrain(y, ("batch", "length", "embed"))
    # Under nn.scan the body returns (carry, per-layer output).
    return (y, None) if cfg.scan_layers else y


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, inputs: Array, encoded: Array | None, self_bias: Array,
               cross_bias: Array, deterministic: bool = True, decode: bool = False,
               decode_index: Array | None = None,
               max_decode_length: int | None = None) -> Array:
    cfg = self.config
    dropout = lambda x: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
        x, deterministic=deterministic)
    attention = lambda name: layers.MultiHeadAttention(
        cfg.num_heads, cfg.head_dim, **_dtypes(cfg), dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits, name=name)
    x = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg),
                       name="pre_self_attention_layer_norm")(inputs)
    x = attention("self_attention")(x, x, self_bias, deterministic=deterministic,
                                     decode=decode, decode_index=decode_index,
                                     cache_length=max_decode_length)
    x = dropout(x) + inputs
    y = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg),
                       name="pre_cross_attention_layer_norm")(x)
    y = attention("encoder_decoder_attention")(
        y, encoded, cross_bias, deterministic=deterministic, decode=decode, cross=True)
    y = dropout(y) + x
    z = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg), name="pre_mlp_layer_norm")(y)
    z = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate,
                        **_dtypes(cfg), name="mlp")(z, deterministic=deterministic)
    z = dropout(z) + y
    z = layers.constrain(z, ("batch", "length", "embed"))
    return (z, None) if cfg.scan_layers else z


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, positions: Array, *,
               deterministic: bool) -> Array:
    cfg = self.config
    dtype = layers.to_dtype(cfg.dtype)
    relpos = layers.RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance,
                                         **_dtypes(cfg), name="relpos_bias")
    # One bias for the whole stack (T5X recomputes the same one per layer).
    bias = layers.mask_to_bias(mask, dtype) + relpos(
        positions, positions, bidirectional=True, max_length=tokens.shape[-1])
    x = self.shared_embedding(tokens.astype(jnp.int32))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    x = x.astype(dtype)
    # `deterministic` is positional: remat's static arguments must be.
    layer = remat(EncoderLayer, cfg.remat_policy, static_argnums=(3,),
                  prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = scan_layers(layer, cfg.num_encoder_layers, num_broadcast=2)
      x, _ = stack(cfg, name=scanned.SCANNED_NAME)(x, bias, deterministic)
    else:
      for index in range(cfg.num_encoder_layers):
        x = layer(cfg, name=f"layers_{index}")(x, bias, deterministic)
    x = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg), name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array | None, tokens: Array, self_mask: Array | None,
               cross_mask: Array, positions: Array | None, *, deterministic: bool,
               decode: bool, max_decode_length: int | None = None) -> Array:
    cfg = self.config
    dtype = layers.to_dtype(cfg.dtype)
    relpos = layers.RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance,
                                         **_dtypes(cfg), name="relpos_bias")
    decode_index = None
    if decode:
      self_bias, decode_index = self._decode_self_bias(relpos, tokens, max_decode_length)
    else:
      self_bias = layers.mask_to_bias(self_mask, dtype) + relpos(
          positions, positions, bidirectional=False, max_length=tokens.shape[-1])
    cross_bias = layers.mask_to_bias(cross_mask, dtype)

    y = self.shared_embedding(tokens.astype(jnp.int32))
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    y = y.astype(dtype)
    # Decoding keeps no activations for a backward pass: no remat there.
    layer = remat(DecoderLayer, "none" if decode else cfg.remat_policy, static_argnums=(5,),
                  prevent_cse=not cfg.scan_layers)
    # Positional: nn.scan maps positional arguments only.
    args = (encoded, self_bias, cross_bias, deterministic)
    if decode:
      args += (True, decode_index, max_decode_length)
    if cfg.scan_layers:
      stack = scan_layers(layer, cfg.num_decoder_layers, num_broadcast=len(args))
      y, _ = stack(cfg, name=scanned.SCANNED_NAME)(y, *args)
    else:
      for index in range(cfg.num_decoder_layers):
        y = layer(cfg, name=f"layers_{index}")(y, *args)
    y = layers.RmsNorm(cfg.layer_norm_epsilon, **_dtypes(cfg), name="decoder_norm")(y)
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      # Tied output layer; T5X rescales by 1/sqrt(d) to undo the embedding's
      # unit-variance initialisation.
      logits = (self.shared_embedding.attend(y, layers.to_dtype(cfg.logits_dtype))
                / jnp.sqrt(jnp.float32(y.shape[-1])))
    else:
      logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"),
                            dtype=layers.to_dtype(cfg.logits_dtype),
                            param_dtype=layers.to_dtype(cfg.param_dtype),
                            output_dtype=jnp.float32, name="logits_dense")(y)
    return layers.constrain(logits, ("batch", "length", "vocab"))

  def _decode_self_bias(self, relpos: nn.Module, tokens: Array,
                        max_decode_length: int | None):
    """Self-attention bias for cached decoding.

    The cache-initialising call creates the step counter (its output is
    discarded); each later call sees one token and gets the relative-position
    row of the current step plus a causal mask over the cache (positions not
    yet written are masked).
    """
    if max_decode_length is None:
      raise ValueError("cached decoding needs max_decode_length (the cache length)")
    initialized = self.has_variable("cache", "decode_index")
    index_var = self.variable("cache", "decode_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      positions = jnp.arange(tokens.shape[-1], dtype=jnp.int32)
      bias = relpos(positions, positions, bidirectional=False,
                    max_length=tokens.shape[-1])
      causal = positions[None, :] <= positions[:, None]
      return bias + layers.mask_to_bias(causal, bias.dtype)[None, None], None
    max_length = max_decode_length
    index = index_var.value
    index_var.value = index + 1
    key_positions = jnp.arange(max_length, dtype=jnp.int32)
    bias = relpos(index[None], key_positions, bidirectional=False, max_length=max_length)
    causal = (key_positions <= index)[None, None, None, :]
    return bias + layers.mask_to_bias(causal, bias.dtype), index


class Transformer(nn.Module):
  """Encoder-decoder T5 (T5X's `network.Transformer` interface)."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.shared_embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, **_dtypes(cfg),
                                         name="token_embedder")
    self.encoder = Encoder(cfg, self.shared_embedding)
    self.decoder = Decoder(cfg, self.shared_embedding)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
             encoder_positions: Array | None = None, *,
             enable_dropout: bool = True) -> Array:
    """[batch, length] ids -> [batch, length, emb_dim] encodings."""
    valid = encoder_input_tokens > 0
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    if encoder_segment_ids is not None:
      # Packed rows: a token attends only within its own segment.
      same = encoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
      mask = mask & same[:, None]
    positions = _positions(encoder_input_tokens, encoder_positions)
    return self.encoder(encoder_input_tokens, mask, positions,
                        deterministic=not enable_dropout)

  def decode(self, encoded: Array | None, encoder_input_tokens: Array,
             decoder_input_tokens: Array, decoder_target_tokens: Array | None = None,
             encoder_segment_ids: Array | None = None,
             decoder_segment_ids: Array | None = None,
             decoder_positions: Array | None = None, *, enable_dropout: bool = True,
             decode: bool = False, max_decode_length: int | None = None) -> Array:
    """Decoder logits [batch, length, vocab] (float32).

    With `decode=True` the first call (made with `mutable=["cache"]` and the
    full-length buffer) initialises the cache; each later call takes one token
    per row and needs `max_decode_length` (the buffer length). `encoder_input_tokens` only supplies the encoder padding mask.
    """
    encoder_valid = encoder_input_tokens > 0
    if decode:
      if encoder_segment_ids is not None:
        raise ValueError("packed inputs (encoder_segment_ids) cannot be decoded")
      cross_mask = jnp.broadcast_to(encoder_valid[:, None, None, :],
                                    (encoder_valid.shape[0], 1, 1, encoder_valid.shape[1]))
      return self.decoder(encoded, decoder_input_tokens, None, cross_mask, None,
                          deterministic=True, decode=True,
                          max_decode_length=max_decode_length)
    if decoder_target_tokens is None:
      decoder_target_tokens = decoder_input_tokens
    decoder_valid = decoder_target_tokens > 0
    length = decoder_target_tokens.shape[-1]
    causal = jnp.arange(length)[None, :] <= jnp.arange(length)[:, None]
    self_mask = (decoder_valid[:, None, :, None] & decoder_valid[:, None, None, :]
                 & causal[None, None])
    cross_mask = decoder_valid[:, None, :, None] & encoder_valid[:, None, None, :]
    if decoder_segment_ids is not None:
      same = decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :]
      self_mask = self_mask & same[:, None]
    if encoder_segment_ids is not None:
      if decoder_segment_ids is None:
        raise ValueError("packed batches need both encoder and decoder segment ids")
      same = decoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
      cross_mask = cross_mask & same[:, None]
    positions = _positions(decoder_input_tokens, decoder_positions)
    return self.decoder(encoded, decoder_input_tokens, self_mask, cross_mask, positions,
                        deterministic=not enable_dropout, decode=False)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None,
               encoder_positions: Array | None = None,
               decoder_positions: Array | None = None, *, enable_dropout: bool = True,
               decode: bool = False) -> Array:
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                       decoder_positions, enable_dropout=enable_dropout, decode=decode)
