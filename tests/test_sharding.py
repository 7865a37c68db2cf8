"""One training step gives the same loss, gradients and update on every layout.

The reference is the same step on a single device. Data parallel (8 x 1),
model parallel (4 data x 2 model), FSDP (8 x 1) and 2-D FSDP (4 x 2) must
agree within float32 round-off, and the arrays must really be laid out as
each layout says (a layout that silently replicated everything would pass
the numeric check alone).
"""

from __future__ import annotations

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from cot_distill.model import param_tree
from cot_distill.train import data
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib
from cot_distill.train import step as step_lib

import train_testing

LAYOUTS = [("data_parallel", 1), ("model_parallel", 2), ("fsdp", 1),
           ("fsdp", 2)]
LEARNING_RATE = 1e-2


def test_eight_fake_devices_are_present():
  train_testing.require_eight_devices()


@pytest.fixture(autouse=True, scope="module")
def _fast_compilation():
  with train_testing.fast_compilation():
    yield


def _with_gradient_record(tx: optax.GradientTransformation
                          ) -> optax.GradientTransformation:
  """Wraps `tx` so the optimizer state also holds the step's gradients.

  The gradients then come out of the very step under test (one compile per
  layout), sharded like the parameters.
  """
  def init(params):
    return (jax.tree.map(jnp.zeros_like, params), tx.init(params))

  def update(grads, state, params=None):
    updates, inner = tx.update(grads, state[1], params)
    return updates, (grads, inner)
  return optax.GradientTransformation(init, update)


def _optimizer():
  # min_dim_size_to_factor=4 makes the tiny kernels factored, so the test
  # covers the row/column statistics' specs too.
  return _with_gradient_record(optimizers.adafactor(
      optimizers.constant_schedule(LEARNING_RATE), min_dim_size_to_factor=4))


def _run_one_step(partitioner, params, batch, num_microbatches=1):
  """(loss, grads, new params, new state, metrics) of one step."""
  model = train_testing.tiny_model()
  tx = _optimizer()
  state, train_step, shardings = train_testing.compiled_step(
      model, tx, optimizers.constant_schedule(LEARNING_RATE), partitioner, params,
      num_microbatches=num_microbatches)
  new_state, metrics = train_step(
      state, data.to_global_batch(batch, partitioner, 8))
  return (float(metrics["loss"]), jax.device_get(new_state.opt_state[0]),
          jax.device_get(new_state.params), new_state, metrics)


@pytest.fixture(scope="module")
def reference():
  train_testing.require_eight_devices()
  model = train_testing.tiny_model()
  params = nn.unbox(jax.jit(train_testing.init_function(model))(
      jax.random.key_data(jax.random.key(0)))["params"])
  batch = train_testing.random_batch(seed=1)
  single = partitioning.Partitioner(devices=jax.devices()[:1])
  loss, grads, new_params, _, metrics = _run_one_step(single, params, batch)
  return params, batch, loss, grads, new_params, metrics


def _assert_trees_close(actual, expected, what, rtol=1e-4, atol=1e-5):
  # Float32 sums in a different order (per-device partial sums + all-reduce).
  flat_actual = jax.tree_util.tree_flatten_with_path(actual)[0]
  flat_expected = jax.tree.leaves(expected)
  assert len(flat_actual) == len(flat_expected)
  for (path, value), want in zip(flat_actual, flat_expected):
    np.testing.assert_allclose(
        value, want, rtol=rtol, atol=atol,
        err_msg=f"{what} differ at {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("layout,num_partitions", LAYOUTS,
                         ids=[f"{l}-{n}" for l, n in LAYOUTS])
