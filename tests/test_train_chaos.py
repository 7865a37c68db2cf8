"""Training runs killed and corrupted at random end right or refuse (issue 14).

One tiny run, the documented command (`python -m cot_distill.train` with
gin files and macro flags), trained straight to its last step once for
reference. Then, seeded: runs killed with SIGTERM or SIGKILL at a random
moment, and copies of a half-trained MODEL_DIR with one random file of a
random checkpoint truncated or one byte flipped, are resumed with the same
command. Every trial must end with the reference run's last loss and
parameters bit for bit, or with a refusal (exit 2, one paragraph); never
with a different state. The same module checks the trainer's other
failure cases: another model in an existing MODEL_DIR is refused before
anything is written, a finished run says so, and a NaN loss stops the run
without saving.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

from cot_distill.commands import train as train_command
from cot_distill.train import checkpoints
from cot_distill.train import metrics_writer
from cot_distill.train import trainer

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _flags(model_dir, train_steps: int = STEPS, *extra: str) -> list[str]:
  return train_testing.cli_flags(model_dir, train_steps, save_every_steps=2, extra=extra)


def _train(model_dir, train_steps: int = STEPS, *extra: str) -> int:
  try:
    return train_command.main(_flags(model_dir, train_steps, *extra))
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def env(spm_path, tmp_path_factory):
  train_testing.require_eight_devices()
  train_testing.register_tasks(spm_path)
  cache = tmp_path_factory.mktemp("jax_cache")
  root = tmp_path_factory.mktemp("chaos")
  with train_testing.fast_compilation(), train_testing.compilation_cache(cache):
    assert _train(root / "straight") == 0
    assert _train(root / "half", 4) == 0  # checkpoints 2 and 4
    yield {"root": root, "cache": cache, "spm": spm_path,
           "reference": _final(root / "straight")}


def _final(model_dir):
  loss = metrics_writer.read_metrics(str(model_dir))[STEPS]["train/loss"]
  params, _, info = checkpoints.restore_params(str(model_dir))
  assert info["step"] == STEPS
  return loss, jax.device_get(params)


def _same_as_reference(model_dir, reference) -> bool:
  loss, params = _final(model_dir)
  return loss == reference[0] and all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                           jax.tree.leaves(reference[1])))


def _kill_subprocess_run(env, model_dir, rng) -> None:
  """Starts the run in a subprocess and kills it at a random moment."""
  environment = dict(os.environ, COT_DISTILL_SPM_PATH=str(env["spm"]),
                     JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                     JAX_COMPILATION_CACHE_DIR=str(env["cache"]),
                     JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  process = subprocess.Popen(
      [sys.executable, "-m", "cot_distill.train", *_flags(model_dir)],
      cwd=REPO, env=environment, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  lines_wanted = rng.randint(1, STEPS - 1)
  metrics = os.path.join(model_dir, metrics_writer.METRICS_FILE)
  deadline = time.monotonic() + 300
  while process.poll() is None and time.monotonic() < deadline:
    if os.path.exists(metrics):
      with open(metrics, encoding="utf-8") as file:
        if sum(1 for _ in file) >= lines_wanted:
          break
    time.sleep(0.05)
  time.sleep(rng.uniform(0.0, 0.4))
  if process.poll() is None:
    process.send_signal(rng.choice([signal.SIGTERM, signal.SIGKILL]))
  process.wait(timeout=300)


def _corrupt_random_file(model_dir, rng) -> str:
  files = sorted(
      os.path.join(root, name)
      for step in os.listdir(model_dir) if step.startswith("checkpoint_")
      for root, _, names in os.walk(os.path.join(model_dir, step))
      for name in names)
  path = rng.choice(files)
  size = os.path.getsize(path)
  if rng.random() < 0.5 or size == 0:
    os.truncate(path, rng.randrange(size) if size else 0)
    return f"truncated {os.path.relpath(path, model_dir)}"
  offset = rng.randrange(size)
  with open(path, "r+b") as file:
    file.seek(offset)
    byte = file.read(1)[0]
    file.seek(offset)
    file.write(bytes([byte ^ (1 << rng.randrange(8))]))
  return f"flipped a bit at byte {offset} of {os.path.relpath(path, model_dir)}"


@pytest.mark.slow
def test_killed_and_corrupted_runs_end_exactly_or_refuse(env):
  rng = random.Random(14)
  outcomes = []
  with train_testing.fast_compilation(), train_testing.compilation_cache(
      env["cache"]):
    for trial in range(11):
      model_dir = env["root"] / f"trial_{trial}"
      if trial < 3:
        _kill_subprocess_run(env, model_dir, rng)
        what = "killed"
      else:
        shutil.copytree(env["root"] / "half", model_dir)
        what = _corrupt_random_file(model_dir, rng)
      code = _train(model_dir)
      if code == 0:
        assert _same_as_reference(model_dir, env["reference"]), (trial, what)
        outcomes.append("exact")
      else:
        assert code == 2, (trial, what, code)  # a one-paragraph refusal
        outcomes.append("refused")
  assert outcomes.count("exact") >= 6, outcomes


@pytest.mark.slow
def test_another_model_in_the_model_dir_is_refused_before_writing(env, capsys):
  model_dir = env["root"] / "straight"
  before = {name: (model_dir / name).read_bytes()
            for name in ("model_config.json", "config.gin",
                         "sentencepiece.model")}
  code = _train(model_dir, STEPS + 2, "--gin_bindings=config.get_config.emb_dim = 16")
  message = capsys.readouterr().err
  assert code == 2
  assert "emb_dim: checkpoint 8, config 16" in message
  assert "new MODEL_DIR" in message
  assert "delete" not in message.lower() and "move" not in message.lower()
  for name, content in before.items():
    assert (model_dir / name).read_bytes() == content, name
  assert _same_as_reference(model_dir, env["reference"])


@pytest.mark.slow
def test_a_finished_run_says_so(env, caplog):
  model_dir = env["root"] / "straight"
  config_time = os.path.getmtime(model_dir / "config.gin")
  with caplog.at_level(logging.INFO):
    assert _train(model_dir) == 0
  printed = caplog.text
  assert "is already finished" in printed, printed[-2000:]
  assert "training steps 7..6" not in printed
  assert os.path.getmtime(model_dir / "config.gin") == config_time


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_nothing_bad_is_saved(env, caplog):
  model_dir = env["root"] / "nan"
  # A NaN learning rate from step 3 on: step 4's update makes the params NaN.
  with caplog.at_level(logging.INFO):
    with pytest.raises(trainer.NonFiniteLossError, match="stopped at step 5"):
      trainer.train(
          model=train_testing.tiny_model(vocab_size=32128),
          mixture_or_task_name=train_testing.COT_TASK,
          task_feature_lengths={"inputs": 64, "targets": 64}, train_steps=STEPS,
          batch_size=8, model_dir=str(model_dir), log_every_steps=1,
          learning_rate=lambda step: jax.numpy.where(step >= 3, np.nan, 1e-3),
          checkpoint=checkpoints.CheckpointConfig(save_every_steps=3))
  assert sorted(n for n in os.listdir(model_dir) if n.startswith("checkpoint")) == [
      "checkpoint_3"]
  assert any("compiling the train step" in r.getMessage() for r in caplog.records)
  assert any(r.getMessage().startswith("step 2/6 (33%): loss ")
             and "ETA" in r.getMessage() for r in caplog.records)


def test_default_log_interval_suits_short_runs():
  assert trainer.default_log_every_steps(20) == 2
  assert trainer.default_log_every_steps(5) == 1
  assert trainer.default_log_every_steps(100000) == 100
