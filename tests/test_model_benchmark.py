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
                            "--input-length", "8", "--new-tokens", "4", "--repeats", "1"])
  assert args.func(args) == 0
  output = capsys.readouterr().out
  assert "ours cached float32" in output and "bandwidth bound" in output
  assert "ours cached bf16+logits" in output
  assert "cached == uncached tokens (float32): True" in output
  assert "tokens identical at 100.0% of positions" in output  # HF greedy agrees
