"""`cot-distill plan` against what XLA allocates for the real compiled step.

The plan's argument bytes (parameters + optimizer state + batch) come from
`jax.eval_shape` and the partitioning rules, so they must equal the compiled
step's `memory_analysis().argument_size_in_bytes` on every layout. Its
activation estimate is a model of what autodiff keeps; it is compared with
the step's temporary bytes within a stated tolerance, and both must fall
none > minimal > full.

XLA:CPU drops the optimization barriers that `jax.checkpoint` puts around a
rematerialised layer (pass `cse_barrier_expander`), after which CSE merges
the recomputation back into the forward pass and remat keeps everything
(temporaries of none, minimal and full within 5% of each other here). TPU
and GPU keep the barriers, so the step is compiled with that pass disabled
to see what they would allocate.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import pytest

from cot_distill import cli
from cot_distill import errors
from cot_distill import fast_paths
from cot_distill.commands import plan as plan_command
from cot_distill.model.config import get_config
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import data
from cot_distill.train import memory_plan
from cot_distill.train import optimizers
from cot_distill.train import partitioning
from cot_distill.train import slices
from cot_distill.train import state as state_lib
from cot_distill.train import step as step_lib

import train_testing

BATCH, LENGTHS = 8, {"inputs": 64, "targets": 64}
KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
# Estimated temporaries / XLA:CPU's, float32 activations. Measured: 0.82
# (none), 1.05 (minimal), 1.07 (full) on one device; XLA:CPU's own layout
# copies of attention weights are what the plan does not model.
TEMP_TOLERANCE = (0.75, 1.25)
RECIPE = "gin/recipes/gsm8k_t5_1_1_xxl_cot.gin"


def _model(policy: str = "none", **overrides) -> EncoderDecoderModel:
  # Every split axis divisible by 8: heads 8, MLP 512, vocabulary 1024.
  dims = dict(vocab_size=1024, emb_dim=128, num_heads=8, head_dim=16, mlp_dim=512,
              num_encoder_layers=3, num_decoder_layers=3, dtype="float32",
              dropout_rate=0.0, remat_policy=policy)
  dims.update(overrides)
  return EncoderDecoderModel(get_config("t5_1_1_tiny", **dims))


def _optimizer():
  return optimizers.adafactor(optimizers.constant_schedule(1e-3))


def _compiled_memory(model, layout, num_partitions, num_devices, *, optimize):
  tx = _optimizer()
  init = functools.partial(model.get_initial_variables,
                           input_shapes=data.model_input_shapes(LENGTHS, BATCH, True))
  shapes, specs = state_lib.abstract_state_and_specs(init, tx)
  partitioner = partitioning.Partitioner(layout, num_partitions,
                                         devices=jax.devices()[:num_devices])
  shardings = state_lib.state_shardings(partitioner, shapes, specs)
  batch = {name: jax.ShapeDtypeStruct(
      shape, jnp.float32 if name == "decoder_loss_weights" else jnp.int32)
           for name, shape in data.model_input_shapes(LENGTHS, BATCH, True).items()}
  with fast_paths.forced("off"):
    step = step_lib.compile_train_step(
        loss_fn=model.loss_fn, optimizer=tx,
        learning_rate=optimizers.constant_schedule(1e-3), partitioner=partitioner,
        state_shardings=shardings, dropout=False)
    lowered = step.lower(state_lib.with_shardings(shapes, shardings), batch)
  if optimize:
    return lowered.compile(compiler_options=KEEP_BARRIERS).memory_analysis()
  with train_testing.fast_compilation():
    return lowered.compile().memory_analysis()


def _plan(model, layout, num_partitions, num_devices):
  return memory_plan.plan_memory(
      model=model, optimizer=_optimizer(), rules=partitioning.LAYOUT_RULES[layout],
      mesh_shape=memory_plan.mesh_shape_for(num_partitions, num_devices),
      batch_size=BATCH, task_feature_lengths=LENGTHS)


LAYOUTS = [("data_parallel", 1, 1), ("data_parallel", 1, 8), ("model_parallel", 8, 8),
           ("model_parallel", 4, 8), ("fsdp", 1, 8)]


@pytest.mark.parametrize("layout,num_partitions,num_devices", LAYOUTS,
                         ids=[f"{l}-{n // p}x{p}" for l, p, n in LAYOUTS])
def test_argument_bytes_equal_the_compiled_steps(layout, num_partitions, num_devices):
  train_testing.require_eight_devices()
  model = _model()
  plan = _plan(model, layout, num_partitions, num_devices)
  compiled = _compiled_memory(model, layout, num_partitions, num_devices, optimize=False)
  print(f"\n{layout} {num_devices // num_partitions}x{num_partitions}: plan "
        f"{plan.arguments:,} compiled {compiled.argument_size_in_bytes:,} bytes")
  # The plan is 376 bytes over: jit drops the 94 one-element Adafactor
  # placeholders (optax's v / v_row / v_col stand-ins) that the step never reads.
  assert plan.arguments == pytest.approx(compiled.argument_size_in_bytes, rel=1e-3)
  assert not plan.notes  # every split axis divides: nothing kept whole


def test_sharding_divides_parameters_as_the_layout_says():
  model = _model()
  replicated = _plan(model, "data_parallel", 1, 8)
  split = _plan(model, "fsdp", 1, 8)
  # FSDP splits every kernel and embedding 8 ways; only norms stay whole.
  assert split.parameters < replicated.parameters / 7
  assert split.gradients == split.parameters
  # Logits [batch, length, vocab]: batch split 8 ways or vocabulary 8 ways.
  whole = _plan(model, "data_parallel", 1, 1).logits
  assert replicated.logits == _plan(model, "model_parallel", 8, 8).logits == whole // 8


@pytest.mark.slow  # three optimised compiles per layout
@pytest.mark.parametrize("layout,num_partitions,num_devices",
                         [("data_parallel", 1, 1), ("model_parallel", 4, 8)],
                         ids=["1-device", "model_parallel-2x4"])
def test_temporaries_follow_the_compiled_step_per_remat_policy(
    layout, num_partitions, num_devices):
  estimated, compiled = {}, {}
  for policy in ("none", "minimal", "full"):
    model = _model(policy)
    estimated[policy] = _plan(model, layout, num_partitions, num_devices).temporaries
    compiled[policy] = _compiled_memory(model, layout, num_partitions, num_devices,
                                        optimize=True).temp_size_in_bytes
  print(f"\n{layout}: temporaries plan {estimated} compiled {compiled}")
  for policy in estimated:
    ratio = estimated[policy] / compiled[policy]
    assert TEMP_TOLERANCE[0] <= ratio <= TEMP_TOLERANCE[1], (policy, ratio)
  for sizes in (estimated, compiled):
    assert sizes["none"] > sizes["minimal"] > sizes["full"], sizes


def test_microbatches_divide_activations_and_double_gradients():
  model = _model()
  one = _plan(model, "data_parallel", 1, 8)
  four = memory_plan.plan_memory(
      model=model, optimizer=_optimizer(), rules=partitioning.DATA_PARALLEL_RULES,
      mesh_shape=memory_plan.mesh_shape_for(1, 2), batch_size=BATCH,
      task_feature_lengths=LENGTHS, num_microbatches=4)
  assert four.rows_per_device == one.rows_per_device == 1
  assert four.gradients == 2 * four.parameters


def test_config_that_does_not_divide_is_refused():
  with pytest.raises(errors.UserError, match="heads are not divisible by the model axis"):
    _plan(_model(num_heads=6), "model_parallel", 4, 8)
  with pytest.raises(errors.UserError, match="num_partitions=3 must divide"):
    memory_plan.mesh_shape_for(3, 8)
  with pytest.raises(errors.UserError, match="batch size 8 is not divisible"):
    memory_plan.plan_memory(
        model=_model(), optimizer=_optimizer(), rules=partitioning.DATA_PARALLEL_RULES,
        mesh_shape=memory_plan.mesh_shape_for(1, 16), batch_size=8,
        task_feature_lengths=LENGTHS)


def test_unknown_slice_lists_the_known_ones():
  with pytest.raises(errors.UserError, match="did you mean v4-32") as raised:
    slices.slice_file("v4-23")
  assert "v5p-128" in str(raised.value)
  assert slices.slice_file("v5e_16").name == "v5e_16.gin"


def _cli(capsys, *flags):
  assert cli.main(["plan", f"--gin_file={RECIPE}", *flags]) == 0
  return capsys.readouterr().out


@pytest.mark.slow  # traces T5 XXL's initialisation once per slice (~30 s)
def test_xxl_recipe_on_every_slice(capsys):
  table = _cli(capsys, "--all-slices")
  print(table)
  rows = {line.split()[0]: line for line in table.splitlines()[2:]}
  for name in slices.known_slices():
    assert name in rows, (name, table)
  # The v4-32 file binds remat 'full': without it, the 64 rows per model
  # group keep ~100 GiB of activations (see the slice file).
  assert "yes" in rows["v4-32"] and " full " in rows["v4-32"]
  assert "NO" in rows["v4-8"]  # its own comment: XXL does not fit there


def test_json_plan_of_one_slice(capsys):
  plans = json.loads(_cli(capsys, "--slice", "v4-32", "--remat", "none", "--json"))
  assert len(plans) == 1
  plan = plans[0]
  assert plan["name"] == "v4-32" and plan["mesh_shape"] == {"data": 2, "model": 8}
  # T5 1.1 XXL: 11.3B float32 parameters split 8 ways.
  assert 5.0e9 < plan["parameters"] < 6.0e9
  assert plan["fits"] is False and plan["activations"] > 64 * 1024 ** 3


def test_unknown_slice_exits_2(capsys):
  assert cli.main(["plan", f"--gin_file={RECIPE}", "--slice", "v9-1"]) == 2
  assert "gin/partitioning/slices/" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(slices.known_slices()))
def test_every_slice_file_states_its_facts(name):
  import gin  # pylint: disable=import-outside-toplevel
  from cot_distill.commands import train as train_command  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  try:
    train_command.parse_gin([str(slices.slice_file(name))], [])
    facts = slices.Slice(**gin.get_bindings(slices.Slice))
    num_partitions = gin.query_parameter("%NUM_PARTITIONS")
  finally:
    gin.clear_config()
  assert facts.name == name
  assert facts.devices % num_partitions == 0
  assert facts.hbm_bytes_per_device >= 16e9 and facts.hosts >= 1


def test_without_a_slice_the_plan_is_for_this_machines_devices(capsys):
  assert cli.main(["plan", "--gin_file=gin/models/t5_1_1_tiny.gin",
                   "--gin_file=gin/runs/finetune_cot.gin", "--gin.BATCH_SIZE=8",
                   "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}"]) == 0
  table = capsys.readouterr().out
  assert f"this machine ({jax.device_count()} devices)" in table
  assert "HBM unknown" in table  # CPU devices report no memory limit


def test_scanned_layers_plan_the_same_arguments_as_compiled():
  # Stacked layer parameters ([layers] axis kept whole) and Adafactor's
  # per-layer statistics; the activation model does not depend on it.
  train_testing.require_eight_devices()
  model = _model(scan_layers=True)
  plan = _plan(model, "model_parallel", 4, 8)
  compiled = _compiled_memory(model, "model_parallel", 4, 8, optimize=False)
  assert plan.arguments == pytest.approx(compiled.argument_size_in_bytes, rel=0.01)
  unscanned = _plan(_model(), "model_parallel", 4, 8)
  assert plan.parameters == unscanned.parameters
  assert plan.activations == unscanned.activations
