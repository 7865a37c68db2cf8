"""How much memory one device needs for a training step, without the devices.

`plan_memory(...)` takes what `trainer.train` builds (the model, the optax
transformation, the layout's logical-axis rules and the mesh shape, batch,
feature lengths, micro-batches) and returns a `MemoryPlan`: per-device bytes
of parameters, optimizer state, gradients, activations and logits, their
total, and whether that fits the device's HBM.

Parameters and optimizer state are exact: `jax.eval_shape` of the real
initialisation and `optimizer.init`, sharded by the real logical specs and
rules (`nn.logical_to_mesh`, with the trainer's rule that a dimension the
mesh axis does not divide stays whole), so they equal what the compiled step
takes as arguments. Gradients are a parameter-shaped tree, sharded like the
parameters. Activations are an analytical count of what the backward pass
keeps, per remat policy (`activation_bytes` says what and why), checked
against `compiled.memory_analysis()` on CPU (tests/test_memory_plan.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import PartitionSpec

from cot_distill import errors
from cot_distill.train import data
from cot_distill.train import partitioning
from cot_distill.train import state as state_lib

GIB = 1024 ** 3
# What the plan leaves free: XLA's own buffers, fragmentation and the input
# pipeline's device copies are not modelled, so a plan that uses the last few
# percent of HBM is a plan that may not fit.
DEFAULT_RESERVE_FRACTION = 0.05

CATEGORIES = ("parameters", "optimizer_state", "gradients", "activations",
              "logits")


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device bytes of one training step on one mesh.

  `activations` is what the forward pass keeps for the backward pass (per
  remat policy, one micro-batch) plus the working set of the layer being
  differentiated; `gradient_overlap` is what gradients and layer
  activations share over time (see `temporaries`); `logits` is the float32 [rows, target length, vocabulary
  / model axis] logits and their gradient, the largest single activation of a
  T5. `inputs` (the batch's token arrays) is counted in the total but too
  small to show.
  """
  name: str
  devices: int
  mesh_shape: Mapping[str, int]
  layout: str
  remat_policy: str
  batch_size: int
  num_microbatches: int
  rows_per_device: int
  parameters: int
  optimizer_state: int
  gradients: int
  activations: int
  logits: int
  inputs: int
  gradient_overlap: int = 0
  hbm_bytes_per_device: int | None = None
  reserve_fraction: float = DEFAULT_RESERVE_FRACTION
  activation_parts: Mapping[str, int] = dataclasses.field(default_factory=dict)
  notes: tuple[str, ...] = ()

  @property
  def arguments(self) -> int:
    """What the compiled step takes as arguments: the state and the batch."""
    return self.parameters + self.optimizer_state + self.inputs

  @property
  def temporaries(self) -> int:
    """What the step allocates at its peak (XLA's temp buffers).

    The backward pass frees each layer's activations as it writes that
    layer's gradients, so the two never peak together: the smaller of the
    layers' activations and one micro-batch's gradients
    (`gradient_overlap`) is counted once.
    """
    return self.gradients + self.activations + self.logits - self.gradient_overlap

  @property
  def total(self) -> int:
    return self.arguments + self.temporaries

  @property
  def usable_bytes(self) -> int | None:
    if self.hbm_bytes_per_device is None:
      return None
    return int(self.hbm_bytes_per_device * (1 - self.reserve_fraction))

  @property
  def headroom(self) -> int | None:
    """Usable HBM left over (negative: short by that much)."""
    usable = self.usable_bytes
    return None if usable is None else usable - self.total

  @property
  def fits(self) -> bool | None:
    headroom = self.headroom
    return None if headroom is None else headroom >= 0

  def to_dict(self) -> dict[str, Any]:
    result = {field.name: getattr(self, field.name)
              for field in dataclasses.fields(self)}
    result["mesh_shape"] = dict(self.mesh_shape)
    result["activation_parts"] = dict(self.activation_parts)
    result["notes"] = list(self.notes)
    result.update(arguments=self.arguments, temporaries=self.temporaries,
                  total=self.total, usable_bytes=self.usable_bytes,
                  headroom=self.headroom, fits=self.fits)
    return result


def _itemsize(dtype: Any) -> int:
  return int(np.dtype(dtype).itemsize)


def shard_shape(shape: Sequence[int], mesh_spec: PartitionSpec,
                mesh_shape: Mapping[str, int]) -> tuple[tuple[int, ...], list[int]]:
  """(shape of one device's shard, dimensions left whole as not divisible),
  by the trainer's own rule (`partitioning.divisible_spec`)."""
  fitted, undivided = partitioning.divisible_spec(mesh_spec, shape, mesh_shape)
  local = tuple(size // partitioning.mesh_axes_size(axes, mesh_shape)
                for size, axes in zip(shape, list(fitted) + [None] * (len(shape) - len(fitted))))
  return local, undivided


