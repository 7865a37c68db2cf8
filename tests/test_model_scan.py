"""Scanned layers (T5Config.scan_layers): same model, stacked tree, faster compile."""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from cot_distill.model import checkpoints as model_checkpoints
from cot_distill.model import param_tree
from cot_distill.model import scanned
from cot_distill.model import t5x_checkpoints
from cot_distill.model.config import T5Config, get_config
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import data
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib
from cot_distill.train import step as step_lib

import train_testing

# Three layers per stack, so a layer index mix-up cannot pass by symmetry.
CONFIG = get_config("t5_1_1_tiny", vocab_size=train_testing.VOCAB, dtype="float32",
                    num_encoder_layers=3, num_decoder_layers=3)
SCANNED = CONFIG.replace(scan_layers=True)


def _init(config, seed=0):
  model = EncoderDecoderModel(config)
  variables = jax.jit(train_testing.init_function(model))(
      jax.random.key_data(jax.random.key(seed)))
  return nn.unbox(variables)["params"]


@pytest.fixture(scope="module")
def params():
  """Unscanned params and the same values stacked."""
  unscanned = _init(CONFIG)
  return unscanned, scanned.scan_params(unscanned, SCANNED)


def _assert_trees_close(actual, expected, rtol, atol):
  flat_actual, flat_expected = param_tree.flatten(actual), param_tree.flatten(expected)
  assert sorted(flat_actual) == sorted(flat_expected)
  for name, want in flat_expected.items():
    np.testing.assert_allclose(flat_actual[name], want, rtol=rtol, atol=atol, err_msg=name)


def test_scanned_tree_is_the_stacked_t5x_tree():
  boxed = jax.eval_shape(train_testing.init_function(EncoderDecoderModel(SCANNED)),
                         jax.random.key_data(jax.random.key(0)))["params"]
  flat = param_tree.flatten(boxed)
  kernel = flat["encoder/layers/mlp/wi_0/kernel"]
  assert kernel.value.shape == (8, 3, 16)
  assert kernel.names == ("embed", "layers", "mlp")
  assert flat["decoder/layers/pre_mlp_layer_norm/scale"].names == ("embed", "layers")
  # Relative-position tables and final norms stay per stack.
  assert flat["encoder/relpos_bias/rel_embedding"].names == ("heads", "relpos_buckets")
  assert not any("layers_" in name for name in flat)
  # expected_shapes follows the config; scan_flat of the unscanned shapes is it.
  unscanned_shapes = {name: jax.ShapeDtypeStruct(shape, np.float32) for name, shape
                      in param_tree.expected_shapes(CONFIG).items()}
  stacked = scanned.scan_flat(unscanned_shapes, SCANNED)
  assert {name: value.shape for name, value in stacked.items()} == (
      param_tree.expected_shapes(SCANNED))


def test_scan_and_unscan_round_trip_exactly(params):
  unscanned, stacked = params
  flat = param_tree.flatten(stacked)
  np.testing.assert_array_equal(flat["decoder/layers/self_attention/query/kernel"][:, 2],
                                unscanned["decoder"]["layers_2"]["self_attention"]["query"]["kernel"])
  back = scanned.unscan_params(stacked, SCANNED)
  jax.tree.map(np.testing.assert_array_equal, back, unscanned)
  again = scanned.scan_params(back, SCANNED)
  jax.tree.map(np.testing.assert_array_equal, again, stacked)
  assert scanned.to_layout(stacked, SCANNED) is stacked
  jax.tree.map(np.testing.assert_array_equal, scanned.to_layout(stacked, CONFIG), unscanned)


def test_conversion_names_what_does_not_fit(params):
  unscanned, stacked = params
  flat = param_tree.flatten(unscanned)
  del flat["encoder/layers_1/mlp/wo/kernel"]
  with pytest.raises(ValueError, match="encoder/layers_1/mlp/wo/kernel' is missing"):
    scanned.scan_flat(flat, SCANNED)
  with pytest.raises(ValueError, match="stacks 3 layers .* config has 2 encoder layers"):
    scanned.unscan_params(stacked, SCANNED.replace(num_encoder_layers=2))
  with pytest.raises(ValueError, match="source-x: .*stacks 3 layers"):
    param_tree.check_and_unflatten(param_tree.flatten(stacked),
                                   CONFIG.replace(num_decoder_layers=4), source="source-x")


