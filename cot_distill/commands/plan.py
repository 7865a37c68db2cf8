"""`cot-distill plan`: per-device memory of a gin config's training step.

    cot-distill plan --gin_file=gin/recipes/gsm8k_t5_1_1_xxl_cot.gin --slice v4-32
    cot-distill plan --gin_file=gin/recipes/gsm8k_t5_1_1_xxl_cot.gin --all-slices
    cot-distill plan --gin_file=gin/models/t5_1_1_small.gin \\
        --gin_file=gin/runs/finetune_cot.gin --json

Takes the same gin flags as `cot-distill train` and builds what the trainer
builds (model, optimizer, partitioner, batch, lengths, micro-batches), but
only as shapes: no device, no data, no checkpoint is touched. `--slice
v4-32` adds gin/partitioning/slices/v4_32.gin after the other files (its
layout, mesh, remat and HBM); `--all-slices` plans every slice file, one row each; without
either, the plan is for the config as given on the devices JAX sees here.
Parameters, optimizer state and gradients are exact shard sizes;
activations are an analytical estimate per remat policy
(cot_distill/train/memory_plan.py). "fits" leaves 5% of HBM unused.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any, Sequence

from cot_distill import errors
from cot_distill.commands import train as train_command

_GIB = 1024 ** 3
_COLUMNS = (("parameters", "params"), ("optimizer_state", "opt state"),
            ("gradients", "grads"), ("activations", "activations"),
            ("logits", "logits"), ("gradient_overlap", "overlap"), ("total", "total"),
            ("hbm_bytes_per_device", "HBM"))


def _train_arguments() -> dict[str, Any]:
  """`trainer.train`'s arguments as gin would call it (defaults filled in)."""
  import gin  # pylint: disable=import-outside-toplevel
  from cot_distill.train import trainer  # pylint: disable=import-outside-toplevel
  arguments = {name: parameter.default for name, parameter in
               inspect.signature(trainer.train).parameters.items()
               if parameter.default is not inspect.Parameter.empty}
  arguments.update(gin.get_bindings(trainer.train))
  return arguments


def _bound_slice() -> Any:
  """The `slices.Slice` a parsed slice file binds, or None."""
  import gin  # pylint: disable=import-outside-toplevel
  from cot_distill.train import slices  # pylint: disable=import-outside-toplevel
  try:
    bound = gin.get_bindings(slices.Slice)
  except (ValueError, KeyError):
    return None
  return slices.Slice(**bound) if bound else None


def _local_devices() -> tuple[int, int | None]:
  """(device count, HBM bytes of device 0 or None) of this machine."""
  import jax  # pylint: disable=import-outside-toplevel
  stats = jax.devices()[0].memory_stats() or {}
  return jax.device_count(), stats.get("bytes_limit")


def plan_config(files: Sequence[str], bindings: Sequence[str],
                search_paths: Sequence[str] = (), slice_path: str | None = None,
                remat_policy: str | None = None):
  """The MemoryPlan of a gin config (plus a slice file) as `train` would run it."""
  import gin  # pylint: disable=import-outside-toplevel
  from cot_distill.train import memory_plan  # pylint: disable=import-outside-toplevel
  from cot_distill.train import optimizers  # pylint: disable=import-outside-toplevel
  from cot_distill.train import partitioning  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  try:
    train_command.parse_gin([*files, *([slice_path] if slice_path else [])],
                            bindings, search_paths)
    arguments = _train_arguments()
    accelerator = _bound_slice()
  finally:
    gin.clear_config()
  model = arguments.get("model")
  if model is None or not hasattr(model, "config"):
    raise errors.UserError(
        "cot-distill plan: the gin files define no model; give a model or "
        "recipe file, e.g. --gin_file=gin/recipes/gsm8k_t5_1_1_xxl_cot.gin")
  partitioner = arguments.get("partitioner") or partitioning.Partitioner()
  if accelerator is not None:
    name, devices, hbm = (accelerator.name, accelerator.devices,
                          accelerator.hbm_bytes_per_device)
  else:
    devices, hbm = _local_devices()
    name = f"this machine ({devices} device{'s' * (devices != 1)})"
  tx = arguments["optimizer"](optimizers.as_schedule(arguments["learning_rate"]))
  return memory_plan.plan_memory(
      model=model, optimizer=tx, rules=partitioner.rules,
      mesh_shape=memory_plan.mesh_shape_for(partitioner.num_partitions, devices),
      batch_size=arguments["batch_size"],
      task_feature_lengths=arguments["task_feature_lengths"],
      num_microbatches=arguments.get("num_microbatches", 1),
      pack=arguments.get("pack", True), remat_policy=remat_policy,
      layout=partitioner.layout, name=name, hbm_bytes_per_device=hbm)


