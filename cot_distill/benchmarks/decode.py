"""`cot-distill bench decode`: greedy decoding throughput vs Hugging Face `generate`.

Setting (issue 5): T5 1.1 small (vocabulary 32128), batch 8, 128 input tokens,
128 new tokens forced (EOS never stops a row). Variants, timed interleaved so
they share the machine's load:
- ours, cached, bfloat16 activations (the T5X default, float32 logits layer
  as T5X), the same with the logits layer in bfloat16 (`T5Config.logits_dtype`,
  float32 accumulation and logits), and float32;
- ours, uncached (the whole prefix recomputed each step; one timed run);
- Hugging Face `T5ForConditionalGeneration.generate` (float32, cache) on the
  same weights, when torch and transformers are installed: with torch's
  default thread count and, when that is more than one, with one thread too.
  On a machine shared by many processes torch's spinning OpenMP threads slow
  it down several-fold, so the single-thread run is its best figure there.

Decoding one token per row reads every decoder weight once, so the floor is
(bytes read per step) / (memory bandwidth). The benchmark measures the
bandwidth in the same run (a large array copy) and prints how close each
variant gets to that bound. Figures are medians; on a shared machine compare
the same-run ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any, Callable

# Reference figures on the project's 2-core machine (issue 5), seconds per batch.
REFERENCE_SECONDS = {"hf_generate_float32": 3.77, "t5x_greedy": 5.05}


def register(subparsers) -> None:
  parser = subparsers.add_parser("decode", help="greedy decoding tokens/s vs HF generate")
  parser.add_argument("--config", default="t5_1_1_small", help="named T5 config")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--input-length", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
  parser.add_argument("--uncached-repeats", type=int, default=1,
                      help="timed runs of the (slow) uncached variant; 0 skips it")
  parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate")
  parser.add_argument("--threads", type=int, default=0,
                      help="threads for both XLA and torch (0 = each library's default)")
  parser.set_defaults(func=run)


def _random_params(config, seed: int):
  """T5X-scaled random weights, drawn in NumPy (seconds, not a jit of init)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  flat = {}
  for name, shape in param_tree.expected_shapes(config).items():
    if len(shape) == 1:
      flat[name] = np.ones(shape, np.float32)
    else:
      scale = 1.0 if name == "token_embedder/embedding" else 1.0 / np.sqrt(shape[0])
      flat[name] = (rng.standard_normal(shape, dtype=np.float32) * scale)
  return param_tree.unflatten(flat)


def bytes_read_per_step(config, *, batch_size: int, input_length: int, cache_length: int,
                        weight_bytes: int, cache_bytes: int,
                        logits_bytes: int = 4) -> dict[str, int]:
  """Bytes one cached decoding step must read: decoder weights, logits layer, caches.

  Cross-attention keys/values are computed once from the encoder output, so
  their kernels are not read per step; the cached keys/values are.
  """
  d, inner, mlp = config.emb_dim, config.joined_kv, config.mlp_dim
  per_layer = (6 * d * inner + (len(config.mlp_activations) + 1) * d * mlp) * weight_bytes
  layers = config.num_decoder_layers
  kv_row = config.num_heads * config.head_dim * cache_bytes
  return {
      "decoder weights": layers * per_layer,
      f"logits layer ({'float32' if logits_bytes == 4 else 'bfloat16'})":
          d * config.vocab_size * logits_bytes,
      "self-attention cache": layers * 2 * batch_size * cache_length * kv_row,
      "cross-attention cache": layers * 2 * batch_size * input_length * kv_row,
  }


