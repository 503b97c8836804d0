"""waiting jobs: the job state `waiting` (accepted while its cluster cannot be reached) and
jobs.wait_until, when such a job stops waiting and fails

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import consortium.base

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = ('accepted', 'submitting', 'pending', 'running', 'completed', 'failed',
              'cancelled', 'timeout', 'out_of_memory', 'node_fail', 'submit_failed', 'unknown')
NEW_STATES = (*OLD_STATES, 'waiting')
# (table, column, constraint name): every column typed by JobState
CHECKS = (
    ('jobs', 'state', 'ck_jobs_job_state'),
    ('job_events', 'from_state', 'ck_job_events_from_state'),
    ('job_events', 'to_state', 'ck_job_events_to_state'),
    ('job_tasks', 'state', 'ck_job_tasks_task_state'),
)


def _in_list(states: Sequence[str]) -> str:
    return ", ".join(f"'{state}'" for state in states)


def _sqlite_swap(old: Sequence[str], new: Sequence[str]) -> None:
    """Rewrite the CHECK lists in SQLite's schema text, the way SQLite documents for a
    constraint change that existing rows satisfy (lang_altertable.html, "making other kinds of
    table schema changes"). A batch copy of these tables is not possible here: dropping `jobs`
    with foreign keys on would cascade-delete every job event and task, and drop the revision
    triggers of 0005 and 0006."""
    bind = op.get_bind()
    for table in dict.fromkeys(table for table, _, _ in CHECKS):
        sql = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        for check_table, column, name in CHECKS:
            if check_table != table:
                continue
            before = f"CONSTRAINT {name} CHECK ({column} IN ({_in_list(old)}))"
            if sql.count(before) != 1:
                raise RuntimeError(f"{table}: {name} is not as migration 0006 left it")
            sql = sql.replace(before, f"CONSTRAINT {name} CHECK ({column} IN ({_in_list(new)}))")
        version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
        bind.exec_driver_sql("PRAGMA writable_schema = ON")
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, table))
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = bind.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check after the schema change: {problems}")


def _swap(old: Sequence[str], new: Sequence[str]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_swap(old, new)
        return
    for table, column, name in CHECKS:
        op.drop_constraint(op.f(name), table, type_='check')
        op.create_check_constraint(op.f(name), table, f"{column} IN ({_in_list(new)})")


def upgrade() -> None:
    _swap(OLD_STATES, NEW_STATES)
    op.add_column('jobs', sa.Column('wait_until', consortium.base.UTCDateTime(timezone=True),
                                    nullable=True))


def downgrade() -> None:
    # a job that waited has events naming the state: they cannot be kept under the old lists
    used = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM job_events WHERE 'waiting' IN (from_state, to_state)").scalar_one()
    if used:
        raise RuntimeError("jobs have been waiting: migration 0007 cannot be undone")
    # a plain DROP COLUMN (SQLite 3.35+): a batch copy of jobs would break 0005's triggers on it
    op.drop_column('jobs', 'wait_until')
    _swap(NEW_STATES, OLD_STATES)
