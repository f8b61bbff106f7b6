"""Multi-process (multi-host) start-up for Cloud TPU pods and GPU clusters.

JAX runs one process per host; every process runs the *same* program and
sees all devices of the job through ``jax.devices()`` (its own through
``jax.local_devices()``). Before any JAX computation each process must join
the job with ``jax.distributed.initialize``; :func:`initialize` wraps it so
that one command works everywhere:

* **Single process** (a laptop, one GPU box, the tests): nothing to do;
  :func:`initialize` is a no-op and returns False.
* **Cloud TPU VM** (e.g. v4-128, v5p-64: several hosts): run the same
  command on every host (``gcloud compute tpus tpu-vm ssh NAME --worker=all
  --command="..."``). Arguments may all be None: JAX reads the coordinator,
  process count and id from the TPU metadata (GCE) or the environment (GKE).
  A single-host TPU VM joins a job of one process, which is harmless.
* **Slurm / Open MPI** (GPU clusters): launch with ``srun`` / ``mpirun``;
  arguments may be None, JAX reads them from ``SLURM_*`` / ``OMPI_*``
  variables and gives each process one GPU (its local rank), so launch one
  task per GPU (or pass ``local_device_ids``).
* **Anything else** (e.g. plain ssh to several GPU hosts): pass
  ``coordinator_address="host0:1234"``, ``num_processes`` and ``process_id``
  (distinct on every host), or set ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in each host's environment.

Detection never touches the network unless a cluster is found: a TPU VM is
recognised by its TPU chips and libtpu, Slurm and Open MPI by their variables
(a one-task Slurm job counts as single process).

Meshes. :func:`global_mesh` builds the ``("data", "fsdp")`` mesh of
``alphallm.sharding`` over every device of the job (what training a model
larger than one host needs); :func:`local_mesh` over this process's devices
only (e.g. independent per-host search workers).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from alphallm import sharding

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"   # also read by jax.distributed itself
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError as e:
    raise ValueError(f"environment variable {name}={value!r} is not an int") from e


def _tpu_chips_present() -> bool:
  """True on a Cloud TPU VM: TPU PCI devices / accel nodes and libtpu installed."""
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  try:  # JAX's own (private) probe of the PCI bus.
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def detect_cluster() -> str | None:
  """The managed multi-process environment this process runs in, if any.

  Returns:
    ``"tpu"`` (Cloud TPU VM; JAX reads the topology from the TPU metadata,
    and a single-host slice is a job of one process), ``"slurm"`` (more than
    one task), ``"openmpi"`` (more than one rank), or None: a single process.
  """
  if _tpu_chips_present():
    return "tpu"
  if "SLURM_JOB_ID" in os.environ and (_env_int("SLURM_NTASKS") or 1) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in os.environ and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "openmpi"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               local_device_ids: Sequence[int] | None = None) -> bool:
  """Joins the multi-process JAX job, or does nothing for a single process.

  Call it first thing, before any JAX computation (``jax.devices()``
  included), with the same arguments in every process.

  Args:
    coordinator_address: ``"host:port"`` of process 0; default
      ``$JAX_COORDINATOR_ADDRESS``, else auto-detected.
    num_processes: processes in the job; default ``$JAX_NUM_PROCESSES``, else
      auto-detected. 1 means a single process: nothing is initialised.
    process_id: this process's index in ``[0, num_processes)``; default
      ``$JAX_PROCESS_ID``, else auto-detected.
    local_device_ids: restrict this process to these local devices (e.g.
      one process per GPU); default: all.

  Returns:
    True when the distributed runtime is (now or already) initialised; False
    for a single-process run, where nothing was done.

  Raises:
    RuntimeError: JAX's backends are already initialised (a JAX computation
      ran before this call), for a multi-process job.
  """
  if jax.distributed.is_initialized():
    return True
  if coordinator_address is None:
    coordinator_address = os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)
  if num_processes == 1:
    log.info("distributed: one process (num_processes=1); nothing to initialise")
    return False
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  cluster = None if explicit else detect_cluster()
  if not explicit and cluster is None:
    log.info("distributed: no multi-process environment detected; single process")
    return False
  log.info("distributed: initialising (%s)", f"cluster {cluster}" if cluster else
           f"coordinator {coordinator_address}, {num_processes} processes, id {process_id}")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  except RuntimeError as e:
    raise RuntimeError(
        f"jax.distributed.initialize failed: {e}. alphallm.distributed.initialize() must "
        "run before any JAX computation (even jax.devices()) in every process") from e
  log.info("distributed: process %d of %d, %d local / %d global devices",
           jax.process_index(), jax.process_count(), jax.local_device_count(),
           jax.device_count())
  return True


def process_summary() -> dict[str, Any]:
  """Where this process stands in the job (for logs)."""
  return {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "local_devices": jax.local_device_count(), "global_devices": jax.device_count(),
          "platform": jax.devices()[0].platform}


def is_main_process() -> bool:
  """Process 0, the one that should write shared files (results, logs)."""
  return jax.process_index() == 0


def global_mesh(mesh_shape: Sequence[int] = (1, -1)) -> Mesh:
  """The ``("data", "fsdp")`` mesh over every device of the job (all processes)."""
  return sharding.make_mesh(mesh_shape, jax.devices())


def local_mesh(mesh_shape: Sequence[int] = (1, -1)) -> Mesh:
  """The ``("data", "fsdp")`` mesh over this process's devices only."""
  return sharding.make_mesh(mesh_shape, jax.local_devices())
