"""cluster provisioning: identities' Slurm state as an outbox; clusters' health as last seen

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import consortium.base

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # identities already there start pending: the next sync ensures (idempotently) that their
    # account and association exist, with the block their member's status wants
    with op.batch_alter_table('cluster_identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', consortium.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('slurm_generation', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('slurm_synced_generation', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('slurm_synced_at', consortium.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('slurm_error', sa.String(length=500), nullable=True))
    op.create_table('cluster_health',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('checked_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('slurmctld', sa.Boolean(), nullable=True),
    sa.Column('slurmdbd', sa.Boolean(), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('cluster', name=op.f('pk_cluster_health'))
    )


def downgrade() -> None:
    op.drop_table('cluster_health')
    with op.batch_alter_table('cluster_identities', schema=None) as batch_op:
        batch_op.drop_column('slurm_error')
        batch_op.drop_column('slurm_synced_at')
        batch_op.drop_column('slurm_synced_generation')
        batch_op.drop_column('slurm_generation')
        batch_op.drop_column('removed_at')
