"""`cot-distill bench train`: training-step time of T5 1.1 small, ours vs HF.

Setting (the issue's): T5 1.1 small (vocabulary 32,128), batch 8, 128 input
and 128 target tokens, every position a real token (so target tokens per
step = 8 x 128 = 1,024, the same count for a packed T5X batch). Each system
runs warm-up steps (compilation included), then `--steps` timed steps, each
ended with a device sync; the figure is the median step.

  ours        the trainer's own jitted step (`train.step.compile_train_step`:
              teacher-forced `EncoderDecoderModel.loss_fn`, Adafactor with
              T5X defaults, donated state) on all local devices, data
              parallel; activations bf16 (T5X default) and float32; with
              bf16 activations, the logits layer in float32 (as T5X) and in
              bf16 with float32 accumulation (`T5Config.logits_dtype`, what
              torch.autocast does to HF's lm_head).
  hf-fp32     Hugging Face transformers + PyTorch, float32, AdamW.
  hf-bf16     the same under torch.autocast(bfloat16).

The systems are timed in turn, one step each per round, so a change in the
machine's load hits them all alike.

Ratios are against the fastest HF baseline measured in this run. The
machine's other load moves every number; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Callable

# Median s/step measured on the 2-core development machine for the same
# setting (issue 6); printed for context, never used in the ratios.
REFERENCE_SECONDS_PER_STEP = {
    "T5X trainer (packed, bf16 activations, Adafactor)": 3.38,
    "HF + PyTorch float32 AdamW": 2.85,
    "HF + PyTorch float32 Adafactor": 2.71,
    "HF + PyTorch bf16 autocast AdamW": 1.90,
}


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "train", help="training step time / tokens per second vs Hugging Face",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="t5_1_1_small",
                      help="cot_distill.model.config name")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--input-length", type=int, default=128)
  parser.add_argument("--target-length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20,
                      help="timed steps per system (median reported)")
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed steps first (compilation included)")
  parser.add_argument("--dtypes", default="bfloat16,float32",
                      help="activation dtypes of our step to time")
  parser.add_argument("--logits-dtypes", default="float32,bfloat16",
                      help="operand dtypes of the logits layer to time with bf16 "
                           "activations (float32 is T5X's)")
  parser.add_argument("--optimizer", choices=("adafactor", "adamw"),
                      default="adafactor", help="our step's optimizer")
  parser.add_argument("--no-baseline", action="store_true",
                      help="skip the Hugging Face + PyTorch baselines")
  parser.add_argument("--host-memory", choices=("retain", "default"), default="retain",
                      help="retain: freed host memory stays mapped between steps, as "
                           "the trainer runs (cot_distill.cpu_runtime; it applies to "
                           "the HF baselines in this process too); default: glibc's "
                           "own policy")
  parser.set_defaults(func=run)


def _time_round_robin(systems: dict[str, Callable[[], None]], warmup: int,
                      steps: int) -> dict[str, list[float]]:
  """Warm every system up, then time them one step each in turn.

  Interleaving spreads the machine's changing load evenly over the systems,
  so their ratio means something even when the absolute times drift.
  """
  for name, step in systems.items():
    print(f"warming up {name} ({warmup} steps, compilation included)", flush=True)
    for _ in range(warmup):
      step()
  times = {name: [] for name in systems}
  for round_index in range(steps):
    for name, step in systems.items():
      started = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - started)
    print(f"round {round_index + 1}/{steps}: " + ", ".join(
        f"{name} {values[-1]:.2f}s" for name, values in times.items()), flush=True)
  return times


def _random_tokens(batch: int, length: int, seed: int, vocab: int = 32000):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.random.RandomState(seed).randint(2, vocab, (batch, length)).astype(np.int32)


def _our_step(args, dtype: str, logits_dtype: str = "float32") -> Callable[[], None]:
  """The trainer's compiled step, state threaded through.

  Each step hands the step a host batch, as the trainer does (the same
  tokens every time, in fresh host arrays).
  """
  import functools  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=import-outside-toplevel
  from cot_distill.train import data, optimizers, partitioning  # pylint: disable=import-outside-toplevel
  from cot_distill.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel

  model = EncoderDecoderModel(get_config(args.model, dtype=dtype, dropout_rate=0.0,
                                         logits_dtype=logits_dtype))
  schedule = optimizers.constant_schedule(1e-3)
  tx = (optimizers.adafactor if args.optimizer == "adafactor" else optimizers.adamw)(schedule)
  partitioner = partitioning.Partitioner(devices=jax.local_devices())
  lengths = {"inputs": args.input_length, "targets": args.target_length}
  init = functools.partial(model.get_initial_variables,
                           input_shapes=data.model_input_shapes(lengths, args.batch_size, False))
  shapes, specs = state_lib.abstract_state_and_specs(init, tx)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  holder = {"state": state_lib.create_train_state(init, tx, shardings, seed=0)}
  targets = _random_tokens(args.batch_size, args.target_length, 1)
  host_batch = {
      "encoder_input_tokens": _random_tokens(args.batch_size, args.input_length, 0),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], 1),
      "decoder_loss_weights": np.ones_like(targets, dtype=np.float32),
  }
  train_step = step_lib.compile_train_step(
      loss_fn=model.loss_fn, optimizer=tx, learning_rate=schedule,
      partitioner=partitioner, state_shardings=shardings, dropout=False)

  def step():
    batch = data.to_global_batch({name: array.copy() for name, array in host_batch.items()},
                                 partitioner, args.batch_size)
    holder["state"], metrics = train_step(holder["state"], batch)
    jax.block_until_ready(metrics["loss"])
  return step


def _hf_step(args, autocast: bool) -> Callable[[], None]:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel
  from cot_distill.model.hf_checkpoints import config_to_hf  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  hf_config = transformers.T5Config(**config_to_hf(get_config(args.model)))
  hf_config.dropout_rate = 0.0
  model = transformers.T5ForConditionalGeneration(hf_config).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
  inputs = torch.from_numpy(_random_tokens(args.batch_size, args.input_length, 0)).long()
  labels = torch.from_numpy(_random_tokens(args.batch_size, args.target_length, 1)).long()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      loss = model(input_ids=inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
  return step


def _row(name: str, times: list[float], target_tokens: int) -> dict:
  median = statistics.median(times)
  return {"name": name, "median": median, "tokens_per_second": target_tokens / median,
          "min": min(times), "max": max(times), "steps": len(times)}


def run(args: argparse.Namespace) -> int:
  from cot_distill import cpu_runtime  # pylint: disable=import-outside-toplevel
  cpu_runtime.prefer_synchronous_dispatch()
  policy = (cpu_runtime.retained_memory() if args.host_memory == "retain"
            else contextlib.nullcontext(False))
  with policy as retained:
    print("host memory: " + ("freed memory retained between steps (synchronous dispatch)"
                             if retained else "glibc default (freed blocks unmapped)"),
          flush=True)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
  target_tokens = args.batch_size * args.target_length
  systems = {}
  logits_dtypes = [d.strip() for d in args.logits_dtypes.split(",") if d.strip()]
  for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
    for logits_dtype in (logits_dtypes if dtype != "float32" else ["float32"]):
      name = f"ours ({args.optimizer}, {dtype} activations"
      name += f", {logits_dtype} logits)" if logits_dtype != "float32" else ")"
      systems[name] = _our_step(args, dtype, logits_dtype)
  baseline_names = []
  if not args.no_baseline:
    try:
      import torch  # pylint: disable=import-outside-toplevel,unused-import
      import transformers  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      print("torch/transformers not installed: no same-run baseline")
    else:
      for name, autocast in (("hf-fp32 (AdamW)", False),
                             ("hf-bf16 autocast (AdamW)", True)):
        systems[name] = _hf_step(args, autocast)
        baseline_names.append(name)
  times = _time_round_robin(systems, args.warmup, args.steps)
  rows = [_row(name, values, target_tokens) for name, values in times.items()
          if name not in baseline_names]
  baselines = [_row(name, times[name], target_tokens) for name in baseline_names]
  _print(args, rows, baselines, target_tokens)
  return 0


def _print(args, rows, baselines, target_tokens) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  print(f"T5 config {args.model}, batch {args.batch_size}, {args.input_length} input / "
        f"{args.target_length} target tokens ({target_tokens} target tokens/step); "
        f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; "
        f"CPUs: {os.cpu_count()}; median of {args.steps} round-robin steps after "
        f"{args.warmup} warm-up; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  # Ratios = fastest HF time / this system's time (> 1: faster than HF), by
  # median and by best step (the best step is the least disturbed by load).
  fastest = min(baselines, key=lambda row: row["median"]) if baselines else None
  fastest_min = min(row["min"] for row in baselines) if baselines else None
  print(f"{'system':56s} {'s/step':>7s} {'min':>7s} {'max':>7s} {'tok/s':>7s} "
        f"{'tok/s@min':>9s} {'vs HF':>6s} {'@min':>6s}")
  for row in rows + baselines:
    ratio = f"{fastest['median'] / row['median']:.2f}x" if fastest else "-"
    ratio_min = f"{fastest_min / row['min']:.2f}x" if fastest else "-"
    print(f"{row['name']:56s} {row['median']:7.3f} {row['min']:7.3f} {row['max']:7.3f} "
          f"{row['tokens_per_second']:7.1f} {target_tokens / row['min']:9.1f} "
          f"{ratio:>6s} {ratio_min:>6s}")
  print("reference (issue 6, same setting on the 2-core machine, not this run):")
  for name, seconds in REFERENCE_SECONDS_PER_STEP.items():
    print(f"  {name:52s} {seconds:5.2f} s/step  {1024 / seconds:6.1f} tok/s")
