"""`cot-distill bench decode`: greedy decoding throughput vs Hugging Face `generate`.

Setting (issue 5): T5 1.1 small (vocabulary 32128), batch 8, 128 input tokens,
128 new tokens on both sides (EOS disabled: ours `eos_id=None`, HF
`eos_token_id=None`, no logit masked). Variants, timed interleaved so they
share the machine's load:
- ours, cached: float32; bfloat16 activations with T5X's float32 logits
  layer; bfloat16 with the logits layer in bfloat16 (`T5Config.logits_dtype`,
  float32 accumulation and logits); the last also with `cpu_fast_paths=off`;
- ours, uncached (the whole prefix recomputed each step; one timed run);
- Hugging Face `T5ForConditionalGeneration.generate` on the same weights
  (`benchmarks.common.hf_t5`: lm_head untied, parameter count checked equal
  to ours, denormals flushed): float32 with torch's default thread count
  and bfloat16 weights (each also with one thread), and for `--hf-compiled` dtypes a
  static cache with a `torch.compile`d forward (its compilation in warm-up).

Each of our rows is divided by the fastest HF variant at its precision
(float32 or bfloat16) and, apart, by the fastest HF variant of any kind.
Equivalence is checked on teacher-forced logits (max |ours - HF| on the
same inputs); where greedy tokens differ, the first diverging position is
printed with both sides' logit margins there (near-tied logits flip a
token, and every later token follows the flip).

Decoding one token per row reads every decoder weight once, so the floor is
(bytes read per step) / (memory bandwidth). The benchmark measures the
bandwidth in the same run (a large array copy) and prints how close each
variant gets to that bound. Figures are medians; on a shared machine compare
the same-run ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
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
  parser.add_argument("--profile", default="bf16+logits", metavar="PRECISION",
                      help="after the timings, trace ours cached at this precision (float32, "
                           "bfloat16, bf16+logits) and print where a batch's decoding spends "
                           "its time ('' for none; cot_distill/benchmarks/profile.py)")
  parser.add_argument("--hf-compiled", default="float32,bfloat16",
                      help="HF dtypes also timed with a static cache and torch.compile'd "
                           "forward ('' for none; compilation takes minutes on a small CPU)")
  parser.add_argument("--no-fast-paths-off", action="store_true",
                      help="skip our bf16+logits row with cpu_fast_paths=off")
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


def _ours(config, params, inputs, new_tokens: int, use_cache: bool,
          fast_paths_mode: str = "auto") -> Callable[[], Any]:
  import jax  # pylint: disable=g-import-not-at-top
  from cot_distill import fast_paths  # pylint: disable=g-import-not-at-top
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  model = EncoderDecoderModel(config)
  params = jax.device_put(params)
  batch = {"encoder_input_tokens": jax.numpy.asarray(inputs)}

  def decode():
    with fast_paths.forced(fast_paths_mode):  # read while tracing (the first call)
      tokens = model.predict_batch(params, batch, max_decode_length=new_tokens, eos_id=None,
                                   use_cache=use_cache)
      return jax.block_until_ready(tokens)
  return decode


def _hugging_face(config, params, inputs, new_tokens: int,
                  compiled: tuple[str, ...] = ()) -> tuple[dict[str, Callable[[], Any]], dict]:
  """(variants name -> decode function, eager models by dtype); empty without torch.

  The model is `common.hf_t5` with our weights (lm_head untied, parameter
  count checked, denormals flushed). EOS is disabled as on our side
  (`eos_token_id=None`: every row runs `new_tokens` steps, and no logit is
  masked; `min_new_tokens` would mask EOS and change the argmax).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return {}, {}
  import copy  # pylint: disable=g-import-not-at-top
  from cot_distill.benchmarks import common  # pylint: disable=g-import-not-at-top
  models = {"float32": common.hf_t5(config.replace(dtype="float32"), params).eval()}
  models["bfloat16"] = copy.deepcopy(models["float32"]).to(torch.bfloat16)
  input_ids = torch.tensor(inputs, dtype=torch.long)
  generation = copy.deepcopy(models["float32"].generation_config)
  generation.update(eos_token_id=None, do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                    min_new_tokens=None, use_cache=True)
  static = copy.deepcopy(generation)
  static.update(cache_implementation="static")

  def decode(model, threads: int, config=generation):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
      with torch.no_grad():
        return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                              generation_config=config).numpy()[:, 1:]
    finally:
      torch.set_num_threads(previous)
  threads = torch.get_num_threads()
  variants = {f"hf float32 {threads}t": lambda: decode(models["float32"], threads)}
  if threads > 1:
    variants["hf float32 1t"] = lambda: decode(models["float32"], 1)
  variants[f"hf bfloat16 {threads}t"] = lambda: decode(models["bfloat16"], threads)
  if threads > 1:
    variants["hf bfloat16 1t"] = lambda: decode(models["bfloat16"], 1)
  for dtype in compiled:
    model = copy.deepcopy(models[dtype])
    model.forward = torch.compile(model.forward)
    variants[f"hf {dtype} static compiled"] = (
        lambda model=model: decode(model, threads, static))
  return variants, models


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
        f"{args.input_length} input tokens, {args.new_tokens} new tokens forced (EOS "
        f"disabled on both sides), greedy")
  params = _random_params(config, seed=0)
  inputs = np.random.default_rng(1).integers(
      2, min(config.vocab_size, 32000), (args.batch_size, args.input_length), dtype=np.int32)

  bf16_logits = config.replace(dtype="bfloat16", logits_dtype="bfloat16")
  variants: dict[str, Callable[[], Any]] = {
      "ours cached float32": _ours(config.replace(dtype="float32"), params, inputs,
                                   args.new_tokens, True),
      "ours cached bfloat16": _ours(config.replace(dtype="bfloat16"), params, inputs,
                                    args.new_tokens, True),
      "ours cached bf16+logits": _ours(bf16_logits, params, inputs, args.new_tokens, True),
  }
  if not args.no_fast_paths_off:
    variants["ours cached bf16+logits fast-paths-off"] = _ours(
        bf16_logits, params, inputs, args.new_tokens, True, fast_paths_mode="off")
  hf_models = {}
  if not args.no_hf:
    compiled = tuple(d.strip() for d in args.hf_compiled.split(",") if d.strip())
    hugging_face, hf_models = _hugging_face(config, params, inputs, args.new_tokens, compiled)
    if not hugging_face:
      print("Hugging Face: torch/transformers not installed; skipped")
    variants.update(hugging_face)
  outputs = {}
  for name, function in variants.items():  # compile / warm up, and keep the tokens
    seconds = _time(lambda: outputs.__setitem__(name, np.asarray(function())))  # pylint: disable=cell-var-from-loop
    print(f"  warm-up {name}: {seconds:.2f} s (includes compilation)", flush=True)
  timings: dict[str, list[float]] = {name: [] for name in variants}
  bandwidths = []
  for _ in range(args.repeats):  # interleaved, so every variant sees the same load
    for name, function in variants.items():
      timings[name].append(_time(function))
    bandwidths.append(measure_copy_bandwidth())
  if args.uncached_repeats:
    # The decode length is static, so the first timed run includes
    # compilation: seconds, against minutes for the run.
    uncached = _ours(config.replace(dtype="float32"), params, inputs, args.new_tokens, False)
    timings["ours uncached float32"] = [
        _time(lambda: outputs.__setitem__("ours uncached float32", np.asarray(uncached())))
        for _ in range(args.uncached_repeats)]

  bandwidth = statistics.median(bandwidths) if bandwidths else measure_copy_bandwidth()
  _report(config, args, timings, outputs, bandwidth, tokens_per_batch)
  _equivalence(config, params, inputs, outputs, hf_models, args.new_tokens)
  if args.profile:
    _profile(args, config, params, inputs, bandwidth)
  return 0


