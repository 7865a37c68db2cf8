"""The TPU slices we ship gin files for, as facts a program can read.

Each `gin/partitioning/slices/<name>.gin` chooses a layout for one slice and
also binds `slices.Slice` (devices JAX sees, hosts, HBM per device), so that
`cot-distill plan` can tell whether a configuration fits without a TPU. The
trainer never reads it: on a real slice the devices are there to count.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib

from cot_distill import errors

SLICES_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin" / "partitioning" / "slices"


@dataclasses.dataclass(frozen=True)
class Slice:
  """One accelerator slice, as JAX sees it.

  Attributes:
    name: the accelerator type, e.g. "v4-32".
    devices: JAX devices of the whole slice (one per chip on v4, v5e and
      v5p: megacore chips are one device).
    hosts: TPU VMs (processes) of the slice.
    hbm_bytes_per_device: high-bandwidth memory of one device, as the
      hardware's specification states it. XLA and the runtime keep a little of
      it for themselves, so a plan needs some headroom.
  """
  name: str = ""
  devices: int = 0
  hosts: int = 1
  hbm_bytes_per_device: int = 0

  def __post_init__(self):
    if self.devices < 1 or self.hosts < 1 or self.hbm_bytes_per_device <= 0:
      raise errors.ConfigurationError(
          f"slices.Slice {self.name!r}: devices, hosts and "
          f"hbm_bytes_per_device must be positive, got {self}")


def known_slices() -> dict[str, pathlib.Path]:
  """{"v4-32": .../v4_32.gin, ...}: the slice files, by accelerator name."""
  def order(path):  # by generation, then size: v4-8 before v4-32
    generation, _, size = path.stem.partition("_")
    return generation, int(size) if size.isdigit() else 0
  return {path.stem.replace("_", "-"): path
          for path in sorted(SLICES_DIR.glob("*.gin"), key=order)}


def slice_file(name: str) -> pathlib.Path:
  """The gin file of slice `name` ("v4-32" or "v4_32"); a UserError listing
  the known ones otherwise."""
  known = known_slices()
  wanted = name.strip().lower().replace("_", "-")
  if wanted.endswith(".gin"):
    wanted = wanted[:-len(".gin")]
  if wanted in known:
    return known[wanted]
  close = difflib.get_close_matches(wanted, list(known), n=3, cutoff=0.5)
  hint = f" (did you mean {', '.join(close)}?)" if close else ""
  raise errors.UserError(
      f"unknown slice {name!r}{hint}; the slices with a gin file in "
      f"gin/partitioning/slices/ are: {', '.join(known)}")
