"""read cache keys: auth_epoch and jobs.revision, kept by triggers whoever writes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 00:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a principal is made of (gateway.auth.principal): a change to any of these bumps the epoch.
AUTH_SOURCES = {
    "access_tokens": ("UPDATE OF token_hash, user_id, member_id, scopes, expires_at, revoked_at",
                      "DELETE"),
    "users": ("UPDATE OF email, is_admin, is_active", "DELETE"),
    "memberships": ("INSERT", "UPDATE", "DELETE"),
    "members": ("UPDATE OF status", "DELETE"),
}
BUMP_EPOCH = "UPDATE auth_epoch SET value = value + 1 WHERE id = 1"


def _trigger_name(table: str, event: str) -> str:
    return f"auth_epoch_{table}_{event.split(maxsplit=1)[0].lower()}"


def upgrade() -> None:
    op.create_table('auth_epoch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_epoch'))
    )
    op.execute("INSERT INTO auth_epoch (id, value) VALUES (1, 0)")
    op.add_column('jobs', sa.Column('revision', sa.BigInteger(), server_default='0',
                                    nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION hpcgw_bump_auth_epoch() RETURNS trigger LANGUAGE plpgsql "
                   f"AS $$ BEGIN {BUMP_EPOCH}; RETURN NULL; END $$")
        for table, events in AUTH_SOURCES.items():
            op.execute(f"CREATE TRIGGER auth_epoch_{table} AFTER {' OR '.join(events)} "
                       f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION hpcgw_bump_auth_epoch()")
        op.execute("CREATE FUNCTION hpcgw_job_revision() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN NEW.revision := OLD.revision + 1; RETURN NEW; END $$")
        op.execute("CREATE TRIGGER jobs_revision BEFORE UPDATE ON jobs "
                   "FOR EACH ROW EXECUTE FUNCTION hpcgw_job_revision()")
        op.execute("CREATE FUNCTION hpcgw_job_event_revision() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN UPDATE jobs SET revision = revision + 1 WHERE id = NEW.job_id; "
                   "RETURN NULL; END $$")
        op.execute("CREATE TRIGGER job_events_revision AFTER INSERT ON job_events "
                   "FOR EACH ROW EXECUTE FUNCTION hpcgw_job_event_revision()")
        return
    for table, events in AUTH_SOURCES.items():
        for event in events:
            op.execute(f"CREATE TRIGGER {_trigger_name(table, event)} AFTER {event} ON {table} "
                       f"BEGIN {BUMP_EPOCH}; END")
    # the WHEN guard: the trigger's own UPDATE (and job_events_revision's) does not bump twice
    op.execute("CREATE TRIGGER jobs_revision AFTER UPDATE ON jobs "
               "WHEN NEW.revision = OLD.revision "
               "BEGIN UPDATE jobs SET revision = revision + 1 WHERE id = NEW.id; END")
    op.execute("CREATE TRIGGER job_events_revision AFTER INSERT ON job_events "
               "BEGIN UPDATE jobs SET revision = revision + 1 WHERE id = NEW.job_id; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in AUTH_SOURCES:
            op.execute(f"DROP TRIGGER auth_epoch_{table} ON {table}")
        op.execute("DROP TRIGGER jobs_revision ON jobs")
        op.execute("DROP TRIGGER job_events_revision ON job_events")
        for function in ("hpcgw_bump_auth_epoch", "hpcgw_job_revision",
                         "hpcgw_job_event_revision"):
            op.execute(f"DROP FUNCTION {function}()")
    else:
        for table, events in AUTH_SOURCES.items():
            for event in events:
                op.execute(f"DROP TRIGGER {_trigger_name(table, event)}")
        op.execute("DROP TRIGGER jobs_revision")
        op.execute("DROP TRIGGER job_events_revision")
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('revision')
    op.drop_table('auth_epoch')