def test_step_matches_single_device(reference, layout, num_partitions):
  params, batch, loss, grads, new_params, _ = reference
  partitioner = partitioning.Partitioner(layout, num_partitions)
  got_loss, got_grads, got_params, state, _ = _run_one_step(
      partitioner, params, batch)
  assert got_loss == pytest.approx(loss, rel=1e-5)
  _assert_trees_close(got_grads, grads, "gradients")
  _assert_trees_close(got_params, new_params, "updated parameters")
  # The gradient is not trivially zero (the comparison above could not fail).
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3

  wi = state.params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]  # (embed, mlp)
  expected_spec = {
      "data_parallel": PartitionSpec(None, None),
      "model_parallel": PartitionSpec(None, "model"),
      "fsdp": PartitionSpec("data", "model"),
  }[layout]
  assert wi.sharding.spec == expected_spec
  # Adafactor's factored statistics follow the kernel's axes: v_row drops
  # the mlp axis (largest), v_col the embed axis.
  factored = state.opt_state[1][0]
  v_row = factored.v_row["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  v_col = factored.v_col["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert v_row.shape == (8,) and v_col.shape == (16,)
  assert v_row.sharding.spec == PartitionSpec(expected_spec[0])
  assert v_col.sharding.spec == PartitionSpec(expected_spec[1])
  if layout == "fsdp":
    # Each device holds 1/8 of the kernel, not a replica.
    shard_shape = wi.addressable_shards[0].data.shape
    assert np.prod(shard_shape) * 8 == np.prod(wi.shape)


def test_gradient_accumulation_matches_full_batch(reference):
  params, batch, loss, _, new_params, metrics = reference
  partitioner = partitioning.Partitioner("data_parallel")
  got_loss, _, got_params, _, got_metrics = _run_one_step(
      partitioner, params, batch, num_microbatches=2)
  assert got_loss == pytest.approx(loss, rel=1e-5)
  assert float(got_metrics["num_tokens"]) == float(metrics["num_tokens"])
  assert float(got_metrics["accuracy"]) == pytest.approx(
      float(metrics["accuracy"]), abs=1e-6)
  _assert_trees_close(got_params, new_params, "updated parameters")


def test_microbatches_stay_on_their_devices():
  """Strided split: microbatch k holds rows k, k+n, ... of each device's block."""
  batch = {"x": np.arange(16)}
  split = step_lib.split_microbatches(batch, 2)["x"]
  np.testing.assert_array_equal(split[0], np.arange(0, 16, 2))
  np.testing.assert_array_equal(split[1], np.arange(1, 16, 2))


def _t5x_partition_specs(path: pathlib.Path) -> dict[str, tuple]:
  """{param name: partition spec} from T5X's model-info.txt."""
  specs = {}
  pattern = re.compile(r"^Variable (\S+)\s.*partition spec (\(.*\)|None)\s*$")
  for line in path.read_text().splitlines():
    match = pattern.match(line)
    # Parameters only: not the optimizer's param_states/... nor `step`.
    if match and "/" in match.group(1) and not match.group(1).startswith(
        "param_states/"):
      specs[match.group(1)] = eval(match.group(2))  # tuples of str/None
  return specs


def test_model_parallel_rules_reproduce_t5x_partition_specs(t5x_tiny_dir):
  """T5X's standard_logical_axis_rules, applied by T5X to the same network."""
  expected = _t5x_partition_specs(t5x_tiny_dir / "t5x_model_info.txt")
  model = train_testing.tiny_model(vocab_size=256)
  boxed = jax.eval_shape(train_testing.init_function(model),
                         jax.ShapeDtypeStruct((2,), jnp.uint32))["params"]
  mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(boxed),
                                  partitioning.MODEL_PARALLEL_RULES)
  flat = {"/".join(str(k.key) for k in path): tuple(spec)
          for path, spec in jax.tree_util.tree_flatten_with_path(
              mesh_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]}
  assert len(expected) == len(flat) == 52
  assert flat == expected


def test_optimizer_state_specs_follow_params():
  param_shapes = {"w": jax.ShapeDtypeStruct((256, 512), jnp.float32),
                  "square": jax.ShapeDtypeStruct((256, 256), jnp.float32),
                  "b": jax.ShapeDtypeStruct((512,), jnp.float32)}
  param_specs = {"w": PartitionSpec("embed", "mlp"),
                 "square": PartitionSpec("embed", "mlp"),
                 "b": PartitionSpec("mlp")}
  for tx, expected in [
      (optimizers.adamw(optimizers.constant_schedule(1e-3)),
       {"mu/w": ("embed", "mlp"), "nu/b": ("mlp",), "0/count": ()}),
      (optimizers.adafactor(optimizers.constant_schedule(1e-3)),
       # w (256 x 512) is factored: v_row drops the largest axis (1), v_col
       # the second largest (0); for equal sizes optax ranks axis 1 larger.
       # b is not factored and keeps a full `v`.
       {"v_row/w": ("embed",), "v_col/w": ("mlp",), "v_row/square": ("embed",),
        "v_col/square": ("mlp",), "v/b": ("mlp",), "v_row/b": (),
        "0/count": ()}),
  ]:
    opt_shapes = jax.eval_shape(tx.init, param_shapes)
    specs = state_lib.optimizer_state_specs(opt_shapes, param_shapes,
                                            param_specs)
    flat = {
        "/".join(param_tree.path_names(path)): tuple(spec)
        for path, spec in jax.tree_util.tree_flatten_with_path(
            specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]}
    for suffix, spec in expected.items():
      matches = [name for name in flat if name.endswith(suffix)]
      assert matches, (suffix, sorted(flat))
      assert all(flat[name] == spec for name in matches), (suffix, flat)


def test_data_parallel_refuses_model_partitions():
  with pytest.raises(ValueError, match="num_partitions must be 1"):
    partitioning.Partitioner("data_parallel", 2)
  with pytest.raises(ValueError, match="choose one of"):
    partitioning.Partitioner("pipeline")
  # The mesh (and so the device-count check) is built on first use, after
  # jax.distributed.initialize has made every host's devices visible.
  with pytest.raises(ValueError, match="must divide"):
    _ = partitioning.Partitioner("model_parallel", 3).mesh


def test_single_host_reads_the_whole_batch():
  partitioner = partitioning.Partitioner("model_parallel", 2)
  assert partitioner.mesh.shape == {"data": 4, "model": 2}
  assert partitioner.per_host_batch_size(16) == 16
  with pytest.raises(ValueError, match="divisible"):
    partitioner.per_host_batch_size(6)
