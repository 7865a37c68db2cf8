"""Joining the hosts of a multi-host run (`jax.distributed.initialize`).

Must run before anything touches a JAX backend. Precedence: explicit
arguments (the CLI flags), then the environment (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), then JAX's own cluster detection on a
multi-host TPU slice or SLURM job; otherwise the run is single-process.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import jax


def _environment_says_multihost(environ: Mapping[str, str]) -> bool:
  """True on a TPU pod slice (several workers) or a multi-task SLURM job."""
  tpu_workers = environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([name for name in tpu_workers.split(",") if name]) > 1:
    return True
  return int(environ.get("SLURM_NTASKS", "1") or 1) > 1


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               environ: Mapping[str, str] | None = None) -> bool:
  """Calls jax.distributed.initialize when this is a multi-host run.

  Returns True if it did. With explicit settings all three must be given
  (num_processes=1 is allowed: a one-process run through the same path).
  """
  environ = os.environ if environ is None else environ
  coordinator_address = coordinator_address or environ.get(
      "JAX_COORDINATOR_ADDRESS")
  if num_processes is None and environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(environ["JAX_NUM_PROCESSES"])
  if process_id is None and environ.get("JAX_PROCESS_ID"):
    process_id = int(environ["JAX_PROCESS_ID"])
  explicit = (coordinator_address, num_processes, process_id)
  if any(value is not None for value in explicit):
    if any(value is None for value in explicit):
      raise ValueError(
          "multi-host: give --coordinator_address, --num_processes and "
          "--process_id together (or JAX_COORDINATOR_ADDRESS, "
          f"JAX_NUM_PROCESSES, JAX_PROCESS_ID); got {explicit}")
    logging.info("joining %d processes at %s as process %d", num_processes,
                 coordinator_address, process_id)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
    return True
  if _environment_says_multihost(environ):
    logging.info("multi-host environment detected; initialising JAX's "
                 "distributed runtime")
    jax.distributed.initialize()
    return True
  return False
