"""Training metrics: TensorBoard (clu), a JSON-lines file and a log line.

Only process 0 writes files; other hosts log to their own stderr. The
JSON-lines file is the machine-readable record tests and reports read: one
object per logged step, `{"step": n, "train/loss": ..., ...}`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
import tensorflow as tf
from clu import metric_writers

from cot_distill.model.config import T5Config
from cot_distill.train import checkpoints

METRICS_FILE = "metrics.jsonl"


class JsonLinesWriter(metric_writers.MetricWriter):
  """A clu MetricWriter that appends scalars to `path`, one JSON per step.

  Appending (not rewriting) keeps the record of a preempted run: after a
  resume, steps after the checkpoint appear twice, and readers keep the last.

  Object stores (gs://, a MODEL_DIR URL) cannot append to a file, so there
  the writer keeps the whole file's text (what was there at start plus every
  new line) and rewrites it atomically (tmp + rename) on each write. That is
  quadratic in the number of log lines, which is fine for one line per log
  interval; local paths keep the cheap append.
  """

  def __init__(self, path: str):
    self._path = path
    self._local = checkpoints.is_local_path(path)
    directory = os.path.dirname(path)
    if directory:
      tf.io.gfile.makedirs(directory)
    if self._local:
      self._file = open(path, "a", encoding="utf-8")
    else:
      self._file = None
      self._lines: list[str] = []
      if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "r") as file:
          previous = file.read()
        if previous and not previous.endswith("\n"):
          previous += "\n"  # A cut-off last line stays on its own line.
        self._lines.append(previous)

  def _write_line(self, record: Mapping[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    if self._local:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines.append(line)
      checkpoints.write_text_atomic(self._path, "".join(self._lines))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    for name, value in scalars.items():
      value = float(np.asarray(value))
      record[name] = value if math.isfinite(value) else str(value)
    self._write_line(record)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    record = {"step": int(step), **{name: str(text) for name, text in texts.items()}}
    self._write_line(record)

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    # Non-local files are already rewritten whole on every write.
    if self._file is not None:
      self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()


def create_writer(model_dir: str) -> metric_writers.MetricWriter:
  """TensorBoard events in MODEL_DIR/train, JSON lines in MODEL_DIR, a log line."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True,
                                                asynchronous=False)
  tensorboard = metric_writers.create_default_writer(
      os.path.join(model_dir, "train"), asynchronous=True)
  return metric_writers.MultiWriter(
      [tensorboard, JsonLinesWriter(os.path.join(model_dir, METRICS_FILE))])


