"""jobs: jobs and their events, templates and their versions, idempotency records, tracker
leases; the members' job policy (templates only, a cap on active jobs, allowed partitions)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 19:38:35.070475
"""

from collections.abc import Sequence

import sqlalchemy as sa

import consortium.base

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('job_templates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_templates')),
    sa.UniqueConstraint('slug', name=op.f('uq_job_templates_slug'))
    )
    op.create_table('tracker_leases',
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('expires_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('cluster', name=op.f('pk_tracker_leases'))
    )
    op.create_table('job_template_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_job_template_versions_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['template_id'], ['job_templates.id'], name=op.f('fk_job_template_versions_template_id_job_templates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_template_versions')),
    sa.UniqueConstraint('template_id', 'version', name=op.f('uq_job_template_versions_template_id_version'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cluster', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('state', sa.Enum('accepted', 'submitting', 'pending', 'running', 'completed', 'failed', 'cancelled', 'timeout', 'out_of_memory', 'node_fail', 'submit_failed', 'unknown', name='job_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('marker', sa.String(length=120), nullable=False),
    sa.Column('scheduler_id', sa.String(length=64), nullable=True),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('resources', sa.JSON(), nullable=False),
    sa.Column('script', sa.Text(), nullable=False),
    sa.Column('template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('template_slug', sa.String(length=64), nullable=True),
    sa.Column('template_version', sa.Integer(), nullable=True),
    sa.Column('parameters', sa.JSON(), nullable=True),
    sa.Column('environment', sa.JSON(), nullable=False),
    sa.Column('workdir', sa.String(length=500), nullable=False),
    sa.Column('stdout_path', sa.String(length=600), nullable=False),
    sa.Column('stderr_path', sa.String(length=600), nullable=False),
    sa.Column('billing', sa.JSON(), nullable=False),
    sa.Column('quote_msu', sa.BigInteger(), nullable=False),
    sa.Column('charge_msu', sa.BigInteger(), nullable=True),
    sa.Column('refund_msu', sa.BigInteger(), nullable=True),
    sa.Column('created_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cancel_requested_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancel_sent_at', consortium.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('pending_reason', sa.String(length=64), nullable=True),
    sa.Column('raw_state', sa.String(length=64), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('signal', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('elapsed_seconds', sa.Integer(), nullable=True),
    sa.Column('alloc_nodes', sa.Integer(), nullable=True),
    sa.Column('alloc_cpus', sa.Integer(), nullable=True),
    sa.Column('alloc_gpus', sa.Integer(), nullable=True),
    sa.Column('alloc_mem_mb', sa.Integer(), nullable=True),
    sa.Column('node_list', sa.String(length=500), nullable=True),
    sa.Column('energy_joules_measured', sa.Float(), nullable=True),
    sa.Column('energy_kwh', sa.Float(), nullable=True),
    sa.Column('energy_source', sa.String(length=16), nullable=True),
    sa.Column('carbon_g', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_jobs_member_id_members'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_jobs_project_id_projects'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['template_id'], ['job_templates.id'], name=op.f('fk_jobs_template_id_job_templates'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_jobs_user_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('marker', name=op.f('uq_jobs_marker')),
    sa.UniqueConstraint('public_id', name=op.f('uq_jobs_public_id'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_cluster_scheduler_id', ['cluster', 'scheduler_id'], unique=False)
        batch_op.create_index('ix_jobs_cluster_state', ['cluster', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_jobs_member_id_id', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_jobs_member_id_state', ['member_id', 'state'], unique=False)
        batch_op.create_index('ix_jobs_project_id_id', ['project_id', 'id'], unique=False)
        batch_op.create_index('ix_jobs_user_id_id', ['user_id', 'id'], unique=False)

    op.create_table('idempotency_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Enum('in_flight', 'done', name='idempotency_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.JSON(), nullable=True),
    sa.Column('created_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_idempotency_records_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotency_records_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_records')),
    sa.UniqueConstraint('user_id', 'key', name=op.f('uq_idempotency_records_user_id_key'))
    )
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_records_expires_at'), ['expires_at'], unique=False)

    op.create_table('job_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', consortium.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('from_state', sa.Enum('accepted', 'submitting', 'pending', 'running', 'completed', 'failed', 'cancelled', 'timeout', 'out_of_memory', 'node_fail', 'submit_failed', 'unknown', name='from_state', native_enum=False, create_constraint=True, length=32), nullable=True),
    sa.Column('to_state', sa.Enum('accepted', 'submitting', 'pending', 'running', 'completed', 'failed', 'cancelled', 'timeout', 'out_of_memory', 'node_fail', 'submit_failed', 'unknown', name='to_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_events_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_events'))
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index('ix_job_events_job_id_id', ['job_id', 'id'], unique=False)

    with op.batch_alter_table('cluster_identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allowed_partitions', sa.JSON(), nullable=True))

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('templates_only', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('max_active_jobs', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('max_active_jobs')
        batch_op.drop_column('templates_only')

    with op.batch_alter_table('cluster_identities', schema=None) as batch_op:
        batch_op.drop_column('allowed_partitions')

    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index('ix_job_events_job_id_id')

    op.drop_table('job_events')
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_records_expires_at'))

    op.drop_table('idempotency_records')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_user_id_id')
        batch_op.drop_index('ix_jobs_project_id_id')
        batch_op.drop_index('ix_jobs_member_id_state')
        batch_op.drop_index('ix_jobs_member_id_id')
        batch_op.drop_index(batch_op.f('ix_jobs_created_at'))
        batch_op.drop_index('ix_jobs_cluster_state')
        batch_op.drop_index('ix_jobs_cluster_scheduler_id')

    op.drop_table('jobs')
    op.drop_table('job_template_versions')
    op.drop_table('tracker_leases')
    op.drop_table('job_templates')
