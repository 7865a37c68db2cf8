"""Network structure and behaviour: param tree, logical axes, packing, causality, dropout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import param_tree
from cot_distill.model.config import CONFIG_NAMES, get_config
from cot_distill.model.models import EncoderDecoderModel, count_parameters

SHAPES = {"encoder_input_tokens": (2, 8), "decoder_input_tokens": (2, 8)}


def _model_and_params(name="t5_1_1_tiny", seed=0, **overrides):
  config = get_config(name, vocab_size=64, dtype="float32", **overrides)
  model = EncoderDecoderModel(config)
  variables = model.get_initial_variables(jax.random.PRNGKey(seed), SHAPES)
  return model, nn.unbox(variables)["params"]


def _t5x_model_info(t5x_tiny_dir) -> dict[str, tuple[tuple[str, int], ...]]:
  """{param path: ((axis name, size), ...)} from T5X's own model-info.txt."""
  variables = {}
  for line in (t5x_tiny_dir / "t5x_model_info.txt").read_text().splitlines():
    # "Variable decoder/decoder_norm/scale  size 8  shape (embed=8)  partition spec (None,)"
    parts = line.split()
    if len(parts) < 2 or parts[0] != "Variable" or parts[1].startswith(("param_states", "step")):
      continue
    axes = line.split("shape (")[1].split(")")[0].split(", ")
    variables[parts[1]] = tuple((axis.split("=")[0], int(axis.split("=")[1])) for axis in axes)
  return variables


def test_param_tree_and_axes_match_t5x_model_info(t5x_tiny_dir):
  """Every name, shape and logical axis name in T5X's model-info.txt, nothing else."""
  expected = _t5x_model_info(t5x_tiny_dir)
  assert len(expected) == 52, "unexpected model-info format"
  config = get_config("t5_1_1_tiny", vocab_size=256)
  model = EncoderDecoderModel(config)
  abstract = jax.eval_shape(lambda: model.get_initial_variables(jax.random.PRNGKey(0), SHAPES))
  specs = param_tree.flatten(nn.get_partition_spec(abstract)["params"])
  shapes = param_tree.flatten(jax.tree_util.tree_map(lambda x: x.shape, nn.unbox(abstract))["params"])
  ours = {name: tuple(zip(specs[name], shapes[name])) for name in specs}
  assert ours == expected


def test_logical_axes_are_t5x_names():
  config = get_config("t5_1_1_tiny", vocab_size=64)
  model = EncoderDecoderModel(config)
  abstract = jax.eval_shape(lambda: model.get_initial_variables(jax.random.PRNGKey(0), SHAPES))
  specs = param_tree.flatten(nn.get_partition_spec(abstract)["params"])
  assert tuple(specs["token_embedder/embedding"]) == ("vocab", "embed")
  assert tuple(specs["encoder/layers_0/attention/query/kernel"]) == ("embed", "joined_kv")
  assert tuple(specs["decoder/layers_1/self_attention/out/kernel"]) == ("joined_kv", "embed")
  assert tuple(specs["decoder/layers_0/mlp/wi_1/kernel"]) == ("embed", "mlp")
  assert tuple(specs["encoder/layers_1/mlp/wo/kernel"]) == ("mlp", "embed")
  assert tuple(specs["decoder/relpos_bias/rel_embedding"]) == ("heads", "relpos_buckets")
  assert tuple(specs["decoder/logits_dense/kernel"]) == ("embed", "vocab")
  assert tuple(specs["encoder/encoder_norm/scale"]) == ("embed",)
  leaves = jax.tree_util.tree_leaves(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)


def test_t5_1_0_is_tied_and_relu():
  _, params = _model_and_params("t5_1_0_tiny")
  flat = param_tree.flatten(params)
  assert "decoder/logits_dense/kernel" not in flat
  assert "encoder/layers_0/mlp/wi/kernel" in flat and "encoder/layers_0/mlp/wi_0/kernel" not in flat


@pytest.mark.parametrize("name,expected_millions", [
    ("t5_1_0_small", 60.5), ("t5_1_0_base", 222.9), ("t5_1_1_small", 76.96),
    ("t5_1_1_base", 247.6), ("flan_t5_large", 783.2)])
def test_named_configs_have_published_sizes(name, expected_millions):
  shapes = param_tree.expected_shapes(get_config(name))
  total = sum(int(np.prod(shape)) for shape in shapes.values())
  assert total / 1e6 == pytest.approx(expected_millions, rel=0.002)


def test_every_named_config_builds():
  for name in CONFIG_NAMES:
    config = get_config(name)
    assert get_config(name).to_dict() == type(config).from_dict(config.to_dict()).to_dict()
  with pytest.raises(ValueError, match="unknown T5 config"):
    get_config("t5_1_1_huge")
  with pytest.raises(ValueError, match="unknown fields"):
    type(config).from_dict({"vocab_size": 8, "num_layers": 2})


def _example(rng, length, vocab=64):
  return rng.randint(2, vocab, size=length).astype(np.int32)


