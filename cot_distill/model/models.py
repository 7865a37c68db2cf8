"""The model interface the trainer and evaluator see (T5X's `models.EncoderDecoderModel`).

The network (`network.Transformer`) only maps tokens to logits. This wrapper
owns everything that turns logits into training signal or outputs: the loss
(T5X's z-loss, label smoothing, loss normalisation), evaluation metrics,
sequence scoring and decoding. The trainer never sees the network directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cot_distill.model import decoding
from cot_distill.model import losses
from cot_distill.model.config import EOS_ID, T5Config
from cot_distill.model.network import Transformer

Array = jax.Array
Batch = Mapping[str, Array]

_PACKING_FEATURES = ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
                     "decoder_positions")
DECODE_METHODS = ("greedy", "sample", "beam")


def cast_params_for_inference(params: Any, config: T5Config) -> Any:
  """Casts weights to the activation dtype once, before a decoding loop.

  Every layer casts its weights to `config.dtype` before use anyway, so this
  changes no number; it only stops each decoding step from re-reading the
  float32 copy. The embedding and `logits_dense` are cast only when the
  output projection runs in the same dtype (`config.logits_dtype`); with
  T5X's float32 logits they stay as they are.
  """
  dtype = jnp.dtype(config.dtype)
  if dtype == jnp.float32:
    return params
  output_layer_too = jnp.dtype(config.logits_dtype) == dtype

  def cast(path, leaf):
    names = {getattr(key, "key", None) for key in path}
    if names & {"token_embedder", "logits_dense"} and not output_layer_too:
      return leaf
    return leaf.astype(dtype)
  return jax.tree_util.tree_map_with_path(cast, params)


class EncoderDecoderModel:
  """T5 encoder-decoder: loss, metrics, scoring and decoding over raw params.

  Args:
    config: the network's hyperparameters.
    z_loss: coefficient of z_loss * log(Z)^2 per token (T5X's stabiliser).
    label_smoothing: target mass spread uniformly over the other tokens.
    loss_normalizing_factor: None sums the loss over tokens (T5X default); a
      number divides it; "NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS" or
      "AVERAGE_PER_SEQUENCE" compute the divisor from the batch.
    eos_id: decoding stops a row at this id.
  """

  def __init__(self, config: T5Config, *, z_loss: float = 1e-4,
               label_smoothing: float = 0.0,
               loss_normalizing_factor: float | str | None = None, eos_id: int = EOS_ID):
    self.config = config
    self.module = Transformer(config)
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.loss_normalizing_factor = loss_normalizing_factor
    self.eos_id = eos_id
    self._predict = jax.jit(self._predict_impl, static_argnames=(
        "decode_method", "num_decodes", "temperature", "top_k", "top_p", "beam_size",
        "max_decode_length", "alpha", "use_cache", "eos_id", "activation_dtype"))

  # --- initialisation -----------------------------------------------------

  def get_initial_variables(self, rng: Array, input_shapes: Mapping[str, tuple[int, ...]],
                            input_types: Mapping[str, Any] | None = None) -> dict:
    """{"params": tree of `nn.LogicallyPartitioned` boxes} for these shapes.

    Under `jax.eval_shape` it costs nothing; `nn.get_partition_spec` of the
    result gives the logical specs and `nn.unbox` the raw arrays.
    """
    input_types = input_types or {}

    def ones(name: str) -> Array | None:
      if name not in input_shapes:
        return None
      return jnp.ones(input_shapes[name], input_types.get(name, jnp.int32))

    variables = self.module.init(
        rng, ones("encoder_input_tokens"), ones("decoder_input_tokens"),
        ones("decoder_input_tokens"), *(ones(name) for name in _PACKING_FEATURES),
        enable_dropout=False, decode=False)
    return {"params": variables["params"]}

  # --- training and evaluation ----------------------------------------------

  def compute_logits(self, params: Any, batch: Batch,
                     dropout_rng: Array | None = None) -> Array:
    """Teacher-forced logits [batch, length, vocab] (float32)."""
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return self.module.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], *(batch.get(name) for name in _PACKING_FEATURES),
        enable_dropout=rngs is not None, rngs=rngs)

  def loss_fn(self, params: Any, batch: Batch,
              dropout_rng: Array | None) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics); `dropout_rng=None` runs deterministically.

    Metrics are sums over the batch except `accuracy` (weighted fraction of
    argmax hits): loss (incl. z-loss), cross_ent_loss, z_loss, num_tokens
    (sum of decoder_loss_weights) and num_correct.
    """
    logits = self.compute_logits(params, batch, dropout_rng)
    return self._loss_and_metrics(logits, batch)

  def _loss_and_metrics(self, logits: Array, batch: Batch) -> tuple[Array, dict[str, Array]]:
    factor, weights = losses.get_loss_normalizing_factor_and_weights(
        self.loss_normalizing_factor, batch)
    targets = batch["decoder_target_tokens"]
    loss, z_loss, _ = losses.compute_weighted_cross_entropy(
        logits, targets, weights, label_smoothing=self.label_smoothing,
        z_loss=self.z_loss, loss_normalizing_factor=factor)
    token_weights = batch.get("decoder_loss_weights")
    if token_weights is None:
      token_weights = targets > 0
    token_weights = token_weights.astype(jnp.float32)
    num_tokens = jnp.sum(token_weights)
    # A hit is a target logit equal to the row's maximum: argmax's answer
    # except on exact ties, without argmax's index-tracking pass over the
    # vocabulary (the loss already takes the same maximum).
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    hits = target_logits >= jnp.max(logits, axis=-1)
    num_correct = jnp.sum(hits * token_weights)
    metrics = {
        "loss": loss,
        "cross_ent_loss": loss - z_loss,
        "z_loss": z_loss,
        "accuracy": num_correct / jnp.maximum(num_tokens, 1.0),
        "num_correct": num_correct,
        "num_tokens": num_tokens,
    }
    return loss, metrics

  def eval_fn(self, params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
    """loss_fn without dropout (T5X's eval_fn)."""
    return self.loss_fn(params, batch, None)

  def score_batch(self, params: Any, batch: Batch) -> Array:
    """Log-likelihood of the given targets per row [batch] (no z-loss).

    Weighted by decoder_loss_weights, so padding adds nothing. Packed rows
    give the sum over their segments; score unpacked batches per example.
    """
    logits = self.compute_logits(params, batch)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = targets > 0
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_scores = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(token_scores * weights, axis=-1)

  # --- decoding -------------------------------------------------------------

  def predict_batch(self, params: Any, batch: Batch, *, decode_method: str = "greedy",
                    num_decodes: int = 1, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, beam_size: int = 4, alpha: float = 0.6,
                    rng: Array | None = None, max_decode_length: int | None = None,
                    return_scores: bool = False, use_cache: bool = True,
                    eos_id: int | None | str = "default", activation_dtype: str | None = None):
    """Decodes `batch["encoder_input_tokens"]`; jit-compiled per static setting.

    Returns int32 tokens [B, L] (or [B, N, L] when num_decodes > 1) and, with
    return_scores, log-probabilities [B] / [B, N] (beam: length-penalised).
    greedy: argmax. sample: N samples per input with temperature, top_k
    (0 = off) and top_p (1.0 = off); needs rng. beam: the best num_decodes of
    beam_size beams, best first. L is max_decode_length, else the width of
    batch["decoder_input_tokens"]. eos_id=None forces the full length.
    `use_cache=False` reruns the whole prefix every step (a slow reference).
    `activation_dtype` overrides config.dtype for this call (e.g. "float32"
    to decode a bfloat16-trained model at full precision).
    """
    if decode_method not in DECODE_METHODS:
      raise ValueError(f"decode_method must be one of {DECODE_METHODS}, got {decode_method!r}")
    if max_decode_length is None:
      if "decoder_input_tokens" not in batch:
        raise ValueError("pass max_decode_length or a batch with decoder_input_tokens")
      max_decode_length = batch["decoder_input_tokens"].shape[1]
    if decode_method == "beam" and num_decodes > beam_size:
      raise ValueError(f"num_decodes={num_decodes} exceeds beam_size={beam_size}")
    if decode_method == "sample" and rng is None:
      raise ValueError("decode_method='sample' needs rng")
    if decode_method == "greedy" and num_decodes != 1:
      raise ValueError("greedy decoding gives one decode per input; use 'sample'")
    tokens, scores = self._predict(
        params, jnp.asarray(batch["encoder_input_tokens"]), rng,
        decode_method=decode_method, num_decodes=num_decodes,
        temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
        beam_size=beam_size, max_decode_length=int(max_decode_length), alpha=float(alpha),
        use_cache=use_cache, eos_id=self.eos_id if eos_id == "default" else eos_id,
        activation_dtype=activation_dtype)
    if num_decodes == 1:
      tokens, scores = tokens[:, 0], scores[:, 0]
    return (tokens, scores) if return_scores else tokens

  def _step_function(self, module: Transformer, params: Any, encoder_tokens: Array,
                     max_decode_length: int, use_cache: bool):
    """(tokens_to_logits, initial state) over rows already expanded per decode."""
    encoded = module.apply({"params": params}, encoder_tokens, enable_dropout=False,
                                method=module.encode)
    rows = encoder_tokens.shape[0]
    if use_cache:
      _, variables = module.apply(
          {"params": params}, encoded, encoder_tokens, jnp.zeros((rows, 1), jnp.int32),
          decode=True, max_decode_length=max_decode_length, enable_dropout=False,
          mutable=["cache"], method=module.decode)

      def tokens_to_logits(ids, cache):
        logits, new_variables = module.apply(
            {"params": params, "cache": cache}, None, encoder_tokens, ids, decode=True,
            max_decode_length=max_decode_length, enable_dropout=False, mutable=["cache"],
            method=module.decode)
        return logits[:, 0], new_variables["cache"]
      return tokens_to_logits, variables["cache"]

    # Uncached: the state is the token buffer (start token + generated ids);
    # each step reruns the decoder over the whole buffer. The causal mask
    # makes the later, still-empty positions irrelevant.
    def tokens_to_logits_uncached(ids, state):
      buffer, index = state
      buffer = jax.lax.dynamic_update_slice(buffer, ids.astype(jnp.int32), (0, index))
      logits = module.apply(
          {"params": params}, encoded, encoder_tokens, buffer, jnp.ones_like(buffer),
          enable_dropout=False, method=module.decode)
      return jax.lax.dynamic_index_in_dim(logits, index, 1, keepdims=False), (buffer, index + 1)
    buffer = jnp.zeros((rows, max_decode_length), jnp.int32)
    return tokens_to_logits_uncached, (buffer, jnp.zeros((), jnp.int32))

  def _predict_impl(self, params, encoder_tokens, rng, *, decode_method, num_decodes,
                    temperature, top_k, top_p, beam_size, max_decode_length, alpha,
                    use_cache, eos_id, activation_dtype):
    module = self.module
    if activation_dtype is not None and activation_dtype != self.config.dtype:
      module = Transformer(self.config.replace(dtype=activation_dtype))
    params = cast_params_for_inference(params, module.config)
    batch_size = encoder_tokens.shape[0]
    copies = beam_size if decode_method == "beam" else num_decodes
    # Row b * copies + j is copy j of input b (beam search's layout).
    expanded = jnp.repeat(encoder_tokens, copies, axis=0)
    tokens_to_logits, state = self._step_function(module, params, expanded,
                                                  max_decode_length, use_cache)
    if decode_method == "beam":
      if eos_id is None:
        raise ValueError("beam search needs an eos_id")
      # A scanned network's cache is stacked per layer in front of its rows.
      tokens, scores = decoding.beam_search(
          tokens_to_logits, state, batch_size=batch_size, beam_size=beam_size,
          max_decode_length=max_decode_length, eos_id=eos_id, alpha=alpha,
          state_batch_axis=1 if use_cache and module.config.scan_layers else 0)
      return tokens[:, :num_decodes], scores[:, :num_decodes]
    tokens, scores = decoding.temperature_sample(
        tokens_to_logits, state, num_rows=batch_size * copies,
        max_decode_length=max_decode_length, eos_id=eos_id, rng=rng,
        temperature=0.0 if decode_method == "greedy" else temperature,
        top_k=top_k, top_p=top_p)
    return (tokens.reshape(batch_size, copies, max_decode_length),
            scores.reshape(batch_size, copies))


def unbox(variables: Any) -> Any:
  """Raw arrays from `get_initial_variables` output (drops the axis boxes)."""
  return nn.unbox(variables)


def logical_partition_specs(variables: Any) -> Any:
  """Logical PartitionSpecs (T5X axis names) of boxed variables."""
  return nn.get_partition_spec(variables)


def count_parameters(params: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))