def _loss_and_grads(config, params, batch, remat_policy="none"):
  model = EncoderDecoderModel(config.replace(remat_policy=remat_policy))
  (loss, _), grads = jax.jit(jax.value_and_grad(
      lambda p: model.loss_fn(p, batch, None), has_aux=True))(params)
  return float(loss), grads


@pytest.fixture(scope="module")
def unscanned_loss_and_grads(params):
  return _loss_and_grads(CONFIG, params[0], train_testing.random_batch(seed=1))


def test_same_logits_loss_and_gradients(params, unscanned_loss_and_grads):
  unscanned, stacked = params
  batch = train_testing.random_batch(seed=1)
  logits = EncoderDecoderModel(CONFIG).compute_logits(unscanned, batch)
  np.testing.assert_allclose(EncoderDecoderModel(SCANNED).compute_logits(stacked, batch),
                             logits, rtol=1e-5, atol=1e-5)
  want_loss, want_grads = unscanned_loss_and_grads
  loss, grads = _loss_and_grads(SCANNED, stacked, batch)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  _assert_trees_close(scanned.unscan_params(grads, SCANNED), want_grads, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("policy", ["full", "minimal"])
def test_remat_inside_the_scan_keeps_loss_and_gradients(params, unscanned_loss_and_grads,
                                                        policy):
  want_loss, want_grads = unscanned_loss_and_grads
  loss, grads = _loss_and_grads(SCANNED, params[1], train_testing.random_batch(seed=1),
                                remat_policy=policy)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  # Recomputed activations may be fused (rounded) differently (as test_model_remat).
  _assert_trees_close(scanned.unscan_params(grads, SCANNED), want_grads, rtol=1e-4, atol=1e-6)


def test_cached_decoding_gives_the_same_tokens(params):
  unscanned, stacked = params
  batch = train_testing.random_batch(seed=2, batch_size=4)
  for method, kwargs in (("greedy", {"eos_id": None}),
                         ("beam", {"beam_size": 3, "num_decodes": 2})):
    want = EncoderDecoderModel(CONFIG).predict_batch(
        unscanned, batch, decode_method=method, max_decode_length=7, **kwargs)
    got = EncoderDecoderModel(SCANNED).predict_batch(
        stacked, batch, decode_method=method, max_decode_length=7, **kwargs)
    np.testing.assert_array_equal(got, want, err_msg=method)
  # The cache is stacked per layer in front of its rows (T5X's layout).
  model = EncoderDecoderModel(SCANNED)
  encoded = model.module.apply({"params": stacked}, batch["encoder_input_tokens"],
                               enable_dropout=False, method=model.module.encode)
  _, cache = model.module.apply(
      {"params": stacked}, encoded, batch["encoder_input_tokens"], np.zeros((4, 1), np.int32),
      decode=True, max_decode_length=7, enable_dropout=False, mutable=["cache"],
      method=model.module.decode)
  key = cache["cache"]["decoder"]["layers"]["self_attention"]["cached_key"]
  assert key.shape == (3, 4, CONFIG.num_heads, 7, CONFIG.head_dim)


def test_dropout_is_drawn_per_layer_and_step(params):
  config = SCANNED.replace(dropout_rate=0.3)
  model = EncoderDecoderModel(config)
  batch = train_testing.random_batch(seed=1)
  with_dropout = jax.jit(lambda rng: model.loss_fn(params[1], batch, rng)[0])
  loss = lambda seed: float(with_dropout(jax.random.key_data(jax.random.key(seed))))
  deterministic = float(jax.jit(lambda: model.loss_fn(params[1], batch, None)[0])())
  assert loss(0) == loss(0)
  assert len({loss(0), loss(1), deterministic}) == 3


def _train(config, params, steps=3, partitioner=None):
  """Losses and final params of `steps` real Adafactor train steps."""
  model = EncoderDecoderModel(config)
  # Factors the tiny kernels and would also factor a stacked norm scale
  # [embed, layers] if the layer axis were not excluded.
  tx = optimizers.adafactor(optimizers.constant_schedule(0.05), min_dim_size_to_factor=2)
  partitioner = partitioner or partitioning.Partitioner(devices=jax.devices()[:1])
  state, train_step, shardings = train_testing.compiled_step(
      model, tx, optimizers.constant_schedule(0.05), partitioner, params)
  losses = []
  for seed in range(steps):
    state, metrics = train_step(state, data.to_global_batch(
        train_testing.random_batch(seed=seed), partitioner, 8))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), state, shardings


