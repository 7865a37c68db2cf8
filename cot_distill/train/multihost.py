"""Joining the hosts of a multi-host run (`jax.distributed.initialize`).

Must run before anything touches a JAX backend. Precedence: explicit
arguments (the CLI flags), then the environment (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), then JAX's own cluster detection
(`initialize()` without arguments) on a multi-host TPU slice (GKE, or a Cloud
TPU VM, where JAX reads the workers from instance metadata), a multi-task
SLURM job or when COT_DISTILL_MULTIHOST=1; otherwise the run is
single-process.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping

import jax


MULTIHOST_ENV = "COT_DISTILL_MULTIHOST"
# Chips (v5e/v6e) or TensorCores (v2-v4, v5p) in one host; the number in a
# TPU_ACCELERATOR_TYPE ("v4-32", "v5litepod-16") above this means several hosts.
_MAX_TPU_CORES_PER_HOST = 8
_ACCELERATOR_SIZE = re.compile(r"-(\d+)$")


def _tpu_vm_is_multihost(environ: Mapping[str, str]) -> bool:
  """A Cloud TPU VM of a pod slice, judged from environment variables only.

  On TPU VMs made with gcloud, JAX finds the other workers through the GCE
  metadata server, so `jax.distributed.initialize()` needs no arguments; but
  calling it is only right on a multi-host slice, and querying metadata is
  slow (or hangs) off GCP. So: a worker id above 0, or an accelerator type
  bigger than one host, says multi-host; nothing here touches the network.
  """
  if int(environ.get("TPU_WORKER_ID", "0") or 0) > 0:
    return True
  match = _ACCELERATOR_SIZE.search(environ.get("TPU_ACCELERATOR_TYPE", ""))
  return bool(match) and int(match.group(1)) > _MAX_TPU_CORES_PER_HOST


def _environment_says_multihost(environ: Mapping[str, str]) -> bool:
  """True on a TPU pod slice (GKE or TPU VM) or a multi-task SLURM job.

  COT_DISTILL_MULTIHOST=1 forces it (a TPU VM whose environment carries no
  hint), =0 turns detection off.
  """
  forced = environ.get(MULTIHOST_ENV, "").strip().lower()
  if forced in ("1", "true", "yes"):
    return True
  if forced in ("0", "false", "no"):
    return False
  if forced:
    raise ValueError(f"{MULTIHOST_ENV}={environ[MULTIHOST_ENV]!r}: expected 1 "
                     "or 0")
  tpu_workers = environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([name for name in tpu_workers.split(",") if name]) > 1:
    return True
  if _tpu_vm_is_multihost(environ):
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
