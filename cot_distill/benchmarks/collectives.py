"""`cot-distill bench collectives`: what each sharding layout communicates.

Compiles the trainer's train step and the cached greedy decode for a small
T5 1.1 on the local devices (8 fake CPU devices with
XLA_FLAGS=--xla_force_host_platform_device_count=8), for data parallel,
1x8 and 2x4 model parallel and FSDP, and reads XLA's optimised program:
count and bytes of every all-reduce, all-gather, reduce-scatter, all-to-all
and collective-permute.

Each layout is compiled three ways:

  off        `cpu_fast_paths=off`: what TPUs and GPUs run;
  on         the CPU kernels forced on (`cot_distill.fast_paths`), to show
             what they would cost on a pod;
  reference  the plain reference: the same network and step with every
             operation that has a CPU form replaced by the textbook jnp one
             written here, independently of `fast_paths`, and T5X's one-hot
             cross-entropy.

`tests/test_collectives.py` asserts that `off` has no collective-permute and
no more collectives (count and bytes, per kind) than `reference`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import os
import re
from typing import Iterator, Mapping

from cot_distill.benchmarks import common

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# (name, layout, num_partitions): the mesh is (8 / num_partitions) data x num_partitions model.
LAYOUTS = (
    ("data_parallel 8x1", "data_parallel", 1),
    ("model_parallel 1x8", "model_parallel", 8),
    ("model_parallel 2x4", "model_parallel", 4),
    ("fsdp 8x1", "fsdp", 1),
)
VARIANTS = ("off", "on", "reference")

# `%name = SHAPE op(` for the sync op or the `-done` half of an async pair
# (whose result is the received data; the `-start` half is skipped).
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%\S+\s+=\s+(.*?)\s+(" + "|".join(KINDS) + r")(-done)?\(", re.M)


@dataclasses.dataclass(frozen=True)
class Collective:
  count: int = 0
  bytes: int = 0


def collectives(hlo_text: str) -> dict[str, Collective]:
  """Count and result bytes of each collective kind in optimised HLO text.

  Async pairs are counted once (their `-done`); a tuple-shaped collective
  (XLA combines several) counts once with the bytes of all its parts.
  """
  found = collections.defaultdict(lambda: [0, 0])
  for shape_text, kind, _ in _INSTRUCTION.findall(hlo_text):
    found[kind][0] += 1
    found[kind][1] += common.hlo_bytes(shape_text)
  return {kind: Collective(*found[kind]) for kind in KINDS}


# --- the plain reference -------------------------------------------------------


def _reference_dense(inputs, kernel, *, dtype, out_dtype=None):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out_dtype = jnp.dtype(dtype if out_dtype is None else out_dtype)
  inputs, kernel = jnp.asarray(inputs, dtype), jnp.asarray(kernel, dtype)
  return jax.lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=out_dtype).astype(out_dtype)


def _reference_einsum(spec, lhs, rhs, *, dtype, out_dtype=None):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out_dtype = jnp.dtype(dtype if out_dtype is None else out_dtype)
  return jnp.einsum(spec, jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype),
                    preferred_element_type=out_dtype).astype(out_dtype)


def _reference_cross_entropy(logits, targets, z_loss):
  """T5X's form: one-hot targets through the soft-target cross-entropy."""
  import jax  # pylint: disable=import-outside-toplevel
  from cot_distill.model import losses  # pylint: disable=import-outside-toplevel
  soft_targets = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
  return losses.cross_entropy_with_logits(logits, soft_targets, z_loss)


