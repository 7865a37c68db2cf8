"""`train(*, ...)`: the training loop, configured by gin or called directly.

One run = a model wrapper (its `loss_fn` is the whole training signal), a
SeqIO task, an optimizer factory and schedule, a Partitioner (mesh + rules)
and a MODEL_DIR. The loop resumes from the newest readable checkpoint in
MODEL_DIR, so rerunning the same command after a preemption continues the
run; the losses are those of an uninterrupted run (see `data.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import gin
import jax
import numpy as np
import optax
import seqio
from jax.experimental import multihost_utils

from cot_distill import errors
from cot_distill import vocabularies
from cot_distill.train import checkpoints
from cot_distill.train import data
from cot_distill.train import initial_checkpoint
from cot_distill.train import input_shards as input_shards_lib
from cot_distill.train import inference
from cot_distill.train import metrics_writer
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib
from cot_distill.train import step as step_lib

CONFIG_FILE = "config.gin"
# T5Config fields a resumed run may change: they set how the computation is
# done, not what the parameters are. Any other difference is refused.
RESUMABLE_MODEL_FIELDS = ("dropout_rate", "dtype", "logits_dtype",
                          "float32_attention_logits", "remat_policy")
# T5Config fields added after runs were saved, with the value a saved
# model_config.json that lacks them had.
_ADDED_MODEL_FIELDS = {"scan_layers": False}


class NonFiniteLossError(errors.UserError):
  """A training step produced a NaN or Inf loss or gradient norm."""


def default_log_every_steps(train_steps: int) -> int:
  """Often enough that a short run logs several times: 20 steps log every 2."""
  return min(100, max(1, train_steps // 10))


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What a finished (or preempted) run reports back."""
  model_dir: str
  step: int
  preempted: bool
  # Last logged training summary and last eval metrics (process 0).
  train_metrics: Mapping[str, float]
  eval_metrics: Mapping[str, float]


class PreemptionWatcher:
  """Turns SIGTERM into "save at the next step boundary, then stop".

  Single process: a Python signal handler sets a flag. Several processes:
  JAX's preemption service (started by jax.distributed.initialize) sees the
  signal and makes every host agree on the same step, so all of them save it.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._multiprocess = jax.process_count() > 1
    if not self._multiprocess and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping",
                    signum)
    self._flag.set()

  def reached(self, step: int) -> bool:
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _task_vocabulary(mixture_or_task_name: str) -> Any:
  return seqio.get_mixture_or_task(
      mixture_or_task_name).output_features["targets"].vocabulary


def _store_vocabulary(model_dir: str, mixture_or_task_name: str) -> dict[str, Any]:
  """Copies the task's vocabulary into MODEL_DIR; its model_config.json entry."""
  return vocabularies.store_in_model_dir(
      _task_vocabulary(mixture_or_task_name), model_dir)


def _read_bytes(path: str) -> bytes | None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not path or not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, "rb") as file:
    return file.read()