@pytest.mark.slow  # two train-step compiles (~30 s on a loaded 2-core machine)
def test_adafactor_steps_equal_the_unscanned_run(params):
  want_losses, want_params, _, _ = _train(CONFIG, params[0])
  losses, stacked, state, _ = _train(SCANNED, params[1])
  np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
  assert not np.allclose(want_params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
                         params[0]["encoder"]["layers_1"]["mlp"]["wo"]["kernel"])
  _assert_trees_close(scanned.unscan_params(stacked, SCANNED), want_params, rtol=1e-4,
                      atol=1e-6)
  # Per layer: wo [mlp 16, layers 3, embed 8] factors mlp and embed (the
  # unscanned [16, 8]'s v_row [8] and v_col [16], stacked).
  factored = state.opt_state[0]
  assert factored.v_row["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (3, 8)
  assert factored.v_col["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (16, 3)
  assert factored.v["encoder"]["layers"]["pre_mlp_layer_norm"]["scale"].shape == (8, 3)


@pytest.mark.slow  # two 8-device train-step compiles (~50 s on a loaded 2-core machine)
def test_model_parallel_shardings_keep_the_layer_axis_whole(params):
  train_testing.require_eight_devices()
  partitioner = partitioning.Partitioner("model_parallel", 2)
  want_losses, _, _, _ = _train(CONFIG, params[0], steps=1, partitioner=partitioner)
  losses, _, state, shardings = _train(SCANNED, params[1], steps=1, partitioner=partitioner)
  np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
  layers = state.params["encoder"]["layers"]
  assert layers["mlp"]["wi_0"]["kernel"].sharding.spec == PartitionSpec(None, None, "model")
  assert layers["mlp"]["wo"]["kernel"].sharding.spec == PartitionSpec("model", None, None)
  assert layers["attention"]["out"]["kernel"].sharding.spec == PartitionSpec(
      "model", None, None)
  for name, sharding in param_tree.flatten(shardings.params).items():
    if "/layers/" in name:
      assert sharding.spec[scanned.PARAM_SCAN_AXIS] is None, (name, sharding.spec)
  # The optimizer state follows: wi_0's column statistic [layers, mlp].
  v_col = state.opt_state[0].v_col["encoder"]["layers"]["mlp"]["wi_0"]["kernel"]
  assert v_col.shape == (3, 16)
  assert v_col.sharding.spec == PartitionSpec(None, "model")


def test_checkpoints_convert_to_the_configured_layout(params, tmp_path):
  unscanned, stacked = params
  # A T5X (unscanned) checkpoint into a scanned config, and back.
  path = t5x_checkpoints.write_t5x_checkpoint(unscanned, 7, tmp_path / "t5x")
  loaded, config = model_checkpoints.load_t5x_checkpoint(path, config=SCANNED)
  assert config.scan_layers
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(stacked))
  # A scanned tree written as is: inferred as scanned, or converted on request.
  path = t5x_checkpoints.write_t5x_checkpoint(stacked, 8, tmp_path / "stacked")
  loaded, config = model_checkpoints.load_t5x_checkpoint(path, dtype="float32")
  assert config == SCANNED.replace(dropout_rate=config.dropout_rate)
  loaded, config = model_checkpoints.load_t5x_checkpoint(path, scan_layers=False)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(unscanned))
  # Hugging Face has one module per layer: export slices, import stacks.
  model_checkpoints.export_hf(stacked, SCANNED, tmp_path / "hf")
  loaded, config = model_checkpoints.load_hf_checkpoint(tmp_path / "hf", scan_layers=True)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(stacked))
  loaded, config = model_checkpoints.load_hf_checkpoint(tmp_path / "hf")
  assert not config.scan_layers
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(unscanned))


def test_optimizer_sees_stacked_layers_only_under_a_stack():
  assert scanned.layer_axis(("encoder", "layers", "mlp", "wo", "kernel")) == 1
  assert scanned.layer_axis(("decoder", "layers_0", "mlp", "wo", "kernel")) is None
  assert scanned.layer_axis(("layers", "mlp", "wo", "kernel")) is None
  assert scanned.layer_axis(("decoder", "decoder_norm", "scale")) is None


