"""Where a compiled step spends its time: XLA:CPU's per-operation trace, by part of the model.

The benchmarks say how fast a step is; this says why. JAX's profiler
records one event per executed XLA operation ("thunk") with the name of its
HLO instruction. Joined with the optimized HLO of the same executable, each
instruction gets

* its place in the model, from the `op_name` metadata that JAX writes
  (`jit(train_step)/transpose(jvp(Transformer))/.../decoder/layers_3/mlp/
  wi_0/dot_general`): phase (forward = `jvp(`, backward = `transpose(`,
  update = neither: the optimizer and the step's bookkeeping) and part
  (embedding, attention projections, attention scores/softmax/mix, MLP, RMS
  norms, relative-position bias, output layer, loss);
* its work: FLOPs of the matrix products it contains (2 x output elements x
  contracted size, read from the HLO shapes) and the bytes it reads and
  writes (operand and result sizes).

So every row of the table shows time, share, and the achieved GFLOP/s of
its products and GB/s of its traffic, which a reader sets against the
machine's matmul peak and copy bandwidth (both measured by the benchmarks
in the same run) to see which bound a part sits at.

On several devices the HLO is one device's program (SPMD) and the times are
averaged over the devices, so every figure is per device.
Operations run on more than one thread (XLA:CPU executes independent
operations concurrently), so the per-operation times add up to more than the
wall time; shares are of the summed operation time.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time
from typing import Any, Callable, Mapping

from cot_distill.benchmarks import collectives, common

# `  %name = TYPE opcode(operands), attributes` (ROOT optional).
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*?)\)(.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_BODY = re.compile(r"body=%?([\w.\-]+)")
_CONTRACTING = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")

# Model parts, matched against the module path in op_name (first match wins).
PARTS = (
    ("output layer", re.compile(r"/logits_dense/|/attend/|\.attend|decoder/token_embedder/.*dot_general")),
    ("embedding", re.compile(r"/token_embedder/")),
    ("relative-position bias", re.compile(r"/relpos_bias/")),
    ("attention projections", re.compile(r"attention/(query|key|value|out)/")),
    ("attention scores/softmax/mix", re.compile(r"attention/")),
    ("MLP", re.compile(r"/mlp/")),
    ("RMS norms", re.compile(r"layer_norm/|_norm/")),
    ("encoder/decoder glue", re.compile(r"/(encoder|decoder)/")),
)


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  op_name: str
  flops: float          # matrix-product FLOPs inside it
  bytes: float          # operand + result bytes
  kind: str             # "matmul", "elementwise/reduction", "data movement", "other"
  in_loop: bool = False  # in a while loop's body (runs once per iteration)


def parse_hlo(text: str) -> dict[str, Instruction]:
  """{instruction name: Instruction} for the top-level instructions of every
  computation that is not a fusion's body (what the CPU runtime executes)."""
  shapes: dict[str, list] = {}
  computations: dict[str, list[tuple]] = collections.defaultdict(list)
  current = None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match or current is None:
      continue
    name, result_type, opcode, operands, attributes = match.groups()
    shapes[name] = common.hlo_shapes(result_type)
    computations[current].append((name, opcode, _OPERAND.findall(operands), attributes,
                                  result_type))

  def dot_flops(name: str, operands: list[str], attributes: str) -> float:
    result = shapes.get(name) or [("f32", ())]
    lhs = (shapes.get(operands[0]) or [("f32", ())])[0][1] if operands else ()
    contracting = _CONTRACTING.search(attributes)
    size = math.prod(lhs[int(d)] for d in contracting.group(1).split(",") if d) if (
        contracting and lhs) else 1
    return 2.0 * math.prod(result[0][1]) * size

  def computation_flops(computation: str, seen: frozenset = frozenset()) -> float:
    total = 0.0
    for name, opcode, operands, attributes, _ in computations.get(computation, ()):
      if opcode in ("dot", "convolution"):
        total += dot_flops(name, operands, attributes)
      for called in _CALLS.findall(attributes):
        if called not in seen:
          total += computation_flops(called, seen | {computation})
    return total

  def computation_op_name(computation: str) -> str:
    # XLA drops metadata on some fusions it builds; their body keeps it
    # (the last instruction with a name is usually the ROOT).
    names = [_OP_NAME.search(attributes) for *_, attributes, _ in computations.get(computation, ())]
    names = [match.group(1) for match in names if match]
    return names[-1] if names else ""

  loop_bodies = {body for entries in computations.values()
                 for _, opcode, _, attributes, _ in entries if opcode == "while"
                 for body in _BODY.findall(attributes)}
  called_by_fusion = {called for entries in computations.values()
                      for _, opcode, _, attributes, _ in entries if opcode == "fusion"
                      for called in _CALLS.findall(attributes)}
  instructions = {}
  for computation, entries in computations.items():
    if computation in called_by_fusion:
      continue
    for name, opcode, operands, attributes, result_type in entries:
      op_name = _OP_NAME.search(attributes)
      op_name = op_name.group(1) if op_name else "".join(
          computation_op_name(called) for called in _CALLS.findall(attributes)[:1])
      if not op_name:
        # A convert or copy XLA inserted: it belongs where its input was made.
        op_name = next((instructions[operand].op_name for operand in operands
                        if operand in instructions and instructions[operand].op_name), "")
      flops = (dot_flops(name, operands, attributes) if opcode in ("dot", "convolution")
               else sum(computation_flops(c) for c in _CALLS.findall(attributes))
               if opcode == "fusion" else 0.0)
      traffic = float(common.hlo_bytes(result_type) + sum(
          common.hlo_bytes(shapes.get(operand, [])) for operand in operands))
      if opcode in ("gather", "dynamic-slice") or (
          opcode == "fusion" and re.search(r"gather|dynamic.slice", name)):
        # A gather reads the rows it returns, not its whole operand (an
        # embedding lookup touches 8 rows of a 32128-row table).
        traffic = 2.0 * common.hlo_bytes(result_type)
      instructions[name] = Instruction(
          name, opcode, op_name, flops, traffic,
          _kind(opcode, flops, name), computation in loop_bodies)
  return instructions


