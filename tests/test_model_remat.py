"""Per-layer rematerialisation (T5Config.remat_policy): same numbers, less memory."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from cot_distill import fast_paths
from cot_distill.model.config import get_config
from cot_distill.model.models import EncoderDecoderModel

import train_testing

POLICIES = ("none", "full", "minimal")
# XLA:CPU strips jax.checkpoint's optimization barriers (its
# `cse_barrier_expander` pass) and CSE then merges the recomputation back,
# undoing remat; TPU and GPU keep them. Compile as they do.
KEEP_REMAT_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def _model(policy: str) -> EncoderDecoderModel:
  # Long enough rows that activations, not parameters, dominate the temporaries.
  return EncoderDecoderModel(get_config(
      "t5_1_1_tiny", vocab_size=train_testing.VOCAB, emb_dim=32, num_heads=4,
      head_dim=8, mlp_dim=64, num_encoder_layers=3, num_decoder_layers=3,
      dtype="float32", dropout_rate=0.0, remat_policy=policy))


@pytest.fixture(scope="module")
def compiled():
  batch = train_testing.random_batch(seed=1, input_length=64, target_length=32)
  init = train_testing.init_function(_model("none"), input_length=64, target_length=32)
  variables = jax.jit(init)(jax.random.key_data(jax.random.key(0)))
  params = nn.unbox(variables)["params"]
  results = {}
  # Plain JAX (as on TPU/GPU): the remat policies see T5X's products.
  with fast_paths.forced("off"):
    for policy in POLICIES:
      model = _model(policy)
      step = jax.jit(jax.value_and_grad(lambda p, m=model: m.loss_fn(p, batch, None)[0]))
      executable = step.lower(params).compile(compiler_options=KEEP_REMAT_BARRIERS)
      results[policy] = (executable(params), executable.memory_analysis().temp_size_in_bytes)
  return variables, results


def test_parameter_tree_is_the_same_with_remat():
  shapes = {policy: jax.tree.map(lambda x: x.shape, jax.eval_shape(
      train_testing.init_function(_model(policy)), jax.random.key_data(jax.random.key(0))))
            for policy in POLICIES}
  assert shapes["full"] == shapes["none"] == shapes["minimal"]


@pytest.mark.slow  # three compiles, minutes on a loaded 2-core machine
@pytest.mark.parametrize("policy", ["full", "minimal"])
def test_remat_keeps_loss_and_gradients(compiled, policy):
  _, results = compiled
  (loss, grads), _ = results[policy]
  (want_loss, want_grads), _ = results["none"]
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    # Recomputed activations may be fused (rounded) differently.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_remat_lowers_the_compiled_steps_temporary_memory(compiled):
  _, results = compiled
  memory = {policy: results[policy][1] for policy in POLICIES}
  print(f"\ntemporary bytes of the compiled value_and_grad: {memory}")
  # Keeping only the layer inputs (full) or also the weight products
  # (minimal) must save a real share of the activations, in that order.
  assert memory["full"] < memory["minimal"] < 0.9 * memory["none"], memory


def test_unknown_policy_is_rejected():
  with pytest.raises(ValueError, match="remat_policy"):
    get_config("t5_1_1_tiny", remat_policy="some")