PROFILE_PRECISIONS = {"float32": dict(dtype="float32"), "bfloat16": dict(dtype="bfloat16"),
                      "bf16+logits": dict(dtype="bfloat16", logits_dtype="bfloat16")}


def _profile(args, config, params, inputs, bandwidth: float) -> None:
  """Traces our cached greedy decoding: which operations bound it.

  `predict_batch` is wrapped in one outer `jax.jit` so that the traced
  executable and the HLO read for it are the same program (the inner jit is
  inlined; the computation is the one the timed rows ran).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from cot_distill.benchmarks import profile  # pylint: disable=g-import-not-at-top
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  if args.profile not in PROFILE_PRECISIONS:
    print(f"\n--profile {args.profile!r}: choose one of {', '.join(PROFILE_PRECISIONS)}; "
          "not profiled")
    return
  model = EncoderDecoderModel(config.replace(**PROFILE_PRECISIONS[args.profile]))
  decode = jax.jit(lambda params, tokens: model.predict_batch(
      params, {"encoder_input_tokens": tokens}, max_decode_length=args.new_tokens,
      eos_id=None))
  params, tokens = jax.device_put(params), jax.numpy.asarray(inputs)
  jax.block_until_ready(decode(params, tokens))  # compile
  profile.report(f"ours cached {args.profile}", lambda: jax.block_until_ready(
      decode(params, tokens)), decode.lower(params, tokens).compile().as_text(),
                 steps=2, program="decode")
  print(f"  (copy bandwidth measured above: {bandwidth / 1e9:.1f} GB/s; "
        f"{args.new_tokens} decoder steps per batch)")


def variant_precision(name: str) -> str:
  """The bandwidth-bound key of a variant: float32, bfloat16 (float32 logits layer), bf16+logits."""
  if "float32" in name:
    return "float32"
  if name.startswith("hf") or "bf16+logits" in name:
    return "bf16+logits"  # HF bfloat16: every weight in bf16
  return "bfloat16"


def same_precision_partner(name: str, medians: dict[str, float]) -> str | None:
  """The fastest HF variant at our variant's precision (eager or compiled)."""
  wanted = "float32" if variant_precision(name) == "float32" else "bfloat16"
  candidates = [hf for hf in medians if hf.startswith("hf ") and wanted in hf]
  return min(candidates, key=medians.get) if candidates else None


