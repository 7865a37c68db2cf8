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
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import gin
import jax
import optax
import seqio
from jax.experimental import multihost_utils

from cot_distill import cpu_runtime
from cot_distill import vocabularies
from cot_distill.train import checkpoints
from cot_distill.train import data
from cot_distill.train import initial_checkpoint
from cot_distill.train import inference
from cot_distill.train import metrics_writer
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib
from cot_distill.train import step as step_lib

CONFIG_FILE = "config.gin"


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


def _store_vocabulary(model_dir: str, mixture_or_task_name: str) -> dict[str, Any]:
  """Copies the task's vocabulary into MODEL_DIR; its model_config.json entry."""
  vocabulary = seqio.get_mixture_or_task(
      mixture_or_task_name).output_features["targets"].vocabulary
  return vocabularies.store_in_model_dir(vocabulary, model_dir)


def _write_run_files(model_dir: str, model: Any, mixture_or_task_name: str,
                     task_feature_lengths: Mapping[str, int]) -> None:
  """config.gin (operative gin config, when gin drove the run) + model_config.json."""
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
      task_feature_lengths=task_feature_lengths)


def _initial_state(*, model: Any, tx: optax.GradientTransformation,
                   input_shapes: Mapping[str, tuple[int, ...]],
                   partitioner: partitioning.Partitioner,
                   checkpointer: checkpoints.TrainCheckpointer,
                   position: data.DataPosition, seed: int,
                   initial_checkpoint_path: str | None
                   ) -> tuple[state_lib.TrainState, state_lib.TrainState]:
  """(state, shardings): resumed from MODEL_DIR, else initialised.

  Precedence: a checkpoint in MODEL_DIR (this run, resumed) beats
  INITIAL_CHECKPOINT_PATH (pretrained weights), which beats random init.
  """
  init_variables = functools.partial(model.get_initial_variables,
                                     input_shapes=input_shapes)
  shapes, specs = state_lib.abstract_state_and_specs(init_variables, tx)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  restored = checkpointer.restore(state_lib.with_shardings(shapes, shardings))
  if restored is not None:
    state, saved_position = restored
    if not saved_position.same_stream(position):
      logging.warning(
          "resuming with different data settings than the checkpoint "
          "(saved %s, now %s): the batches will not continue the saved "
          "stream", saved_position.to_dict(), position.to_dict())
    return state, shardings
  initial_params = None
  if initial_checkpoint_path:
    initial_params = initial_checkpoint.load_initial_params(
        initial_checkpoint_path, model.config, shapes.params, shardings.params)
  state = state_lib.create_train_state(init_variables, tx, shardings, seed,
                                       initial_params)
  return state, shardings


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
          partitioner: partitioning.Partitioner | None = None,
          optimizer: Callable[[optax.Schedule], optax.GradientTransformation]
          = optimizers.adafactor,
          learning_rate: float | optax.Schedule = 1e-3,
          num_microbatches: int = 1,
          seed: int = 0,
          initial_checkpoint_path: str | None = None,
          checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
          evaluation: inference.EvaluationConfig | None = None,
          log_every_steps: int = 10,
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
    partitioner: mesh + layout; default data parallel over all devices.
    optimizer: factory called with the schedule (optimizers.adafactor, adamw).
    learning_rate: a number (constant) or a schedule from `optimizers`.
    num_microbatches: gradient accumulation steps per optimizer step.
    seed: parameter init, dropout and data shuffling.
    initial_checkpoint_path: pretrained weights (HF, T5X or cot-distill).
    checkpoint: save interval, retention, async.
    evaluation: periodic decode-and-score eval, or None.
    log_every_steps: metrics summary interval.
    peak_flops_per_device: device peak FLOP/s, to log MFU.
  """
  # Best effort: only a process that has not run JAX yet can switch (the
  # CLIs switch first thing); the memory policy below needs it.
  cpu_runtime.prefer_synchronous_dispatch()
  data.import_task_module(mixture_or_task_module)
  data.require_examples(mixture_or_task_name=mixture_or_task_name,
                        task_feature_lengths=task_feature_lengths,
                        use_cached=use_cached_tasks)
  partitioner = partitioner or partitioning.Partitioner()
  _write_run_files(model_dir, model, mixture_or_task_name, task_feature_lengths)
  schedule = optimizers.as_schedule(learning_rate)
  tx = optimizer(schedule)
  position = data.DataPosition(
      mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=dict(task_feature_lengths), batch_size=batch_size,
      seed=seed, pack=pack, steps_consumed=0)
  checkpointer = checkpoints.TrainCheckpointer(model_dir, checkpoint)
  train_state, shardings = _initial_state(
      model=model, tx=tx, partitioner=partitioner, checkpointer=checkpointer,
      input_shapes=data.model_input_shapes(task_feature_lengths, batch_size,
                                           pack),
      position=position, seed=seed,
      initial_checkpoint_path=initial_checkpoint_path)
  train_step = step_lib.compile_train_step(
      loss_fn=model.loss_fn, optimizer=tx, learning_rate=schedule,
      partitioner=partitioner, state_shardings=shardings,
      num_microbatches=num_microbatches,
      dropout=model.config.dropout_rate > 0)
  loop = _TrainLoop(
      model=model, partitioner=partitioner, checkpointer=checkpointer,
      checkpoint=checkpoint, position=position, train_steps=train_steps,
      batch_size=batch_size, task_feature_lengths=task_feature_lengths,
      log_every_steps=log_every_steps,
      peak_flops_per_device=peak_flops_per_device,
      evaluator=(inference.PeriodicEvaluator(evaluation, task_feature_lengths,
                                             seed)
                 if evaluation else None))
  batches = data.train_batches(
      mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths, global_batch_size=batch_size,
      partitioner=partitioner, seed=seed,
      start_step=int(jax.device_get(train_state.step)), pack=pack,
      use_cached=use_cached_tasks)
  with cpu_runtime.retained_memory() as retained:
    if retained:
      logging.info("CPU steps reuse their host memory (cot_distill.cpu_runtime)")
    return loop.run(train_state, train_step, batches)


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
    seconds, _ = timer.lap(step)
    self.train_metrics = metrics_writer.summarize_train_metrics(
        pending, seconds, batch_size=self.batch_size,
        target_length=self.target_length, flops_per_step=self.flops_per_step,
        peak_flops=self.peak_flops)
    writer.write_scalars(step, self.train_metrics)
    pending.clear()

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
    preempted = False
    pending: list[Any] = []
    timer = metrics_writer.StepTimer(step)
    logging.info("training steps %d..%d in %s", start + 1, self.train_steps,
                 self.checkpointer.model_dir)
    try:
      while step < self.train_steps:
        batch = data.to_global_batch(next(batches), self.partitioner,
                                     self.batch_size)
        train_state, metrics = train_step(train_state, batch)
        step += 1
        pending.append(metrics)
        last = step == self.train_steps
        if step % self.log_every_steps == 0 or last:
          self._log(writer, pending, timer, step)
        if step == start + 1:
          # Keep compilation out of later step times: restart the clock.
          jax.block_until_ready(metrics)
          timer = metrics_writer.StepTimer(step)
        preempted = watcher.reached(step) and not last
        evaluate = bool(self.evaluator) and self.evaluator.should_run(
            step, self.train_steps)
        save = (last or preempted or step % self.checkpoint.save_every_steps == 0
                # An eval that ranks checkpoints needs its step saved.
                or evaluate and self.checkpoint.best_metric is not None)
        if evaluate or save:
          # Finish the step first, so only eval/save time leaves the clock.
          jax.block_until_ready(metrics)
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
      self.checkpointer.wait()
      self.checkpointer.close()
      writer.flush()
      writer.close()
    return TrainResult(model_dir=self.checkpointer.model_dir, step=step,
                       preempted=preempted, train_metrics=self.train_metrics,
                       eval_metrics=self.eval_metrics)
