"""Slurm through pyslurm, for a gateway running on a login node (optional extra `pyslurm`)."""

from schedulers.pyslurm.scheduler import PySlurmScheduler

__all__ = ["PySlurmScheduler"]