def _kind(opcode: str, flops: float, name: str) -> str:
  if flops:
    return "matmul"
  if opcode.startswith(collectives.KINDS + ("collective-broadcast",)):
    return "communication"
  if opcode in ("copy", "transpose", "broadcast", "scatter", "gather", "dynamic-slice",
                "dynamic-update-slice", "concatenate", "pad", "slice", "bitcast",
                "copy-start", "copy-done") or name.startswith(("wrapped_broadcast", "copy",
                                                              "wrapped_transpose",
                                                              "wrapped_slice",
                                                              "wrapped_concatenate")):
    return "data movement"
  if opcode in ("fusion", "reduce", "add", "multiply", "convert", "exponential", "select",
                "compare", "divide", "subtract", "maximum", "rsqrt", "sqrt", "log",
                "reduce-window", "sort"):
    return "elementwise/reduction"
  return "other"


# Operations whose trace event encloses the events of their body's operations:
# counting them too would count that time twice.
CONTAINERS = ("while", "conditional", "call")


def decode_phase(instruction: Instruction) -> str:
  """Decoding: the loop body runs once per new token, the rest once per batch.

  Read from where the instruction is, not from its `while/body` scope: XLA
  hoists loop-invariant work out of the body and keeps the scope name."""
  return "per token (loop body)" if instruction.in_loop else "once per batch"


def phase(op_name: str) -> str:
  if "transpose(" in op_name:
    return "backward"
  if "jvp(" in op_name:
    return "forward"
  if "Transformer" in op_name or "decode" in op_name.lower():
    return "forward"
  return "update"


def part(op_name: str, outside_model: str = "optimizer and step") -> str:
  """The model part an operation belongs to; `outside_model` names the rest
  (the optimizer in a train step, the search loop in decoding)."""
  for label, pattern in PARTS:
    if pattern.search(op_name):
      return label
  if "Transformer" in op_name:
    return "other model ops"
  if "jvp(" in op_name or "transpose(" in op_name:
    return "loss"
  return outside_model if op_name else "output copies (no metadata)"


def trace_operation_times(run: Callable[[], None], steps: int
                          ) -> tuple[dict[str, float], dict[str, float], float, str]:
  """Runs `run` `steps` times under JAX's profiler.

  Returns ({HLO instruction: seconds per step}, {HLO instruction: executions
  per step}, wall seconds per step, the HLO module that took the most time);
  only that module's operations count. An instruction in a loop body runs
  once per iteration, so its work is its HLO work times its executions.
  """
  import jax  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(prefix="cot-distill-profile-") as directory:
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    started = time.perf_counter()
    try:
      for _ in range(steps):
        run()
    finally:
      wall = (time.perf_counter() - started) / steps
      jax.profiler.stop_trace()
    paths = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
      raise RuntimeError("the JAX profiler wrote no perfetto trace")
    with gzip.open(paths[0], "rt") as file:
      events = json.load(file)["traceEvents"]
  by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  executions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  devices: dict[str, set] = collections.defaultdict(set)
  for event in events:
    args = event.get("args") or {}
    if "hlo_op" in args and "dur" in event:
      module = args.get("hlo_module", "")
      by_module[module][args["hlo_op"]] += event["dur"] * 1e-6 / steps
      executions[module][args["hlo_op"]] += 1 / steps
      devices[module].add(args.get("device_ordinal"))
  if not by_module:
    raise RuntimeError("the trace has no per-operation events (not an XLA:CPU thunk runtime?)")
  module = max(by_module, key=lambda name: sum(by_module[name].values()))
  # Every device runs the same SPMD program: report one device's share.
  count = max(len(devices[module]), 1)
  return ({op: seconds / count for op, seconds in by_module[module].items()},
          {op: runs / count for op, runs in executions[module].items()}, wall, module)


