"""Checkpoint integrity: checksums, damaged steps moved aside, NaN never saved.

Issue 14's cases at the checkpointer level (no training loop): a step with
a block of zeros in a params file, or whose manifest disagrees with its
arrays, is moved to checkpoint_<n>.broken with a reason and the previous
step restores; the same step number can then be saved again; a state with
NaN is refused before anything is written; the evaluator's restore refuses
a damaged step with one clear error.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill import errors
from cot_distill.train import checkpoints
from cot_distill.train import integrity
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
  shardings = state_lib.state_shardings(partitioning.Partitioner("fsdp"),
                                        shapes, specs)
  return model, tx, shapes, shardings


def _state(setup, seed, step):
  model, tx, _, shardings = setup
  state = state_lib.create_train_state(train_testing.init_function(model), tx,
                                       shardings, seed)
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _save(directory, state):
  saver = checkpoints.TrainCheckpointer(
      str(directory), checkpoints.CheckpointConfig(async_save=True))
  saver.save(state, POSITION)
  saver.wait()
  saver.close()


def _restore(directory, setup):
  _, _, shapes, shardings = setup
  restorer = checkpoints.TrainCheckpointer(str(directory),
                                           checkpoints.CheckpointConfig())
  try:
    return restorer.restore(state_lib.with_shardings(shapes, shardings))
  finally:
    restorer.close()


def _equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def _data_files(directory):
  """The array data files of an orbax item (OCDBT's `d/` folders)."""
  return [os.path.join(root, name) for root, _, names in os.walk(directory)
          for name in names if os.path.basename(root) == "d"]


def test_checksum_sees_one_bit_and_ignores_sharding():
  train_testing.require_eight_devices()
  values = np.random.RandomState(0).randn(16, 24).astype(np.float32)
  flipped = values.copy()
  flipped.view(np.uint32)[3, 5] ^= 1 << 30
  swapped = values.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  mesh = jax.make_mesh((8,), ("x",))
  sharded = jax.device_put(values, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("x")))
  def checksum(array):
    return integrity._hex(jax.device_get(  # pylint: disable=protected-access
        integrity.digests({"a": {"b": array}}))["a"]["b"])
  assert checksum(values) == checksum(sharded)
  assert checksum(values) != checksum(flipped)
  assert checksum(values) != checksum(swapped)  # the weighted sum sees order
  bf16 = jnp.asarray(values, jnp.bfloat16)
  assert checksum(bf16) != checksum(bf16.at[0, 0].add(1))