def measure_copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
  """Bytes/s of a large array copy (read + write counted), median of runs."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  source = np.ones(megabytes * 2**20 // 4, np.float32)
  target = np.empty_like(source)
  timings = []
  for _ in range(repeats):
    start = time.perf_counter()
    np.copyto(target, source)
    timings.append(time.perf_counter() - start)
  return 2 * source.nbytes / statistics.median(timings)


def _ours(config, params, inputs, new_tokens: int, use_cache: bool) -> Callable[[], Any]:
  import jax  # pylint: disable=g-import-not-at-top
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  model = EncoderDecoderModel(config)
  params = jax.device_put(params)
  batch = {"encoder_input_tokens": jax.numpy.asarray(inputs)}

  def decode():
    tokens = model.predict_batch(params, batch, max_decode_length=new_tokens, eos_id=None,
                                 use_cache=use_cache)
    return jax.block_until_ready(tokens)
  return decode


def _hugging_face(config, params, inputs, new_tokens: int) -> dict[str, Callable[[], Any]]:
  """Variants name -> decode function; empty without torch/transformers."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {}
  from cot_distill.model import checkpoints  # pylint: disable=g-import-not-at-top
  transformers.logging.set_verbosity_error()
  with tempfile.TemporaryDirectory() as directory:
    checkpoints.export_hf(params, config.replace(dtype="float32"), directory)
    model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  input_ids = torch.tensor(inputs, dtype=torch.long)

  def decode(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
      with torch.no_grad():
        return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                              do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, use_cache=True).numpy()[:, 1:]
    finally:
      torch.set_num_threads(previous)
  threads = torch.get_num_threads()
  variants = {f"hf generate f32 {threads}t": lambda: decode(threads)}
  if threads > 1:
    variants["hf generate f32 1t"] = lambda: decode(1)
  return variants


def _time(function: Callable[[], Any]) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def _limit_threads(threads: int) -> None:
  """Sets XLA's and torch's thread counts; must run before JAX starts its backend."""
  import os  # pylint: disable=g-import-not-at-top
  if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false"
                               + " intra_op_parallelism_threads=1").strip()
  elif threads > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" intra_op_parallelism_threads={threads}").strip()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
  except ImportError:
    pass


def run(args: argparse.Namespace) -> int:
  if args.threads:
    _limit_threads(args.threads)
  from cot_distill import cpu_runtime  # pylint: disable=g-import-not-at-top
  cpu_runtime.prefer_synchronous_dispatch()
  with cpu_runtime.retained_memory() as retained:
    print("host memory: " + ("freed memory retained between calls (cot_distill.cpu_runtime)"
                             if retained else "glibc default"))
    return _run(args)


def _run(args: argparse.Namespace) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cot_distill.model.config import get_config  # pylint: disable=g-import-not-at-top

  config = get_config(args.config, dropout_rate=0.0)
  tokens_per_batch = args.batch_size * args.new_tokens
  print(f"setting: {args.config} (vocab {config.vocab_size}), batch {args.batch_size}, "
        f"{args.input_length} input tokens, {args.new_tokens} new tokens forced, greedy")
  params = _random_params(config, seed=0)
  inputs = np.random.default_rng(1).integers(
      2, min(config.vocab_size, 32000), (args.batch_size, args.input_length), dtype=np.int32)

  variants: dict[str, Callable[[], Any]] = {
      "ours cached bfloat16": _ours(config.replace(dtype="bfloat16"), params, inputs,
                                    args.new_tokens, True),
      "ours cached bf16+logits": _ours(
          config.replace(dtype="bfloat16", logits_dtype="bfloat16"), params, inputs,
          args.new_tokens, True),
      "ours cached float32": _ours(config.replace(dtype="float32"), params, inputs,
                                   args.new_tokens, True),
  }
  if not args.no_hf:
    hugging_face = _hugging_face(config, params, inputs, args.new_tokens)
    if not hugging_face:
      print("Hugging Face: torch/transformers not installed; skipped")
    variants.update(hugging_face)
  outputs = {}
  for name, function in variants.items():  # compile / warm up, and keep the tokens
    seconds = _time(lambda: outputs.__setitem__(name, np.asarray(function())))  # pylint: disable=cell-var-from-loop
    print(f"  warm-up {name}: {seconds:.2f} s (includes compilation)")
  timings: dict[str, list[float]] = {name: [] for name in variants}
  bandwidths = []
  for _ in range(args.repeats):  # interleaved, so every variant sees the same load
    for name, function in variants.items():
      timings[name].append(_time(function))
    bandwidths.append(measure_copy_bandwidth())
  if args.uncached_repeats:
    # One compile outside the timing, on a 2-token decode of the same shapes
    # would still recompile (the length is static), so the first timed run
    # includes compilation; compilation is seconds, the run minutes.
    uncached = _ours(config.replace(dtype="float32"), params, inputs, args.new_tokens, False)
    timings["ours uncached float32"] = [
        _time(lambda: outputs.__setitem__("ours uncached float32", np.asarray(uncached())))
        for _ in range(args.uncached_repeats)]

  bandwidth = statistics.median(bandwidths) if bandwidths else measure_copy_bandwidth()
  _report(config, args, timings, outputs, bandwidth, tokens_per_batch)
  return 0


