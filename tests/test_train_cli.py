"""`cot-distill train` / `python -m cot_distill.train` flags and multi-host set-up."""

from __future__ import annotations

import jax
import pytest

from cot_distill import cli
from cot_distill import errors
from cot_distill.commands import train as train_command
from cot_distill.train import multihost


def test_cli_accepts_t5x_style_gin_macro_flags():
  args = cli.build_parser().parse_args([
      "train", "--gin_file=gin/models/t5_1_1_tiny.gin",
      "--gin_file=gin/runs/finetune_cot.gin",
      "--gin.MODEL_DIR='/tmp/x'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 8}",
      "--gin_bindings=trainer.train.seed = 4",
      "--coordinator_address=10.0.0.1:1234", "--num_processes=2",
      "--process_id=1"])
  assert args.func is train_command.run
  assert args.gin_file == ["gin/models/t5_1_1_tiny.gin",
                           "gin/runs/finetune_cot.gin"]
  assert train_command.macro_bindings(args.gin_macro_flags) == [
      "MODEL_DIR = '/tmp/x'", "TASK_FEATURE_LENGTHS = {'inputs': 8}"]
  assert args.gin_bindings == ["trainer.train.seed = 4"]
  assert (args.coordinator_address, args.num_processes, args.process_id) == (
      "10.0.0.1:1234", 2, 1)


def test_module_entry_has_the_same_flags():
  parser = train_command.GinFlagParser()
  train_command.add_arguments(parser)
  args = parser.parse_args(["--gin_file=a.gin", "--gin.TRAIN_STEPS=3"])
  assert args.gin_file == ["a.gin"] and args.gin_macro_flags == ["--gin.TRAIN_STEPS=3"]
  with pytest.raises(ValueError, match="--gin.NAME=VALUE"):
    train_command.macro_bindings(["--gin.TRAIN_STEPS"])
  with pytest.raises(SystemExit):
    parser.parse_args(["--not_a_flag=1"])


def test_run_without_gin_files_says_what_to_give():
  parser = train_command.GinFlagParser()
  train_command.add_arguments(parser)
  with pytest.raises(errors.UserError, match="--gin_file"):
    train_command.run(parser.parse_args([]))


@pytest.fixture
def initialize_calls(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda **kwargs: calls.append(kwargs))
  return calls


def test_single_host_does_not_initialize(initialize_calls):
  assert multihost.initialize(environ={}) is False
  assert initialize_calls == []


def test_explicit_flags_and_environment_reach_jax(initialize_calls):
  assert multihost.initialize("host0:1234", 2, 1, environ={})
  assert multihost.initialize(environ={"JAX_COORDINATOR_ADDRESS": "h:1",
                                       "JAX_NUM_PROCESSES": "4",
                                       "JAX_PROCESS_ID": "3"})
  assert initialize_calls == [
      {"coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1},
      {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}]
  with pytest.raises(ValueError, match="together"):
    multihost.initialize("host0:1234", None, 0, environ={})


def test_tpu_pod_uses_jax_cluster_detection(initialize_calls):
  assert multihost.initialize(environ={"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"})
  assert multihost.initialize(environ={"TPU_WORKER_HOSTNAMES": "w0"}) is False
  assert initialize_calls == [{}]


@pytest.mark.slow
def test_bench_train_runs_and_prints_same_run_ratios(capsys):
  """The benchmark end to end at toy size (its figures are not asserted)."""
  status = cli.main(["bench", "train", "--model", "t5_1_1_tiny", "--batch-size", "8",
                     "--input-length", "8", "--target-length", "8", "--steps", "2",
                     "--warmup", "1", "--precisions", "float32,bfloat16",
                     "--hf-compile", "", "--peak-size", "256"])
  output = capsys.readouterr().out
  assert status == 0
  for row in ("ours adafactor float32", "ours adamw bfloat16 ", "HF adamw float32",
              "HF adafactor bf16-autocast", "fast-paths-off", "T5X trainer"):
    assert row in output
  assert "(64 target tokens/step)" in output
  assert "host memory: " in output  # the policy in effect is printed


_DISPATCH_PROBE = """
import contextlib, json, sys
from cot_distill import cpu_runtime
from cot_distill.commands import train

@contextlib.contextmanager
def report_and_stop():
  import jax
  print(json.dumps({"async": jax.config.values["jax_cpu_enable_async_dispatch"]}))
  raise SystemExit(0)
  yield  # pragma: no cover

cpu_runtime.retained_memory = report_and_stop  # stops before any training
train.main(sys.argv[1:])
"""


@pytest.mark.parametrize("setting, asynchronous", [("auto", False), ("off", True)])
def test_dispatch_mode_follows_the_gin_fast_paths_setting(tmp_path, setting, asynchronous):
  """`cpu_fast_paths=off` in gin means no CPU-only process settings at all:
  the entry point reads gin before it chooses JAX's dispatch mode."""
  import json
  import os
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu"}
  env.pop("COT_DISTILL_RETAIN_HOST_MEMORY", None)
  result = subprocess.run(
      [sys.executable, "-c", _DISPATCH_PROBE,
       "--gin_file=gin/models/t5_1_1_tiny.gin", "--gin_file=gin/runs/finetune_cot.gin",
       f"--gin.MODEL_DIR='{tmp_path}'",
       "--gin.MIXTURE_OR_TASK_NAME='cot_distill.coin_flip_gen.gold.cot'",
       f"--gin_bindings=fast_paths.setting.cpu_fast_paths = '{setting}'"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  probe = json.loads(result.stdout.strip().splitlines()[-1])
  assert probe == {"async": asynchronous}
