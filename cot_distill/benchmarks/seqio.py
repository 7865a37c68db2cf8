"""`cot-distill bench seqio`: input-pipeline examples/s against what the trainer eats.

Reads CoT records (a run's records.jsonl; by default GSM8K train with its
gold solutions as rationales, written as a records file so the real JSONL
source is measured) through the `cot` task pipeline, three passes in this run:

  source    records.jsonl -> tf.data rows (the baseline);
  tokenize  + formatting, SentencePiece tokenisation, length filter, EOS;
  packed    + seqio.EncDecFeatureConverter(pack=True) and batching into
            BATCH rows of INPUTS/TARGETS tokens (default 128 x 128/128).

Each pass repeats the data (num_epochs=None) and times a fixed number of
examples after one warm-up batch (256 examples, or one packed batch). Packed
examples are counted as segments.

The trainer consumes TARGET positions: batch x target length per step,
measured in the same run: the trainer's own compiled step
(`benchmarks.train.make_our_step`: --trainer-model, Adafactor, bf16
activations, as `cot-distill train` on CPU) runs on one of the packed
batches just produced, one warm-up step (compilation) and
--trainer-steps timed steps, median. (--trainer-step-seconds replaces the
measurement with a given figure, said so in the output.) Needed examples/s
= packed rows/s the trainer eats x examples per packed row (measured here);
the ratio pipeline/needed says how much headroom the input pipeline has
(> 1: the trainer, not the data, is the bottleneck). Figures from other
runs appear only in the reference block.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

# The trainer's CPU figure from another run (T5 1.1 small, batch 8,
# 128/128); printed in the reference block, never used in the ratio.
REFERENCE_TRAINER_TOKENS_PER_SECOND = 650.0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "seqio", help="records -> tokens -> packed batches, examples/s vs trainer need",
      description=__doc__)
  parser.add_argument("--records", default=None,
                      help="annotation run dir or records.jsonl (default: GSM8K train "
                      "gold solutions as records)")
  parser.add_argument("--data-dir", default=None, help="benchmark files (for the default)")
  parser.add_argument("--spm-path", default=None,
                      help="SentencePiece model (default: vocabularies precedence)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--inputs-length", type=int, default=128)
  parser.add_argument("--targets-length", type=int, default=128)
  parser.add_argument("--examples", type=int, default=4096,
                      help="examples timed per pass (after one warm-up batch)")
  parser.add_argument("--trainer-model", default="t5_1_1_small",
                      help="model of the trainer step measured in this run")
  parser.add_argument("--trainer-precision", default="bfloat16",
                      choices=("float32", "bfloat16", "bfloat16+logits"))
  parser.add_argument("--trainer-steps", type=int, default=2,
                      help="timed trainer steps (after one warm-up step)")
  parser.add_argument("--trainer-step-seconds", type=float, default=None,
                      help="a step time measured elsewhere, used instead of measuring "
                           "the trainer in this run")
  parser.set_defaults(func=run)


def _default_records(directory: str, data_dir: str | None) -> str:
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, "records.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for example in registry.load("gsm8k", "train", data_dir=data_dir):
      record = example.to_dict()
      record.update(rationale=example.gold_rationale or "", correct=True, sample_index=0)
      f.write(json.dumps(record) + "\n")
  return path


def _time_pass(dataset, examples_wanted: int, count_fn, warmup: int) -> tuple[float, int]:
  """(seconds, examples) to draw >= examples_wanted examples after `warmup` elements."""
  iterator = dataset.as_numpy_iterator()
  for _ in range(warmup):
    next(iterator)
  started, seen = time.perf_counter(), 0
  while seen < examples_wanted:
    seen += count_fn(next(iterator))
  return time.perf_counter() - started, seen


def run(args) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cot_distill import errors, seqio_tasks, vocabularies  # pylint: disable=g-import-not-at-top

  lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
  vocabulary = vocabularies.get_vocabulary(args.spm_path)
  with tempfile.TemporaryDirectory(prefix="bench-seqio-") as scratch:
    records = args.records or _default_records(scratch, args.data_dir)
    task = seqio_tasks.register_cot_task("cot_distill_bench.seqio", records, "cot", vocabulary)
    count = task.num_input_examples("train")

    def task_dataset(num_epochs=None):
      return task.get_dataset(lengths, split="train", shuffle=True, seed=0,
                              num_epochs=num_epochs)

    # CoT tasks drop records longer than the feature lengths; with none left
    # the repeated dataset would never yield, so say so instead of hanging.
    if not list(task_dataset(num_epochs=1).take(1).as_numpy_iterator()):
      raise errors.UserError(
          f"bench seqio: none of the {count} records fits inputs/targets lengths "
          f"{args.inputs_length}/{args.targets_length} (CoT tasks drop longer "
          "records); raise --inputs-length / --targets-length")

    # Unpacked passes hand Python one small array per 256 examples (a size per
    # example), so the figure is the pipeline's, not numpy conversion's.
    source = (task.source.get_dataset("train", shuffle=True, seed=0).repeat()
              .map(lambda ex: tf.strings.length(ex["rationale"])).batch(256))
    tokenized = task_dataset().map(lambda ex: tf.size(ex["targets"])).batch(256)
    results = {}
    results["source"] = _time_pass(source, args.examples, len, 1)
    results["tokenize"] = _time_pass(tokenized, args.examples, len, 1)
    packed = seqio.EncDecFeatureConverter(pack=True)(task_dataset(), lengths)
    batches = packed.batch(args.batch_size, drop_remainder=True)
    segments = lambda batch: int(batch["decoder_segment_ids"].max(axis=1).sum())
    results["packed"] = _time_pass(batches, args.examples, segments, 1)
    # Packing statistics from a few batches (not timed).
    stats = list(batches.take(4).as_numpy_iterator())
    rows = sum(b["decoder_segment_ids"].shape[0] for b in stats)
    per_row = sum(segments(b) for b in stats) / rows
    target_fill = float(np.mean([(b["decoder_target_tokens"] > 0).mean() for b in stats]))
    input_fill = float(np.mean([(b["encoder_input_tokens"] > 0).mean() for b in stats]))
    kept = sum(1 for _ in task.get_dataset(lengths, split="train", shuffle=False)
               .as_numpy_iterator())

  if args.trainer_step_seconds:
    step_seconds = args.trainer_step_seconds
    reference = (f"given step {step_seconds:g} s x {args.batch_size} x "
                 f"{args.targets_length}, not measured in this run")
  else:
    step_seconds = measure_trainer_step(args, stats[0])
    reference = (f"measured in this run: {args.trainer_model} {args.trainer_precision} "
                 f"Adafactor step on a packed batch, median {step_seconds:.3f} s x "
                 f"{args.batch_size} x {args.targets_length}")
  trainer_tokens = args.batch_size * args.targets_length / step_seconds
  needed = trainer_tokens / args.targets_length * per_row

  print(f"records: {records if args.records else 'GSM8K train gold solutions'} "
        f"({count} records, {kept} within {lengths['inputs']}/{lengths['targets']} tokens)")
  print(f"machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
  baseline = results["source"][1] / results["source"][0]
  for name, (seconds, examples) in results.items():
    rate = examples / seconds
    print(f"  {name:9s} {rate:10.0f} examples/s  ({examples} in {seconds:.2f} s; "
          f"{rate / baseline:.2f} x source)")
  packed_rate = results["packed"][1] / results["packed"][0]
  print(f"packing: {per_row:.2f} examples per row, inputs {input_fill:.0%} / targets "
        f"{target_fill:.0%} non-padding; {packed_rate / per_row / args.batch_size:.2f} "
        f"batches/s of {args.batch_size}")
  print(f"trainer: {trainer_tokens:.0f} target positions/s ({reference}) = "
        f"{trainer_tokens / args.targets_length:.2f} rows/s = {needed:.1f} examples/s needed")
  print(f"ratio pipeline/trainer: {packed_rate / needed:.1f}x")
  from cot_distill.benchmarks import common  # pylint: disable=g-import-not-at-top
  common.print_reference("issue 6", [
      f"trainer, T5 1.1 small on CPU: {REFERENCE_TRAINER_TOKENS_PER_SECOND:.0f} target "
      "tokens/s"])
  return 0


def measure_trainer_step(args, packed_batch) -> float:
  """Median seconds of the trainer's compiled step on one packed batch from this run."""
  import statistics  # pylint: disable=g-import-not-at-top
  from cot_distill import cpu_runtime  # pylint: disable=g-import-not-at-top
  from cot_distill.benchmarks import train  # pylint: disable=g-import-not-at-top
  cpu_runtime.prefer_synchronous_dispatch()  # as `cot-distill train` runs on CPU
  with cpu_runtime.retained_memory():
    return _time_trainer_step(args, packed_batch, train)


def _time_trainer_step(args, packed_batch, train) -> float:
  import statistics  # pylint: disable=g-import-not-at-top
  step = train.make_our_step(args.trainer_model, dict(packed_batch), optimizer="adafactor",
                             precision=args.trainer_precision)
  print(f"trainer: timing {args.trainer_model} on a packed batch of {args.batch_size} "
        f"(1 warm-up step, compilation included, then {args.trainer_steps})", flush=True)
  step()
  times = []
  for _ in range(max(args.trainer_steps, 1)):
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
  return statistics.median(times)
