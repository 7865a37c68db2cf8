"""Orbax checkpoints of a run, and the evaluator's way to read them back.

Layout of MODEL_DIR (T5X's, so T5X users find their way):

  MODEL_DIR/config.gin            operative gin config of the run
  MODEL_DIR/model_config.json     {"model": T5Config, "vocabulary", "task", ...}
  MODEL_DIR/checkpoint_<step>/    one orbax step: items `params`, `optimizer`
                                  (step, optimizer state, dropout key) and
                                  `data` (the stream's position, JSON)
  MODEL_DIR/metrics.jsonl, MODEL_DIR/train/ (TensorBoard)

Orbax writes a step into a temporary directory and renames it when complete,
so a step directory exists only whole; half-written ones (a killed save) are
never listed and are cleaned up on the next start. A complete-looking but
unreadable step (disk trouble, a hand-edited directory) is reported and the
previous step is used instead.

MODEL_DIR may be a local path or a URL (gs://...). Orbax handles both; our own
side files (model_config.json, config.gin, metrics.jsonl) go through
tf.io.gfile, because os/open on "gs://b/run" would quietly create a local
directory named "gs:".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from orbax.checkpoint import checkpoint_managers

from cot_distill.model.config import T5Config
from cot_distill.train.data import DataPosition
from cot_distill.train.state import TrainState

MODEL_CONFIG_FILE = "model_config.json"
STEP_PREFIX = "checkpoint"
ITEM_NAMES = ("params", "optimizer", "data")
_STEP_DIR = re.compile(rf"^{STEP_PREFIX}_(\d+)$")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save and what to keep.

  Attributes:
    save_every_steps: periodic save interval; the last step and a preemption
      (SIGTERM) always save too.
    keep_last: number of most recent checkpoints kept.
    best_metric: an eval metric name as logged (e.g.
      "eval/cot_distill.gsm8k.eval/accuracy"); the best checkpoint by it is
      kept in addition to the last ones. None keeps only the last ones.
    best_mode: "max" or "min" for best_metric.
    async_save: write in a background thread while training continues.
  """
  save_every_steps: int = 1000
  keep_last: int = 3
  best_metric: str | None = None
  best_mode: str = "max"
  async_save: bool = True

  def __post_init__(self):
    if self.best_mode not in ("max", "min"):
      raise ValueError(f"CheckpointConfig.best_mode must be 'max' or 'min', "
                       f"got {self.best_mode!r}")
    if self.keep_last < 1 or self.save_every_steps < 1:
      raise ValueError("CheckpointConfig.keep_last and save_every_steps must "
                       "be >= 1")


def _preservation_policy(config: CheckpointConfig):
  latest = checkpoint_managers.LatestN(n=config.keep_last)
  if config.best_metric is None:
    return latest
  metric = config.best_metric
  best = checkpoint_managers.BestN(
      get_metric_fn=lambda metrics: metrics[metric],
      reverse=config.best_mode == "min", n=1,
      keep_checkpoints_without_metrics=False)
  return checkpoint_managers.AnyPreservationPolicy([latest, best])


def _manager(model_dir: str, *, read_only: bool,
             config: CheckpointConfig | None = None) -> ocp.CheckpointManager:
  config = config or CheckpointConfig()
  options = ocp.CheckpointManagerOptions(
      step_prefix=STEP_PREFIX,
      preservation_policy=_preservation_policy(config),
      enable_async_checkpointing=config.async_save and not read_only,
      read_only=read_only,
      create=not read_only,
      cleanup_tmp_directories=not read_only)
  # Handlers named up front, so metadata can be read before any restore.
  handlers = {"params": ocp.StandardCheckpointHandler(),
              "optimizer": ocp.StandardCheckpointHandler(),
              "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(absolute_if_local(model_dir), options=options,
                               item_handlers=handlers)


