"""Quotas: rates, allocations, holds and the ledger that never lets a member overspend.

- rates.py      the one pricing rule (MAX_TRES, integer milli-SU, rounded up) and the rate card
- models.py     allocations (each its own balance row), holds, ledger entries, alerts, the
                Slurm limit outbox
- service.py    grant, hold, settle, release, refund, adjust, advance_periods: what the API,
                the CLI and the job tracker call, inside the caller's transaction
- ledger.py     verify: every balance recomputed from its entries
- usage.py      the member's usage report, every figure a sum of entries
- thresholds.py 50/80/90/100 % and projected-exhaustion alerts, mailed after commit
- backstop.py   the Slurm GrpTRESMins limit derived from the ledger, pushed after commit

quotas knows a job by its id and its numbers only; it never imports the scheduler layer (the
gateway adapts AccountingSync to backstop.LimitSink) nor the web framework.
"""
