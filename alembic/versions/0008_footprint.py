"""footprint: the figures each job's energy and carbon were computed from, and the same
energy and carbon per array task

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('energy_figures', sa.JSON(), nullable=True))
    op.add_column('job_tasks', sa.Column('energy_joules_measured', sa.Float(), nullable=True))
    op.add_column('job_tasks', sa.Column('energy_kwh', sa.Float(), nullable=True))
    op.add_column('job_tasks', sa.Column('energy_source', sa.String(length=16), nullable=True))
    op.add_column('job_tasks', sa.Column('carbon_g', sa.Float(), nullable=True))
    op.add_column('job_tasks', sa.Column('energy_figures', sa.JSON(), nullable=True))
    op.create_index('ix_jobs_ended_at', 'jobs', ['ended_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_ended_at', table_name='jobs')
    # plain DROP COLUMNs (SQLite 3.35+): a batch copy would break the triggers of 0005 and 0006
    for column in ('energy_figures', 'carbon_g', 'energy_source', 'energy_kwh',
                   'energy_joules_measured'):
        op.drop_column('job_tasks', column)
    op.drop_column('jobs', 'energy_figures')
