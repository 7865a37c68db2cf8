"""Decoding a SeqIO eval set with sharded params, and periodic eval in training.

`make_predict_fn` turns (model, params, partitioner) into the `predict_fn`
that `seqio.Evaluator.evaluate` calls, so the task's own postprocessors and
metric functions score the decodes (for CoT tasks: `answers.judge`); the
trainer calls it every N steps. The decoding itself is
`sharded_decode.decode`, the same function `cot-distill evaluate` uses.

Every host decodes every example (the eval sets are small next to training):
the batch is the same on all hosts and the tokens come back to each host.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
import seqio

from cot_distill import errors
from cot_distill.train import partitioning
from cot_distill.train import sharded_decode

PredictFn = Callable[[Any], Sequence[tuple[int, Sequence[int]]]]


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """Periodic decoding eval during training.

  Attributes:
    mixture_or_task_name: eval task or mixture (each sub-task with metric
      functions is scored and logged as eval/<task>/<metric>).
    every_steps: run every this many steps (and after the last step).
    split: the tasks' split to decode.
    task_feature_lengths: input/target lengths; default the training ones.
      The target length is the maximum decode length.
    batch_size: decoding batch (a multiple of the data-parallel size).
    num_examples: decode only the first N examples of each task (None: all).
    decode_kwargs: passed to `EncoderDecoderModel.predict_batch`
      (decode_method, beam_size, temperature, ...); default greedy.
    use_cached: read the tasks' offline cache.
  """
  mixture_or_task_name: str
  every_steps: int = 1000
  split: str = "validation"
  task_feature_lengths: Mapping[str, int] | None = None
  batch_size: int = 32
  num_examples: int | None = None
  decode_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  use_cached: bool = False


def _padded_batches(dataset: Any, batch_size: int
                    ) -> Iterable[tuple[np.ndarray, dict[str, np.ndarray], int]]:
  """(indices, features, real rows) with every batch padded to `batch_size`.

  A fixed shape compiles the decoder once; padding rows are zeros and their
  outputs are dropped.
  """
  for indices, features in dataset.batch(batch_size).as_numpy_iterator():
    rows = len(indices)
    if rows < batch_size:
      features = {
          name: np.concatenate([value, np.zeros(
              (batch_size - rows,) + value.shape[1:], value.dtype)])
          for name, value in features.items()}
    yield indices, features, rows


def make_predict_fn(model: Any, params: Any,
                    partitioner: partitioning.Partitioner, *,
                    batch_size: int,
                    decode_kwargs: Mapping[str, Any] | None = None,
                    seed: int = 0) -> PredictFn:
  """A seqio `predict_fn`: enumerated model-feature dataset -> [(index, tokens)].

  Rows keep their padding after EOS (the task vocabulary's decode stops at
  EOS); with num_decodes > 1 the first (best) decode is returned. Sampling
  draws with `fold_in(PRNGKey(seed), batch number)` unless decode_kwargs
  holds an rng.
  """
  decode_kwargs = dict(decode_kwargs or {})
  if batch_size % partitioner.data_parallel_size:
    raise errors.ConfigurationError(
        f"eval batch_size {batch_size} must be a multiple of the data "
        f"parallel size {partitioner.data_parallel_size}")

  def predict_fn(dataset) -> list[tuple[int, list[int]]]:
    results = []
    for number, (indices, features, rows) in enumerate(
        _padded_batches(dataset, batch_size)):
      kwargs = dict(decode_kwargs)
      kwargs.setdefault("max_decode_length",
                        features["decoder_input_tokens"].shape[1])
      if kwargs.get("decode_method") == "sample" and "rng" not in kwargs:
        kwargs["rng"] = jax.random.fold_in(jax.random.PRNGKey(seed), number)
      tokens, _ = sharded_decode.decode(
          model, params, partitioner, features["encoder_input_tokens"],
          **kwargs)
      for index, row in zip(indices[:rows], tokens[:rows, 0]):
        results.append((int(index), row.tolist()))
    return results

  return predict_fn


class PeriodicEvaluator:
  """Builds the seqio Evaluator once; `evaluate` decodes and scores."""

  def __init__(self, config: EvaluationConfig,
               train_feature_lengths: Mapping[str, int], seed: int = 0):
    self.config = config
    lengths = dict(config.task_feature_lengths or train_feature_lengths)
    self._evaluator = seqio.Evaluator(
        mixture_or_task_name=config.mixture_or_task_name,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=config.split,
        use_cached=config.use_cached,
        seed=seed,
        sequence_length=lengths,
        num_examples=config.num_examples,
        # Metrics run on the host thread that also drives the devices; a
        # second thread buys nothing and would race with training.
        async_compute_metrics=False)
    self._max_decode_length = lengths["targets"]
    self._seed = seed

  def should_run(self, step: int, last_step: int) -> bool:
    return step % self.config.every_steps == 0 or step == last_step

  def evaluate(self, model: Any, params: Any,
               partitioner: partitioning.Partitioner,
               step: int) -> dict[str, float]:
    """{"eval/<task>/<metric>": value}; empty on hosts other than 0."""
    decode_kwargs = {"max_decode_length": self._max_decode_length,
                     **self.config.decode_kwargs}
    predict_fn = make_predict_fn(model, params, partitioner,
                                 batch_size=self.config.batch_size,
                                 decode_kwargs=decode_kwargs, seed=self._seed)
    compute = jax.process_index() == 0
    all_metrics, _ = self._evaluator.evaluate(
        compute_metrics=compute, step=step, predict_fn=predict_fn)
    if not compute:
      return {}
    results = all_metrics.result() if hasattr(all_metrics, "result") else all_metrics
    flat = {}
    for task_name, metrics in (results or {}).items():
      for metric_name, value in metrics.items():
        value = getattr(value, "value", value)
        try:
          flat[f"eval/{task_name}/{metric_name}"] = float(value)
        except (TypeError, ValueError):
          logging.info("eval metric %s/%s is not a scalar; not logged",
                       task_name, metric_name)
    return flat
