"""The cpu_fast_paths switch: CPU kernels on CPU only, plain JAX everywhere else."""

from __future__ import annotations

import pathlib
import re

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill import fast_paths
from cot_distill.model.config import get_config
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import optimizers

import train_testing

_PACKAGE = pathlib.Path(fast_paths.__file__).parent
# The CPU kernels' custom VJPs (the loss's own custom VJP is T5X's too).
_KERNEL_NAMES = ("_accumulating_einsum", "_row_major_product", "scale_features")


def _model(dtype: str) -> EncoderDecoderModel:
  # Every product side >= 8, so "on" really takes the CPU kernels.
  return EncoderDecoderModel(get_config(
      "t5_1_1_tiny", vocab_size=train_testing.VOCAB, emb_dim=16, num_heads=8,
      head_dim=4, mlp_dim=32, dtype=dtype, dropout_rate=0.0))


@pytest.fixture(scope="module")
def setup():
  model = _model("float32")
  params = nn.unbox(jax.jit(train_testing.init_function(model))(
      jax.random.key_data(jax.random.key(0)))["params"])
  return params, train_testing.random_batch(seed=1)


def test_auto_enables_the_kernels_on_the_cpu_backend_only():
  assert fast_paths.mode() == "auto"
  assert fast_paths.enabled("cpu")
  assert not fast_paths.enabled("tpu") and not fast_paths.enabled("gpu")
  assert fast_paths.enabled() == (jax.default_backend() == "cpu")


def test_forced_modes_nest_and_restore():
  with fast_paths.forced("off"):
    assert not fast_paths.enabled("cpu")
    with fast_paths.forced("on"):
      assert fast_paths.enabled("tpu")
    assert fast_paths.mode() == "off"
  assert fast_paths.mode() == "auto"
  with pytest.raises(ValueError, match="auto, on, off"):
    with fast_paths.forced("fast"):
      pass


def test_gin_sets_the_switch():
  try:
    gin.parse_config("""
        from __gin__ import dynamic_registration
        from cot_distill import fast_paths
        fast_paths.setting.cpu_fast_paths = 'off'
    """)
    assert fast_paths.mode() == "off" and not fast_paths.enabled("cpu")
    gin.clear_config()
    gin.parse_config("fast_paths.setting.cpu_fast_paths = 'bogus'")
    with pytest.raises(ValueError, match="cpu_fast_paths"):
      fast_paths.mode()
  finally:
    gin.clear_config()
  assert fast_paths.mode() == "auto"


@pytest.mark.parametrize("mode", ["off", "on"])
def test_off_traces_plain_jax_and_on_the_cpu_kernels(setup, mode):
  params, batch = setup
  model = _model("bfloat16")
  loss = lambda p: model.loss_fn(p, batch, None)[0]  # pylint: disable=unnecessary-lambda-assignment
  with fast_paths.forced(mode):
    jaxpr = str(jax.make_jaxpr(loss)(params))
    lowered = jax.jit(jax.grad(loss)).lower(params).as_text()
  names = set(re.findall(r"name=(\w+)", jaxpr))
  barriers = lowered.count("optimization_barrier")
  if mode == "off":
    assert not names & set(_KERNEL_NAMES), names
    assert barriers == 0
  else:
    assert set(_KERNEL_NAMES) <= names, names
    assert barriers > 0


def test_off_and_on_give_the_same_loss_and_gradients(setup):
  params, batch = setup
  model = _model("float32")
  results = {}
  for mode in ("off", "on"):
    with fast_paths.forced(mode):
      # A fresh jit per mode: the switch is read while tracing.
      results[mode] = jax.jit(jax.value_and_grad(
          lambda p: model.loss_fn(p, batch, None)[0]))(params)
  (loss_off, grads_off), (loss_on, grads_on) = results["off"], results["on"]
  np.testing.assert_allclose(loss_on, loss_off, rtol=1e-5)
  assert float(loss_off) > 1.0
  for got, want in zip(jax.tree.leaves(grads_on), jax.tree.leaves(grads_off)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_adafactor_statistics_are_the_same_off_and_on():
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.standard_normal((256, 128)), jnp.float32),
            "scale": jnp.asarray(rng.standard_normal((128,)), jnp.float32)}
  grads = jax.tree.map(lambda p: p * 0.1 + 0.01, params)
  tx = optimizers.adafactor(optimizers.constant_schedule(1e-2))
  outcomes = {}
  for mode in ("off", "on"):
    with fast_paths.forced(mode):
      outcomes[mode] = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  for got, want in zip(jax.tree.leaves(outcomes["on"]), jax.tree.leaves(outcomes["off"])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_only_entry_points_touch_process_wide_cpu_settings():
  """Library modules never call cpu_runtime; the CLIs and benchmarks do."""
  allowed = {"cpu_runtime.py", "fast_paths.py"}
  allowed_folders = {"commands", "benchmarks"}
  offenders = []
  for path in _PACKAGE.rglob("*.py"):
    relative = path.relative_to(_PACKAGE)
    if relative.name in allowed or relative.parts[0] in allowed_folders:
      continue
    if re.search(r"cpu_runtime\.\w+\(", path.read_text()):
      offenders.append(str(relative))
  assert not offenders, offenders


def test_model_and_optimizer_reach_the_cpu_kernels_only_through_the_switch():
  offenders = []
  for path in list((_PACKAGE / "model").glob("*.py")) + list((_PACKAGE / "train").glob("*.py")):
    if path.name in ("matmul.py", "row_sums.py"):
      continue
    if re.search(r"\b(matmul|row_sums)\.\w+\(", path.read_text()):
      offenders.append(path.name)
  assert not offenders, offenders
