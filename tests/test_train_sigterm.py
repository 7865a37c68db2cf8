"""Preemption: `python -m cot_distill.train` killed with SIGTERM, then resumed.

The command is the documented one (gin files + T5X-style macro flags) on the
real coin-flip CoT task. SIGTERM must leave a complete checkpoint and exit
143; rerunning the same command must continue from it with the losses an
uninterrupted run has.
"""

from __future__ import annotations

import os
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

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(model_dir, train_steps: int) -> list[str]:
  return train_testing.cli_flags(model_dir, train_steps)


def _wait_for_step(model_dir, process, timeout: float = 400) -> None:
  deadline = time.monotonic() + timeout
  path = os.path.join(model_dir, metrics_writer.METRICS_FILE)
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise AssertionError(f"training exited early ({process.returncode}):\n"
                           + process.stdout.read()[-3000:])
    if os.path.exists(path) and os.path.getsize(path) > 0:
      return
    time.sleep(0.5)
  process.kill()
  raise AssertionError("no training step logged in time")


def _run_in_process(model_dir, train_steps: int) -> int:
  try:
    return train_command.main(_flags(model_dir, train_steps))
  finally:
    gin.clear_config()


@pytest.mark.slow
def test_sigterm_saves_and_the_rerun_continues_exactly(tmp_path, spm_path):
  train_testing.require_eight_devices()
  cache = tmp_path / "jax_cache"
  environment = dict(os.environ, COT_DISTILL_SPM_PATH=str(spm_path),
                     JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                     JAX_COMPILATION_CACHE_DIR=str(cache),
                     JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  preempted = tmp_path / "preempted"
  process = subprocess.Popen(
      [sys.executable, "-m", "cot_distill.train", *_flags(preempted, 1000)],
      cwd=REPO, env=environment, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  _wait_for_step(preempted, process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == train_command.PREEMPTED_EXIT_CODE, output[-3000:]
  assert "preempted: checkpoint at step" in output

  saved = sorted(int(name.split("_")[1]) for name in os.listdir(preempted)
                 if name.startswith("checkpoint_"))
  assert len(saved) == 1 and 1 <= saved[0] < 1000, os.listdir(preempted)
  step = saved[0]
  params, config, info = checkpoints.restore_params(str(preempted))
  assert info["step"] == step and config.dropout_rate == 0.1
  assert "trainer.train.train_steps = %TRAIN_STEPS" in (
      preempted / "config.gin").read_text()

  # Rerun (in this process, same flags and settings) to two steps further,
  # and compare with a run that was never interrupted.
  train_testing.register_tasks(spm_path)
  with train_testing.fast_compilation(), train_testing.compilation_cache(cache):
    assert _run_in_process(preempted, step + 2) == 0
    straight = tmp_path / "straight"
    assert _run_in_process(straight, step + 2) == 0
  resumed_losses = metrics_writer.read_metrics(str(preempted))
  straight_losses = metrics_writer.read_metrics(str(straight))
  for number in range(1, step + 3):
    assert (resumed_losses[number]["train/loss"]
            == straight_losses[number]["train/loss"]), number
  resumed, _, _ = checkpoints.restore_params(str(preempted))
  reference, _, _ = checkpoints.restore_params(str(straight))
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)
