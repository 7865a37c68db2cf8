"""Input shards: which host reads which rows of every global batch.

One process with 8 fake devices stands in for several hosts: `process_of`
assigns the devices to pretend processes (4 x 2 devices, 2 x 4 devices, as
jax.devices() orders a real multi-process run's devices: process 0 first).
The shard plan must give every host whole shards, in the order of its rows
in the global batch, and one host reading all shards must see exactly what
the hosts see together.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cot_distill import errors
from cot_distill.train import data
from cot_distill.train import input_shards
from cot_distill.train import partitioning

import train_testing

LENGTHS = {"inputs": 64, "targets": 64}


@pytest.fixture(autouse=True, scope="module")
def _eight_devices():
  train_testing.require_eight_devices()


def _processes(devices_per_process: int):
  return lambda device: device.id // devices_per_process


def _plans(partitioner, batch_size, shards, devices_per_process):
  process_of = _processes(devices_per_process)
  processes = 8 // devices_per_process
  return [input_shards.plan_input_shards(
      partitioner, batch_size, shards, process_index=process,
      process_of=process_of) for process in range(processes)]


def _held_rows(partitioner, batch_size, process, devices_per_process):
  """The global rows `process`'s devices hold, ascending (JAX's local order)."""
  rows = set()
  for device, index in partitioner.batch_sharding().devices_indices_map(
      (batch_size,)).items():
    if device.id // devices_per_process == process:
      rows.update(range(*index[0].indices(batch_size)))
  return sorted(rows)


@pytest.mark.parametrize(
    "layout, partitions, devices_per_process, shards, expected",
    [
        # Data axis across 2 hosts: each reads its half.
        ("data_parallel", 1, 4, None, [(0,), (1,)]),
        ("data_parallel", 1, 4, 4, [(0, 1), (2, 3)]),
        ("fsdp", 1, 4, None, [(0,), (1,)]),
        # 2 data x 4 model, a data row per host.
        ("model_parallel", 4, 4, None, [(0,), (1,)]),
        # 2 data x 4 model over 4 hosts: the model axis spans host pairs,
        # which hold the same rows and read the same shard.
        ("model_parallel", 4, 2, None, [(0,), (0,), (1,), (1,)]),
        ("model_parallel", 4, 2, 4, [(0, 1), (0, 1), (2, 3), (2, 3)]),
        # 1 data x 8 model: every host holds every row.
        ("model_parallel", 8, 4, None, [(0,), (0,)]),
        ("model_parallel", 8, 4, 2, [(0, 1), (0, 1)]),
    ])
def test_each_host_reads_the_shards_of_its_rows(layout, partitions,
                                                devices_per_process, shards,
                                                expected):
  partitioner = partitioning.Partitioner(layout, partitions)
  plans = _plans(partitioner, 16, shards, devices_per_process)
  assert [plan.local_shards for plan in plans] == expected
  for process, plan in enumerate(plans):
    # The plan's rows are the rows the host's devices hold, in the order
    # make_array_from_process_local_data reads the local batch.
    assert plan.local_rows() == _held_rows(partitioner, 16, process,
                                           devices_per_process)
    assert plan.local_batch_size == len(plan.local_rows())
    assert plan.num_shards * plan.shard_batch_size == 16


def test_one_host_reads_every_shard():
  partitioner = partitioning.Partitioner("data_parallel")
  assert input_shards.default_input_shards(partitioner, 16) == 1
  plan = input_shards.plan_input_shards(partitioner, 16, 4)
  assert plan.local_shards == (0, 1, 2, 3)
  assert (plan.shard_batch_size, plan.local_batch_size) == (4, 16)
  assert plan.local_rows() == list(range(16))


def test_bad_input_shards_are_refused_clearly():
  partitioner = partitioning.Partitioner("data_parallel")
  with pytest.raises(errors.ConfigurationError, match="not divisible by input_shards=3"):
    input_shards.plan_input_shards(partitioner, 16, 3)
  with pytest.raises(errors.ConfigurationError, match="positive integer"):
    input_shards.plan_input_shards(partitioner, 16, 0)
  # One shard cannot be split between two hosts.
  with pytest.raises(errors.ConfigurationError,
                     match=r"input_shards=1 does not fit.*multiple of 2"):
    _plans(partitioner, 16, 1, 4)
  # Shards of 16 rows would straddle the hosts' 24-row halves.
  with pytest.raises(errors.ConfigurationError,
                     match="input_shards=3 does not fit.*split shard 1"):
    _plans(partitioner, 48, 3, 4)
  with pytest.raises(errors.ConfigurationError, match="data parallel size"):
    input_shards.plan_input_shards(partitioner, 12, None)


def test_data_position_refuses_another_shard_count():
  position = train_testing.TOY_POSITION
  saved = position.__class__(**{**position.to_dict(), "input_shards": 2})
  data.check_input_shards(saved, saved)
  with pytest.raises(errors.UserError,
                     match="input_shards=2.*input_shards=1.*input_shards = 2"):
    data.check_input_shards(saved, position.__class__(
        **{**position.to_dict(), "input_shards": 1}))
  # Checkpoints written before the count was recorded resume as before.
  older = position.to_dict()
  older.pop("input_shards")
  data.check_input_shards(data.DataPosition(**older), saved)
  assert data.DataPosition(**older).same_stream(saved)


def test_hosts_together_read_what_one_host_reads(spm_path):
  """The real task: 2 hosts' batches are the halves of 1 host's, and differ."""
  train_testing.register_tasks(spm_path)
  read = lambda plan, start_step=0: next(data.train_batches(
      mixture_or_task_name=train_testing.COT_TASK, task_feature_lengths=LENGTHS,
      plan=plan, seed=3, start_step=start_step))
  one_host = input_shards.plan_input_shards(
      partitioning.Partitioner("data_parallel"), 8, 2)
  host_plans = _plans(partitioning.Partitioner("data_parallel"), 8, 2, 4)
  for start_step in (0, 2):
    whole = read(one_host, start_step)
    first, second = (read(plan, start_step) for plan in host_plans)
    assert sorted(whole) == sorted(first) == sorted(data.MODEL_FEATURES)
    for name, value in whole.items():
      assert value.shape[0] == 8 and first[name].shape[0] == 4
      np.testing.assert_array_equal(
          value, np.concatenate([first[name], second[name]]), err_msg=name)
    # Different examples, so the hosts cannot agree by both reading it all.
    assert not np.array_equal(first["encoder_input_tokens"],
                              second["encoder_input_tokens"])

  # Assembled on the devices, the rows sit where the plan says.
  partitioner = partitioning.Partitioner("data_parallel")
  batch = data.to_global_batch(whole, partitioner, 8)
  np.testing.assert_array_equal(jax.device_get(batch["decoder_target_tokens"]),
                                whole["decoder_target_tokens"])


@pytest.mark.slow
def test_resume_with_another_shard_count_is_refused(tmp_path, spm_path):
  """The count is saved with the checkpoint; a resume that changes it stops."""
  from cot_distill.train import checkpoints  # pylint: disable=g-import-not-at-top
  from cot_distill.train import trainer  # pylint: disable=g-import-not-at-top
  train_testing.register_tasks(spm_path)
  arguments = dict(
      model=train_testing.tiny_model(vocab_size=32128),
      mixture_or_task_name=train_testing.COT_TASK,
      task_feature_lengths=LENGTHS, batch_size=8, model_dir=str(tmp_path),
      partitioner=partitioning.Partitioner("data_parallel"), seed=3,
      checkpoint=checkpoints.CheckpointConfig(save_every_steps=1,
                                              async_save=False))
  with train_testing.fast_compilation():
    # Two shards on one host: the zipped, concatenated pipeline.
    result = trainer.train(train_steps=1, input_shards=2, **arguments)
  assert result.step == 1
  with pytest.raises(errors.UserError,
                     match=r"input_shards=2, this run reads input_shards=1"):
    trainer.train(train_steps=2, **arguments)
  with pytest.raises(errors.UserError, match="input_shards=4"):
    trainer.train(train_steps=2, input_shards=4, **arguments)