def _compile_seconds(config) -> float:
  model = EncoderDecoderModel(config)
  tx = optimizers.adafactor(optimizers.constant_schedule(1e-3))
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
  shapes, specs = train_testing.abstract_state(model, tx, input_length=32, target_length=32)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  train_step = step_lib.compile_train_step(
      loss_fn=model.loss_fn, optimizer=tx, learning_rate=optimizers.constant_schedule(1e-3),
      partitioner=partitioner, state_shardings=shardings, dropout=True)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       train_testing.random_batch(seed=0, input_length=32, target_length=32,
                                                  vocab=256))
  start = time.perf_counter()
  lowered = train_step.lower(state_lib.with_shardings(shapes, shardings), batch)
  traced = time.perf_counter()
  lowered.compile()
  return traced - start, time.perf_counter() - traced


@pytest.mark.slow  # two compiles of a 12+12-layer train step
def test_scanning_12_plus_12_layers_compiles_faster():
  config = get_config("t5_1_1_tiny", vocab_size=256, emb_dim=64, num_heads=4, head_dim=16,
                      mlp_dim=128, num_encoder_layers=12, num_decoder_layers=12,
                      dropout_rate=0.1)
  (unscanned_trace, unscanned), (stacked_trace, stacked) = (
      _compile_seconds(config), _compile_seconds(config.replace(scan_layers=True)))
  print(f"\ntrain step (Adafactor), T5 1.1 12+12 layers, emb 64, mlp 128, batch 8 x 32: "
        f"XLA compile unscanned {unscanned:.1f} s, scanned {stacked:.1f} s "
        f"({unscanned / stacked:.1f}x); tracing + lowering {unscanned_trace:.1f} s vs "
        f"{stacked_trace:.1f} s")
  assert stacked < unscanned / 2, (unscanned, stacked)


def test_a_scanned_run_restores_exports_and_starts_runs_in_either_layout(
    params, tmp_path, monkeypatch):
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  from cot_distill.commands import export  # pylint: disable=g-import-not-at-top
  from cot_distill.train import checkpoints  # pylint: disable=g-import-not-at-top
  from cot_distill.train import initial_checkpoint  # pylint: disable=g-import-not-at-top
  from cot_distill.train import trainer  # pylint: disable=g-import-not-at-top
  unscanned, stacked = params
  run = tmp_path / "run"
  checkpoints.write_model_config(
      str(run), config=SCANNED,
      vocabulary={"spm_path": vocabularies.DEFAULT_SPM_PATH, "extra_ids": 100},
      mixture_or_task_name="toy", task_feature_lengths={"inputs": 16, "targets": 8})
  tx = optimizers.adamw(optimizers.constant_schedule(1e-3))
  state = state_lib.TrainState(step=jax.numpy.asarray(3, jax.numpy.int32), params=stacked,
                               opt_state=tx.init(stacked),
                               rng=jax.random.key_data(jax.random.key(0)))
  saver = checkpoints.TrainCheckpointer(str(run), checkpoints.CheckpointConfig())
  saver.save(state, train_testing.TOY_POSITION)
  saver.wait()
  saver.close()
  same = lambda got, want: jax.tree.map(np.testing.assert_array_equal, jax.device_get(got),
                                        jax.device_get(want))

  # restore_params: the layout of the run's model_config.json.
  restored, config, _ = checkpoints.restore_params(str(run))
  assert config == SCANNED
  same(restored, stacked)

  # export: T5X's unscanned tree (and model.gin) by default, stacked on request.
  written = export.export_t5x(str(run), str(tmp_path / "t5x"))
  same(param_tree.unflatten(t5x_checkpoints.read_t5x_params(written["checkpoint"])), unscanned)
  assert written["model_gin"]
  exported_config = T5Config.from_dict(json.loads(
      (tmp_path / "t5x" / checkpoints.MODEL_CONFIG_FILE).read_text())["t5config"])
  assert exported_config == CONFIG
  written = export.export_t5x(str(run), str(tmp_path / "stacked"), layout="scanned")
  same(param_tree.unflatten(t5x_checkpoints.read_t5x_params(written["checkpoint"])), stacked)
  assert written["model_gin"] is None

  # INITIAL_CHECKPOINT_PATH: the scanned run starts an unscanned one.
  tx = optimizers.adamw(optimizers.constant_schedule(1e-3))
  shapes, specs = train_testing.abstract_state(EncoderDecoderModel(CONFIG), tx)
  shardings = state_lib.state_shardings(partitioning.Partitioner(devices=jax.devices()[:1]),
                                        shapes, specs)
  same(initial_checkpoint.load_initial_params(str(run), CONFIG, shapes.params,
                                              shardings.params), unscanned)

  # Resuming the run with the other layout is refused, naming scan_layers;
  # a model_config.json written before the field existed reads as unscanned.
  monkeypatch.setattr(trainer, "_task_vocabulary",
                      lambda _: type("Vocabulary", (), {"extra_ids": 100})())
  differences = trainer._model_config_differences(str(run), CONFIG, "toy")  # pylint: disable=protected-access
  assert len(differences) == 1
  assert differences[0].startswith("scan_layers: checkpoint True, config False (")
  assert "INITIAL_CHECKPOINT_PATH" in differences[0]
  old = json.loads((run / checkpoints.MODEL_CONFIG_FILE).read_text())
  del old["model"]["scan_layers"]
  (run / checkpoints.MODEL_CONFIG_FILE).write_text(json.dumps(old))
  assert trainer._model_config_differences(str(run), CONFIG, "toy") == []  # pylint: disable=protected-access
  assert trainer._model_config_differences(str(run), SCANNED, "toy")[0].startswith(  # pylint: disable=protected-access
      "scan_layers: checkpoint False, config True")