def _model_config_differences(model_dir: str, config: Any,
                              mixture_or_task_name: str) -> list[str]:
  """`field: checkpoint X, config Y` for what MODEL_DIR's run had otherwise.

  Reads model_config.json and the vocabulary copy the trainer keeps there.
  Fields in RESUMABLE_MODEL_FIELDS may change (logged, not refused).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path, "r") as file:
    try:
      saved = json.load(file)
    except json.JSONDecodeError as error:
      return [f"{checkpoints.MODEL_CONFIG_FILE}: not JSON ({error})"]
  differences, changed = [], []
  saved_model = saved.get("model") or {}
  for field, value in config.to_dict().items():
    if field not in saved_model and field in _ADDED_MODEL_FIELDS:
      saved_model = dict(saved_model, **{field: _ADDED_MODEL_FIELDS[field]})
    if field not in saved_model or saved_model[field] == value:
      continue
    line = f"{field}: checkpoint {saved_model[field]!r}, config {value!r}"
    if field == "scan_layers":
      line += (" (every parameter and optimizer array is laid out by it; to "
               "switch, train in a new MODEL_DIR with INITIAL_CHECKPOINT_PATH "
               "set to this one: its parameters are converted, the optimizer "
               "starts afresh)")
    (changed if field in RESUMABLE_MODEL_FIELDS else differences).append(line)
  if changed:
    logging.warning("resuming %s with a changed %s", model_dir,
                    "; ".join(changed))
  vocabulary = _task_vocabulary(mixture_or_task_name)
  saved_vocabulary = saved.get("vocabulary") or {}
  extra_ids = int(getattr(vocabulary, "extra_ids", 0) or 0)
  if ("extra_ids" in saved_vocabulary
      and int(saved_vocabulary["extra_ids"] or 0) != extra_ids):
    differences.append(f"vocabulary extra_ids: checkpoint "
                       f"{saved_vocabulary['extra_ids']}, config {extra_ids}")
  source = getattr(vocabulary, "sentencepiece_model_file", None)
  copy = os.path.join(model_dir, vocabularies.MODEL_DIR_SPM_FILE)
  kept = _read_bytes(copy)
  if (kept is not None and source and not vocabularies.is_remote(source)
      and _read_bytes(os.path.abspath(source)) != kept):
    differences.append(f"vocabulary: checkpoint {copy}, config {source} "
                       "(different SentencePiece models)")
  return differences


def _check_restart(model_dir: str, model: Any, mixture_or_task_name: str,
                   checkpointer: checkpoints.TrainCheckpointer,
                   target: state_lib.TrainState) -> None:
  """Refuses, before anything is written, a MODEL_DIR made by another setup.

  A resumed run must have the model (and vocabulary, and optimizer state
  layout) its checkpoints were saved with; otherwise restoring fails or,
  worse, rewriting model_config.json makes the existing checkpoints
  unreadable to the evaluator. Nothing in MODEL_DIR is touched.
  """
  steps = checkpointer.all_steps()
  if not steps:
    return
  differences = _model_config_differences(model_dir, model.config,
                                          mixture_or_task_name)
  differences += checkpointer.layout_differences(target)
  if differences:
    shown = differences[:12]
    if len(differences) > len(shown):
      shown.append(f"... and {len(differences) - len(shown)} more")
    raise errors.UserError(
        f"{model_dir} holds checkpoints (steps {', '.join(map(str, steps))}) "
        "of a different configuration than this run: " + "; ".join(shown) +
        ". Nothing in it was changed. To train this configuration, give it a "
        "new MODEL_DIR; to continue the existing run, use the settings it "
        f"was trained with (its {CONFIG_FILE}).")


def _write_run_files(model_dir: str, model: Any, mixture_or_task_name: str,
                     task_feature_lengths: Mapping[str, int],
                     partitioner: partitioning.Partitioner) -> None:
  """config.gin (operative gin config, when gin drove the run) + model_config.json.

  model_config.json records the mesh, so evaluation can decode with it.
  """
  if jax.process_index() != 0:
    return
  # Through tf.io.gfile (in checkpoints), so a gs:// MODEL_DIR works.
  operative = gin.operative_config_str()
  if operative.strip():
    checkpoints.write_text_atomic(os.path.join(model_dir, CONFIG_FILE),
                                  operative)
  checkpoints.write_model_config(
      model_dir, config=model.config,
      vocabulary=_store_vocabulary(model_dir, mixture_or_task_name),
      mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths,
      partitioning={"layout": partitioner.layout,
                    "num_partitions": partitioner.num_partitions,
                    "num_devices": partitioner.mesh.size})


def _initial_state(*, model: Any, tx: optax.GradientTransformation,
                   init_variables: Callable[[Any], Any],
                   shapes: state_lib.TrainState,
                   shardings: state_lib.TrainState,
                   checkpointer: checkpoints.TrainCheckpointer,
                   position: data.DataPosition, seed: int,
                   initial_checkpoint_path: str | None
                   ) -> state_lib.TrainState:
  """The state, resumed from MODEL_DIR, else initialised.

  Precedence: a checkpoint in MODEL_DIR (this run, resumed) beats
  INITIAL_CHECKPOINT_PATH (pretrained weights), which beats random init.
  """
  restored = checkpointer.restore(state_lib.with_shardings(shapes, shardings))
  if restored is not None:
    state, saved_position = restored
    data.check_input_shards(saved_position, position)
    if not saved_position.same_stream(position):
      logging.warning(
          "resuming with different data settings than the checkpoint "
          "(saved %s, now %s): the batches will not continue the saved "
          "stream", saved_position.to_dict(), position.to_dict())
    return state
  initial_params = None
  if initial_checkpoint_path:
    initial_params = initial_checkpoint.load_initial_params(
        initial_checkpoint_path, model.config, shapes.params, shardings.params)
  return state_lib.create_train_state(init_variables, tx, shardings, seed,
                                      initial_params)


def train(*,
          model: Any,
          mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int],
          train_steps: int,
          batch_size: int,
          model_dir: str,
          mixture_or_task_module: str | None = None,
          use_cached_tasks: bool = False,
          pack: bool = True,
          input_shards: int | None = None,
          partitioner: partitioning.Partitioner | None = None,
          optimizer: Callable[[optax.Schedule], optax.GradientTransformation]
          = optimizers.adafactor,
          learning_rate: float | optax.Schedule = 1e-3,
          num_microbatches: int = 1,
          seed: int = 0,
          initial_checkpoint_path: str | None = None,
          checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
          evaluation: inference.EvaluationConfig | None = None,
          log_every_steps: int | None = None,
          on_nonfinite: str = "stop",
          peak_flops_per_device: float | None = None) -> TrainResult:
  """Trains `model` on a SeqIO task until `train_steps` (a global step count).

  Args:
    model: an EncoderDecoderModel (anything with config, loss_fn,
      get_initial_variables and predict_batch).
    mixture_or_task_name: registered SeqIO task or mixture to train on.
    task_feature_lengths: {"inputs": n, "targets": m}.
    train_steps: total steps of the run, counting steps before a resume.
    batch_size: global batch (all hosts), in sequences (packed rows if pack).
    model_dir: checkpoints, config.gin, model_config.json and metrics.
    mixture_or_task_module: module imported first to register the task.
    use_cached_tasks: read the tasks' offline seqio cache.
    pack: pack several examples per row (T5X default for training).
    input_shards: the global batch is read as this many seqio shards, each a
      block of rows; it fixes the batches whatever the number of hosts
      (see input_shards.py). None: one per host holding different rows.
    partitioner: mesh + layout; default data parallel over all devices.
    optimizer: factory called with the schedule (optimizers.adafactor, adamw).
    learning_rate: a number (constant) or a schedule from `optimizers`.
    num_microbatches: gradient accumulation steps per optimizer step.
    seed: parameter init, dropout and data shuffling.
    initial_checkpoint_path: pretrained weights (HF, T5X or cot-distill).
    checkpoint: save interval, retention, async.
    evaluation: periodic decode-and-score eval, or None.
    log_every_steps: metrics summary and progress line interval; None:
      `default_log_every_steps(train_steps)` (at most 100, ~10 lines a run).
    on_nonfinite: a NaN/Inf loss or gradient norm either "stop"s the run with
      NonFiniteLossError (found at the next log or save point, naming the
      first bad step; nothing after it is saved) or is "skip"ped: that
      step's update is dropped and counted (train/skipped_nonfinite).
    peak_flops_per_device: device peak FLOP/s, to log MFU.
  """
  if on_nonfinite not in step_lib.NONFINITE_POLICIES:
    raise errors.UserError(
        f"trainer.train.on_nonfinite must be one of "
        f"{', '.join(map(repr, step_lib.NONFINITE_POLICIES))}, got "
        f"{on_nonfinite!r}")
  if log_every_steps is None:
    log_every_steps = default_log_every_steps(train_steps)
  if log_every_steps < 1:
    raise errors.UserError(f"log_every_steps must be >= 1, got {log_every_steps}")
  data.import_task_module(mixture_or_task_module)
  data.require_examples(mixture_or_task_name=mixture_or_task_name,
                        task_feature_lengths=task_feature_lengths,
                        use_cached=use_cached_tasks)
  partitioner = partitioner or partitioning.Partitioner()
  input_plan = input_shards_lib.plan_input_shards(partitioner, batch_size,
                                                  input_shards)
  schedule = optimizers.as_schedule(learning_rate)
  tx = optimizer(schedule)
  position = data.DataPosition(
      mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths), batch_size=batch_size,
      seed=seed, pack=pack, steps_consumed=0,
      input_shards=input_plan.num_shards)
  init_variables = functools.partial(
      model.get_initial_variables,
      input_shapes=data.model_input_shapes(task_feature_lengths, batch_size,
                                           pack))
  shapes, specs = state_lib.abstract_state_and_specs(init_variables, tx)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  checkpointer = checkpoints.TrainCheckpointer(model_dir, checkpoint)
  try:
    # Refuse a MODEL_DIR of another configuration before writing anything,
    # then restore (verified), and only then record this run's files.
    _check_restart(model_dir, model, mixture_or_task_name, checkpointer,
                   state_lib.with_shardings(shapes, shardings))
    train_state = _initial_state(
        model=model, tx=tx, init_variables=init_variables, shapes=shapes,
        shardings=shardings, checkpointer=checkpointer, position=position,
        seed=seed, initial_checkpoint_path=initial_checkpoint_path)
    start = int(jax.device_get(train_state.step))
    if start >= train_steps:
      logging.info(
          "%s is already finished: its checkpoint is at step %d and "
          "TRAIN_STEPS is %d, so there is nothing to train (raise TRAIN_STEPS "
          "to train further)", model_dir, start, train_steps)
      return TrainResult(model_dir=model_dir, step=start, preempted=False,
                         train_metrics={}, eval_metrics={})
    _write_run_files(model_dir, model, mixture_or_task_name,
                     task_feature_lengths, partitioner)
    train_step = step_lib.compile_train_step(
        loss_fn=model.loss_fn, optimizer=tx, learning_rate=schedule,
        partitioner=partitioner, state_shardings=shardings,
        num_microbatches=num_microbatches,
        dropout=model.config.dropout_rate > 0,
        skip_nonfinite=on_nonfinite == "skip")
    loop = _TrainLoop(
        model=model, partitioner=partitioner, checkpointer=checkpointer,
        checkpoint=checkpoint, position=position, train_steps=train_steps,
        batch_size=batch_size, task_feature_lengths=task_feature_lengths,
        log_every_steps=log_every_steps,
        peak_flops_per_device=peak_flops_per_device,
        evaluator=(inference.PeriodicEvaluator(evaluation,
                                               task_feature_lengths, seed)
                   if evaluation else None))
    batches = data.train_batches(
        mixture_or_task_name=mixture_or_task_name,
        task_feature_lengths=task_feature_lengths,
        plan=input_plan, seed=seed, start_step=start, pack=pack,
        use_cached=use_cached_tasks)
  except BaseException:
    # Close orbax's manager (and its threads) before the error propagates:
    # left open, it spills "Event loop is closed" tracebacks at exit.
    checkpointer.close()
    raise
  # Process-wide CPU settings (dispatch, host memory) are the command-line
  # entry points' business (cot_distill.cpu_runtime), never the library's.
  return loop.run(train_state, train_step, batches)


def _first_nonfinite(step_metrics: list[Mapping[str, Any]], first_step: int
                     ) -> tuple[int, float, float] | None:
  """(step, loss, grad_norm) of the first step with a non-finite value."""
  for offset, metrics in enumerate(jax.device_get(step_metrics)):
    loss = float(np.sum(metrics["loss"]))
    grad_norm = float(metrics["grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      return first_step + offset, loss, grad_norm
  return None


class _TrainLoop:
  """The step loop with its side duties: logging, eval, saving, preemption."""

  def __init__(self, *, model, partitioner, checkpointer, checkpoint, position,
               train_steps, batch_size, task_feature_lengths, log_every_steps,
               peak_flops_per_device, evaluator):
    self.model = model
    self.partitioner = partitioner
    self.checkpointer = checkpointer
    self.checkpoint = checkpoint
    self.position = position
    self.train_steps = train_steps
    self.batch_size = batch_size
    self.log_every_steps = log_every_steps
    self.peak_flops = peak_flops_per_device
    self.evaluator = evaluator
    self.target_length = task_feature_lengths["targets"]
    self.flops_per_step = metrics_writer.train_flops_per_step(
        model.config, batch_size, task_feature_lengths["inputs"],
        self.target_length)
    self.train_metrics: dict[str, float] = {}
    self.eval_metrics: dict[str, float] = {}
    self.skipped = 0
    # Steps not yet checked for NaN/Inf: (first step number, metrics).
    self._unchecked: list[Any] = []
    self._unchecked_from = 0

  def _check_finite(self) -> None:
    """Stops the run at the first NaN/Inf loss or gradient norm so far.

    Called at every log and before every eval or save, so the state after
    a bad step is never saved. With on_nonfinite="skip" the step already
    dropped such updates; this counts them instead.
    """
    if not self._unchecked:
      return
    fetched = jax.device_get(self._unchecked)
    first = self._unchecked_from
    self._unchecked_from += len(self._unchecked)
    self._unchecked = []
    if "skipped_nonfinite" in fetched[0]:
      skipped = [first + offset for offset, metrics in enumerate(fetched)
                 if float(metrics["skipped_nonfinite"]) > 0]
      if skipped:
        self.skipped += len(skipped)
        logging.warning(
            "skipped the update of %d step(s) with a NaN/Inf loss or gradient "
            "norm (steps %s); %d skipped in this run so far", len(skipped),
            ", ".join(map(str, skipped[:10])) + (
                " ..." if len(skipped) > 10 else ""), self.skipped)
      return
    bad = _first_nonfinite(fetched, first)
    if bad is not None:
      step, loss, grad_norm = bad
      saved = self.checkpointer.all_steps()
      raise NonFiniteLossError(
          f"training stopped at step {step}: the loss is {loss} and the "
          f"gradient norm {grad_norm}. Nothing after step {step - 1} was "
          f"saved (last checkpoint: "
          f"{'step ' + str(saved[-1]) if saved else 'none'} in "
          f"{self.checkpointer.model_dir}). Common causes: a learning rate too "
          "high for this model, float16 overflow, or bad inputs; rerunning "
          "resumes from the last checkpoint. To drop such steps instead, bind "
          "trainer.train.on_nonfinite = 'skip'.")

  def _save(self, train_state, step: int, eval_metrics=None) -> None:
    position = dataclasses.replace(self.position, steps_consumed=step)
    best = self.checkpoint.best_metric
    metrics = None
    if best is not None and eval_metrics and best in eval_metrics:
      metrics = {best: eval_metrics[best]}
    self.checkpointer.save(train_state, position, metrics)

  def _log(self, writer, pending, timer, step: int) -> None:
    # Steps are dispatched asynchronously; time them once they have finished.
    jax.block_until_ready(pending[-1])
    self._check_finite()
    seconds, _ = timer.lap(step)
    fetched = jax.device_get(pending)
    kept = [m for m in fetched if not float(m.get("skipped_nonfinite", 0.0))]
    pending.clear()
    if not kept:
      writer.write_scalars(step, {"train/skipped_nonfinite": float(self.skipped)})
      logging.info("step %d/%d: every update since the last log was skipped "
                   "(NaN/Inf)", step, self.train_steps)
      return
    self.train_metrics = metrics_writer.summarize_train_metrics(
        kept, seconds, batch_size=self.batch_size,
        target_length=self.target_length, flops_per_step=self.flops_per_step,
        peak_flops=self.peak_flops)
    if "skipped_nonfinite" in fetched[0]:
      self.train_metrics["train/skipped_nonfinite"] = float(self.skipped)
    writer.write_scalars(step, self.train_metrics)
    logging.info("%s", metrics_writer.progress_line(
        step, self.train_steps, self.train_metrics))

  def _evaluate(self, writer, train_state, step: int) -> dict[str, float]:
    started = time.perf_counter()
    metrics = self.evaluator.evaluate(self.model, train_state.params,
                                      self.partitioner, step)
    metrics["timing/eval_seconds"] = time.perf_counter() - started
    writer.write_scalars(step, metrics)
    self.eval_metrics = metrics
    return metrics

  def run(self, train_state, train_step, batches) -> TrainResult:
    writer = metrics_writer.create_writer(self.checkpointer.model_dir)
    watcher = PreemptionWatcher()
    step = start = int(jax.device_get(train_state.step))
    self._unchecked_from = start + 1
    preempted = False
    pending: list[Any] = []
    timer = metrics_writer.StepTimer(step)
    logging.info("training steps %d..%d in %s (a progress line every %d "
                 "steps)", start + 1, self.train_steps,
                 self.checkpointer.model_dir, self.log_every_steps)
    try:
      while step < self.train_steps:
        batch = data.to_global_batch(next(batches), self.partitioner,
                                     self.batch_size)
        if step == start:
          logging.info("compiling the train step (the first step takes "
                       "longer)...")
          compile_started = time.perf_counter()
        train_state, metrics = train_step(train_state, batch)
        step += 1
        pending.append(metrics)
        self._unchecked.append(metrics)
        if step == start + 1:
          # Keep compilation out of later step times: restart the clock.
          jax.block_until_ready(metrics)
          logging.info("first step compiled and ran in %.1f s",
                       time.perf_counter() - compile_started)
          timer = metrics_writer.StepTimer(step)
        last = step == self.train_steps
        if step % self.log_every_steps == 0 or last:
          self._log(writer, pending, timer, step)
        preempted = watcher.reached(step) and not last
        evaluate = bool(self.evaluator) and self.evaluator.should_run(
            step, self.train_steps)
        save = (last or preempted or step % self.checkpoint.save_every_steps == 0
                # An eval that ranks checkpoints needs its step saved.
                or evaluate and self.checkpoint.best_metric is not None)
        if evaluate or save:
          # Finish the step first, so only eval/save time leaves the clock.
          jax.block_until_ready(metrics)
          self._check_finite()
          started = time.perf_counter()
          eval_metrics = (self._evaluate(writer, train_state, step)
                          if evaluate else None)
          if save:
            self._save(train_state, step, eval_metrics)
          timer.exclude(time.perf_counter() - started)
        if preempted:
          logging.warning("preempted: checkpoint at step %d saved; rerun the "
                          "same command to resume", step)
          break
    finally:
      watcher.close()
      try:
        self.checkpointer.wait()
      finally:
        self.checkpointer.close()
        writer.flush()
        writer.close()
    return TrainResult(model_dir=self.checkpointer.model_dir, step=step,
                       preempted=preempted, train_metrics=self.train_metrics,
                       eval_metrics=self.eval_metrics)
