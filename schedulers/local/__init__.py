"""The local backend: jobs run as processes of the gateway's own host, for `hpcgw demo` and
laptops with no cluster (PRODUCT.md, "embedded default").

Jobs wait in a FIFO queue for CPU slots (`cpu_slots`), run under a small supervisor each
(supervise.py) and are killed at their time limit; their records live in `local_root` and
survive a gateway restart, as do the jobs themselves (store.py, cluster.py).

Member separation is NOT enforced here: every member's jobs run as the gateway's OS user and
could read each other's files. Paths given to the API are confined to the member's work root,
and that is all. Memory limits are recorded, not enforced; GPUs are counted, not allocated.
Use the Slurm backends wherever members must be kept apart.
"""

from schedulers.local.scheduler import LocalScheduler

__all__ = ["LocalScheduler"]
