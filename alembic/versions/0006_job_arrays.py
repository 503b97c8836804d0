"""job arrays: jobs.task_count and job_tasks, whose changes bump their job's revision

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import consortium.base

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a task's row changes what GET /jobs/{id} shows: its job's revision moves (the read cache,
# gateway/api/job_reads.py, compares it), as for a new job event in 0005
BUMP = {
    "insert": "UPDATE jobs SET revision = revision + 1 WHERE id = NEW.job_id",
    "update": "UPDATE jobs SET revision = revision + 1 WHERE id = NEW.job_id",
    "delete": "UPDATE jobs SET revision = revision + 1 WHERE id = OLD.job_id",
}


def upgrade() -> None:
    op.add_column('jobs', sa.Column('task_count', sa.Integer(), server_default='1',
                                    nullable=False))
    op.create_table('job_tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('scheduler_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Enum('accepted', 'submitting', 'pending', 'running', 'completed', 'failed', 'cancelled', 'timeout', 'out_of_memory', 'node_fail', 'submit_failed', 'unknown', name='task_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('raw_state', sa.String(length=64), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('signal', sa.Integer(), nullable=True),
    sa.Column('elapsed_seconds', sa.Integer(), nullable=True),
    sa.Column('alloc_cpus', sa.Integer(), nullable=True),
    sa.Column('alloc_gpus', sa.Integer(), nullable=True),
    sa.Column('alloc_mem_mb', sa.Integer(), nullable=True),
    sa.Column('node_list', sa.String(length=500), nullable=True),
    sa.Column('charge_msu', sa.BigInteger(), nullable=True),
    sa.Column('refund_msu', sa.BigInteger(), nullable=True),
    sa.Column('started_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_tasks_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_tasks')),
    sa.UniqueConstraint('job_id', 'task_id', name=op.f('uq_job_tasks_job_id_task_id'))
    )
    if op.get_bind().dialect.name == "postgresql":
        for event, bump in BUMP.items():
            op.execute(f"CREATE FUNCTION hpcgw_job_task_{event}_revision() RETURNS trigger "
                       f"LANGUAGE plpgsql AS $$ BEGIN {bump}; RETURN NULL; END $$")
            op.execute(f"CREATE TRIGGER job_tasks_{event}_revision AFTER {event.upper()} "
                       f"ON job_tasks FOR EACH ROW "
                       f"EXECUTE FUNCTION hpcgw_job_task_{event}_revision()")
        return
    for event, bump in BUMP.items():
        op.execute(f"CREATE TRIGGER job_tasks_{event}_revision AFTER {event.upper()} "
                   f"ON job_tasks BEGIN {bump}; END")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for event in BUMP:
        op.execute(f"DROP TRIGGER job_tasks_{event}_revision"
                   + (" ON job_tasks" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION hpcgw_job_task_{event}_revision()")
    op.drop_table('job_tasks')
    # a plain DROP COLUMN (SQLite 3.35+): a batch copy of jobs would break 0005's triggers on it
    op.drop_column('jobs', 'task_count')
