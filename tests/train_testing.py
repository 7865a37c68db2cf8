"""Shared helpers for the trainer tests: a tiny real model, batches, tasks."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os

import jax
import numpy as np

from cot_distill.model.config import get_config
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import data
from cot_distill.train import state as state_lib

# A multiple of 8 and 128: splits evenly over every mesh the tests build.
VOCAB = 384
# Registered by cot_distill_tasks from the symbolic generator (no files).
COT_TASK = "cot_distill.coin_flip_gen.gold.cot"
# A data position for checkpoint tests that never read the task.
TOY_POSITION = data.DataPosition(
    mixture_or_task_name="toy", task_feature_lengths={"inputs": 16, "targets": 8},
    batch_size=8, seed=0, pack=False, steps_consumed=0)


def cli_flags(model_dir, train_steps: int, *, log_every_steps: int = 1,
              save_every_steps: int = 1000, extra: tuple[str, ...] = ()) -> list[str]:
  """`python -m cot_distill.train` flags for a tiny run of COT_TASK."""
  return [
      "--gin_file=gin/models/t5_1_1_tiny.gin",
      "--gin_file=gin/runs/finetune_cot.gin",
      f"--gin.MIXTURE_OR_TASK_NAME='{COT_TASK}'",
      f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.TRAIN_STEPS={train_steps}",
      "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}",
      "--gin.DROPOUT_RATE=0.1",
      f"--gin.LOG_EVERY_STEPS={log_every_steps}",
      f"--gin_bindings=checkpoints.CheckpointConfig.save_every_steps = {save_every_steps}",
      *extra,
  ]
ANSWER_ONLY_TASK = "cot_distill.coin_flip_gen.gold.answer_only"
EVAL_TASK = "cot_distill.eval.coin_flip_gen.test"


def require_eight_devices() -> None:
  """Sharding tests fail (never skip) without tests/conftest.py's 8 devices."""
  assert jax.device_count() == 8, (
      f"expected 8 fake CPU devices, got {jax.device_count()}: XLA_FLAGS must "
      "hold --xla_force_host_platform_device_count=8 before JAX is imported "
      "(tests/conftest.py sets it)")


@contextlib.contextmanager
def fast_compilation():
  """XLA without most optimisations: ~40% less compile time for tiny models.

  A JAX config option (not an XLA_FLAGS one), so it can be switched per test
  module and restored for the modules that run after.
  """
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


@contextlib.contextmanager
def compilation_cache(directory):
  """JAX's persistent compilation cache, so rerunning `train()` reuses programs."""
  names = ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  previous = {name: jax.config.values[name] for name in names}
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  try:
    yield
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)


def tiny_model(*, dtype: str = "float32", dropout_rate: float = 0.0,
               vocab_size: int = VOCAB) -> EncoderDecoderModel:
  """The real EncoderDecoderModel at T5X's t5_1_1 tiny dims."""
  return EncoderDecoderModel(get_config(
      "t5_1_1_tiny", vocab_size=vocab_size, dtype=dtype,
      dropout_rate=dropout_rate))


def random_batch(seed: int, batch_size: int = 8, input_length: int = 16,
                 target_length: int = 8, vocab: int = VOCAB
                 ) -> dict[str, np.ndarray]:
  """A teacher-forced unpacked batch with ragged (right-padded) rows."""
  rng = np.random.RandomState(seed)
  inputs = rng.randint(2, vocab, (batch_size, input_length)).astype(np.int32)
  targets = rng.randint(2, vocab, (batch_size, target_length)).astype(np.int32)
  for row in range(batch_size):
    inputs[row, rng.randint(3, input_length + 1):] = 0
    targets[row, rng.randint(2, target_length + 1):] = 0
  decoder_inputs = np.concatenate(
      [np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": decoder_inputs,
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.float32)}


def init_function(model: EncoderDecoderModel, batch_size: int = 8,
                  input_length: int = 16, target_length: int = 8):
  shapes = data.model_input_shapes(
      {"inputs": input_length, "targets": target_length}, batch_size,
      pack=False)
  return functools.partial(model.get_initial_variables, input_shapes=shapes)


def abstract_state(model, optimizer, **shape_kwargs):
  return state_lib.abstract_state_and_specs(
      init_function(model, **shape_kwargs), optimizer)


def compiled_step(model, optimizer, learning_rate, partitioner, params, *,
                  num_microbatches: int = 1):
  """(train state holding `params`, the trainer's compiled step, state shardings)."""
  from cot_distill.train import step as step_lib  # pylint: disable=import-outside-toplevel
  shapes, specs = abstract_state(model, optimizer)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  state = state_lib.create_train_state(
      init_function(model), optimizer, shardings, seed=0,
      initial_params=jax.device_put(params, shardings.params))
  train_step = step_lib.compile_train_step(
      loss_fn=model.loss_fn, optimizer=optimizer, learning_rate=learning_rate,
      partitioner=partitioner, state_shardings=shardings,
      num_microbatches=num_microbatches, dropout=False)
  return state, train_step, shardings


def register_tasks(spm_path) -> None:
  """Registers the real cot_distill tasks with the shared T5 vocabulary."""
  os.environ["COT_DISTILL_SPM_PATH"] = str(spm_path)
  registry = importlib.import_module("cot_distill_tasks")
  registry.registry.register_all()