class TrainCheckpointer:
  """Saves and restores a run's TrainState and data position."""

  def __init__(self, model_dir: str, config: CheckpointConfig):
    self.model_dir = model_dir
    self.config = config
    self._manager = _manager(model_dir, read_only=False, config=config)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, position: DataPosition,
           metrics: Mapping[str, float] | None = None) -> bool:
    """Starts saving (asynchronously); False if this step is already saved."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        optimizer=ocp.args.StandardSave(
            {"step": state.step, "opt_state": state.opt_state,
             "rng": state.rng}),
        data=ocp.args.JsonSave(position.to_dict()))
    metrics = None if metrics is None else {
        name: float(value) for name, value in metrics.items()}
    return self._manager.save(step, args=args, metrics=metrics, force=True)

  def restore(self, target: TrainState
              ) -> tuple[TrainState, DataPosition] | None:
    """The newest readable checkpoint restored onto `target`'s shardings.

    `target` holds ShapeDtypeStructs with shardings, so a run saved on one
    mesh restores onto another. None when there is no checkpoint at all.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for index, step in enumerate(steps):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target.params),
            optimizer=ocp.args.StandardRestore(
                {"step": target.step, "opt_state": target.opt_state,
                 "rng": target.rng}),
            data=ocp.args.JsonRestore()))
      except Exception as error:  # orbax raises many types for bad files.
        path = os.path.join(self.model_dir, f"{STEP_PREFIX}_{step}")
        message = (f"checkpoint {path} is unreadable ({type(error).__name__}: "
                   f"{str(error)[:500]})")
        failures.append(message)
        if index + 1 < len(steps):
          logging.error("%s; falling back to step %d", message, steps[index + 1])
        else:
          logging.error("%s; no earlier checkpoint to fall back to", message)
        continue
      optimizer = restored.optimizer
      state = TrainState(step=optimizer["step"], params=restored.params,
                         opt_state=optimizer["opt_state"], rng=optimizer["rng"])
      logging.info("restored checkpoint step %d from %s", step, self.model_dir)
      return state, DataPosition(**restored.data)
    if failures:
      raise RuntimeError(
          "no readable checkpoint in " + self.model_dir + ":\n  " +
          "\n  ".join(failures) + "\nmove the broken step directories away to "
          "start from scratch")
    return None

  def wait(self) -> None:
    """Blocks until the last save is on disk (before exiting)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def is_local_path(path: str) -> bool:
  """False for URLs (gs://, s3://, ...), which os and open() cannot handle."""
  return "://" not in str(path)


def absolute_if_local(path: str) -> str:
  """Orbax wants absolute local paths; a URL is left as it is."""
  return os.path.abspath(path) if is_local_path(path) else path


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to a temporary file then renames it over `path`.

  Readers never see half a file. Through tf.io.gfile so MODEL_DIR may be a
  URL; on object stores the rename is a copy + delete, still all-or-nothing
  for readers of `path`.
  """
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  temporary = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "w") as file:
    file.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json_atomic(path: str, value: Any) -> None:
  write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_model_config(model_dir: str, *, config: T5Config,
                       vocabulary: Mapping[str, Any],
                       mixture_or_task_name: str,
                       task_feature_lengths: Mapping[str, int]) -> None:
  """model_config.json: what an evaluator needs to rebuild the model."""
  tf.io.gfile.makedirs(model_dir)
  write_json_atomic(os.path.join(model_dir, MODEL_CONFIG_FILE), {
      "model": config.to_dict(),
      "vocabulary": dict(vocabulary),
      "task": mixture_or_task_name,
      "task_feature_lengths": dict(task_feature_lengths),
  })


def _resolve_checkpoint(path: str, step: int | None) -> tuple[str, int | None]:
  """(model_dir, step) from a MODEL_DIR or a MODEL_DIR/checkpoint_<n> path."""
  path = absolute_if_local(path).rstrip("/")
  match = _STEP_DIR.match(os.path.basename(path))
  if match and not tf.io.gfile.exists(os.path.join(path, MODEL_CONFIG_FILE)):
    if step is not None and step != int(match.group(1)):
      raise ValueError(f"restore_params: {path} is step {match.group(1)} but "
                       f"step={step} was asked for")
    return os.path.dirname(path), int(match.group(1))
  return path, step


def restore_params(path: str, step: int | None = None, *,
                   sharding: Callable[[Any], Any] | None = None
                   ) -> tuple[Any, T5Config, dict[str, Any]]:
  """(params, T5Config, info) of a trained run, for evaluation and export.

  Args:
    path: a MODEL_DIR, or one of its `checkpoint_<step>` directories.
    step: which step; default the newest (or the one `path` names).
    sharding: maps a parameter's ShapeDtypeStruct to its jax Sharding;
      default: whole arrays on the first local device.

  `info` has step, model_dir, checkpoint_path, vocabulary ({spm_path,
  extra_ids}), task and task_feature_lengths from model_config.json.
  """
  model_dir, step = _resolve_checkpoint(path, step)
  config_path = os.path.join(model_dir, MODEL_CONFIG_FILE)
  if not tf.io.gfile.exists(config_path):
    raise FileNotFoundError(f"restore_params: {config_path} not found; is "
                            f"{path} a cot-distill MODEL_DIR?")
  with tf.io.gfile.GFile(config_path, "r") as file:
    model_config = json.load(file)
  manager = _manager(model_dir, read_only=True)
  try:
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise FileNotFoundError(f"restore_params: no checkpoint in {model_dir}")
    if step not in manager.all_steps():
      raise FileNotFoundError(
          f"restore_params: no checkpoint step {step} in {model_dir} "
          f"(have {sorted(manager.all_steps())})")
    metadata = manager.item_metadata(step)["params"]
    if metadata is None:
      raise FileNotFoundError(f"restore_params: step {step} in {model_dir} "
                              "has no params metadata (not a cot-distill "
                              "checkpoint, or damaged)")
    if sharding is None:
      device = jax.local_devices()[0]
      sharding = lambda _: jax.sharding.SingleDeviceSharding(device)
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype,
            sharding=sharding(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))),
        metadata.tree if hasattr(metadata, "tree") else metadata)
    params = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target))).params
  finally:
    manager.close()
  info = {
      "step": step,
      "model_dir": model_dir,
      "checkpoint_path": os.path.join(model_dir, f"{STEP_PREFIX}_{step}"),
      "vocabulary": model_config.get("vocabulary"),
      "task": model_config.get("task"),
      "task_feature_lengths": model_config.get("task_feature_lengths"),
  }
  return params, T5Config.from_dict(model_config["model"]), info
