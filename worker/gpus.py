"""One GPU per pool process: a worker with ``--gpus N`` runs N prefork processes, process i on GPU i.

The pod (or machine) sees N GPUs; each pool process narrows ``CUDA_VISIBLE_DEVICES`` to its own
before anything initialises CUDA, so the region models of every process load on a different GPU
and ``cuda`` means that GPU inside the process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

from celery.signals import worker_process_init

GPUS_ENV = "MFPO_WORKER_GPUS"
"""GPUs of this worker (set by ``mfpo worker --gpus N``; inherited by the pool processes)."""

log = logging.getLogger(__name__)


def pin_gpu(index: int | None, environ: MutableMapping[str, str]) -> str | None:
    """Narrow ``environ["CUDA_VISIBLE_DEVICES"]`` to pool process ``index``'s GPU; return it (None: no pinning).

    The GPUs are the ones already visible (``CUDA_VISIBLE_DEVICES``, as a device plugin or the user set it),
    else ``0 .. N-1``; process ``index`` gets entry ``index mod N`` (a replaced process keeps its index).
    """
    gpus = int(environ.get(GPUS_ENV, "0") or 0)
    if gpus <= 0 or index is None:
        return None
    visible = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible[:gpus] if visible else [str(i) for i in range(gpus)]
    device = devices[index % len(devices)]
    environ["CUDA_VISIBLE_DEVICES"] = device
    return device


@worker_process_init.connect
def _pin_pool_process(**_: object) -> None:
    from celery.utils.log import current_process_index

    index = current_process_index(base=0)
    device = pin_gpu(index, os.environ)
    if device is not None:
        log.info("pool process %s uses GPU %s", index, device)
