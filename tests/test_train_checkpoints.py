"""Orbax checkpoints: round trip, another mesh, broken steps, retention, import."""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np
import pytest

from cot_distill.model import checkpoints as model_checkpoints
from cot_distill.train import checkpoints
from cot_distill.train import initial_checkpoint
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib

import train_testing

POSITION = train_testing.TOY_POSITION


@pytest.fixture(autouse=True, scope="module")
def _fast_compilation():
  train_testing.require_eight_devices()
  with train_testing.fast_compilation():
    yield


@pytest.fixture(scope="module")
def setup():
  model = train_testing.tiny_model()
  tx = optimizers.adamw(optimizers.constant_schedule(1e-3))
  shapes, specs = train_testing.abstract_state(model, tx)
  return model, tx, shapes, specs


def _state(setup, partitioner, seed, step=0):
  model, tx, shapes, specs = setup
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  state = state_lib.create_train_state(train_testing.init_function(model), tx,
                                       shardings, seed)
  return state.replace(step=state.step + step), shardings


def _equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def _save(directory, state, step, metrics=None, **config):
  saver = checkpoints.TrainCheckpointer(
      str(directory), checkpoints.CheckpointConfig(**config))
  saver.save(state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)),
             POSITION, metrics)
  saver.wait()
  saver.close()


def test_round_trip_onto_another_mesh(setup, tmp_path):
  """Saved from FSDP over 8 devices, restored onto 4 data x 2 model."""
  _, _, shapes, specs = setup
  fsdp = partitioning.Partitioner("fsdp")
  saved, _ = _state(setup, fsdp, seed=1)
  _save(tmp_path, saved, step=7)
  model_parallel = partitioning.Partitioner("model_parallel", 2)
  other, target_shardings = _state(setup, model_parallel, seed=2)
  assert not _equal(other.params, saved.params)
  restorer = checkpoints.TrainCheckpointer(str(tmp_path),
                                           checkpoints.CheckpointConfig())
  restored, position = restorer.restore(
      state_lib.with_shardings(shapes, target_shardings))
  restorer.close()
  assert int(restored.step) == 7
  assert position == POSITION
  assert _equal(restored.params, saved.params)
  assert _equal(restored.opt_state, saved.opt_state)
  assert _equal(restored.rng, saved.rng)
  kernel = restored.params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert kernel.sharding == target_shardings.params["encoder"]["layers_0"][
      "mlp"]["wi_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")


def test_unreadable_latest_falls_back_to_previous(setup, tmp_path, caplog):
  partitioner = partitioning.Partitioner()
  first, shardings = _state(setup, partitioner, seed=1)
  second, _ = _state(setup, partitioner, seed=2)
  _save(tmp_path, first, step=1)
  _save(tmp_path, second, step=2)
  # Damage step 2 the way a full disk would: its array files are empty.
  for root, _, files in os.walk(tmp_path / "checkpoint_2" / "params"):
    for name in files:
      open(os.path.join(root, name), "w").close()
  # A save killed half-way leaves only a temporary directory: never listed.
  (tmp_path / "checkpoint_3.orbax-checkpoint-tmp-1234").mkdir()
  _, _, shapes, _ = setup
  restorer = checkpoints.TrainCheckpointer(str(tmp_path),
                                           checkpoints.CheckpointConfig())
  with caplog.at_level(logging.ERROR):
    restored, _ = restorer.restore(state_lib.with_shardings(shapes, shardings))
  assert int(restored.step) == 1
  assert _equal(restored.params, first.params)
  # One line says what happened; the step is moved aside, never deleted.
  lines = [record.getMessage() for record in caplog.records
           if "checkpoint step 2" in record.getMessage()]
  assert len(lines) == 1 and "unreadable" in lines[0], lines
  assert "resuming from step 1" in lines[0]
  assert restorer.all_steps() == [1]
  assert "did not restore as saved:\nunreadable (" in (
      tmp_path / "checkpoint_2.broken" / "BROKEN.txt").read_text()
  # With every step broken the run stops and says which ones.
  for root, _, files in os.walk(tmp_path / "checkpoint_1" / "params"):
    for name in files:
      open(os.path.join(root, name), "w").close()
  with pytest.raises(checkpoints.BrokenCheckpointError,
                     match="(?s)no usable checkpoint.*checkpoint_1: unreadable"):
    restorer.restore(state_lib.with_shardings(shapes, shardings))
  assert sorted(os.listdir(tmp_path)) == [
      "checkpoint_1.broken", "checkpoint_2.broken"]
  restorer.close()


