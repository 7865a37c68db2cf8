"""The training loop on a real registered CoT task with the real T5 model.

`train()` is called directly (no gin). The task is cot_distill's coin-flip
CoT task over generated examples, read with the shared T5 vocabulary.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import numpy as np
import pytest

from cot_distill.train import checkpoints
from cot_distill.train import inference
from cot_distill.train import metrics_writer
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import trainer

import train_testing

LENGTHS = {"inputs": 64, "targets": 64}
STEPS = 16


@pytest.fixture(autouse=True, scope="module")
def _setup(spm_path, tmp_path_factory):
  train_testing.require_eight_devices()
  train_testing.register_tasks(spm_path)
  with train_testing.fast_compilation(), train_testing.compilation_cache(
      tmp_path_factory.mktemp("jax_cache")):
    yield


def _train(model_dir, *, train_steps, dropout_rate=0.0, **overrides):
  arguments = dict(
      model=train_testing.tiny_model(dtype="bfloat16",
                                     dropout_rate=dropout_rate,
                                     vocab_size=32128),
      mixture_or_task_name=train_testing.COT_TASK,
      task_feature_lengths=LENGTHS, train_steps=train_steps, batch_size=8,
      model_dir=str(model_dir), partitioner=partitioning.Partitioner("fsdp"),
      optimizer=optimizers.adafactor, learning_rate=1e-2, seed=3,
      checkpoint=checkpoints.CheckpointConfig(save_every_steps=3),
      log_every_steps=1)
  arguments.update(overrides)
  return trainer.train(**arguments)


def _losses(model_dir) -> dict[int, float]:
  return {step: values["train/loss"]
          for step, values in metrics_writer.read_metrics(str(model_dir)).items()
          if "train/loss" in values}


@pytest.mark.slow
def test_loss_falls_and_everything_is_written(tmp_path):
  evaluation = inference.EvaluationConfig(
      mixture_or_task_name=train_testing.EVAL_TASK, every_steps=100,
      split="test", num_examples=8, batch_size=8)
  result = _train(tmp_path, train_steps=STEPS, evaluation=evaluation,
                  peak_flops_per_device=1e12, learning_rate=3e-2)
  assert result.step == STEPS and not result.preempted
  records = metrics_writer.read_metrics(str(tmp_path))
  per_token = [records[step]["train/loss_per_token"]
               for step in range(1, STEPS + 1)]
  # From ~ln(32128) = 10.4 nats towards the task's token statistics.
  assert per_token[0] > 9.0
  assert np.mean(per_token[-4:]) < per_token[0] - 2.0, per_token
  last = records[STEPS]
  for name in ("train/accuracy", "train/learning_rate", "train/grad_norm",
               "timing/seconds_per_step", "timing/tokens_per_second",
               "timing/mfu"):
    assert name in last, name
  assert last["train/learning_rate"] == pytest.approx(3e-2)
  assert 0 < last["timing/mfu"] < 1
  # The eval ran after the last step and was scored by the task's metrics.
  accuracy = f"eval/{train_testing.EVAL_TASK}/accuracy"
  assert accuracy in last and 0.0 <= last[accuracy] <= 100.0
  assert result.eval_metrics[accuracy] == last[accuracy]
  assert glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))
  with open(tmp_path / "model_config.json", encoding="utf-8") as file:
    model_config = json.load(file)
  assert model_config["task"] == train_testing.COT_TASK
  assert model_config["vocabulary"]["extra_ids"] == 100
  assert model_config["model"]["emb_dim"] == 8
  assert {"data", "optimizer", "params"} <= set(
      os.listdir(tmp_path / f"checkpoint_{STEPS}"))


@pytest.mark.slow
def test_interrupted_run_resumes_with_identical_losses(tmp_path):
  """3 steps, stop, rerun to 6 == 6 straight; with dropout, so RNG counts."""
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  _train(straight, train_steps=6, dropout_rate=0.1)
  _train(interrupted, train_steps=3, dropout_rate=0.1)
  assert _losses(interrupted).keys() == {1, 2, 3}
  result = _train(interrupted, train_steps=6, dropout_rate=0.1)
  assert result.step == 6
  expected, resumed = _losses(straight), _losses(interrupted)
  assert resumed == expected  # exactly, every step
  assert len(set(expected.values())) == 6  # the steps really differ
  straight_params, _, _ = checkpoints.restore_params(str(straight))
  resumed_params, _, _ = checkpoints.restore_params(str(interrupted))
  for a, b in zip(jax.tree.leaves(straight_params),
                  jax.tree.leaves(resumed_params)):
    np.testing.assert_array_equal(a, b)