def test_zeroed_block_is_caught_moved_aside_and_the_step_saved_again(
    setup, tmp_path, caplog):
  """Issue 14 cases 1 and 2: 4 KB of zeros in the newest step's params."""
  first, second = _state(setup, 1, step=1), _state(setup, 2, step=2)
  _save(tmp_path, first)
  _save(tmp_path, second)
  for target in _data_files(tmp_path / "checkpoint_2" / "params"):
    size = os.path.getsize(target)
    with open(target, "r+b") as file:
      file.seek(size // 4)
      file.write(bytes(min(4096, size // 2)))
  with caplog.at_level(logging.ERROR):
    restored, _ = _restore(tmp_path, setup)
  assert int(restored.step) == 1 and _equal(restored.params, first.params)
  lines = [r.getMessage() for r in caplog.records if "step 2" in r.getMessage()]
  assert len(lines) == 1 and "resuming from step 1" in lines[0], lines
  assert os.path.isdir(tmp_path / "checkpoint_2.broken")
  assert not os.path.exists(tmp_path / "checkpoint_2")
  reason = (tmp_path / "checkpoint_2.broken" / "BROKEN.txt").read_text()
  assert "did not restore as saved" in reason
  # The retrained step is saved under its own number, and it restores.
  _save(tmp_path, second)
  restored, _ = _restore(tmp_path, setup)
  assert int(restored.step) == 2 and _equal(restored.params, second.params)
  # A second break of the same step keeps the first one's files too.
  manifest_path = tmp_path / "checkpoint_2" / "integrity" / "integrity.json"
  manifest = json.loads(manifest_path.read_text())
  name = "params/encoder/layers_0/mlp/wi_0/kernel"
  manifest["arrays"][name]["checksum"] = "0" * 16
  manifest_path.write_text(json.dumps(manifest))
  with caplog.at_level(logging.ERROR):
    restored, _ = _restore(tmp_path, setup)
  assert int(restored.step) == 1
  assert f"{name}: checksum" in caplog.records[-1].getMessage()
  assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint")) == [
      "checkpoint_1", "checkpoint_2.broken", "checkpoint_2.broken-2"]


def test_a_state_with_nan_is_never_saved(setup, tmp_path):
  state = _state(setup, 1, step=3)
  params = jax.tree.map(lambda x: x, state.params)
  kernel = params["decoder"]["layers_0"]["mlp"]["wo"]["kernel"]
  params["decoder"]["layers_0"]["mlp"]["wo"]["kernel"] = kernel.at[0, 0].set(
      jnp.nan)
  saver = checkpoints.TrainCheckpointer(str(tmp_path),
                                        checkpoints.CheckpointConfig())
  with pytest.raises(checkpoints.NonFiniteStateError,
                     match=r"step 3 holds NaN or Inf.*mlp/wo/kernel.*not saved"):
    saver.save(state.replace(params=params), POSITION)
  saver.wait()
  saver.close()
  assert not [n for n in os.listdir(tmp_path) if n.startswith("checkpoint")]
  assert issubclass(checkpoints.NonFiniteStateError, errors.UserError)


def test_another_optimizer_is_a_layout_difference_not_damage(setup, tmp_path):
  model, _, shapes, shardings = setup
  _save(tmp_path, _state(setup, 1, step=1))
  saver = checkpoints.TrainCheckpointer(str(tmp_path),
                                        checkpoints.CheckpointConfig())
  assert saver.layout_differences(
      state_lib.with_shardings(shapes, shardings)) == []
  other_shapes, _ = train_testing.abstract_state(
      model, optimizers.adafactor(optimizers.constant_schedule(1e-3)))
  differences = saver.layout_differences(other_shapes)
  saver.close()
  assert any(line.startswith("optimizer/opt_state/") and "config absent" in line
             for line in differences), differences
  assert os.path.isdir(tmp_path / "checkpoint_1")  # untouched


# A failed read must not leave "Event loop is closed" tracebacks behind.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_the_evaluator_refuses_a_damaged_step_in_one_message(setup, tmp_path):
  model = setup[0]
  checkpoints.write_model_config(
      str(tmp_path), config=model.config, vocabulary={},
      mixture_or_task_name="toy", task_feature_lengths={})
  good = _state(setup, 1, step=1)
  _save(tmp_path, good)
  _save(tmp_path, _state(setup, 2, step=2))
  manifest_path = tmp_path / "checkpoint_2" / "integrity" / "integrity.json"
  manifest = json.loads(manifest_path.read_text())
  manifest["arrays"]["params/token_embedder/embedding"]["checksum"] = "1" * 16
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(checkpoints.BrokenCheckpointError) as raised:
    checkpoints.restore_params(str(tmp_path))
  message = str(raised.value)
  assert "checkpoint_2 cannot be used" in message
  assert "token_embedder/embedding: checksum" in message
  assert "other steps there: 1" in message
  assert "delete" not in message
  assert os.path.isdir(tmp_path / "checkpoint_2")  # the evaluator moves nothing
  params, _, info = checkpoints.restore_params(str(tmp_path / "checkpoint_1"))
  assert info["step"] == 1 and _equal(params, good.params)
  # Truncated array data: one clear error, not a TensorStore traceback.
  for path in _data_files(tmp_path / "checkpoint_1" / "params"):
    os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(checkpoints.BrokenCheckpointError,
                     match="checkpoint_1 cannot be used"):
    checkpoints.restore_params(str(tmp_path / "checkpoint_1"))