def _path(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def sharded_bytes(shapes: Any, logical_specs: Any, rules: partitioning.LogicalRules,
                  mesh_shape: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
  """Bytes of one device's shard of every leaf (by path), and notes on the
  leaves a mesh axis does not divide."""
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  flat_specs = jax.tree.leaves(
      mesh_specs, is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  if len(flat_specs) != len(flat_shapes):
    raise ValueError(f"{len(flat_specs)} specs for {len(flat_shapes)} arrays")
  sizes, notes = {}, []
  for (path, leaf), spec in zip(flat_shapes, flat_specs):
    local, undivided = shard_shape(leaf.shape, spec or PartitionSpec(), mesh_shape)
    sizes[_path(path)] = math.prod(local) * _itemsize(leaf.dtype)
    if undivided:
      notes.append(f"{_path(path)} {tuple(leaf.shape)}: dimension(s) "
                   f"{undivided} not divisible by their mesh axes, kept whole "
                   "on every device")
  return sizes, notes


def _activation_divisor(logical_axes: tuple[str, ...],
                        rules: partitioning.LogicalRules,
                        mesh_shape: Mapping[str, int]) -> int:
  """How many ways the rules split an activation with these logical axes."""
  mesh_axes = nn.logical_to_mesh_axes(logical_axes, rules)
  return math.prod(partitioning.mesh_axes_size(axes, mesh_shape)
                   for axes in mesh_axes if axes is not None)


def activation_bytes(config: Any, *, rows: int, input_length: int,
                     target_length: int, rules: partitioning.LogicalRules,
                     mesh_shape: Mapping[str, int], remat_policy: str,
                     dropout: bool, kernel_bytes: int) -> dict[str, int]:
  """Bytes per device that the backward pass needs, by part, for one micro-batch.

  `rows` is the micro-batch's global row count; every tensor is divided by
  the ways the rules split it (`batch` over `data`; `heads`, `mlp`, `vocab`
  over `model` where the layout says so; `embed` activations never, since
  `batch` already took `data`). With T (tokens: rows x length), d (embed),
  h (heads x head_dim), f (MLP width), k (MLP input branches: 2 for T5 1.1's
  gated GELU), L (length), n (heads) and a (bytes of the activation dtype),
  what reverse-mode autodiff keeps per layer is:

  * `none`: every residual of the layer. Encoder: 4 T d (layer input, two
    norm outputs, the mid-layer residual), 4 T h (query, key, value and the
    attention context, inputs of the weight gradients), 2 T n L (the softmax
    output, which the softmax's and the value product's gradients read, and
    the exponentials XLA's softmax fusion keeps beside it; +1 with dropout,
    whose output the value gradient reads), and per MLP branch its product
    and activated value (+ tanh GELU's tanh, which its derivative reads),
    then the gated product: 5 T f for T5 1.1's gated GELU, 2 T f for T5
    1.0's ReLU (+T f with dropout). Decoder: the same for its self attention
    (6 T d for three sub-layers), plus cross attention: 2 T h (query,
    context), key and value over the encoder tokens and the 2 T n L_inputs
    softmax. All times a. With parameters in float32 and activations in
    bfloat16, the bfloat16 copy of every kernel is a residual too (half the
    kernels' bytes).
  * `minimal` (T5X's: save products without batch dimensions): only the
    layer input and the outputs of the weight products: query, key, value,
    attention output, the MLP branches and output, i.e. T (3h + 3d + k f)
    per encoder layer, T (4h + 4d + k f) + 2 T_inputs h per decoder layer.
  * `full`: only the layer input, T d.

  With `minimal` and `full`, the layer being differentiated is recomputed,
  so one layer's `none` residuals (its kernels' copies included; less what
  `minimal` saved) are added once: the working set. The stack keeps what lies outside the
  layers: embeddings, the encoder output, the final norms, and the
  attention biases ([rows, n, L, L], shared by the layers of a stack, so
  kept once however many layers read them).
  """
  cfg = config
  a = _itemsize(cfg.dtype)
  divisor = functools.partial(_activation_divisor, rules=rules,
                              mesh_shape=mesh_shape)
  embed_split = divisor(("batch", "length", "embed"))
  heads_split = divisor(("batch", "length", "heads", "kv"))
  mlp_split = divisor(("batch", "length", "mlp"))
  # Attention weights [batch, heads, q, k]: the product keeps the heads split.
  scores_split = heads_split

  enc_tokens = rows * input_length
  dec_tokens = rows * target_length
  d, h, f, n = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.num_heads
  branches = len(cfg.mlp_activations)
  drop = 1 if dropout else 0

  def e(tokens, width, split):  # bytes of [tokens, width] activations
    return tokens * width * a // split

  def scores(queries_length, keys_length):
    return rows * n * queries_length * keys_length * a // scores_split

  # Per branch its product and activated value (and tanh GELU's tanh, which
  # its derivative reads); the gated product; the dropped hidden.
  mlp_none = (sum(1 + (activation != "linear") + (activation == "gelu")
                  for activation in cfg.mlp_activations)
              + (branches > 1) + drop)

  def encoder_none():
    return (e(enc_tokens, 4 * d, embed_split) + e(enc_tokens, 4 * h, heads_split)
            + (2 + drop) * scores(input_length, input_length)
            + e(enc_tokens, mlp_none * f, mlp_split))

  def decoder_none():
    return (e(dec_tokens, 6 * d, embed_split) + e(dec_tokens, 6 * h, heads_split)
            + e(enc_tokens, 2 * h, heads_split)
            + (2 + drop) * (scores(target_length, target_length)
                            + scores(target_length, input_length))
            + e(dec_tokens, mlp_none * f, mlp_split))

  layers_enc, layers_dec = cfg.num_encoder_layers, cfg.num_decoder_layers
  cast_kernels = np.dtype(cfg.dtype) != np.dtype(cfg.param_dtype)
  kernel_copies = kernel_bytes * a // _itemsize(cfg.param_dtype) if cast_kernels else 0
  per_layer_copies = kernel_copies // max(1, layers_enc + layers_dec)

  def encoder_minimal():
    return (e(enc_tokens, 3 * d, embed_split) + e(enc_tokens, 3 * h, heads_split)
            + e(enc_tokens, branches * f, mlp_split))

  def decoder_minimal():
    return (e(dec_tokens, 4 * d, embed_split) + e(dec_tokens, 4 * h, heads_split)
            + e(enc_tokens, 2 * h, heads_split) + e(dec_tokens, branches * f, mlp_split))

  parts: dict[str, int] = {}
  if remat_policy == "none":
    parts["encoder layers"] = layers_enc * encoder_none()
    parts["decoder layers"] = layers_dec * decoder_none()
    parts["kernel copies"] = kernel_copies
  elif remat_policy == "minimal":
    parts["encoder layers"] = layers_enc * encoder_minimal()
    parts["decoder layers"] = layers_dec * decoder_minimal()
    # The saved products are not recomputed.
    parts["recomputed layer"] = max(encoder_none() - encoder_minimal(),
                                    decoder_none() - decoder_minimal()) + per_layer_copies
  elif remat_policy == "full":
    parts["encoder layers"] = layers_enc * e(enc_tokens, d, embed_split)
    parts["decoder layers"] = layers_dec * e(dec_tokens, d, embed_split)
    parts["recomputed layer"] = max(encoder_none(), decoder_none()) + per_layer_copies
  else:
    raise errors.ConfigurationError(
        f"remat_policy must be none, full or minimal, got {remat_policy!r}")
  parts["stack"] = (e(enc_tokens, 3 * d, embed_split) + e(dec_tokens, 3 * d, embed_split)
                    + scores(input_length, input_length)
                    + scores(target_length, target_length)
                    + rows * target_length * input_length * a // embed_split)
  return parts


def logits_bytes(config: Any, *, rows: int, target_length: int,
                 rules: partitioning.LogicalRules,
                 mesh_shape: Mapping[str, int]) -> int:
  """The float32 logits [rows, length, vocab] and their gradient, per device.

  The loss's backward reads the logits (softmax) and writes a gradient of the
  same shape; both are live together, and for a T5 with a 32k vocabulary
  they are the largest tensors of the step.
  """
  split = _activation_divisor(("batch", "length", "vocab"), rules, mesh_shape)
  return 2 * rows * target_length * config.vocab_size * 4 // split


def _check_divisible(config: Any, *, rules, mesh_shape, batch_size,
                     num_microbatches) -> None:
  data_size = mesh_shape[partitioning.DATA_AXIS]
  if batch_size % (data_size * num_microbatches):
    raise errors.ConfigurationError(
        f"batch size {batch_size} is not divisible by the data axis "
        f"({data_size}) x num_microbatches ({num_microbatches}): each data "
        "replica must get the same whole number of rows per micro-batch")
  model_size = _activation_divisor(("heads",), rules, mesh_shape)
  if config.num_heads % model_size:
    raise errors.ConfigurationError(
        f"{config.num_heads} attention heads are not divisible by the model "
        f"axis ({model_size}): this layout splits heads over the model axis; "
        "choose NUM_PARTITIONS that divides the number of heads")


def mesh_shape_for(num_partitions: int, devices: int) -> dict[str, int]:
  """{"data": devices / num_partitions, "model": num_partitions}, as
  `partitioning.create_mesh` lays out the devices."""
  if num_partitions < 1 or devices % num_partitions:
    raise errors.ConfigurationError(
        f"num_partitions={num_partitions} must divide the number of devices "
        f"({devices})")
  return {partitioning.DATA_AXIS: devices // num_partitions,
          partitioning.MODEL_AXIS: num_partitions}


def plan_memory(*, model: Any, optimizer: Any, rules: partitioning.LogicalRules,
                mesh_shape: Mapping[str, int], batch_size: int,
                task_feature_lengths: Mapping[str, int],
                num_microbatches: int = 1, pack: bool = True,
                remat_policy: str | None = None, dropout: bool | None = None,
                layout: str = "", name: str = "",
                hbm_bytes_per_device: int | None = None,
                reserve_fraction: float = DEFAULT_RESERVE_FRACTION) -> MemoryPlan:
  """The per-device memory of `trainer.train`'s step for this configuration.

  Args:
    model: an EncoderDecoderModel (its `config` and `get_initial_variables`).
    optimizer: the optax transformation (`optimizers.adafactor(schedule)`).
    rules: the layout's logical-axis rules (`Partitioner.rules`).
    mesh_shape: {"data": ..., "model": ...} (`mesh_shape_for`).
    batch_size, task_feature_lengths, num_microbatches, pack: as
      `trainer.train` takes them.
    remat_policy: default `model.config.remat_policy`.
    dropout: default `model.config.dropout_rate > 0`.
    layout, name: labels for the printed plan.
    hbm_bytes_per_device: the device's memory, for the verdict (None: none).
    reserve_fraction: share of HBM the plan leaves unused.
  """
  config = model.config
  remat_policy = remat_policy or config.remat_policy
  dropout = config.dropout_rate > 0 if dropout is None else dropout
  num_microbatches = max(1, int(num_microbatches))
  _check_divisible(config, rules=rules, mesh_shape=mesh_shape,
                   batch_size=batch_size, num_microbatches=num_microbatches)
  init_variables = functools.partial(
      model.get_initial_variables,
      input_shapes=data.model_input_shapes(task_feature_lengths, batch_size, pack))
  shapes, specs = state_lib.abstract_state_and_specs(init_variables, optimizer)
  param_sizes, notes = sharded_bytes(shapes.params, specs.params, rules, mesh_shape)
  state_sizes, _ = sharded_bytes(
      (shapes.opt_state, shapes.step, shapes.rng),
      (specs.opt_state, specs.step, specs.rng), rules, mesh_shape)
  parameters = sum(param_sizes.values())
  optimizer_state = sum(state_sizes.values())
  kernel_bytes = sum(size for path, size in param_sizes.items()
                     if path.endswith("kernel"))

  data_size = mesh_shape[partitioning.DATA_AXIS]
  rows = batch_size // num_microbatches
  input_length = task_feature_lengths["inputs"]
  target_length = task_feature_lengths["targets"]
  parts = activation_bytes(
      config, rows=rows, input_length=input_length, target_length=target_length,
      rules=rules, mesh_shape=mesh_shape, remat_policy=remat_policy,
      dropout=dropout, kernel_bytes=kernel_bytes)
  # The gradient tree is the parameters' shape and sharding; accumulating
  # micro-batches keeps the running sum next to each micro-batch's gradient.
  gradients = parameters * (2 if num_microbatches > 1 else 1)
  layer_activations = sum(parts.get(name, 0) for name in
                          ("encoder layers", "decoder layers", "kernel copies"))
  # Token ids, positions, segment ids (int32) and loss weights (float32).
  inputs = sum(math.prod(shape) * 4 for shape in data.model_input_shapes(
      task_feature_lengths, batch_size, pack).values()) // data_size
  return MemoryPlan(
      name=name, devices=int(math.prod(mesh_shape.values())),
      mesh_shape=dict(mesh_shape), layout=layout, remat_policy=remat_policy,
      batch_size=batch_size, num_microbatches=num_microbatches,
      rows_per_device=rows // data_size, parameters=parameters,
      optimizer_state=optimizer_state, gradients=gradients,
      activations=sum(parts.values()),
      logits=logits_bytes(config, rows=rows, target_length=target_length,
                          rules=rules, mesh_shape=mesh_shape),
      inputs=inputs, gradient_overlap=min(parameters, layer_activations),
      hbm_bytes_per_device=hbm_bytes_per_device,
      reserve_fraction=reserve_fraction, activation_parts=parts,
      notes=tuple(notes))