def test_packed_batch_equals_each_sequence_alone():
  """Packed segments never attend to each other (encoder, decoder, cross)."""
  model, params = _model_and_params()
  rng = np.random.RandomState(0)
  pieces = [(_example(rng, 5), _example(rng, 4)), (_example(rng, 7), _example(rng, 6))]
  length = 16

  def pad(x):
    return np.pad(x, (0, length - len(x)))

  encoder, targets, enc_seg, dec_seg, enc_pos, dec_pos, dec_in = ([] for _ in range(7))
  for segment, (inputs, target) in enumerate(pieces, start=1):
    encoder.append(inputs)
    targets.append(target)
    dec_in.append(np.concatenate([[0], target[:-1]]))
    enc_seg.append(np.full(len(inputs), segment))
    dec_seg.append(np.full(len(target), segment))
    enc_pos.append(np.arange(len(inputs)))
    dec_pos.append(np.arange(len(target)))
  packed = {name: jnp.asarray(pad(np.concatenate(values)))[None] for name, values in dict(
      encoder_input_tokens=encoder, decoder_target_tokens=targets, decoder_input_tokens=dec_in,
      encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg, encoder_positions=enc_pos,
      decoder_positions=dec_pos).items()}
  packed_logits = np.asarray(model.compute_logits(params, packed))[0]

  offset = 0
  for inputs, target in pieces:
    alone = {"encoder_input_tokens": jnp.asarray(pad(inputs))[None],
             "decoder_target_tokens": jnp.asarray(pad(target))[None],
             "decoder_input_tokens": jnp.asarray(pad(np.concatenate([[0], target[:-1]])))[None]}
    alone_logits = np.asarray(model.compute_logits(params, alone))[0, :len(target)]
    np.testing.assert_allclose(packed_logits[offset:offset + len(target)], alone_logits,
                               atol=1e-5)
    offset += len(target)


def test_decoder_is_causal():
  """Logits at position t are bit-identical whatever the later decoder inputs are."""
  model, params = _model_and_params()
  rng = np.random.RandomState(1)
  batch = {"encoder_input_tokens": jnp.asarray(_example(rng, 8))[None],
           "decoder_input_tokens": jnp.asarray(_example(rng, 8))[None]}
  batch["decoder_target_tokens"] = batch["decoder_input_tokens"]

  def logits_at(t, decoder_inputs):
    changed = dict(batch, decoder_input_tokens=decoder_inputs)
    return model.compute_logits(params, changed)[0, t]

  base = logits_at(3, batch["decoder_input_tokens"])
  later = batch["decoder_input_tokens"].at[0, 4:].set(5)
  earlier = batch["decoder_input_tokens"].at[0, 2].set(5)
  np.testing.assert_array_equal(base, logits_at(3, later))
  assert not np.allclose(base, logits_at(3, earlier))


def test_dropout_needs_rng_and_changes_outputs():
  model, params = _model_and_params(dropout_rate=0.5)
  rng = np.random.RandomState(2)
  batch = {"encoder_input_tokens": jnp.asarray(_example(rng, 8))[None],
           "decoder_input_tokens": jnp.asarray(_example(rng, 8))[None]}
  batch["decoder_target_tokens"] = batch["decoder_input_tokens"]
  deterministic = model.loss_fn(params, batch, None)[0]
  assert model.loss_fn(params, batch, None)[0] == deterministic
  first = model.loss_fn(params, batch, jax.random.PRNGKey(0))[0]
  assert first != deterministic
  assert model.loss_fn(params, batch, jax.random.PRNGKey(0))[0] == first


def test_gradients_flow_to_every_parameter():
  model, params = _model_and_params()
  rng = np.random.RandomState(3)
  batch = {"encoder_input_tokens": jnp.asarray(_example(rng, 8))[None],
           "decoder_input_tokens": jnp.asarray(_example(rng, 8))[None],
           "decoder_target_tokens": jnp.asarray(_example(rng, 8))[None]}
  gradients = jax.grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
  for name, gradient in param_tree.flatten(gradients).items():
    assert np.abs(np.asarray(gradient)).max() > 0, name
  assert count_parameters(params) == count_parameters(gradients)


# T5X's standard logical-to-mesh rules (partitioning.standard_logical_axis_rules,
# 1-D model parallelism); axes not named here stay replicated.
_RULES = (("batch", "data"), ("vocab", "model"), ("embed", None), ("mlp", "model"),
          ("heads", "model"), ("kv", None), ("joined_kv", "model"),
          ("relpos_buckets", None), ("length", None))


def test_sharded_over_8_devices_equals_one_device():
  """Params laid out by their logical axes on a 4x2 mesh give the same loss and decode."""
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
  assert len(jax.devices()) == 8, "conftest must request 8 fake CPU devices"
  model, params = _model_and_params(num_heads=4, mlp_dim=16)
  rng = np.random.RandomState(4)
  batch = {"encoder_input_tokens": jnp.asarray(rng.randint(2, 64, (8, 8)), jnp.int32),
           "decoder_input_tokens": jnp.asarray(rng.randint(2, 64, (8, 8)), jnp.int32),
           "decoder_target_tokens": jnp.asarray(rng.randint(2, 64, (8, 8)), jnp.int32)}
  loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
  tokens = model.predict_batch(params, batch, max_decode_length=6)

  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  abstract = jax.eval_shape(lambda: model.get_initial_variables(jax.random.PRNGKey(0), SHAPES))
  with nn.logical_axis_rules(_RULES):
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, _RULES)
  sharded = jax.device_put(params, shardings["params"])
  assert tuple(sharded["decoder"]["logits_dense"]["kernel"].sharding.spec) == (None, "model")
  sharded_batch = jax.device_put(batch, NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  with mesh, nn.logical_axis_rules(_RULES):
    sharded_loss, sharded_metrics = jax.jit(model.loss_fn)(sharded, sharded_batch, None)
    sharded_tokens = model.predict_batch(sharded, sharded_batch, max_decode_length=6)
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  np.testing.assert_allclose(sharded_metrics["accuracy"], metrics["accuracy"])
  np.testing.assert_array_equal(sharded_tokens, tokens)