def test_gin_binding_reaches_the_trainers_model():
  import gin  # pylint: disable=g-import-not-at-top
  from cot_distill.commands import train as train_command  # pylint: disable=g-import-not-at-top
  from cot_distill.train import trainer  # pylint: disable=g-import-not-at-top
  repo = train_testing.__file__.rsplit("/tests/", 1)[0]
  gin.clear_config()
  try:
    train_command.parse_gin(
        [f"{repo}/gin/models/t5_1_1_tiny.gin", f"{repo}/gin/runs/finetune_cot.gin"],
        ["MIXTURE_OR_TASK_NAME = 'some.task'", "MODEL_DIR = '/tmp/m'",
         "config.get_config.scan_layers = True"], [repo])
    config = gin.get_bindings(trainer.train)["model"].config
  finally:
    gin.clear_config()
  assert config.scan_layers and config.num_encoder_layers == 2


def test_t5x_fixture_loads_scanned_and_reproduces_t5x(t5x_tiny_dir):
  """T5X's own (unscanned) checkpoint into a scanned network: T5X's logits and decodes."""
  config = T5Config.from_dict(json.loads(
      (t5x_tiny_dir / "model_config.json").read_text())["t5config"]).replace(
          dtype="float32", scan_layers=True)
  params, _ = model_checkpoints.load_t5x_checkpoint(
      t5x_tiny_dir / "checkpoint_legacy" / "checkpoint_1000", config)
  assert "layers" in params["encoder"] and "layers_0" not in params["encoder"]
  arrays = dict(np.load(t5x_tiny_dir / "batch_and_logits.npz"))
  batch = {name: arrays[name] for name in ("encoder_input_tokens", "decoder_input_tokens",
                                           "decoder_target_tokens", "decoder_loss_weights")}
  model = EncoderDecoderModel(config)
  np.testing.assert_allclose(jax.jit(model.compute_logits)(params, batch),
                             arrays["logits_float32_activations"], atol=1e-4, rtol=0)
  tokens = model.predict_batch(params, batch, max_decode_length=64)
  np.testing.assert_array_equal(tokens, np.load(t5x_tiny_dir / "greedy_decode.npz")[
      "decode_ids_float32_activations"])


def test_optimizer_state_specs_never_drop_the_layer_axis():
  # [embed 16, layers 16, mlp 8]: v_row drops embed (the largest factored
  # axis) although dropping the equally long layer axis gives the same shape.
  param_shapes = {"encoder": {"layers": {"mlp": {"wi_0": {
      "kernel": jax.ShapeDtypeStruct((16, 16, 8), np.float32)}}}}}
  param_specs = {"encoder": {"layers": {"mlp": {"wi_0": {
      "kernel": PartitionSpec("data", None, "model")}}}}}
  tx = optimizers.adafactor(optimizers.constant_schedule(1e-3), min_dim_size_to_factor=2)
  opt_shapes = jax.eval_shape(tx.init, param_shapes)
  specs = state_lib.optimizer_state_specs(opt_shapes, param_shapes, param_specs)
  kernel = lambda tree: tree["encoder"]["layers"]["mlp"]["wi_0"]["kernel"]
  assert kernel(opt_shapes[0].v_row).shape == (16, 8)
  assert kernel(specs[0].v_row) == PartitionSpec(None, "model")
  assert kernel(specs[0].v_col) == PartitionSpec("data", None)
