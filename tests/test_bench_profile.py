"""The per-operation profile of the benchmarks (cot_distill/benchmarks/profile.py).

It must account for the traced time (every operation matched to its HLO
instruction, loops not counted twice) and attribute work correctly: the
matrix-product FLOPs it reads from the optimized HLO of a train step equal
the model's analytic count, and each part of the model shows up.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.benchmarks import common, profile
from cot_distill.benchmarks import train as bench_train
from cot_distill.model.config import get_config


def test_parse_hlo_counts_product_flops_and_keeps_the_jax_scope():
  def forward(a, b):
    with jax.named_scope("mlp"):
      return jnp.tanh(a @ b)
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  text = jax.jit(forward).lower(a, b).compile().as_text()
  instructions = profile.parse_hlo(text)
  matmuls = [i for i in instructions.values() if i.kind == "matmul"]
  assert sum(i.flops for i in matmuls) == 2 * 64 * 32 * 16
  assert all("/mlp/" in i.op_name for i in matmuls)
  assert profile.part(matmuls[0].op_name) == "MLP"
  # Operand and result bytes of the product: a, b in, [64, 16] out (float32).
  assert any(i.bytes >= 4 * (64 * 32 + 32 * 16 + 64 * 16) for i in matmuls)


@pytest.mark.parametrize("op_name, expected", [
    ("jit(train_step)/jvp(Transformer)/Transformer.decode/decoder/logits_dense/dot_general",
     ("forward", "output layer")),
    ("jit(train_step)/transpose(jvp(Transformer))/Transformer.encode/encoder/layers_1/"
     "attention/query/dot_general", ("backward", "attention projections")),
    ("jit(train_step)/transpose(jvp(Transformer))/Transformer.encode/encoder/layers_1/"
     "attention/exp", ("backward", "attention scores/softmax/mix")),
    ("jit(train_step)/jvp(Transformer)/Transformer.decode/decoder/layers_0/"
     "pre_mlp_layer_norm/mul", ("forward", "RMS norms")),
    ("jit(train_step)/sqrt", ("update", "optimizer and step")),
])
def test_phase_and_part_of_an_operation(op_name, expected):
  assert (profile.phase(op_name), profile.part(op_name)) == expected


def test_train_step_profile_accounts_for_its_time_and_work(capsys):
  batch = bench_train.random_batch(2, 8, 8)
  step = bench_train.make_our_step("t5_1_1_tiny", batch, optimizer="adafactor",
                                   precision="bfloat16+logits")
  step()
  text = step.optimized_hlo()
  result = profile.report("tiny", step, text, steps=1)
  assert result["matched"] == pytest.approx(result["total"])  # every op found in the HLO
  for key in ("by_kind", "by_phase", "by_part"):
    assert sum(row.seconds for row in result[key]) == pytest.approx(result["total"])
  parts = {row.label for row in result["by_part"]}
  assert {"output layer", "MLP", "attention projections", "RMS norms",
          "optimizer and step"} <= parts
  assert {row.label for row in result["by_phase"]} >= {"forward", "backward", "update"}
  # Forward and backward products: 3 x the forward pass's, as the benchmarks
  # count, split over the data-parallel devices (the HLO is one device's).
  devices = 2 if jax.local_device_count() >= 2 else 1
  parsed = sum(i.flops for i in profile.parse_hlo(text).values())
  expected = 3 * common.forward_matmul_flops(get_config("t5_1_1_tiny"), batch_size=2,
                                             input_length=8, target_length=8)
  assert parsed * devices == pytest.approx(expected, rel=1e-6)
  if devices > 1:  # the gradients' all-reduce
    assert "communication" in {row.label for row in result["by_kind"]}
  printed = capsys.readouterr().out
  assert "by part of the model (per step)" in printed and "GFLOP/s" in printed


def test_decode_profile_counts_the_loop_body_once():
  from cot_distill.model.models import EncoderDecoderModel
  import flax.linen as nn
  model = EncoderDecoderModel(get_config("t5_1_1_tiny", dropout_rate=0.0))
  params = nn.unbox(model.get_initial_variables(
      jax.random.PRNGKey(0), {"encoder_input_tokens": (2, 8),
                              "decoder_input_tokens": (2, 4)}))["params"]
  decode = jax.jit(lambda p, t: model.predict_batch(
      p, {"encoder_input_tokens": t}, max_decode_length=4, eos_id=None))
  tokens = jnp.asarray(np.arange(2, 18, dtype=np.int32).reshape(2, 8))
  jax.block_until_ready(decode(params, tokens))
  text = decode.lower(params, tokens).compile().as_text()
  result = profile.report("tiny decode", lambda: jax.block_until_ready(decode(params, tokens)),
                          text, steps=1, program="decode")
  instructions = profile.parse_hlo(text)
  assert any(i.opcode == "while" for i in instructions.values())
  # The loop's own event encloses its body's: it is left out, so the summed
  # operation time cannot exceed wall time x threads by the loop's length.
  assert all(row.label != "other" or row.operations > 1 for row in result["by_kind"])
  phases = {row.label for row in result["by_phase"]}
  assert "per token (loop body)" in phases
  # The body ran once per new token (4), so its work counts 4 times.
  body = [op for op, instruction in instructions.items()
          if instruction.in_loop and op in result["executions"]]
  assert body and all(result["executions"][op] == pytest.approx(4) for op in body)
  assert "search loop (argmax, state)" in {row.label for row in result["by_part"]}
  assert result["matched"] == pytest.approx(result["total"])