@contextlib.contextmanager
def plain_reference() -> Iterator[None]:
  """Swaps every operation with a CPU form for its textbook jnp form.

  Written here, not taken from `fast_paths`' own plain branch, so that the
  comparison would catch a non-plain form creeping into that branch.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cot_distill import fast_paths  # pylint: disable=import-outside-toplevel
  from cot_distill.model import losses  # pylint: disable=import-outside-toplevel
  replacements = {
      (fast_paths, "dense"): _reference_dense,
      (fast_paths, "einsum"): _reference_einsum,
      (fast_paths, "attention_logits"): lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k),
      (fast_paths, "attention_mix"): lambda w, v: jnp.einsum("bhqk,bkhd->bqhd", w, v),
      (fast_paths, "scale_features"): lambda x, scale: x * scale,
      (fast_paths, "mean_of_squares"): lambda x, axis: jnp.mean(jnp.square(x), axis=axis),
      (losses, "sparse_cross_entropy_with_logits"): _reference_cross_entropy,
  }
  saved = {key: getattr(*key) for key in replacements}
  try:
    for (module, name), function in replacements.items():
      setattr(module, name, function)
    yield
  finally:
    for (module, name), function in saved.items():
      setattr(module, name, function)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
  """Traces inside: fast paths off, forced on, or the plain reference."""
  from cot_distill import fast_paths  # pylint: disable=import-outside-toplevel
  if name not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")
  with fast_paths.forced("on" if name == "on" else "off"):
    if name == "reference":
      with plain_reference():
        yield
    else:
      yield


# --- the programs --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
  """A small T5 1.1 whose every split axis divides 8 (so 1x8 really splits)."""
  model: str = "t5_1_1_tiny"
  vocab_size: int = 384
  emb_dim: int = 16
  num_heads: int = 8
  head_dim: int = 4
  mlp_dim: int = 32
  dtype: str = "bfloat16"
  batch_size: int = 8
  input_length: int = 16
  target_length: int = 8

  def model_config(self):
    from cot_distill.model.config import get_config  # pylint: disable=import-outside-toplevel
    return get_config(self.model, vocab_size=self.vocab_size, emb_dim=self.emb_dim,
                      num_heads=self.num_heads, head_dim=self.head_dim,
                      mlp_dim=self.mlp_dim, dtype=self.dtype, dropout_rate=0.0)


def _partitioner(layout: str, num_partitions: int):
  from cot_distill.train import partitioning  # pylint: disable=import-outside-toplevel
  return partitioning.Partitioner(layout, num_partitions)


def train_step_hlo(layout: str, num_partitions: int, setting: Setting = Setting()) -> str:
  """Optimised HLO of the trainer's step (Adafactor, T5X defaults) on this layout."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=import-outside-toplevel
  from cot_distill.train import data, optimizers  # pylint: disable=import-outside-toplevel
  from cot_distill.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel
  model = EncoderDecoderModel(setting.model_config())
  schedule = optimizers.constant_schedule(1e-3)
  tx = optimizers.adafactor(schedule)
  partitioner = _partitioner(layout, num_partitions)
  lengths = {"inputs": setting.input_length, "targets": setting.target_length}
  init = functools.partial(model.get_initial_variables,
                           input_shapes=data.model_input_shapes(lengths, setting.batch_size, False))
  shapes, specs = state_lib.abstract_state_and_specs(init, tx)
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  abstract_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                shapes, shardings)
  batch_sharding = partitioner.batch_sharding()
  tokens = lambda length: jax.ShapeDtypeStruct((setting.batch_size, length), jnp.int32,  # pylint: disable=unnecessary-lambda-assignment
                                               sharding=batch_sharding)
  batch = {"encoder_input_tokens": tokens(setting.input_length),
           "decoder_input_tokens": tokens(setting.target_length),
           "decoder_target_tokens": tokens(setting.target_length),
           "decoder_loss_weights": jax.ShapeDtypeStruct(
               (setting.batch_size, setting.target_length), jnp.float32, sharding=batch_sharding)}
  train_step = step_lib.compile_train_step(
      loss_fn=model.loss_fn, optimizer=tx, learning_rate=schedule, partitioner=partitioner,
      state_shardings=shardings, dropout=False)
  return train_step.lower(abstract_state, batch).compile().as_text()


def decode_hlo(layout: str, num_partitions: int, setting: Setting = Setting()) -> str:
  """Optimised HLO of cached greedy decoding (`predict_batch`) with sharded parameters."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cot_distill.model.models import EncoderDecoderModel, logical_partition_specs, unbox  # pylint: disable=import-outside-toplevel
  from cot_distill.train import data  # pylint: disable=import-outside-toplevel
  model = EncoderDecoderModel(setting.model_config())
  partitioner = _partitioner(layout, num_partitions)
  lengths = {"inputs": setting.input_length, "targets": setting.target_length}
  variables = jax.eval_shape(functools.partial(
      model.get_initial_variables,
      input_shapes=data.model_input_shapes(lengths, setting.batch_size, False)),
                             jax.random.key(0))
  params = unbox(variables)["params"]
  shardings = partitioner.logical_to_sharding(
      logical_partition_specs(variables)["params"], params)
  abstract_params = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), params, shardings)
  inputs = jax.ShapeDtypeStruct((setting.batch_size, setting.input_length), jnp.int32,
                                sharding=partitioner.batch_sharding())

  def decode(params, encoder_input_tokens):
    return model.predict_batch(params, {"encoder_input_tokens": encoder_input_tokens},
                               max_decode_length=setting.target_length)

  with jax.set_mesh(partitioner.mesh), nn.logical_axis_rules(partitioner.rules):
    return jax.jit(decode).lower(abstract_params, inputs).compile().as_text()


PROGRAMS = {"train": train_step_hlo, "decode": decode_hlo}


def table(program: str, layout_name: str, variant_name: str,
          setting: Setting = Setting()) -> dict[str, Collective]:
  """Collectives of one program on one layout in one variant (compiles it)."""
  layouts = {name: (layout, parts) for name, layout, parts in LAYOUTS}
  layout, num_partitions = layouts[layout_name]
  with variant(variant_name):
    return collectives(PROGRAMS[program](layout, num_partitions, setting))


def format_rows(rows: Mapping[tuple[str, str, str], Mapping[str, Collective]]) -> str:
  """One line per (program, layout, variant): count/bytes of each kind."""
  header = f"{'program':7s} {'layout':19s} {'variant':9s} " + " ".join(
      f"{kind:>22s}" for kind in KINDS)
  lines = [header, "-" * len(header)]
  for (program, layout, variant_name), found in rows.items():
    cells = " ".join(f"{found[kind].count:>6d} x {found[kind].bytes:>11,d} B" for kind in KINDS)
    lines.append(f"{program:7s} {layout:19s} {variant_name:9s} {cells}")
  return "\n".join(lines)


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "collectives", help="collectives per sharding layout (train and decode steps)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--programs", default="train,decode")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  # An entry point may set the process up: 8 fake CPU devices unless the
  # caller chose a count (XLA reads the flag when the CPU client starts).
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
  import jax  # pylint: disable=import-outside-toplevel
  if jax.device_count() != 8:
    print(f"needs 8 devices, found {jax.device_count()}: run with "
          "XLA_FLAGS=--xla_force_host_platform_device_count=8 on CPU")
    return 2
  rows = {}
  for program in filter(None, args.programs.split(",")):
    for name, _, _ in LAYOUTS:
      for variant_name in filter(None, args.variants.split(",")):
        rows[(program, name, variant_name)] = table(program, name, variant_name)
  print(f"{Setting()}; count x bytes of each collective in XLA's optimised program")
  print(format_rows(rows))
  return 0
