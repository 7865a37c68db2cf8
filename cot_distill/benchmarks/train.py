"""`cot-distill bench train`: training-step time of T5 1.1 small, ours vs HF, same work.

Setting (the issue's): T5 1.1 small (vocabulary 32,128), batch 8, 128 input
and 128 target tokens, every position a real token (so target tokens per
step = 8 x 128 = 1,024, the same count for a packed T5X batch). Each system
runs warm-up steps (compilation included, reported apart as "first step"),
then `--steps` timed steps, each ended with a device sync; the figure is the
median step. Systems are timed in turn, one step each per round, so a change
in the machine's load hits them all alike.

The grid, optimizer (Adafactor, AdamW) x precision:

  ours        the trainer's own jitted step (`train.step.compile_train_step`:
              teacher-forced `EncoderDecoderModel.loss_fn`, donated state) on
              all local devices; precision `float32`, `bfloat16` (bf16
              activations, T5X's float32 logits layer) and `bfloat16+logits`
              (the logits layer in bf16 with float32 accumulation, what
              torch.autocast does to HF's lm_head); `cpu_fast_paths` auto,
              plus one row with it `off` (`--fast-paths-off`).
  HF          transformers + PyTorch, the same architecture (lm_head untied,
              parameter count checked equal to ours, else the run stops),
              float32 denormals flushed; `float32`, or `bfloat16` =
              torch.autocast(bfloat16); eager, and `torch.compile`d for the
              configs in `--hf-compile` (compilation time in "first step").

Optimizers, same settings on both sides as far as the libraries allow:
AdamW lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay (optax.adamw /
torch.optim.AdamW). Adafactor lr 1e-3, T5X's defaults (decay 1 - t^-0.8,
update clipping at RMS 1.0, updates scaled by the parameter RMS floored at
1e-3, no momentum, eps 1e-30): ours `train.optimizers.adafactor`,
HF `transformers.optimization.Adafactor(scale_parameter=True,
relative_step=False, decay_rate=-0.8, clip_threshold=1.0, beta1=None)`. What
differs: HF factors the second moments of every matrix, T5X/optax only of
matrices with both sides >= 128 (here only the 32 x 6 relative-position
biases differ, a negligible amount of work).

Rows with the same optimizer share one set of weights and optimizer state
(ours: one train state per optimizer; HF: one model, one optimizer per kind),
so the grid fits a small machine's memory; the values do not change the work.

Ratios: each of our rows is divided by the fastest HF row doing the same
work (same optimizer and precision class, eager or compiled; ours with the
float32 logits layer does more work than autocast, so that ratio is
conservative), and separately by the fastest HF row of any configuration.
Achieved FLOP/s = 3 x the forward pass's matrix-product FLOPs / step time,
against the machine's peak for the row's precision: CPU count x one core's
peak, measured in this run with one large `jnp.dot`. Numbers from other
runs are printed only in the reference block at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time
from typing import Callable

# Median s/step measured on the 2-core development machine for the same
# setting (issue 6); printed in the reference block, never used in a ratio.
REFERENCE_SECONDS_PER_STEP = {
    "T5X trainer (packed, bf16 activations, Adafactor)": 3.38,
    "HF + PyTorch float32 AdamW": 2.85,
    "HF + PyTorch float32 Adafactor": 2.71,
    "HF + PyTorch bf16 autocast AdamW": 1.90,
    "HF + PyTorch bf16 autocast AdamW, torch.compile": 1.83,
}

OPTIMIZERS = ("adafactor", "adamw")
PRECISIONS = ("float32", "bfloat16", "bfloat16+logits")  # ours; HF: float32, bfloat16


@dataclasses.dataclass(frozen=True)
class System:
  """One row of the grid."""
  name: str
  side: str            # "ours" | "hf"
  optimizer: str       # "adafactor" | "adamw"
  precision: str       # ours: PRECISIONS; hf: "float32" | "bfloat16"
  compiled: bool = False       # HF: torch.compile
  fast_paths: str = "auto"     # ours: cot_distill.fast_paths mode

  @property
  def precision_class(self) -> str:
    return "float32" if self.precision == "float32" else "bfloat16"


def _split(text: str) -> list[str]:
  return [item.strip() for item in text.split(",") if item.strip()]


def grid(args: argparse.Namespace, *, with_hf: bool = True) -> list[System]:
  """The rows this invocation times, in order (ours first, then HF)."""
  optimizers, precisions = _split(args.optimizers), _split(args.precisions)
  for value in optimizers:
    if value not in OPTIMIZERS:
      raise ValueError(f"--optimizers: {value!r} is not one of {', '.join(OPTIMIZERS)}")
  for value in precisions:
    if value not in PRECISIONS:
      raise ValueError(f"--precisions: {value!r} is not one of {', '.join(PRECISIONS)}")
  systems = [System(f"ours {optimizer} {precision}", "ours", optimizer, precision)
             for optimizer in optimizers for precision in precisions]
  if args.fast_paths_off:
    optimizer, _, precision = args.fast_paths_off.partition("/")
    if optimizer not in OPTIMIZERS or precision not in PRECISIONS:
      raise ValueError(f"--fast-paths-off: expected OPTIMIZER/PRECISION, got "
                       f"{args.fast_paths_off!r}")
    systems.append(System(f"ours {optimizer} {precision} fast-paths-off", "ours",
                          optimizer, precision, fast_paths="off"))
  if with_hf and not args.no_baseline:
    hf_precisions = sorted({("float32" if p == "float32" else "bfloat16") for p in precisions},
                           key=("float32", "bfloat16").index)
    for optimizer in optimizers:
      for precision in hf_precisions:
        label = "float32" if precision == "float32" else "bf16-autocast"
        systems.append(System(f"HF {optimizer} {label}", "hf", optimizer, precision))
    for spec in _split(args.hf_compile):
      optimizer, _, precision = spec.partition("/")
      if optimizer not in OPTIMIZERS or precision not in ("float32", "bfloat16"):
        raise ValueError(f"--hf-compile: expected OPTIMIZER/float32|bfloat16, got {spec!r}")
      label = "float32" if precision == "float32" else "bf16-autocast"
      systems.append(System(f"HF {optimizer} {label} compiled", "hf", optimizer, precision,
                            compiled=True))
  return systems


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "train", help="training step time / tokens per second vs Hugging Face, same work",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="t5_1_1_small",
                      help="cot_distill.model.config name")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--input-length", type=int, default=128)
  parser.add_argument("--target-length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per system (median reported)")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps first (compilation included)")
  parser.add_argument("--optimizers", default="adafactor,adamw",
                      help="comma list of: " + ", ".join(OPTIMIZERS))
  parser.add_argument("--precisions", default="float32,bfloat16,bfloat16+logits",
                      help="our precisions (comma list of: " + ", ".join(PRECISIONS)
                      + "); HF runs float32 and/or bf16 autocast to match")
  parser.add_argument("--fast-paths-off", default="adafactor/bfloat16+logits",
                      metavar="OPTIMIZER/PRECISION",
                      help="one more row of ours with cpu_fast_paths=off ('' for none)")
  parser.add_argument("--hf-compile", default="adamw/bfloat16",
                      metavar="OPTIMIZER/PRECISION,...",
                      help="HF configs also timed under torch.compile ('' for none); "
                           "compilation takes minutes on a small CPU")
  parser.add_argument("--hf-threads", type=int, default=0,
                      help="torch threads for the HF rows (0: one per CPU); on a machine "
                           "shared with other jobs one thread can be faster")
  parser.add_argument("--peak-size", type=int, default=2048,
                      help="side of the square jnp.dot that measures the matmul peak")
  parser.add_argument("--profile", default="adafactor/bfloat16+logits",
                      metavar="OPTIMIZER/PRECISION",
                      help="after the timings, trace this row of ours and print where its "
                           "step spends its time, by kind of operation, phase and part of "
                           "the model ('' for none; cot_distill/benchmarks/profile.py)")
  parser.add_argument("--no-baseline", action="store_true",
                      help="skip the Hugging Face + PyTorch baselines")
  parser.add_argument("--host-memory", choices=("retain", "default"), default="retain",
                      help="retain: freed host memory stays mapped between steps, as "
                           "the trainer runs (cot_distill.cpu_runtime; it applies to "
                           "the HF baselines in this process too); default: glibc's "
                           "own policy")
  parser.set_defaults(func=run)


def _time_round_robin(systems: dict[str, Callable[[], None]], warmup: int,
                      steps: int) -> tuple[dict[str, list[float]], dict[str, float]]:
  """Warm every system up, then time them one step each in turn.

  Interleaving spreads the machine's changing load evenly over the systems,
  so their ratio means something even when the absolute times drift.
  Returns (timed steps, seconds of each system's first step, compilation
  included).
  """
  first = {}
  for name, step in systems.items():
    print(f"warming up {name} ({warmup} steps, compilation included)", flush=True)
    for index in range(max(warmup, 1)):
      started = time.perf_counter()
      step()
      if index == 0:
        first[name] = time.perf_counter() - started
  times = {name: [] for name in systems}
  for round_index in range(steps):
    for name, step in systems.items():
      started = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - started)
    print(f"round {round_index + 1}/{steps}: " + ", ".join(
        f"{name} {values[-1]:.2f}s" for name, values in times.items()), flush=True)
  return times, first


def _random_tokens(batch: int, length: int, seed: int, vocab: int = 32000):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.random.RandomState(seed).randint(2, vocab, (batch, length)).astype(np.int32)


def random_batch(batch_size: int, input_length: int, target_length: int) -> dict:
  """An unpacked host batch of real tokens (no padding), as the trainer takes it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  targets = _random_tokens(batch_size, target_length, 1)
  return {
      "encoder_input_tokens": _random_tokens(batch_size, input_length, 0),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], 1),
      "decoder_loss_weights": np.ones_like(targets, dtype=np.float32),
  }


