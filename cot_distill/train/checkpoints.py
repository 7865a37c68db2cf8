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
never listed and are cleaned up on the next start.

Orbax does not notice a step damaged after it was written (disk trouble, a
hand-edited file), so each step also holds `integrity/integrity.json`
(`integrity.py`): every array's shape, dtype and checksum. On restore the
trainer checks what it read against it; a step that is unreadable or
differs is renamed `checkpoint_<step>.broken` with a BROKEN.txt saying why
(never deleted, never listed as a step again), and the previous step is
used, so the retrained step is saved under its own number. A state holding
NaN or Inf is never saved. The evaluator's `restore_params` checks the same
manifest and refuses a damaged step with a one-paragraph error.

MODEL_DIR may be a local path or a URL (gs://...). Orbax handles both; our own
side files (model_config.json, config.gin, metrics.jsonl) go through
tf.io.gfile, because os/open on "gs://b/run" would quietly create a local
directory named "gs:".
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import sys
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from orbax.checkpoint import checkpoint_managers

from cot_distill import errors
from cot_distill.model.config import T5Config
from cot_distill.train import integrity
from cot_distill.train.data import DataPosition
from cot_distill.train.state import TrainState

MODEL_CONFIG_FILE = "model_config.json"
STEP_PREFIX = "checkpoint"
ITEM_NAMES = ("params", "optimizer", "data", integrity.ITEM_NAME)
BROKEN_SUFFIX = ".broken"
BROKEN_REASON_FILE = "BROKEN.txt"
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
              "data": ocp.JsonCheckpointHandler(),
              integrity.ITEM_NAME: integrity.IntegrityHandler()}
  return ocp.CheckpointManager(absolute_if_local(model_dir), options=options,
                               item_handlers=handlers)


class BrokenCheckpointError(errors.UserError):
  """A checkpoint that cannot be read back as it was written."""


class NonFiniteStateError(errors.UserError):
  """The train state holds NaN or Inf: it is not saved."""


class _Unusable(Exception):
  """Internal: why one step cannot be restored (it is then moved aside)."""


def step_path(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f"{STEP_PREFIX}_{step}")


def move_aside(model_dir: str, step: int, reason: str) -> str:
  """Renames checkpoint_<step> to checkpoint_<step>.broken[-n] with a reason.

  Never deletes: the files stay for inspection (or recovery by hand), but no
  reader lists them as a step again, and the step's number is free for a
  retrained checkpoint. Returns the new path.
  """
  source = step_path(model_dir, step)
  target = source + BROKEN_SUFFIX
  number = 1
  while tf.io.gfile.exists(target):
    number += 1
    target = f"{source}{BROKEN_SUFFIX}-{number}"
  tf.io.gfile.rename(source, target)
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  with tf.io.gfile.GFile(os.path.join(target, BROKEN_REASON_FILE), "w") as file:
    file.write(f"{stamp}: moved aside from {source} by cot-distill train, "
               f"because it did not restore as saved:\n{reason}\n")
  return target


