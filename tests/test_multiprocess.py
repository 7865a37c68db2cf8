"""The pod-slice code path on CPU: two JAX processes train through the normal
entry point and match one process with the same eight devices.

Two `python -m cot_distill.train` processes join over loopback
(`--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=i`, the
trainer's multi-host flags; JAX 0.10's default CPU collectives, gloo, carry
the cross-process traffic), each with 4 fake CPU devices. A third process
runs the same command alone with 8 devices. Two layouts:

- 1 data x 8 model (model_parallel.gin, NUM_PARTITIONS=8): the model axis
  spans both processes, as the model axis of a v4-32 run spans two hosts
  (gin/partitioning/slices/v4_32.gin): every layer's sharded matmuls, the
  vocabulary-sharded cross-entropy, sharded initialisation and the
  multi-process Orbax checkpoint cross the process boundary. Both processes
  hold every batch row, so both read the whole stream.
- 8 data x 1 model (data_parallel.gin): the data axis spans the processes,
  the path of every pod run. Each process reads only the input shard of its
  4 rows and `make_array_from_process_local_data` assembles the global
  batch; the gradient all-reduce crosses the processes. The run binds
  `trainer.train.input_shards = 2`, so the single process reads both shards
  and its global batches are the same rows in the same order
  (`input_shards.py`); without that its default, one shard, would give a
  different stream and no loss could match.

Losses, gradient norms and the final checkpoint's parameters must agree to
float rounding.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 3
TRAIN_FLAGS = (
    "--gin_file=gin/models/t5_1_1_tiny.gin",
    "--gin_file=gin/runs/finetune_cot.gin",
    "--gin.MIXTURE_OR_TASK_NAME='cot_distill.coin_flip_gen.gold.cot'",
    f"--gin.TRAIN_STEPS={STEPS}",
    "--gin.BATCH_SIZE=8",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}",
    "--gin_bindings=trainer.train.log_every_steps = 1",
    # float32 activations: with bfloat16 ones, a different summation order in
    # a cross-process reduction flips roundings and the runs drift by ~1e-4.
    "--gin_bindings=config.get_config.dtype = 'float32'",
)
MODEL_AXIS_ACROSS_PROCESSES = ("--gin_file=gin/partitioning/model_parallel.gin",
                               "--gin.NUM_PARTITIONS=8")
DATA_AXIS_ACROSS_PROCESSES = ("--gin_file=gin/partitioning/data_parallel.gin",
                              "--gin_bindings=trainer.train.input_shards = 2")
SINGLE, FIRST, SECOND = ("single (8 devices)", "process 0 (4 devices)",
                         "process 1 (4 devices)")
# Compile fast: the test checks agreement, not speed.
XLA_COMPILE_FAST = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
TIMEOUT_SECONDS = 600


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _environment(devices: int, spm_path: pathlib.Path) -> dict[str, str]:
  environment = {key: value for key, value in os.environ.items()
                 if not key.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                                        "JAX_PROCESS_ID", "TPU_", "SLURM_"))}
  environment.update(
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {XLA_COMPILE_FAST}",
      JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
      COT_DISTILL_SPM_PATH=str(spm_path))
  return environment


def _train_metrics(model_dir: pathlib.Path) -> dict[int, dict[str, float]]:
  """{step: record} from metrics.jsonl (the last record per step wins)."""
  records = {}
  for line in (model_dir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "train/loss" in record:
      records[record["step"]] = record
  return records


def _train_single_and_together(tmp_path, spm_path, layout_flags
                               ) -> tuple[pathlib.Path, pathlib.Path, dict[str, str]]:
  """One 8-device run and one 2 x 4-device run; (dirs..., {run: its log})."""
  single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
  coordinator = f"--coordinator_address=127.0.0.1:{_free_port()}"
  runs = {
      SINGLE: (single_dir, 8, ()),
      FIRST: (multi_dir, 4, (coordinator, "--num_processes=2", "--process_id=0")),
      SECOND: (multi_dir, 4, (coordinator, "--num_processes=2", "--process_id=1")),
  }
  processes, logs = {}, {}
  for name, (model_dir, devices, extra) in runs.items():
    logs[name] = tmp_path / (name.split(" (")[0].replace(" ", "_") + ".log")
    with logs[name].open("w") as log:
      processes[name] = subprocess.Popen(
          [sys.executable, "-m", "cot_distill.train", *TRAIN_FLAGS,
           *layout_flags, f"--gin.MODEL_DIR='{model_dir}'", *extra],
          cwd=REPO, env=_environment(devices, spm_path), stdout=log,
          stderr=subprocess.STDOUT)
  failures = []
  for name, process in processes.items():
    try:
      process.wait(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    if process.returncode != 0:
      tail = "\n".join(logs[name].read_text(errors="replace").splitlines()[-30:])
      failures.append(f"{name} exited {process.returncode}:\n{tail}")
  assert not failures, "\n\n".join(failures)
  texts = {name: log.read_text(errors="replace") for name, log in logs.items()}
  # The two processes really formed one 2-process, 8-device run.
  for name in (FIRST, SECOND):
    assert "joining 2 processes at 127.0.0.1" in texts[name]
  return single_dir, multi_dir, texts


def _assert_same_training(single_dir: pathlib.Path, multi_dir: pathlib.Path) -> None:
  """Equal losses and gradient norms at every step, and equal final params."""
  single, multi = _train_metrics(single_dir), _train_metrics(multi_dir)
  assert sorted(single) == sorted(multi) == list(range(1, STEPS + 1))
  for key in ("train/loss", "train/loss_per_token", "train/grad_norm", "train/z_loss"):
    single_values = [single[step][key] for step in sorted(single)]
    multi_values = [multi[step][key] for step in sorted(multi)]
    np.testing.assert_allclose(multi_values, single_values, rtol=1e-5, err_msg=key)
  losses = [single[step]["train/loss"] for step in sorted(single)]
  assert len(set(losses)) == STEPS, f"the loss should change as the model trains: {losses}"

  # The checkpoint both processes wrote together holds the same parameters.
  from cot_distill.train import checkpoints  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  single_params, _, single_info = checkpoints.restore_params(str(single_dir))
  multi_params, _, multi_info = checkpoints.restore_params(str(multi_dir))
  assert single_info["step"] == multi_info["step"] == STEPS
  flat_single = jax.tree_util.tree_leaves_with_path(single_params)
  flat_multi = dict(jax.tree_util.tree_leaves_with_path(multi_params))
  assert len(flat_single) == len(flat_multi)
  for path, value in flat_single:
    np.testing.assert_allclose(np.asarray(flat_multi[path]), np.asarray(value),
                               rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(tmp_path, spm_path):
  single_dir, multi_dir, logs = _train_single_and_together(
      tmp_path, spm_path, MODEL_AXIS_ACROSS_PROCESSES)
  # Both processes hold every row (1 data x 8 model), so both read it all.
  for name in (SINGLE, FIRST, SECOND):
    assert "reads input shards [0] of 1 (8 rows each" in logs[name], name
  _assert_same_training(single_dir, multi_dir)


@pytest.mark.slow
def test_data_axis_across_processes_matches_one_process(tmp_path, spm_path):
  single_dir, multi_dir, logs = _train_single_and_together(
      tmp_path, spm_path, DATA_AXIS_ACROSS_PROCESSES)
  # Each process reads only its own half of every global batch; the single
  # process reads both halves. (That the halves differ is checked in
  # tests/test_train_data.py on the same task.)
  assert "process 0 reads input shards [0] of 2 (4 rows each" in logs[FIRST]
  assert "process 1 reads input shards [1] of 2 (4 rows each" in logs[SECOND]
  assert "process 0 reads input shards [0, 1] of 2 (4 rows each" in logs[SINGLE]
  _assert_same_training(single_dir, multi_dir)
