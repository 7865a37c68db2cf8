"""Device mesh and logical-axis rules: where every array of a run lives.

The network names the axes of its parameters and activations with T5X's
logical names (`batch`, `embed`, `mlp`, `heads`, `kv`, `joined_kv`, `vocab`,
...). A short rules table maps those names onto a two-axis mesh
(`data`, `model`); the three layouts below differ only in that table, so data
parallelism, model parallelism and FSDP are one mechanism with three settings.

Rules are applied by `flax.linen.logical_to_mesh_axes`: in table order, a name
takes its mesh axis only if no other dimension of the same array already took
it. That is why the FSDP table can map `embed` to `data`: a parameter
(embed, mlp) is split over both axes, while an activation
(batch, length, embed) keeps `data` for `batch` and leaves `embed` whole.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cot_distill import errors

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Axes that are never split, listed so that a reader sees every T5X name.
_ALWAYS_REPLICATED = (
    ("length", None),
    ("kv", None),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
)

# Every replica holds the whole model; only the batch is split.
DATA_PARALLEL_RULES = (("batch", DATA_AXIS),) + _ALWAYS_REPLICATED

# T5X's `standard_logical_axis_rules()` (1-D parameter partitioning): the wide
# axes of the MLP, the attention heads and the vocabulary go to `model`.
MODEL_PARALLEL_RULES = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("embed", None),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("joined_kv", MODEL_AXIS),
) + _ALWAYS_REPLICATED

# T5X's 2-D parameter partitioning: as above, and `embed` over `data`, so
# parameters and the optimizer state (which follows the parameters) are split
# over the data-parallel replicas too. With a model axis of size 1 this is
# plain FSDP / ZeRO-3; each step all-gathers the weights it needs.
FSDP_RULES = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("joined_kv", MODEL_AXIS),
    ("embed", DATA_AXIS),
) + _ALWAYS_REPLICATED

LAYOUT_RULES = {
    "data_parallel": DATA_PARALLEL_RULES,
    "model_parallel": MODEL_PARALLEL_RULES,
    "fsdp": FSDP_RULES,
}

LogicalRules = Sequence[tuple[str, Any]]


def create_mesh(num_partitions: int = 1,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all devices of all hosts).

  `num_partitions` is the size of the `model` axis; the rest is `data`. On
  multi-slice TPU pods, slices only ever differ along `data` (gradients cross
  the slow data-centre network once per step, weights never do).
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise errors.ConfigurationError(
        f"num_partitions={num_partitions} must divide the number of devices "
        f"({len(devices)})")
  data_size = len(devices) // num_partitions
  num_slices = 1 + max(getattr(d, "slice_index", 0) or 0 for d in devices)
  if num_slices > 1:
    device_array = mesh_utils.create_hybrid_device_mesh(
        (data_size // num_slices, num_partitions), (num_slices, 1), devices)
  elif devices[0].platform == "cpu":
    # No interconnect topology to respect on CPU.
    device_array = np.asarray(devices).reshape(data_size, num_partitions)
  else:
    device_array = mesh_utils.create_device_mesh(
        (data_size, num_partitions), devices)
  # Auto axes: XLA propagates shardings between the explicit in/out ones.
  auto = (jax.sharding.AxisType.Auto,) * 2
  return Mesh(device_array, (DATA_AXIS, MODEL_AXIS), axis_types=auto)


def mesh_axes_size(axes: Any, mesh_shape: Mapping[str, int]) -> int:
  """Devices a PartitionSpec entry (an axis name, a tuple of them, None) spans."""
  names = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([mesh_shape[name] for name in names if name is not None]))


def divisible_spec(spec: PartitionSpec, shape: Sequence[int],
                   mesh_shape: Mapping[str, int]) -> tuple[PartitionSpec, list[int]]:
  """`spec` with every dimension its mesh axes do not divide left whole, and
  the indices of those dimensions.

  The trainer's rule for toy sizes (e.g. a 3-wide head_dim on a 2-way model
  axis): replicate rather than fail at jit time. Takes a mesh's shape, not
  a mesh, so the memory plan applies it to slices it has no devices for.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  undivided = [index for index, axes in enumerate(entries)
               if axes is not None and shape[index] % mesh_axes_size(axes, mesh_shape)]
  for index in undivided:
    entries[index] = None
  return PartitionSpec(*entries), undivided


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """Chooses the layout of a run and turns logical specs into shardings.

  Attributes:
    layout: "data_parallel", "model_parallel" or "fsdp" (the one setting that
      picks the rules table).
    num_partitions: size of the `model` mesh axis. Must be 1 for
      data_parallel; for fsdp, > 1 gives T5X's 2-D (data x model) layout.
    devices: devices of the mesh; default all of them.
  """
  layout: str = "data_parallel"
  num_partitions: int = 1
  devices: tuple[jax.Device, ...] | None = None

  def __post_init__(self):
    if self.layout not in LAYOUT_RULES:
      raise errors.ConfigurationError(f"Partitioner.layout={self.layout!r}: choose one of "
                       f"{sorted(LAYOUT_RULES)}")
    if self.layout == "data_parallel" and self.num_partitions != 1:
      raise errors.ConfigurationError(
          "Partitioner: layout='data_parallel' keeps whole replicas, so "
          f"num_partitions must be 1 (got {self.num_partitions}); use "
          "layout='model_parallel' or 'fsdp' to split the model")
    if self.devices is not None:
      object.__setattr__(self, "devices", tuple(self.devices))

  @functools.cached_property
  def mesh(self) -> Mesh:
    """Built on first use, not when gin builds the Partitioner: devices may
    not be known yet (jax.distributed.initialize comes first)."""
    return create_mesh(self.num_partitions, self.devices)

  @property
  def rules(self) -> LogicalRules:
    return LAYOUT_RULES[self.layout]

  @property
  def data_parallel_size(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  def logical_to_sharding(self, logical_specs: Any,
                          abstract_tree: Any | None = None) -> Any:
    """Maps a tree of logical PartitionSpecs to NamedShardings.

    With `abstract_tree` (same structure, leaves with `.shape`), a dimension
    that the mesh axis does not divide is left whole instead of failing at
    jit time; this only happens for toy sizes (e.g. a 3-wide head_dim).
    """
    mesh_specs = nn.logical_to_mesh(logical_specs, self.rules)
    if abstract_tree is not None:
      mesh_specs = jax.tree.map(
          self._divisible_spec, mesh_specs, abstract_tree,
          is_leaf=lambda x: isinstance(x, PartitionSpec))
    return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec),
                        mesh_specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))

  def _divisible_spec(self, spec: PartitionSpec, leaf: Any) -> PartitionSpec:
    shape = getattr(leaf, "shape", ())
    fitted, undivided = divisible_spec(spec, shape, self.mesh.shape)
    for index in undivided:
      logging.info("dimension %d of shape %s is not divisible by its mesh axes "
                   "%s; replicating it", index, shape, spec[index])
    return fitted

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def batch_sharding(self) -> NamedSharding:
    """Batch arrays [B, ...] split along B over `data`, whole over `model`."""
    return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

  def per_host_batch_size(self, global_batch_size: int) -> int:
    if global_batch_size % self.data_parallel_size:
      raise errors.ConfigurationError(
          f"batch size {global_batch_size} must be divisible by the data "
          f"parallel size {self.data_parallel_size}")
    rows = set()
    for index in self.batch_sharding().addressable_devices_indices_map(
        (global_batch_size,)).values():
      start, stop, _ = index[0].indices(global_batch_size)
      rows.update(range(start, stop))
    return len(rows)
