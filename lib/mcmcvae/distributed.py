"""Training on several processes (hosts) with ``jax.distributed``: data parallelism over every device of every
process.

Each process runs the same program: it calls :func:`initialize` first (before any other JAX call), loads the same
training images, and runs the same :class:`mcmcvae.train.Trainer` (or :func:`mcmcvae.train.fit`) with the same
seed and ``out_dir``. The trainer's mesh then spans the devices of all processes: each global batch is sharded
over all of them, parameters are replicated, and XLA's collectives (NCCL on GPUs, Gloo on CPUs) sum the gradients.
Process 0 writes ``config.json``, ``metrics.jsonl``, the checkpoint checksums and the lock; every process takes
part in the (collective) Orbax checkpoint saves, so ``out_dir`` must be one filesystem that all processes see.
See ``docs/distributed.md`` for a multi-host GPU cluster.
"""

from __future__ import annotations

import jax

__all__ = ["initialize", "is_primary"]


def initialize(coordinator_address: str, num_processes: int, process_id: int, **options) -> None:
    """Join a ``jax.distributed`` job of ``num_processes`` processes as ``process_id``.

    On CPUs, cross-process collectives need an implementation chosen before the backend starts; this selects
    Gloo (``jax_cpu_collectives_implementation``), which JAX ships, and leaves GPUs and TPUs to their own (NCCL,
    ICI). Call it first, before anything that touches a device.

    Parameters
    ----------
    coordinator_address
        ``"host:port"`` of process 0, reachable from every process (``"127.0.0.1:PORT"`` on one machine).
    num_processes, process_id
        The size of the job and this process's rank, ``0 <= process_id < num_processes``.
    **options
        Passed on to :func:`jax.distributed.initialize` (e.g. ``local_device_ids``, ``initialization_timeout``).
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is not in 0..{num_processes - 1} (num_processes={num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **options)


def is_primary() -> bool:
    """Whether this process is the one that writes files (process 0; always true without ``jax.distributed``)."""
    return jax.process_index() == 0
