"""Pieces the benchmarks share so that their ratios compare like with like.

- `hf_t5`: the Hugging Face + PyTorch baseline built as a careful PyTorch
  user would: T5 1.1's output layer untied from the embedding explicitly
  (transformers 5 ties it even when the config says not to), denormals
  flushed, and its parameter count checked against ours: a baseline with
  other parameters does other work, so a mismatch stops the benchmark.
- `measure_matmul_peak` / `single_core_matmul_peak`: the machine's matrix
  product peak, measured in the same run with one large `jnp.dot`.
- `forward_matmul_flops`: the model's matrix-product FLOPs, so a step time
  becomes achieved FLOP/s.
- `print_reference`: figures from other runs, printed apart, never in a ratio.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Mapping


class BaselineMismatch(RuntimeError):
  """The baseline model is not the model we benchmark (so not the same work)."""


def our_parameter_count(config) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cot_distill.model import param_tree  # pylint: disable=import-outside-toplevel
  return int(sum(np.prod(shape) for shape in param_tree.expected_shapes(config).values()))


def check_parameter_count(ours: int, theirs: int, what: str) -> None:
  """Raises BaselineMismatch unless the two models have the same parameter count."""
  if ours != theirs:
    raise BaselineMismatch(
        f"{what} has {theirs:,} parameters, ours {ours:,} (difference {theirs - ours:+,}): "
        "the baseline would not do the same work, so no ratio is printed. (transformers 5 "
        "ties T5 1.1's lm_head to the embedding unless it is untied explicitly.)")


def prepare_torch(threads: int | None = None) -> None:
  """Flushes float32 denormals (as a PyTorch user would on CPU); sets threads."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_flush_denormal(True)
  if threads:
    torch.set_num_threads(threads)


def hf_t5(config, params: Mapping[str, Any] | None = None, *, seed: int = 0):
  """`transformers.T5ForConditionalGeneration` of our config, parameters checked.

  With `params` (ours) the HF model gets the same weights; otherwise
  transformers' own initialisation (seeded). The output layer is untied
  from the embedding whenever ours is (T5 1.1), then the parameter count
  must equal ours or BaselineMismatch is raised.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from cot_distill.model import hf_checkpoints  # pylint: disable=import-outside-toplevel
  transformers.logging.set_verbosity_error()
  prepare_torch()
  torch.manual_seed(seed)
  hf_config = transformers.T5Config(**hf_checkpoints.config_to_hf(config))
  model = transformers.T5ForConditionalGeneration(hf_config)
  if not config.logits_via_embedding:
    # transformers 5 records T5 1.1's untied output layer as
    # scale_decoder_outputs=False but still shares lm_head with `shared`.
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    model.config.tie_word_embeddings = False
  if params is not None:
    state = hf_checkpoints.params_to_hf_state(params, config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - {"encoder.embed_tokens.weight",
                                              "decoder.embed_tokens.weight"})
    if missing:
      raise BaselineMismatch(f"HF parameters without a value from ours: {missing[:5]}")
    with torch.no_grad():
      for name, value in state.items():
        own[name].copy_(torch.from_numpy(value.astype("float32")))
  check_parameter_count(our_parameter_count(config),
                        sum(p.numel() for p in model.parameters()),
                        "the Hugging Face baseline")
  if not config.logits_via_embedding and model.lm_head.weight is model.shared.weight:
    raise BaselineMismatch("the Hugging Face baseline's lm_head is still tied to the embedding")
  return model


# --- FLOPs and the machine's matrix-product peak -----------------------------


def forward_matmul_flops(config, *, batch_size: int, input_length: int,
                         target_length: int) -> int:
  """Matrix-product FLOPs (2 per multiply-add) of one teacher-forced forward pass.

  Counts the projections, the MLPs, both attention products over the full
  (unmasked) lengths and the logits layer; not norms, softmax or the
  embedding lookup. A training step is about 3x this (forward + backward).
  """
  d, inner, mlp = config.emb_dim, config.joined_kv, config.mlp_dim
  mlp_macs = (len(config.mlp_activations) + 1) * d * mlp
  encoder = config.num_encoder_layers * input_length * (
      4 * d * inner + mlp_macs + 2 * input_length * inner)
  decoder = config.num_decoder_layers * (
      target_length * (4 * d * inner + 2 * target_length * inner      # self-attention
                       + 2 * d * inner + 2 * input_length * inner     # cross q, o, products
                       + mlp_macs)
      + input_length * 2 * d * inner)                                 # cross k, v
  logits = target_length * d * config.vocab_size
  return 2 * batch_size * (encoder + decoder + logits)


def measure_matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of one large jitted `jnp.dot` (best of `repeats`).

  bfloat16 operands accumulate in float32 (the form XLA:CPU runs on its
  AVX-512-BF16 kernels, and what the model's products ask for).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(key_a, (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(key_b, (size, size), jnp.float32).astype(dtype)
  product = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(product(a, b))
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    jax.block_until_ready(product(a, b))
    best = min(best, time.perf_counter() - started)
  return 2 * size**3 / best


_PEAK_SCRIPT = """
import json, os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
from cot_distill.benchmarks.common import measure_matmul_peak
print(json.dumps({d: measure_matmul_peak(d, int(sys.argv[2])) for d in sys.argv[3:]}))
"""


def single_core_matmul_peak(dtypes: tuple[str, ...] = ("float32", "bfloat16"),
                            size: int = 2048) -> tuple[dict[str, float], str]:
  """({dtype: FLOP/s of one core}, how it was measured).

  A child process pinned to one CPU runs `measure_matmul_peak`; where that
  is impossible the whole machine is measured in this process and divided
  by the core count (said in the second element).
  """
  try:
    cpu = sorted(os.sched_getaffinity(0))[0]
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                                if "device_count" not in flag)
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(cpu), str(size), *dtypes],
                            capture_output=True, text=True, timeout=600, env=env, check=True)
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    return peaks, f"one jnp.dot {size}x{size} in a process pinned to CPU {cpu}, best of 5"
  except (AttributeError, OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
    cores = os.cpu_count() or 1
    peaks = {dtype: measure_matmul_peak(dtype, size) / cores for dtype in dtypes}
    return peaks, (f"one jnp.dot {size}x{size} on all {cores} cores / {cores} (pinning "
                   f"failed: {type(error).__name__})")


# Optimized HLO text names every array by `dtype[dims]` (`bf16[8,128,512]`);
# the profile and the collectives table both count bytes from it.
_HLO_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_HLO_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|c64)\[([\d,]*)\]")


def hlo_shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
  """[(dtype, dims)] of the arrays an HLO type (or operand list) names."""
  return [(dtype, tuple(int(d) for d in dims.split(",") if d))
          for dtype, dims in _HLO_SHAPE.findall(text)]


def hlo_bytes(shapes: str | list[tuple[str, tuple[int, ...]]]) -> int:
  """Bytes of the arrays in `shapes` (HLO text or `hlo_shapes` output)."""
  if isinstance(shapes, str):
    shapes = hlo_shapes(shapes)
  return sum(_HLO_DTYPE_BYTES.get(dtype, 4) * math.prod(dims) for dtype, dims in shapes)


def print_reference(title: str, lines: list[str]) -> None:
  """Figures from other runs: printed apart and never used in a ratio."""
  print(f"\nreference ({title}; other runs, not used in any ratio above):")
  for line in lines:
    print(f"  {line}")
