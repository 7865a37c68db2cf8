"""Which input shards each host reads, so the global batch ignores host count.

The global batch of B rows is cut, in the row order of the `data` mesh axis,
into `input_shards` (S) contiguous blocks of B/S rows. Block i of every step
is the next batch of B/S examples of seqio shard i (ShardInfo(i, S)), all
shards read with the run's seed. So global batch b is a function of the run
configuration (task, lengths, B, S, seed) and not of how many processes read
it: one 8-device process with S=2 reads both shards and concatenates them;
two 4-device processes each read one. A host reads exactly the shards whose
rows its devices hold; hosts holding the same rows (the model axis spanning
hosts) read the same shards.

S must let every host hold whole shards. The default is the smallest such S
(on the usual meshes: the number of hosts that hold different rows), which
is what the trainer read before S was a setting, so the data position of
older checkpoints still describes the stream they were trained on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import seqio

from cot_distill import errors
from cot_distill.train import partitioning


@dataclasses.dataclass(frozen=True)
class InputShardPlan:
  """This host's part of the input: which shards, how many rows each."""
  num_shards: int
  shard_batch_size: int
  local_shards: tuple[int, ...]  # ascending: the order of this host's rows

  @property
  def local_batch_size(self) -> int:
    return len(self.local_shards) * self.shard_batch_size

  def shard_info(self, shard: int) -> seqio.ShardInfo:
    return seqio.ShardInfo(index=shard, num_shards=self.num_shards)

  def local_rows(self) -> list[int]:
    """Global batch rows of this host's local batch, in local order."""
    return [shard * self.shard_batch_size + offset
            for shard in self.local_shards
            for offset in range(self.shard_batch_size)]


def _row_holders(partitioner: partitioning.Partitioner, global_batch_size: int,
                 process_of: Callable[[jax.Device], int]
                 ) -> list[frozenset[int]]:
  """For each global batch row, the processes whose devices hold it."""
  # Raises ConfigurationError when the data axis does not divide the batch.
  partitioner.per_host_batch_size(global_batch_size)
  holders: list[set[int]] = [set() for _ in range(global_batch_size)]
  indices = partitioner.batch_sharding().devices_indices_map((global_batch_size,))
  for device, index in indices.items():
    for row in range(*index[0].indices(global_batch_size)):
      holders[row].add(process_of(device))
  return [frozenset(processes) for processes in holders]


def _boundaries(holders: list[frozenset[int]]) -> list[int]:
  """Rows where the set of holding processes changes from the row before."""
  return [row for row in range(1, len(holders))
          if holders[row] != holders[row - 1]]


def _fewest_whole_shards(holders: list[frozenset[int]]) -> int:
  """The smallest S whose blocks never straddle two sets of holding hosts."""
  shard_rows = len(holders)
  for row in _boundaries(holders):
    shard_rows = math.gcd(shard_rows, row)
  return len(holders) // shard_rows


def default_input_shards(partitioner: partitioning.Partitioner,
                         global_batch_size: int, *,
                         process_of: Callable[[jax.Device], int] | None = None
                         ) -> int:
  """The smallest S that gives every host whole shards (1 on a single host)."""
  process_of = process_of or (lambda device: device.process_index)
  return _fewest_whole_shards(_row_holders(partitioner, global_batch_size, process_of))


def plan_input_shards(partitioner: partitioning.Partitioner,
                      global_batch_size: int,
                      input_shards: int | None = None, *,
                      process_index: int | None = None,
                      process_of: Callable[[jax.Device], int] | None = None
                      ) -> InputShardPlan:
  """The shards `process_index` (default: this process) reads every step.

  `process_of` maps a device to its process (default `device.process_index`);
  tests pass another to lay out several hosts' devices in one process.
  """
  process_of = process_of or (lambda device: device.process_index)
  if process_index is None:
    process_index = jax.process_index()
  holders = _row_holders(partitioner, global_batch_size, process_of)
  default = _fewest_whole_shards(holders)
  if input_shards is None:
    input_shards = default
  if isinstance(input_shards, bool) or not isinstance(input_shards, int) \
      or input_shards < 1:
    raise errors.ConfigurationError(
        f"trainer.train.input_shards must be a positive integer or None, got "
        f"{input_shards!r}")
  if global_batch_size % input_shards:
    raise errors.ConfigurationError(
        f"batch size {global_batch_size} is not divisible by input_shards="
        f"{input_shards}: each input shard supplies an equal block of "
        "every global batch")
  shard_rows = global_batch_size // input_shards
  for row in _boundaries(holders):
    if row % shard_rows:
      raise errors.ConfigurationError(
          f"input_shards={input_shards} does not fit this mesh "
          f"({dict(partitioner.mesh.shape)} over "
          f"{len({p for h in holders for p in h})} processes): shards of "
          f"{shard_rows} rows would split shard {row // shard_rows} between "
          f"processes {sorted(holders[row - 1])} (rows before {row}) and "
          f"{sorted(holders[row])} (from row {row}), and every process must "
          f"hold whole shards. Use a multiple of {default} that divides the "
          f"batch size {global_batch_size} (default: {default})")
  local = tuple(shard for shard in range(input_shards)
                if process_index in holders[shard * shard_rows])
  if not local:
    raise errors.ConfigurationError(
        f"process {process_index} holds no row of the global batch on this "
        f"mesh ({dict(partitioner.mesh.shape)})")
  return InputShardPlan(num_shards=input_shards, shard_batch_size=shard_rows,
                        local_shards=local)