def _report(config, args, timings, outputs, bandwidth, tokens_per_batch) -> None:
  medians = {name: statistics.median(values) for name, values in timings.items()}
  print(f"\nmemory bandwidth (array copy, read+write, median over the run): "
        f"{bandwidth / 1e9:.1f} GB/s")
  bounds = {}
  for name, weight_bytes, logits_bytes in (("bfloat16", 2, 4), ("bf16+logits", 2, 2),
                                           ("float32", 4, 4)):
    parts = bytes_read_per_step(config, batch_size=args.batch_size,
                                input_length=args.input_length,
                                cache_length=args.new_tokens, weight_bytes=weight_bytes,
                                cache_bytes=weight_bytes, logits_bytes=logits_bytes)
    total = sum(parts.values())
    bounds[name] = args.new_tokens * total / bandwidth
    detail = ", ".join(f"{part} {size / 1e6:.1f} MB" for part, size in parts.items())
    print(f"bytes read per step, {name}: {total / 1e6:.1f} MB ({detail}); bandwidth bound "
          f"{bounds[name]:.2f} s/batch = {tokens_per_batch / bounds[name]:.0f} tokens/s")
  hf_names = [name for name in medians if name.startswith("hf ")]
  best_hf = min(hf_names, key=medians.get) if hf_names else None
  print(f"\n{'variant':<26} {'s/batch':>8} {'tokens/s':>9} {'vs best HF':>11} "
        f"{'bound/time':>11}  runs (s)")
  for name, median in medians.items():
    ratio = f"{medians[best_hf] / median:.2f}x" if best_hf else "n/a"
    bound = bounds[next((key for key in ("bf16+logits", "bfloat16") if key in name),
                        "float32")]
    runs = " ".join(f"{value:.2f}" for value in timings[name])
    print(f"{name:<26} {median:8.2f} {tokens_per_batch / median:9.1f} {ratio:>11} "
          f"{bound / median:10.0%}  [{runs}]")
  for hf_name in hf_names:
    for ours in (n for n in medians if n.startswith("ours cached")):
      print(f"ratio {ours} / {hf_name}: {medians[hf_name] / medians[ours]:.2f}x")
  reference_tokens = 8 * 128  # the setting
  print(f"issue reference figures (batch 8 x 128 tokens, other runs): HF generate "
        f"{reference_tokens / REFERENCE_SECONDS['hf_generate_float32']:.0f} tokens/s, T5X "
        f"{reference_tokens / REFERENCE_SECONDS['t5x_greedy']:.0f} tokens/s")
  if "ours uncached float32" in outputs:
    same = (outputs["ours cached float32"] == outputs["ours uncached float32"]).all()
    print(f"cached == uncached tokens (float32): {bool(same)}")
  for hf_name in hf_names:
    same = (outputs["ours cached float32"] == outputs[hf_name]).mean()
    print(f"ours float32 vs {hf_name} tokens identical at {same:.1%} of positions")
