"""Which process of a distributed training job this is: only rank 0 writes files.

Under DDP every rank runs the whole workflow (Lightning's launcher re-runs the
command, as do ``torchrun`` and SLURM's ``srun``); ranks compute identical
paths from the config, and all but rank 0 only read them.
"""

from __future__ import annotations

import os


def is_global_zero() -> bool:
    """True in the process that writes run folders: rank 0, or the only process.

    Once ``torch.distributed`` is initialised its rank decides; before, the
    launcher's environment: ``RANK`` (torchrun), ``SLURM_PROCID`` (SLURM), else
    ``NODE_RANK`` and ``LOCAL_RANK`` (the processes Lightning's launcher starts).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


__all__ = ["is_global_zero"]