@dataclasses.dataclass
class Row:
  label: str
  seconds: float = 0.0
  flops: float = 0.0
  matmul_seconds: float = 0.0
  bytes: float = 0.0
  other_seconds: float = 0.0
  operations: int = 0
  executions: float = 0.0


def breakdown(times: Mapping[str, float], instructions: Mapping[str, Instruction],
              key: Callable[[Instruction], str],
              executions: Mapping[str, float] | None = None) -> list[Row]:
  """Rows keyed by `key(instruction)`, largest time first; an instruction's
  work counts once per execution (default once)."""
  rows: dict[str, Row] = {}
  for name, seconds in times.items():
    instruction = instructions.get(name) or Instruction(name, "?", "", 0.0, 0.0, "other")
    if instruction.opcode in CONTAINERS:
      continue
    row = rows.setdefault(key(instruction), Row(key(instruction)))
    row.seconds += seconds
    row.operations += 1
    runs = (executions or {}).get(name, 1.0)
    row.executions += runs
    if instruction.kind == "matmul":
      row.flops += instruction.flops * runs
      row.matmul_seconds += seconds
    else:
      row.bytes += instruction.bytes * runs
      row.other_seconds += seconds
  return sorted(rows.values(), key=lambda row: -row.seconds)


def format_table(title: str, rows: list[Row], *, steps_per_call: int = 1) -> str:
  """One line per row: ms, share, matmul GFLOP/s, non-matmul GB/s, and the
  mean time of one execution of an operation (tens of microseconds means
  the row pays per-operation overhead more than it does work)."""
  total = sum(row.seconds for row in rows) or 1.0
  lines = [title, f"  {'':32s} {'ms':>8s} {'share':>6s} {'matmul ms':>9s} {'GFLOP/s':>8s} "
                  f"{'other ms':>8s} {'GB/s':>6s} {'ops':>5s} {'us/exec':>8s}"]
  for row in rows:
    gflops = f"{row.flops / row.matmul_seconds / 1e9:8.0f}" if row.matmul_seconds else f"{'-':>8s}"
    gbytes = f"{row.bytes / row.other_seconds / 1e9:6.1f}" if row.other_seconds else f"{'-':>6s}"
    lines.append(f"  {row.label:32s} {row.seconds * 1e3 / steps_per_call:8.1f} "
                 f"{row.seconds / total:6.1%} {row.matmul_seconds * 1e3 / steps_per_call:9.1f} "
                 f"{gflops} {row.other_seconds * 1e3 / steps_per_call:8.1f} {gbytes} "
                 f"{row.operations:5d} "
                 f"{row.seconds * 1e6 / row.executions if row.executions else 0:8.1f}")
  return "\n".join(lines)


def report(name: str, run: Callable[[], None], hlo_text: str, *, steps: int = 2,
           program: str = "train") -> dict[str, Any]:
  """Traces `run` (a train step, or a batch's decoding with `program="decode"`),
  prints the breakdowns, returns them (for tests)."""
  if program not in ("train", "decode"):
    raise ValueError(f"program must be train or decode, got {program!r}")
  unit = "step" if program == "train" else "batch"
  times, executions, wall, module = trace_operation_times(run, steps)
  instructions = parse_hlo(hlo_text)
  times = {op: seconds for op, seconds in times.items()
           if getattr(instructions.get(op), "opcode", "") not in CONTAINERS}
  matched = sum(seconds for op, seconds in times.items() if op in instructions)
  total = sum(times.values())
  outside = "optimizer and step" if program == "train" else "search loop (argmax, state)"
  by_kind = breakdown(times, instructions, lambda i: i.kind, executions)
  by_part = breakdown(times, instructions, lambda i: part(i.op_name, outside), executions)
  phase_of = (lambda i: phase(i.op_name)) if program == "train" else decode_phase
  by_phase = breakdown(times, instructions, lambda i: (
      phase_of(i) if i.op_name else "output copies (no metadata)"), executions)
  print(f"\nprofile of {name} ({module}, {steps} {unit}{'es' if unit == 'batch' else 's'} traced): wall {wall * 1e3:.0f} ms/{unit}, "
        f"operations {total * 1e3:.0f} ms/{unit} summed over threads "
        f"({total / wall if wall else 0:.2f} busy threads); {matched / total if total else 0:.0%} "
        f"of operation time matched to HLO instructions")
  for title, rows in (("by kind of operation", by_kind), ("by phase", by_phase),
                      ("by part of the model", by_part)):
    print(format_table(f" {title} (per {unit}):", rows))
  return {"wall": wall, "total": total, "matched": matched, "executions": executions,
          "by_kind": by_kind,
          "by_part": by_part, "by_phase": by_phase}