def test_keeps_last_n_and_the_best(setup, tmp_path):
  partitioner = partitioning.Partitioner()
  state, _ = _state(setup, partitioner, seed=1)
  metric = "eval/toy/accuracy"
  saver = checkpoints.TrainCheckpointer(str(tmp_path), checkpoints.CheckpointConfig(
      keep_last=2, best_metric=metric, best_mode="max", async_save=False))
  for step, accuracy in [(1, 0.1), (2, 0.9), (3, 0.2), (4, 0.3), (5, 0.1)]:
    saver.save(state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)),
               POSITION, {metric: accuracy})
  saver.wait()
  assert saver.all_steps() == [2, 4, 5]
  saver.close()


def test_restore_params_for_the_evaluator(setup, tmp_path):
  model, _, _, _ = setup
  state, _ = _state(setup, partitioning.Partitioner("fsdp"), seed=3)
  checkpoints.write_model_config(
      str(tmp_path), config=model.config,
      vocabulary={"spm_path": "/x/spiece.model", "extra_ids": 100},
      mixture_or_task_name="toy", task_feature_lengths={"inputs": 16})
  _save(tmp_path, state, step=4)
  _save(tmp_path, state, step=9)
  params, config, info = checkpoints.restore_params(str(tmp_path))
  assert config == model.config
  assert info["step"] == 9 and info["task"] == "toy"
  assert info["vocabulary"] == {"spm_path": "/x/spiece.model", "extra_ids": 100}
  assert _equal(params, state.params)
  leaf = jax.tree.leaves(params)[0]
  assert leaf.sharding.is_fully_addressable and len(leaf.sharding.device_set) == 1
  _, _, info = checkpoints.restore_params(str(tmp_path / "checkpoint_4"))
  assert info["step"] == 4
  with pytest.raises(FileNotFoundError, match="no checkpoint step 5"):
    checkpoints.restore_params(str(tmp_path), step=5)
  with pytest.raises(FileNotFoundError, match="model_config.json not found"):
    checkpoints.restore_params(str(tmp_path / "elsewhere"))


def test_initial_params_from_hugging_face_and_cot_distill(setup, tmp_path):
  """INITIAL_CHECKPOINT_PATH in both formats gives the same, sharded params."""
  model, _, shapes, specs = setup
  state, _ = _state(setup, partitioning.Partitioner(), seed=5)
  params = jax.device_get(state.params)
  model_checkpoints.export_hf(params, model.config, tmp_path / "hf")
  assert initial_checkpoint.checkpoint_format(str(tmp_path / "hf")) == "huggingface"
  partitioner = partitioning.Partitioner("model_parallel", 2)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  loaded = initial_checkpoint.load_initial_params(
      str(tmp_path / "hf"), model.config, shapes.params, shardings.params)
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_allclose(got, want, rtol=1e-6)
  assert jax.tree.leaves(loaded)[0].sharding.mesh.shape["model"] == 2
  # A cot-distill MODEL_DIR (e.g. an answer-only student to continue from).
  checkpoints.write_model_config(
      str(tmp_path / "run"), config=model.config, vocabulary={},
      mixture_or_task_name="toy", task_feature_lengths={})
  _save(tmp_path / "run", state, step=3)
  assert initial_checkpoint.checkpoint_format(str(tmp_path / "run")) == "cot_distill"
  from_run = initial_checkpoint.load_initial_params(
      str(tmp_path / "run" / "checkpoint_3"), model.config, shapes.params,
      shardings.params)
  assert _equal(from_run, params)
  with pytest.raises(ValueError, match="does not fit the model config"):
    bigger = train_testing.tiny_model(vocab_size=512)
    bigger_shapes, _ = train_testing.abstract_state(
        bigger, optimizers.adamw(optimizers.constant_schedule(1e-3)))
    initial_checkpoint.load_initial_params(
        str(tmp_path / "hf"), bigger.config, bigger_shapes.params,
        jax.tree.map(lambda _: partitioner.replicated(), bigger_shapes.params))


def test_initial_params_from_t5x_checkpoint(t5x_tiny_dir):
  """T5X's own checkpoint (shared fixture) loads through the model importer."""
  path = str(t5x_tiny_dir / "checkpoint_orbax" / "checkpoint_1000")
  assert initial_checkpoint.checkpoint_format(path) == "t5x"
  with open(t5x_tiny_dir / "model_config.json", encoding="utf-8") as file:
    assert json.load(file)  # the fixture is there
  model = train_testing.tiny_model(vocab_size=256)
  shapes, specs = train_testing.abstract_state(
      model, optimizers.adafactor(optimizers.constant_schedule(1e-3)))
  partitioner = partitioning.Partitioner("fsdp")
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  loaded = initial_checkpoint.load_initial_params(
      path, model.config, shapes.params, shardings.params)
  reference, _ = model_checkpoints.load_t5x_checkpoint(path, config=model.config)
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(got, want)
  embedding = loaded["token_embedder"]["embedding"]
  assert embedding.sharding.spec == jax.sharding.PartitionSpec("model", "data")