def _report(config, args, timings, outputs, bandwidth, tokens_per_batch) -> None:
  import os  # pylint: disable=g-import-not-at-top
  medians = {name: statistics.median(values) for name, values in timings.items()}
  print(f"\nmemory bandwidth (array copy, read+write, median over the run): "
        f"{bandwidth / 1e9:.1f} GB/s; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
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
  print(f"\n{'variant':<40} {'s/batch':>8} {'tokens/s':>9} {'of bound':>9}  runs (s)")
  for name, median in medians.items():
    runs = " ".join(f"{value:.2f}" for value in timings[name])
    print(f"{name:<40} {median:8.2f} {tokens_per_batch / median:9.1f} "
          f"{bounds[variant_precision(name)] / median:8.0%}  [{runs}]")
  if best_hf:
    print("\nratios (HF median / ours median; > 1: ours faster), same run:")
    print(f"{'ours':<40} {'vs same precision':>17}  {'(HF variant)':30} {'vs fastest HF':>13}")
    for name in (n for n in medians if n.startswith("ours cached")):
      partner = same_precision_partner(name, medians)
      same = f"{medians[partner] / medians[name]:.2f}x" if partner else "-"
      note = f"({partner})" + (" *" if variant_precision(name) == "bfloat16" else "")
      print(f"{name:<40} {same:>17}  {note:30} {medians[best_hf] / medians[name]:12.2f}x")
    print(f"fastest HF variant: {best_hf}. * ours reads T5X's float32 logits layer, HF "
          "bfloat16 a bf16 one (more work on our side).")
  from cot_distill.benchmarks import common  # pylint: disable=g-import-not-at-top
  reference_tokens = 8 * 128  # the setting
  common.print_reference("issue 5, batch 8 x 128 tokens on the 2-core machine", [
      f"HF generate float32 {reference_tokens / REFERENCE_SECONDS['hf_generate_float32']:.0f} "
      f"tokens/s, T5X greedy {reference_tokens / REFERENCE_SECONDS['t5x_greedy']:.0f} tokens/s"])


def _teacher_forced_logits(config, params, hf_model, inputs, tokens):
  """(ours, HF) float32 logits [batch, length, vocab] for decoder inputs 0 + tokens[:, :-1]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  decoder_inputs = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], 1)
  batch = {"encoder_input_tokens": np.asarray(inputs), "decoder_input_tokens": decoder_inputs,
           # Every position real (HF masks none either), whatever the tokens are.
           "decoder_target_tokens": np.ones_like(decoder_inputs)}
  ours = np.asarray(EncoderDecoderModel(config).compute_logits(params, batch), np.float32)
  if hf_model is None:
    return ours, None
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    input_ids = torch.tensor(inputs, dtype=torch.long)
    theirs = hf_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long)).logits
  return ours, theirs.float().numpy()


def first_divergence(a, b):
  """(row, position) of the earliest differing token of two [batch, length] arrays, or None."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  differ = np.asarray(a) != np.asarray(b)
  if not differ.any():
    return None
  position = int(np.argmax(differ.any(axis=0)))
  return int(np.argmax(differ[:, position])), position


def _describe_divergence(label, a_name, a, b_name, b, logits_a, logits_b) -> None:
  """Prints where two greedy decodes first differ and how close the logits were there."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  where = first_divergence(a, b)
  if where is None:
    print(f"{label}: greedy tokens identical at all {a.size} positions")
    return
  row, position = where
  token_a, token_b = int(a[row, position]), int(b[row, position])
  margin_a = logits_a[row, position, token_a] - logits_a[row, position, token_b]
  margin_b = logits_b[row, position, token_b] - logits_b[row, position, token_a]
  gap = float(np.abs(logits_a[row, position] - logits_b[row, position]).max())
  print(f"{label}: greedy tokens agree up to row {row} position {position} (first "
        f"divergence; {float((a == b).mean()):.1%} of all positions equal); there {a_name} "
        f"chose {token_a}, {b_name} {token_b}. Teacher-forced on the shared prefix: "
        f"{a_name} margin {margin_a:.2e}, {b_name} margin {margin_b:.2e}, max |logit "
        f"difference| {gap:.2e}" + (" (a near tie)" if min(margin_a, margin_b) <= 2 * gap
                                    else " (NOT a near tie: a real difference)"))


def _equivalence(config, params, inputs, outputs, hf_models, new_tokens: int) -> None:
  """Teacher-forced logits on the same inputs; greedy divergences explained by margins."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  float32 = config.replace(dtype="float32")
  print("\nequivalence (same weights, same inputs):")
  targets = np.random.default_rng(2).integers(
      2, min(config.vocab_size, 32000), (inputs.shape[0], new_tokens), dtype=np.int32)
  for label, ours_config, dtype in (("float32 vs HF float32", float32, "float32"),
                                    ("bf16+logits vs HF bfloat16",
                                     config.replace(dtype="bfloat16", logits_dtype="bfloat16"),
                                     "bfloat16")):
    if dtype not in hf_models:
      continue
    ours, theirs = _teacher_forced_logits(ours_config, params, hf_models[dtype], inputs, targets)
    print(f"  teacher-forced logits, {label}: max |difference| "
          f"{float(np.abs(ours - theirs).max()):.2e} (largest |logit| "
          f"{float(np.abs(ours).max()):.1f}; {targets.size} random target positions)")
  ours_tokens = outputs["ours cached float32"]
  if "float32" in hf_models:
    hf_name = next(n for n in outputs if n.startswith("hf float32"))
    ours, theirs = _teacher_forced_logits(float32, params, hf_models["float32"], inputs,
                                          ours_tokens)
    _describe_divergence("  ours float32 vs HF float32 generate", "ours", ours_tokens, "HF",
                         outputs[hf_name], ours, theirs)
  if "ours uncached float32" in outputs:
    same = bool((ours_tokens == outputs["ours uncached float32"]).all())
    print(f"  cached == uncached tokens (float32): {same}")
    if not same:
      ours, _ = _teacher_forced_logits(float32, params, None, inputs, ours_tokens)
      _describe_divergence("  ours cached vs uncached (float32)", "cached", ours_tokens,
                           "uncached", outputs["ours uncached float32"], ours, ours)