def our_precision(precision: str) -> dict[str, str]:
  """`get_config` overrides for one of PRECISIONS."""
  return {"float32": {"dtype": "float32", "logits_dtype": "float32"},
          "bfloat16": {"dtype": "bfloat16", "logits_dtype": "float32"},
          "bfloat16+logits": {"dtype": "bfloat16", "logits_dtype": "bfloat16"}}[precision]


def make_our_step(model_name: str, host_batch: dict, *, optimizer: str = "adafactor",
                  precision: str = "bfloat16", fast_paths_mode: str = "auto",
                  shared_states: dict | None = None) -> Callable[[], None]:
  """The trainer's compiled step on `host_batch`, state threaded through.

  Each call hands the step the host batch in fresh arrays, as the trainer
  does; packed batches (with segment ids) are trained as packed. The
  `cpu_fast_paths` mode is forced around construction and every call (it
  is read while tracing). Steps given the same `shared_states` dict share
  one train state per optimizer and state layout (the values do not change
  the work; a small machine cannot hold one state per row).
  """
  import functools  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from cot_distill import fast_paths  # pylint: disable=import-outside-toplevel
  from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=import-outside-toplevel
  from cot_distill.train import data, optimizers, partitioning  # pylint: disable=import-outside-toplevel
  from cot_distill.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel

  batch_size, input_length = host_batch["encoder_input_tokens"].shape
  lengths = {"inputs": input_length, "targets": host_batch["decoder_target_tokens"].shape[1]}
  packed = "decoder_segment_ids" in host_batch
  with fast_paths.forced(fast_paths_mode):
    model = EncoderDecoderModel(get_config(model_name, dropout_rate=0.0,
                                           **our_precision(precision)))
    schedule = optimizers.constant_schedule(1e-3)
    tx = (optimizers.adafactor if optimizer == "adafactor" else optimizers.adamw)(schedule)
    # Data parallel over as many local devices as divide the batch.
    devices = jax.local_devices()
    count = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    partitioner = partitioning.Partitioner(devices=devices[:count])
    init = functools.partial(model.get_initial_variables,
                             input_shapes=data.model_input_shapes(lengths, batch_size, packed))
    shapes, specs = state_lib.abstract_state_and_specs(init, tx)
    shardings = state_lib.state_shardings(partitioner, shapes, specs)
    layout = (optimizer, str(jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), shapes)))
    states = shared_states if shared_states is not None else {}
    if layout not in states:
      states[layout] = {"state": state_lib.create_train_state(init, tx, shardings, seed=0)}
    holder = states[layout]
    train_step = step_lib.compile_train_step(
        loss_fn=model.loss_fn, optimizer=tx, learning_rate=schedule,
        partitioner=partitioner, state_shardings=shardings, dropout=False)

  def step():
    with fast_paths.forced(fast_paths_mode):
      batch = data.to_global_batch({name: array.copy() for name, array in host_batch.items()},
                                   partitioner, batch_size)
      holder["state"], metrics = train_step(holder["state"], batch)
      jax.block_until_ready(metrics["loss"])

  def optimized_hlo() -> str:
    """The step's optimized HLO (the same program as the executable `step` runs)."""
    with fast_paths.forced(fast_paths_mode):
      batch = data.to_global_batch(dict(host_batch), partitioner, batch_size)
      return train_step.lower(holder["state"], batch).compile().as_text()
  step.optimized_hlo = optimized_hlo
  return step


