"""Slurm reached over SSH (paramiko): scheduler.SlurmSshScheduler, accounting.SlurmAccountingSync.
Nothing is imported here, so that states.py and paths.py come without paramiko."""
