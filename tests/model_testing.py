"""Shared helpers for the model tests: tiny models with non-degenerate random weights."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cot_distill.model.config import T5Config, get_config
from cot_distill.model.models import EncoderDecoderModel

VOCAB = 64


def tiny_model(name: str = "t5_1_1_tiny", *, seed: int = 0, scale: float = 4.0,
               **overrides) -> tuple[EncoderDecoderModel, dict, T5Config]:
  """A float32 tiny model whose random weights are scaled up.

  T5's initialisation on 8-wide layers gives near-uniform next-token
  distributions, so every decode is one repeated token; larger weights make
  decodes vary, which is what decoding tests need to be able to fail.
  """
  overrides = {"vocab_size": VOCAB, "dtype": "float32", "dropout_rate": 0.0, **overrides}
  config = get_config(name, **overrides)
  model = EncoderDecoderModel(config)
  variables = model.get_initial_variables(
      jax.random.PRNGKey(seed), {"encoder_input_tokens": (1, 4), "decoder_input_tokens": (1, 4)})
  params = jax.tree_util.tree_map(
      lambda x: x * scale if x.ndim == 2 and x.shape[0] != config.vocab_size else x,
      nn.unbox(variables)["params"])
  return model, params, config


def random_inputs(seed: int, batch: int, length: int, *, vocab: int = VOCAB,
                  min_length: int = 3) -> np.ndarray:
  """Right-padded token ids in [2, vocab) with varying lengths."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(2, vocab, size=(batch, length)).astype(np.int32)
  for row in range(batch):
    tokens[row, rng.randint(min_length, length + 1):] = 0
  return tokens


def teacher_forced_batch(inputs: np.ndarray, targets: np.ndarray) -> dict[str, jnp.ndarray]:
  decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": jnp.asarray(inputs),
          "decoder_input_tokens": jnp.asarray(decoder_inputs),
          "decoder_target_tokens": jnp.asarray(targets),
          "decoder_loss_weights": jnp.asarray(targets > 0, jnp.float32)}