def _our_step(args, system: System, shared: dict) -> Callable[[], None]:
  return make_our_step(args.model, random_batch(args.batch_size, args.input_length,
                                                args.target_length),
                       optimizer=system.optimizer, precision=system.precision,
                       fast_paths_mode=system.fast_paths,
                       shared_states=shared.setdefault("ours", {}))


def _hf_step(args, system: System, shared: dict) -> Callable[[], None]:
  """One HF row. Rows share one model, one optimizer per kind, one compiled model."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from cot_distill.benchmarks import common  # pylint: disable=import-outside-toplevel
  from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel

  common.prepare_torch(args.hf_threads or os.cpu_count() or 1)
  if "hf" not in shared:
    shared["hf"] = common.hf_t5(get_config(args.model, dropout_rate=0.0), seed=0).train()
  model = shared["hf"]
  if ("hf", system.optimizer) not in shared:
    if system.optimizer == "adamw":
      shared[("hf", "adamw")] = torch.optim.AdamW(
          model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    else:
      shared[("hf", "adafactor")] = transformers.optimization.Adafactor(
          model.parameters(), lr=1e-3, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
          beta1=None, weight_decay=0.0, scale_parameter=True, relative_step=False,
          warmup_init=False)
  optimizer = shared[("hf", system.optimizer)]
  if system.compiled and "hf compiled" not in shared:
    shared["hf compiled"] = torch.compile(model)
  forward = shared["hf compiled"] if system.compiled else model
  autocast = system.precision == "bfloat16"
  inputs = torch.from_numpy(_random_tokens(args.batch_size, args.input_length, 0)).long()
  labels = torch.from_numpy(_random_tokens(args.batch_size, args.target_length, 1)).long()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      loss = forward(input_ids=inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
  return step


def _row(system: System, times: list[float], first: float, target_tokens: int,
         flops_per_step: float, peaks: dict[str, float]) -> dict:
  median = statistics.median(times)
  return {"system": system, "name": system.name, "median": median,
          "tokens_per_second": target_tokens / median, "min": min(times),
          "max": max(times), "steps": len(times), "first": first,
          "flops_per_second": flops_per_step / median,
          "of_peak": flops_per_step / median / peaks[system.precision_class]}


def same_work_partner(system: System, hf_rows: list[dict]) -> dict | None:
  """The fastest HF row with the same optimizer and precision class (eager or compiled)."""
  candidates = [row for row in hf_rows
                if row["system"].optimizer == system.optimizer
                and row["system"].precision_class == system.precision_class]
  return min(candidates, key=lambda row: row["median"]) if candidates else None


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
  from cot_distill.benchmarks import common  # pylint: disable=import-outside-toplevel
  from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel
  target_tokens = args.batch_size * args.target_length
  with_hf = not args.no_baseline
  if with_hf:
    try:
      import torch  # pylint: disable=import-outside-toplevel,unused-import
      import transformers  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      print("torch/transformers not installed: no same-run baseline")
      with_hf = False
  systems = grid(args, with_hf=with_hf)
  config = get_config(args.model)
  flops_per_step = 3 * common.forward_matmul_flops(
      config, batch_size=args.batch_size, input_length=args.input_length,
      target_length=args.target_length)
  # The peak first, while nothing else of ours runs.
  core_peaks, how = common.single_core_matmul_peak(("float32", "bfloat16"), args.peak_size)
  cores = os.cpu_count() or 1
  peaks = {dtype: cores * value for dtype, value in core_peaks.items()}
  steps, shared = {}, {}
  for system in systems:
    steps[system.name] = (_our_step if system.side == "ours" else _hf_step)(args, system, shared)
  times, first = _time_round_robin(steps, args.warmup, args.steps)
  rows = [_row(system, times[system.name], first[system.name], target_tokens,
               flops_per_step, peaks) for system in systems]
  _print(args, rows, target_tokens, flops_per_step, core_peaks, peaks, how)
  if args.profile:
    _profile(args, systems, steps, peaks)
  return 0


def _profile(args, systems: list[System], steps: dict, peaks: dict[str, float]) -> None:
  """Traces one of our rows: which operations bound the step (module docstring of
  `profile`); the peaks measured above give the scale for its GFLOP/s."""
  from cot_distill.benchmarks import profile  # pylint: disable=import-outside-toplevel
  optimizer, _, precision = args.profile.partition("/")
  chosen = next((system for system in systems if system.side == "ours"
                 and system.optimizer == optimizer and system.precision == precision
                 and system.fast_paths == "auto"), None)
  if chosen is None:
    print(f"\n--profile {args.profile}: no such row of ours in this run; not profiled")
    return
  step = steps[chosen.name]
  profile.report(chosen.name, step, step.optimized_hlo(), steps=2)
  print(f"  (matmul peak of this precision, measured above: "
        f"{peaks[chosen.precision_class] / 1e9:.0f} GFLOP/s over all CPUs)")


def _print(args, rows, target_tokens, flops_per_step, core_peaks, peaks, how) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  print(f"\nT5 config {args.model}, batch {args.batch_size}, {args.input_length} input / "
        f"{args.target_length} target tokens ({target_tokens} target tokens/step); "
        f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; "
        f"CPUs: {os.cpu_count()}; HF torch threads: {args.hf_threads or os.cpu_count()}; "
        f"load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; median of {args.steps} "
        f"round-robin steps after {args.warmup} warm-up; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"matmul peak ({how}): one core float32 {core_peaks['float32'] / 1e9:.1f} GFLOP/s, "
        f"bfloat16 {core_peaks['bfloat16'] / 1e9:.1f} GFLOP/s; x {os.cpu_count()} CPUs = "
        f"float32 {peaks['float32'] / 1e9:.1f}, bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
  print(f"work: {flops_per_step / 1e9:.4g} GFLOP per step (3 x the forward pass's matrix "
        f"products); of peak = achieved / the peak of the row's precision")
  hf_rows = [row for row in rows if row["system"].side == "hf"]
  fastest = min(hf_rows, key=lambda row: row["median"]) if hf_rows else None
  print(f"\n{'system':44s} {'s/step':>7s} {'min':>7s} {'max':>7s} {'tok/s':>7s} "
        f"{'1st step':>8s} {'GFLOP/s':>8s} {'of peak':>7s}")
  for row in rows:
    print(f"{row['name']:44s} {row['median']:7.3f} {row['min']:7.3f} {row['max']:7.3f} "
          f"{row['tokens_per_second']:7.1f} {row['first']:8.1f} "
          f"{row['flops_per_second'] / 1e9:8.1f} {row['of_peak']:7.1%}")
  if not hf_rows:
    return
  print("\n'1st step' includes compilation (XLA for ours, torch.compile for compiled HF).")
  print("ratios (HF / ours; > 1: ours faster), same run, of medians and of best steps (the "
        "best step is the least disturbed by other load):")
  print(f"{'ours':44s} {'vs same work':>12s} {'@min':>6s}  {'(HF row)':34s} "
        f"{'vs fastest HF':>13s} {'@min':>6s}")
  for row in rows:
    if row["system"].side != "ours":
      continue
    partner = same_work_partner(row["system"], hf_rows)
    same = f"{partner['median'] / row['median']:.2f}x" if partner else "-"
    same_min = f"{partner['min'] / row['min']:.2f}x" if partner else "-"
    note = f"({partner['name']})" if partner else ""
    if partner and row["system"].precision == "bfloat16":
      note += " *"
    fastest_min = min(hf["min"] for hf in hf_rows)
    print(f"{row['name']:44s} {same:>12s} {same_min:>6s}  {note:34s} "
          f"{fastest['median'] / row['median']:12.2f}x {fastest_min / row['min']:5.2f}x")
  print(f"fastest HF row of any configuration: {fastest['name']} ({fastest['median']:.3f} s "
        f"median); best HF step {min(hf['min'] for hf in hf_rows):.3f} s")
  print("* ours with T5X's float32 logits layer does more work than autocast's bf16 lm_head.")
  from cot_distill.benchmarks import common  # pylint: disable=import-outside-toplevel
  common.print_reference(
      "issue 6, same setting on the 2-core machine",
      [f"{name:52s} {seconds:5.2f} s/step  {1024 / seconds:6.1f} tok/s"
       for name, seconds in REFERENCE_SECONDS_PER_STEP.items()])