def _ignore_abandoned_reads() -> None:
  """Silences the noise a failed orbax restore leaves behind.

  When one array of a restore fails, orbax abandons the other reads and
  closes its event loop; TensorStore's callbacks for those reads then end,
  possibly much later at garbage collection, in `RuntimeError: Event loop is
  closed`, which Python prints as an "Exception ignored" traceback, one per
  array (98 of them above the one useful message, in issue 14). Installed
  once a restore has failed, this hook drops exactly those and passes
  everything else on.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_cot_distill_filter", False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    previous(unraisable)

  hook._cot_distill_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _short(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:300]}"


class TrainCheckpointer:
  """Saves and restores a run's TrainState and data position, verified.

  Every save carries an integrity manifest (`integrity.py`: per-array shape,
  dtype and checksum); a state holding NaN or Inf is refused before anything
  is written. A restore checks what it read against the manifest; a step
  that fails is moved aside (`move_aside`) and the previous one is tried.
  """

  def __init__(self, model_dir: str, config: CheckpointConfig):
    self.model_dir = model_dir
    self.config = config
    self._manager = _manager(model_dir, read_only=False, config=config)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, position: DataPosition,
           metrics: Mapping[str, float] | None = None) -> bool:
    """Starts saving (asynchronously); False if this step is already saved.

    Raises NonFiniteStateError (nothing written) if any floating array of
    the state holds NaN or Inf.
    """
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False
    items = integrity.state_items(state)
    nonfinite = integrity.nonfinite_arrays(items)
    if nonfinite:
      raise NonFiniteStateError(
          f"the train state at step {step} holds NaN or Inf in "
          f"{len(nonfinite)} array(s) ({', '.join(nonfinite[:3])}"
          f"{', ...' if len(nonfinite) > 3 else ''}); it was not saved, and "
          f"the last checkpoint in {self.model_dir} is untouched")
    position_dict = position.to_dict()
    layout = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          items)
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        optimizer=ocp.args.StandardSave(items["optimizer"]),
        data=ocp.args.JsonSave(position_dict),
        integrity=integrity.IntegritySave(integrity.PendingManifest(
            layout, integrity.digests(items), position_dict)))
    metrics = None if metrics is None else {
        name: float(value) for name, value in metrics.items()}
    return self._manager.save(step, args=args, metrics=metrics, force=True)

  def _read_manifest(self, step: int) -> dict[str, Any] | None:
    """The step's integrity.json; None for steps saved before manifests."""
    path = os.path.join(step_path(self.model_dir, step),
                        integrity.ITEM_NAME, integrity.FILE_NAME)
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path, "r") as file:
      text = file.read()
    try:
      return json.loads(text)
    except json.JSONDecodeError as error:
      raise _Unusable(f"{integrity.ITEM_NAME}/{integrity.FILE_NAME} is not "
                      f"JSON ({error})") from None

  def stored_layouts(self) -> dict[int, dict[str, tuple[tuple[int, ...], str]]]:
    """{step: {array: (shape, dtype)}} from the manifests that can be read."""
    layouts = {}
    for step in self.all_steps():
      try:
        manifest = self._read_manifest(step)
      except (_Unusable, OSError, tf.errors.OpError):
        continue
      if manifest and isinstance(manifest.get("arrays"), dict):
        try:
          layouts[step] = {
              name: (tuple(entry["shape"]), entry["dtype"])
              for name, entry in manifest["arrays"].items()}
        except (KeyError, TypeError):
          continue
    return layouts

  def layout_differences(self, target: TrainState) -> list[str]:
    """How the saved steps' arrays differ from `target`'s, if none fits.

    Empty when there is no readable manifest or one of them has exactly
    `target`'s arrays (then a step that differs is damaged, and restore
    moves it aside). Otherwise the run's configuration (model, optimizer)
    differs from the one that wrote MODEL_DIR, and each line names an array:
    `optimizer/opt_state/0/mu/...: checkpoint float32[8, 16], config absent`.
    """
    layouts = self.stored_layouts()
    expected = integrity.layout(integrity.state_items(target))
    if not layouts or any(layout == expected for layout in layouts.values()):
      return []
    newest = layouts[max(layouts)]
    describe = lambda entry: ("absent" if entry is None
                              else f"{entry[1]}{list(entry[0])}")
    return [f"{name}: checkpoint {describe(newest.get(name))}, config "
            f"{describe(expected.get(name))}"
            for name in sorted(set(newest) | set(expected))
            if newest.get(name) != expected.get(name)]

  def _restore_step(self, step: int, target: TrainState
                    ) -> tuple[TrainState, DataPosition]:
    """One step, read and verified; _Unusable says why not."""
    try:
      manifest = self._read_manifest(step)
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(target.params),
          optimizer=ocp.args.StandardRestore(
              {"step": target.step, "opt_state": target.opt_state,
               "rng": target.rng}),
          data=ocp.args.JsonRestore()))
      position = DataPosition(**restored.data)
    except _Unusable:
      raise
    except Exception as error:  # orbax raises many types for bad files.
      _ignore_abandoned_reads()
      raise _Unusable(f"unreadable ({_short(error)})") from None
    optimizer = restored.optimizer
    state = TrainState(step=optimizer["step"], params=restored.params,
                       opt_state=optimizer["opt_state"], rng=optimizer["rng"])
    items = integrity.state_items(state)
    if manifest is None:
      found = [f"{name}: holds NaN or Inf"
               for name in integrity.nonfinite_arrays(items)]
      logging.warning("checkpoint step %d has no integrity manifest (saved by "
                      "an older cot-distill): checked for NaN/Inf only", step)
    else:
      found = integrity.problems(manifest, items, restored.data)
    saved_step = int(jax.device_get(state.step))
    if saved_step != step:
      found.append(f"holds step {saved_step}, not {step}")
    if found:
      more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
      raise _Unusable("failed verification: " + "; ".join(found[:3]) + more)
    return state, position

  def restore(self, target: TrainState
              ) -> tuple[TrainState, DataPosition] | None:
    """The newest checkpoint that reads back as saved, onto `target`.

    `target` holds ShapeDtypeStructs with shardings, so a run saved on one
    mesh restores onto another. A step that fails (unreadable, or different
    from its manifest) is moved aside with its reason and the previous step
    is tried, with one log line saying so. None when there is no checkpoint;
    BrokenCheckpointError when there were some and none was usable.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for index, step in enumerate(steps):
      try:
        state, position = self._restore_step(step, target)
      except _Unusable as reason:
        moved = (move_aside(self.model_dir, step, str(reason))
                 if jax.process_index() == 0 else step_path(self.model_dir, step))
        failures.append(f"{STEP_PREFIX}_{step}: {reason}")
        then = (f"resuming from step {steps[index + 1]}"
                if index + 1 < len(steps) else "no earlier checkpoint")
        logging.error("checkpoint step %d %s; moved to %s; %s", step, reason,
                      moved, then)
        continue
      finally:
        self._manager.reload()
      logging.info("restored checkpoint step %d from %s (verified)", step,
                    self.model_dir)
      return state, position
    if failures:
      raise BrokenCheckpointError(
          f"no usable checkpoint in {self.model_dir}: "
          + "; ".join(failures) + ". Each was moved aside with a "
          f"{BROKEN_SUFFIX} suffix and a {BROKEN_REASON_FILE} (nothing was "
          "deleted). Rerunning the same command trains this run again from "
          "its start (or from INITIAL_CHECKPOINT_PATH); a new MODEL_DIR "
          "keeps the broken steps apart.")
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
                       task_feature_lengths: Mapping[str, int],
                       partitioning: Mapping[str, Any] | None = None) -> None:
  """model_config.json: what an evaluator needs to rebuild the model.

  `partitioning` ({"layout", "num_partitions", "num_devices"}) is the run's
  mesh, so `cot-distill evaluate` decodes with the layout it trained with.
  """
  tf.io.gfile.makedirs(model_dir)
  values = {
      "model": config.to_dict(),
      "vocabulary": dict(vocabulary),
      "task": mixture_or_task_name,
      "task_feature_lengths": dict(task_feature_lengths),
  }
  if partitioning is not None:
    values["partitioning"] = dict(partitioning)
  write_json_atomic(os.path.join(model_dir, MODEL_CONFIG_FILE), values)


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


class CheckpointNotFoundError(errors.UserError, FileNotFoundError):
  """No (such) checkpoint where the user pointed."""


def _sharded_target(stored: Any, shardings: Any, checkpoint_path: str) -> Any:
  """ShapeDtypeStructs of the stored params carrying `shardings`' entries."""
  stored_paths = {path for path, _ in jax.tree_util.tree_flatten_with_path(stored)[0]}
  wanted = {path for path, _ in jax.tree_util.tree_flatten_with_path(shardings)[0]}
  if stored_paths != wanted:
    names = lambda paths: ", ".join(sorted(
        jax.tree_util.keystr(path) for path in paths)[:3]) or "none"
    raise errors.UserError(
        f"checkpoint {checkpoint_path}: its parameters do not match the model "
        f"of its {MODEL_CONFIG_FILE}: only in the checkpoint: "
        f"{names(stored_paths - wanted)}; only in the model: "
        f"{names(wanted - stored_paths)}")
  return jax.tree.map(
      lambda leaf, target: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                sharding=target),
      stored, shardings)