def read_metrics(model_dir: str) -> dict[int, dict[str, float]]:
  """The JSON-lines record as {step: metrics}; the last entry for a step wins."""
  records: dict[int, dict[str, float]] = {}
  path = os.path.join(model_dir, METRICS_FILE)
  with tf.io.gfile.GFile(path, "r") as file:
    for line_number, line in enumerate(file, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        # A killed writer can leave half a line at the end; anything else is
        # worth knowing about.
        raise ValueError(f"{path}:{line_number}: not JSON ({error})") from None
      step = record.pop("step")
      records.setdefault(step, {}).update(record)
  return records


def train_flops_per_step(config: T5Config, batch_size: int, input_length: int,
                         target_length: int) -> float:
  """Matmul FLOPs of one training step (forward + backward = 3 x forward).

  Counts every projection at 2 FLOPs per multiply-add over the padded lengths
  (the work the device does) plus the attention score and value products.
  Element-wise work, softmax and layer norms are left out, as in MFU figures
  from MaxText or PaLM.
  """
  emb, kv, mlp = config.emb_dim, config.joined_kv, config.mlp_dim
  mlp_params = (len(config.mlp_activations) + 1) * emb * mlp
  attention_params = 4 * emb * kv
  encoder = config.num_encoder_layers * input_length * (
      2 * (attention_params + mlp_params) + 4 * input_length * kv)
  decoder_per_token = 2 * (
      attention_params + 2 * emb * kv + mlp_params) + 4 * target_length * kv
  cross_kv = 2 * (2 * emb * kv) * input_length
  cross_scores = 4 * target_length * input_length * kv
  decoder = config.num_decoder_layers * (
      target_length * decoder_per_token + cross_kv + cross_scores)
  logits = 2 * emb * config.vocab_size * target_length
  return 3.0 * batch_size * (encoder + decoder + logits)


class StepTimer:
  """Wall time and throughput between two log points."""

  def __init__(self, step: int):
    self._start_time = time.perf_counter()
    self._start_step = step

  def exclude(self, seconds: float) -> None:
    """Leaves out time spent on something else (eval, a blocking save)."""
    self._start_time += seconds

  def lap(self, step: int) -> tuple[float, int]:
    """(seconds per step, steps) since the last lap; restarts the clock."""
    now = time.perf_counter()
    steps = max(step - self._start_step, 1)
    seconds = (now - self._start_time) / steps
    self._start_time, self._start_step = now, step
    return seconds, steps


def summarize_train_metrics(step_metrics: list[Mapping[str, Any]],
                            seconds_per_step: float, *, batch_size: int,
                            target_length: int, flops_per_step: float | None,
                            peak_flops: float | None) -> dict[str, float]:
  """Host-side summary of the steps since the last log point.

  loss is the mean per step of the model's loss (a sum over tokens unless the
  model normalises it); loss_per_token and accuracy divide token sums by the
  number of target tokens; tokens_per_second counts padded target positions
  (batch x target length, the convention of `cot-distill bench train`).
  """
  fetched = [jax.tree.map(np.asarray, jax.device_get(m)) for m in step_metrics]
  total = lambda name: float(sum(np.sum(m[name]) for m in fetched))
  num_tokens = max(total("num_tokens"), 1.0) if "num_tokens" in fetched[0] else 1.0
  summary = {
      "train/loss": total("loss") / len(fetched),
      "train/learning_rate": float(fetched[-1]["learning_rate"]),
      "train/grad_norm": total("grad_norm") / len(fetched),
      "timing/seconds_per_step": seconds_per_step,
      "timing/tokens_per_second": batch_size * target_length / seconds_per_step,
  }
  if "cross_ent_loss" in fetched[0]:
    summary["train/loss_per_token"] = total("cross_ent_loss") / num_tokens
  if "z_loss" in fetched[0]:
    summary["train/z_loss"] = total("z_loss") / len(fetched)
  if "num_correct" in fetched[0]:
    summary["train/accuracy"] = total("num_correct") / num_tokens
  elif "accuracy" in fetched[0]:
    summary["train/accuracy"] = total("accuracy") / len(fetched)
  if "num_tokens" in fetched[0]:
    summary["timing/nonpadding_tokens_per_second"] = (
        num_tokens / len(fetched) / seconds_per_step)
  if flops_per_step and peak_flops:
    summary["timing/mfu"] = flops_per_step / seconds_per_step / (
        peak_flops * jax.device_count())
  return summary


def progress_line(step: int, train_steps: int,
                  summary: Mapping[str, float]) -> str:
  """The human progress line of one log interval.

  `step 40/200 (20%): loss 12.35 (2.104/token), 3.21 steps/s, 2,054 target
  tokens/s, ETA 0:00:50`. Throughput and ETA come from the interval just
  logged (compilation excluded), so the ETA follows the current speed.
  """
  seconds = summary["timing/seconds_per_step"]
  parts = [f"loss {summary['train/loss']:.4g}"]
  if "train/loss_per_token" in summary:
    parts[0] += f" ({summary['train/loss_per_token']:.4g}/token)"
  parts.append(f"{1.0 / seconds:.3g} steps/s" if seconds > 0 else "")
  parts.append(f"{summary['timing/tokens_per_second']:,.0f} target tokens/s")
  eta = (train_steps - step) * seconds
  parts.append("done" if step >= train_steps
               else f"ETA {_duration(eta)}")
  if summary.get("train/skipped_nonfinite"):
    parts.append(f"{summary['train/skipped_nonfinite']:.0f} NaN/Inf steps "
                 "skipped")
  percent = 100.0 * step / max(train_steps, 1)
  return (f"step {step}/{train_steps} ({percent:.0f}%): "
          + ", ".join(part for part in parts if part))


def _duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