def _gib(value: int | None) -> str:
  return "?" if value is None else f"{value / _GIB:.2f}"


def format_table(rows: Sequence[tuple[str, Any]]) -> str:
  """One row per plan (GiB per device); a row whose config does not divide
  carries the reason instead of numbers."""
  header = ["slice", "mesh", "layout", "remat", "rows/dev x micro",
            *[label for _, label in _COLUMNS], "fits?"]
  table = [header]
  notes = []
  for label, plan in rows:
    if isinstance(plan, Exception):
      table.append([label, "-", "-", "-", "-", *["-"] * len(_COLUMNS),
                    "config does not divide"])
      notes.append(f"{label}: {plan}")
      continue
    values = plan.to_dict()
    mesh = "x".join(str(size) for size in plan.mesh_shape.values())
    if plan.fits is None:
      fits = "? (HBM unknown)"
    elif plan.fits:
      fits = f"yes ({_gib(plan.headroom)} free)"
    else:
      fits = f"NO (short {_gib(-plan.headroom)})"
    table.append([plan.name, mesh, plan.layout, plan.remat_policy,
                  f"{plan.rows_per_device} x {plan.num_microbatches}",
                  *[_gib(values[key]) for key, _ in _COLUMNS], fits])
    notes.extend(f"{plan.name}: {note}" for note in plan.notes)
  widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
  lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
           for row in table]
  lines.insert(1, "  ".join("-" * width for width in widths))
  lines.append(
      "GiB per device; mesh is data x model; rows per device x micro-batches. "
      "total = params + opt state + grads + activations + logits - overlap (+ the "
      "batch): the backward pass frees layer activations as it writes gradients, "
      "so the smaller of the two is counted once. fits? leaves 5% of HBM free.")
  return "\n".join(lines + notes)


def run(args: argparse.Namespace) -> int:
  from cot_distill.train import slices  # pylint: disable=import-outside-toplevel
  if not args.gin_file:
    raise errors.UserError(
        "cot-distill plan: give at least one --gin_file (e.g. "
        "--gin_file=gin/recipes/gsm8k_t5_1_1_xxl_cot.gin --slice v4-32)")
  if args.all_slices and args.slice:
    raise errors.UserError("cot-distill plan: give --slice or --all-slices, not both")
  if args.all_slices:
    targets = [(name, str(path)) for name, path in slices.known_slices().items()]
  elif args.slice:
    targets = [(args.slice, str(slices.slice_file(args.slice)))]
  else:
    targets = [("as given", None)]
  bindings = train_command.gin_bindings(args)
  search_paths = [path for path in args.gin_search_paths.split(",") if path]
  rows = []
  for label, path in targets:
    try:
      rows.append((label, plan_config(args.gin_file, bindings, search_paths, path,
                                      args.remat)))
    except errors.ConfigurationError as error:
      if not args.all_slices:
        raise
      rows.append((label, error))
  if args.json:
    json.dump([{"slice": label, "error": str(plan)} if isinstance(plan, Exception)
               else plan.to_dict() for label, plan in rows], sys.stdout, indent=1)
    print()
  else:
    print(format_table(rows))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  train_command.add_gin_arguments(parser)
  parser.add_argument("--slice", default=None,
                      help="a slice with a file in gin/partitioning/slices/ "
                           "(v4-8, v4-32, v5e-16, v5e-256, v5p-128), added "
                           "after the other gin files")
  parser.add_argument("--all-slices", action="store_true",
                      help="plan for every slice file, one row each")
  parser.add_argument("--remat", choices=("none", "minimal", "full"), default=None,
                      help="plan with this remat policy instead of the config's")
  parser.add_argument("--json", action="store_true",
                      help="print the plans as JSON (bytes) instead of a table")


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "plan", help="per-device memory of a gin config on a TPU slice",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.__class__ = train_command.GinFlagParser
  add_arguments(parser)
  parser.set_defaults(func=run)