def restore_params(path: str, step: int | None = None, *,
                   shardings: Any | None = None
                   ) -> tuple[Any, T5Config, dict[str, Any]]:
  """(params, T5Config, info) of a trained run, for evaluation and export.

  Args:
    path: a MODEL_DIR, or one of its `checkpoint_<step>` directories.
    step: which step; default the newest (or the one `path` names).
    shardings: a tree of jax Shardings with the stored params' structure
      (e.g. `sharded_decode.param_shardings`, from the logical axis names:
      two parameters of one shape may be split differently), so each host
      reads only its shards; default: whole arrays on the first local device.

  `info` has step, model_dir, checkpoint_path, vocabulary ({spm_path,
  extra_ids}), task and task_feature_lengths from model_config.json.

  The parameters are checked against the step's integrity manifest (shapes,
  dtypes, checksums, finiteness); a step that fails raises
  BrokenCheckpointError naming it and the earlier steps there are. Nothing
  is moved or changed (that is the trainer's job on its next run).
  """
  model_dir, step = _resolve_checkpoint(path, step)
  config_path = os.path.join(model_dir, MODEL_CONFIG_FILE)
  if not tf.io.gfile.exists(config_path):
    raise CheckpointNotFoundError(
        f"restore_params: {config_path} not found; is {path} a cot-distill "
        "MODEL_DIR?")
  with tf.io.gfile.GFile(config_path, "r") as file:
    model_config = json.load(file)
  manager = _manager(model_dir, read_only=True)
  try:
    steps = sorted(manager.all_steps())
    if step is None:
      if not steps:
        raise CheckpointNotFoundError(
            f"restore_params: no checkpoint in {model_dir}")
      step = steps[-1]
    if step not in steps:
      raise CheckpointNotFoundError(
          f"restore_params: no checkpoint step {step} in {model_dir} "
          f"(have {steps})")
    checkpoint_path = step_path(model_dir, step)
    others = [s for s in steps if s != step]
    def broken(reason: str) -> BrokenCheckpointError:
      earlier = (f"; other steps there: {', '.join(map(str, others))} "
                 f"(pass {STEP_PREFIX}_<step> to evaluate one)"
                 if others else "")
      return BrokenCheckpointError(
          f"checkpoint {checkpoint_path} cannot be used: {reason}{earlier}. "
          "Rerunning its training command moves it aside and trains that "
          "step again.")
    try:
      metadata = manager.item_metadata(step)["params"]
    except Exception as error:  # orbax raises many types for bad files.
      _ignore_abandoned_reads()
      raise broken(f"its metadata is unreadable ({_short(error)})") from None
    if metadata is None:
      raise broken("it has no params metadata (not a cot-distill checkpoint, "
                   "or damaged)")
    stored = metadata.tree if hasattr(metadata, "tree") else metadata
    if shardings is not None:
      target = _sharded_target(stored, shardings, checkpoint_path)
    else:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
          stored)
    try:
      params = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(target))).params
    except Exception as error:  # orbax raises many types for bad files.
      _ignore_abandoned_reads()
      raise broken(f"unreadable ({_short(error)})") from None
  finally:
    manager.close()
  manifest_path = os.path.join(checkpoint_path, integrity.ITEM_NAME,
                               integrity.FILE_NAME)
  if tf.io.gfile.exists(manifest_path):
    try:
      with tf.io.gfile.GFile(manifest_path, "r") as file:
        manifest = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise broken(f"its integrity manifest is not JSON ({error})") from None
    found = integrity.problems(manifest, {"params": params}, data=None)
  else:
    found = [f"{name}: holds NaN or Inf"
             for name in integrity.nonfinite_arrays({"params": params})]
  if found:
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    raise broken("it failed verification: " + "; ".join(found[:3]) + more)
  info = {
      "step": step,
      "model_dir": model_dir,
      "checkpoint_path": checkpoint_path,
      "vocabulary": model_config.get("vocabulary"),
      "task": model_config.get("task"),
      "task_feature_lengths": model_config.get("task_feature_lengths"),
  }
  config = T5Config.from_dict(model_config["model"])
  # In the layer layout of the config returned (`T5Config.scan_layers`), even
  # if the stored tree has the other one; callers wanting the other convert
  # with cot_distill.model.scanned.
  from cot_distill.model import scanned  # pylint: disable=g-import-not-at-top
  return scanned.to_layout(params, config), config, info
