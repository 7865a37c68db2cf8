"""`cot-distill bench decode` on a tiny config, and its bandwidth-bound arithmetic."""

from __future__ import annotations

import argparse

import pytest

from cot_distill.benchmarks import decode
from cot_distill.model.config import get_config


def test_bytes_read_per_step_for_t5_1_1_small():
  parts = decode.bytes_read_per_step(get_config("t5_1_1_small"), batch_size=8,
                                     input_length=128, cache_length=128, weight_bytes=4,
                                     cache_bytes=4)
  # 8 layers x (6 attention kernels 512x384 + 3 MLP kernels 512x1024) x 4 bytes.
  assert parts["decoder weights"] == 8 * (6 * 512 * 384 + 3 * 512 * 1024) * 4
  assert parts["logits layer (float32)"] == 512 * 32128 * 4
  half = decode.bytes_read_per_step(get_config("t5_1_1_small"), batch_size=8, input_length=128,
                                    cache_length=128, weight_bytes=2, cache_bytes=4,
                                    logits_bytes=2)
  assert half["logits layer (bfloat16)"] == 512 * 32128 * 2
  assert parts["cross-attention cache"] == 8 * 2 * 8 * 128 * 384 * 4


@pytest.mark.slow
def test_bench_decode_runs_on_a_tiny_config(capsys):
  parser = argparse.ArgumentParser()
  decode.register(parser.add_subparsers())
  args = parser.parse_args(["decode", "--config", "t5_1_1_tiny", "--batch-size", "2",
                            "--input-length", "8", "--new-tokens", "4", "--repeats", "1",
                            "--hf-compiled", "bfloat16"])
  assert args.func(args) == 0
  output = capsys.readouterr().out
  assert "ours cached float32" in output and "bandwidth bound" in output
  assert "ours cached bf16+logits" in output
  assert "ours cached bf16+logits fast-paths-off" in output
  assert "cached == uncached tokens (float32): True" in output
  assert "HF float32 generate: greedy tokens identical at all 8 positions" in output
  for variant in ("hf float32 ", "hf bfloat16 ", "hf bfloat16 static compiled"):
    assert f"\n{variant}" in output
  difference = float(output.split("float32 vs HF float32: max |difference| ")[1].split()[0])
  assert difference < 1e-4  # teacher-forced logits agree
  assert "reference (" in output and "vs same precision" in output


# --- bench train: the grid, the baseline's parameter check, the FLOP count --


def _train_args(*extra):
  from cot_distill.benchmarks import train
  parser = argparse.ArgumentParser()
  train.register(parser.add_subparsers())
  return parser.parse_args(["train", *extra])


def test_bench_train_grid_has_every_optimizer_and_precision_on_both_sides():
  from cot_distill.benchmarks import train
  names = [system.name for system in train.grid(_train_args())]
  assert names == [
      "ours adafactor float32", "ours adafactor bfloat16", "ours adafactor bfloat16+logits",
      "ours adamw float32", "ours adamw bfloat16", "ours adamw bfloat16+logits",
      "ours adafactor bfloat16+logits fast-paths-off",
      "HF adafactor float32", "HF adafactor bf16-autocast",
      "HF adamw float32", "HF adamw bf16-autocast", "HF adamw bf16-autocast compiled"]
  off = [s for s in train.grid(_train_args()) if s.fast_paths == "off"]
  assert len(off) == 1 and off[0].side == "ours"
  assert not [s for s in train.grid(_train_args("--no-baseline")) if s.side == "hf"]
  with pytest.raises(ValueError, match="--optimizers"):
    train.grid(_train_args("--optimizers", "sgd"))


def test_bench_train_divides_each_row_by_hf_doing_the_same_work():
  from cot_distill.benchmarks import train
  systems = {s.name: s for s in train.grid(_train_args())}
  hf_rows = [{"system": s, "name": s.name, "median": median} for s, median in (
      (systems["HF adamw bf16-autocast"], 2.0), (systems["HF adamw bf16-autocast compiled"], 1.5),
      (systems["HF adafactor bf16-autocast"], 1.8), (systems["HF adamw float32"], 3.0))]
  partner = train.same_work_partner(systems["ours adamw bfloat16+logits"], hf_rows)
  assert partner["name"] == "HF adamw bf16-autocast compiled"  # fastest of the same work
  assert train.same_work_partner(systems["ours adafactor bfloat16"], hf_rows)["name"] == (
      "HF adafactor bf16-autocast")
  assert train.same_work_partner(systems["ours adamw float32"], hf_rows)["name"] == (
      "HF adamw float32")
  assert train.same_work_partner(systems["ours adafactor float32"], hf_rows) is None


def test_hf_baseline_is_untied_and_its_parameter_count_is_checked():
  pytest.importorskip("transformers")
  from cot_distill.benchmarks import common
  config = get_config("t5_1_1_tiny")
  model = common.hf_t5(config)
  assert model.lm_head.weight is not model.shared.weight
  assert sum(p.numel() for p in model.parameters()) == common.our_parameter_count(config)
  # A baseline with a tied output layer (transformers 5's default) fails loudly.
  with pytest.raises(common.BaselineMismatch, match="parameters, ours"):
    common.check_parameter_count(common.our_parameter_count(config),
                                 common.our_parameter_count(config) - 32128 * 128,
                                 "the Hugging Face baseline")


def test_forward_flops_match_xla_cost_analysis():
  import jax
  import jax.numpy as jnp
  from cot_distill import fast_paths
  from cot_distill.benchmarks import common
  from cot_distill.model.models import EncoderDecoderModel
  config = get_config("t5_1_1_tiny", dtype="float32", dropout_rate=0.0)
  model = EncoderDecoderModel(config)
  params = decode._random_params(config, 0)
  batch = {"encoder_input_tokens": jnp.ones((2, 16), jnp.int32),
           "decoder_input_tokens": jnp.ones((2, 12), jnp.int32),
           "decoder_target_tokens": jnp.ones((2, 12), jnp.int32)}
  with fast_paths.forced("off"):
    analysis = jax.jit(model.compute_logits).lower(params, batch).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  ours = common.forward_matmul_flops(config, batch_size=2, input_length=16, target_length=12)
  # Products only (XLA also counts norms, softmax, ...): within a few percent.
  assert 0.95 < ours / analysis["flops"] <= 1.0


def test_first_divergence_and_same_precision_partner():
  import numpy as np
  a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
  b = np.array([[1, 2, 3, 9], [1, 2, 7, 4]])
  assert decode.first_divergence(a, a) is None
  assert decode.first_divergence(a, b) == (1, 2)  # the earliest position, any row
  medians = {"ours cached float32": 1.0, "ours cached bfloat16": 1.0,
             "hf float32 2t": 4.0, "hf float32 1t": 3.0, "hf float32 static compiled": 3.5,
             "hf bfloat16 2t": 2.5, "hf bfloat16 static compiled": 2.0}
  assert decode.same_precision_partner("ours cached float32", medians) == "hf float32 1t"
  assert decode.same_precision_partner("ours cached bf16+logits", medians) == (
      "hf bfloat16 static compiled")
  assert decode.variant_precision("hf bfloat16 1t") == "bf16+logits"
  assert decode.variant_precision("ours cached bfloat16") == "bfloat16"
