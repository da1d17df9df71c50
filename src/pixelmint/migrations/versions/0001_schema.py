"""the schema: every table, the plans, the claim function

Revision ID: 0001_schema
Revises:
Create Date: 2026-12-02

The nine revisions before this one (0001 … 0009_app_grants, with 0003–0006 branched from 0002
and joined by a merge revision) were squashed into this one while the project had no deployed
users: they had no reader left but the tests, and they carried three whole copies of the claim
function. Pointing those old revisions at one SQL file instead would have changed what they
create, or kept three versions of the function. A database migrated up to 0009_app_grants has
this schema (pg_dump showed it, up to the order of the columns those revisions appended);
``env.py`` re-stamps it as 0001_schema and refuses a database left at an older pre-squash revision.

The tables are Alembic's autogenerate output against an empty database (the ORM in
``pixelmint.tables``); the plans, the queue tables' storage parameters and the claim function
(``pixelmint_claim_jobs.sql``, its one definition) are added by hand.
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_schema"
down_revision = None
branch_labels = None
depends_on = None

# The team-fair claim (``../shared/reference/queues.md`` §B.2), defined only there.
CLAIM_FUNCTION = Path(__file__).resolve().parent.parent / "pixelmint_claim_jobs.sql"


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    # Alembic autogenerate:
    op.create_table('apps',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_apps')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_apps_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_apps_name'))
    )
    op.create_table('credit_pricing_config',
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('operation', name=op.f('pk_credit_pricing_config'))
    )
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=True),
    sa.Column('app_id', sa.UUID(), nullable=True),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_method', sa.String(length=16), nullable=False),
    sa.Column('request_path', sa.String(length=2048), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('response_content_type', sa.String(length=255), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint('num_nonnulls(team_id, app_id) = 1', name=op.f('ck_idempotency_keys_one_owner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys'))
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)
    op.create_index('uq_idempotency_keys_app_id_key', 'idempotency_keys', ['app_id', 'key'], unique=True, postgresql_where=sa.text('app_id IS NOT NULL'))
    op.create_index('uq_idempotency_keys_team_id_key', 'idempotency_keys', ['team_id', 'key'], unique=True, postgresql_where=sa.text('team_id IS NOT NULL'))
    op.create_table('plans',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('monthly_credits', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('max_concurrent_jobs', sa.Integer(), nullable=False),
    sa.Column('queue_priority', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_plans'))
    )
    op.create_table('provider_webhook_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('provider', sa.String(length=50), nullable=False),
    sa.Column('delivery_id', sa.String(length=300), nullable=False),
    sa.Column('request_id', sa.String(length=200), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('received_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_webhook_events')),
    sa.UniqueConstraint('provider', 'delivery_id', name='uq_provider_webhook_events_delivery')
    )
    op.create_table('reference_models',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=50), nullable=False),
    sa.Column('description', sa.String(length=2000), server_default='', nullable=False),
    sa.Column('complexity_factor', sa.Numeric(precision=4, scale=2), nullable=False),
    sa.Column('popularity', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('characteristics', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('provider', sa.String(length=50), server_default='default', nullable=False),
    sa.Column('provider_model', sa.String(length=200), nullable=True),
    sa.Column('provider_models', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('preview_images', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reference_models'))
    )
    op.create_index(op.f('ix_reference_models_category'), 'reference_models', ['category'], unique=False)
    op.create_table('app_operations',
    sa.Column('app_id', sa.UUID(), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('cost', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_app_operations_app_id_apps'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('app_id', 'operation', name=op.f('pk_app_operations'))
    )
    op.create_table('teams',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('plan_code', sa.String(length=32), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=True),
    sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['plan_code'], ['plans.code'], name=op.f('fk_teams_plan_code_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teams')),
    sa.UniqueConstraint('stripe_customer_id', name=op.f('uq_teams_stripe_customer_id'))
    )
    op.create_table('app_grants',
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('app_id', sa.UUID(), nullable=False),
    sa.Column('granted_by', sa.String(length=16), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("granted_by IN ('admin', 'team')", name=op.f('ck_app_grants_granted_by_valid')),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_app_grants_app_id_apps'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_app_grants_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', 'app_id', name=op.f('pk_app_grants'))
    )
    op.create_index(op.f('ix_app_grants_app_id'), 'app_grants', ['app_id'], unique=False)
    op.create_table('credit_balances',
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('allocation_credits', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('bonus_credits', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('reserved_credits', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('total_allocated', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('next_replenishment_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('allocation_period', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('allocation_period_started_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('allocation_credits >= 0', name=op.f('ck_credit_balances_allocation_nonnegative')),
    sa.CheckConstraint('bonus_credits >= 0', name=op.f('ck_credit_balances_bonus_nonnegative')),
    sa.CheckConstraint('reserved_credits >= 0', name=op.f('ck_credit_balances_reserved_nonnegative')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_credit_balances_team_id_teams')),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_credit_balances'))
    )
    op.create_index('ix_credit_balances_next_replenishment_at', 'credit_balances', ['next_replenishment_at'], unique=False, postgresql_where=sa.text('next_replenishment_at IS NOT NULL'))
    op.create_table('credit_reservations',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('app_id', sa.UUID(), nullable=True),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('from_allocation', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('from_bonus', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='held', nullable=False),
    sa.Column('captured_amount', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('settled_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('allocation_period', sa.Integer(), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('held', 'captured', 'released')", name=op.f('ck_credit_reservations_status_valid')),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_credit_reservations_app_id_apps')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_credit_reservations_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_reservations')),
    sa.UniqueConstraint('job_id', name=op.f('uq_credit_reservations_job_id'))
    )
    op.create_index('ix_credit_reservations_expiring', 'credit_reservations', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'held' AND expires_at IS NOT NULL"))
    op.create_index('ix_credit_reservations_held', 'credit_reservations', ['team_id'], unique=False, postgresql_where=sa.text("status = 'held'"))
    op.create_table('credit_transactions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('allocation_delta', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('bonus_delta', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('reserved_delta', sa.Numeric(precision=14, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('allocation_after', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('bonus_after', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('reserved_after', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=True),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('reservation_id', sa.UUID(), nullable=True),
    sa.Column('app_id', sa.UUID(), nullable=True),
    sa.Column('user_id', sa.UUID(), nullable=True),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("type IN ('grant', 'reserve', 'capture', 'release', 'adjust', 'replenish', 'expire', 'consume', 'void')", name=op.f('ck_credit_transactions_type_valid')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_credit_transactions_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_transactions'))
    )
    op.create_index(op.f('ix_credit_transactions_app_id'), 'credit_transactions', ['app_id'], unique=False)
    op.create_index(op.f('ix_credit_transactions_job_id'), 'credit_transactions', ['job_id'], unique=False)
    op.create_index('ix_credit_transactions_team_id_id', 'credit_transactions', ['team_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('ux_credit_transactions_voids', 'credit_transactions', [sa.literal_column("(metadata->>'voids')")], unique=True, postgresql_where=sa.text("type = 'void'"))
    op.create_table('custom_models',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('reference_model_id', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=2000), server_default='', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('version', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('artifact', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('trigger_word', sa.String(length=100), nullable=True),
    sa.Column('training_steps', sa.Integer(), server_default=sa.text('1000'), nullable=False),
    sa.Column('training_images', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('error_message', sa.String(length=2000), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['reference_model_id'], ['reference_models.id'], name=op.f('fk_custom_models_reference_model_id_reference_models')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_custom_models_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custom_models'))
    )
    op.create_index(op.f('ix_custom_models_team_id'), 'custom_models', ['team_id'], unique=False)
    op.create_table('stripe_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('livemode', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('event_created', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('team_id', sa.UUID(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('outcome', sa.String(length=64), server_default='received', nullable=False),
    sa.Column('detail', sa.String(length=1000), nullable=True),
    sa.Column('received_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_stripe_events_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stripe_events'))
    )
    op.create_index('ix_stripe_events_customer_id_created', 'stripe_events', ['customer_id', 'event_created'], unique=False)
    op.create_table('team_dispatch',
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('max_running', sa.Integer(), nullable=False),
    sa.Column('has_ready', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('last_dispatched_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text("'-infinity'"), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_team_dispatch_team_id_teams')),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_team_dispatch'))
    )
    op.create_index('ix_team_dispatch_ready', 'team_dispatch', [sa.literal_column('priority DESC'), 'last_dispatched_at', 'team_id'], unique=False, postgresql_where=sa.text('has_ready'))
    op.create_table('users',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('free_generations_remaining', sa.Integer(), server_default=sa.text('3'), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_users_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_index(op.f('ix_users_team_id'), 'users', ['team_id'], unique=False)
    op.create_table('api_keys',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), server_default='default', nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_api_keys_team_id_teams')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_index(op.f('ix_api_keys_team_id'), 'api_keys', ['team_id'], unique=False)
    op.create_table('custom_model_versions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('model_id', sa.UUID(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('prompt', sa.String(length=2000), nullable=True),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('cost', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('artifact', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['custom_models.id'], name=op.f('fk_custom_model_versions_model_id_custom_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custom_model_versions')),
    sa.UniqueConstraint('model_id', 'version', name='uq_custom_model_versions_model_version')
    )
    op.create_table('jobs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), server_default='queued', nullable=False),
    sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('reference_model_id', sa.String(length=100), nullable=True),
    sa.Column('custom_model_id', sa.UUID(), nullable=True),
    sa.Column('custom_model_version', sa.Integer(), nullable=True),
    sa.Column('provider', sa.String(length=50), nullable=False),
    sa.Column('provider_request_id', sa.String(length=200), nullable=True),
    sa.Column('provider_handle', sa.String(length=300), nullable=True),
    sa.Column('estimated_credits', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('charged_credits', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('reservation_id', sa.UUID(), nullable=True),
    sa.Column('is_free', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default=sa.text('3'), nullable=False),
    sa.Column('run_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('locked_by', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('cancel_requested_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('progress', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.String(length=2000), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('queued', 'running', 'awaiting_webhook', 'succeeded', 'failed', 'canceled', 'expired')", name=op.f('ck_jobs_state_valid')),
    sa.CheckConstraint("type IN ('image_generation', 'model_creation', 'model_refinement')", name=op.f('ck_jobs_type_valid')),
    sa.ForeignKeyConstraint(['custom_model_id'], ['custom_models.id'], name=op.f('fk_jobs_custom_model_id_custom_models')),
    sa.ForeignKeyConstraint(['reference_model_id'], ['reference_models.id'], name=op.f('fk_jobs_reference_model_id_reference_models')),
    sa.ForeignKeyConstraint(['reservation_id'], ['credit_reservations.id'], name=op.f('fk_jobs_reservation_id_credit_reservations')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_jobs_team_id_teams')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_jobs_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_awaiting_team', 'jobs', ['team_id'], unique=False, postgresql_where=sa.text("state = 'awaiting_webhook'"))
    op.create_index('ix_jobs_custom_model', 'jobs', ['custom_model_id'], unique=False, postgresql_where=sa.text('custom_model_id IS NOT NULL'))
    op.create_index('ix_jobs_provider_request', 'jobs', ['provider', 'provider_request_id'], unique=False, postgresql_where=sa.text('provider_request_id IS NOT NULL'))
    op.create_index('ix_jobs_ready', 'jobs', ['team_id', sa.literal_column('priority DESC'), 'run_at', 'created_at'], unique=False, postgresql_where=sa.text("state = 'queued'"))
    op.create_index('ix_jobs_running_lease', 'jobs', ['lease_expires_at'], unique=False, postgresql_where=sa.text("state = 'running'"))
    op.create_index('ix_jobs_running_team', 'jobs', ['team_id'], unique=False, postgresql_where=sa.text("state = 'running'"))
    op.create_index('ix_jobs_team_created', 'jobs', ['team_id', sa.literal_column('created_at DESC'), 'id'], unique=False)
    op.create_table('images',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=True),
    sa.Column('storage_key', sa.String(length=500), nullable=False),
    sa.Column('content_type', sa.String(length=100), server_default='image/png', nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('deleted_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_images_job_id_jobs')),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_images_team_id_teams')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images'))
    )
    op.create_index('ix_images_expires', 'images', ['expires_at'], unique=False, postgresql_where=sa.text('deleted_at IS NULL'))
    op.create_index(op.f('ix_images_job_id'), 'images', ['job_id'], unique=False)
    op.create_index('ix_images_team_created', 'images', ['team_id', sa.literal_column('created_at DESC'), sa.literal_column('id DESC')], unique=False)
    op.create_table('job_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('team_id', sa.UUID(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=False),
    sa.Column('started_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_attempts_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_attempts'))
    )
    op.create_index(op.f('ix_job_attempts_job_id'), 'job_attempts', ['job_id'], unique=False)
    op.create_index(op.f('ix_job_attempts_team_id'), 'job_attempts', ['team_id'], unique=False)
    op.create_table('job_logs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('message', sa.String(length=2000), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_logs_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_logs'))
    )
    op.create_index('ix_job_logs_job_id_id', 'job_logs', ['job_id', 'id'], unique=False)
    op.bulk_insert(
        sa.table(
            "plans",
            sa.column("code", sa.String),
            sa.column("name", sa.String),
            sa.column("monthly_credits", sa.Numeric),
            sa.column("max_concurrent_jobs", sa.Integer),
            sa.column("queue_priority", sa.Integer),
        ),
        [
            {"code": "free", "name": "Free", "monthly_credits": 0, "max_concurrent_jobs": 0, "queue_priority": 0},
            {"code": "basic", "name": "Basic", "monthly_credits": 500, "max_concurrent_jobs": 1, "queue_priority": 10},
            {"code": "pro", "name": "Pro", "monthly_credits": 2000, "max_concurrent_jobs": 3, "queue_priority": 20},
            {"code": "enterprise", "name": "Enterprise", "monthly_credits": 10000, "max_concurrent_jobs": 10,
             "queue_priority": 30},
        ],
    )
    # The queue tables churn: vacuum them early (oban-py install.sql does the same).
    op.execute("ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)")
    op.execute("ALTER TABLE team_dispatch SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02)")
    op.execute(CLAIM_FUNCTION.read_text())


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("DROP FUNCTION IF EXISTS pixelmint_claim_jobs")
    op.drop_index('ix_job_logs_job_id_id', table_name='job_logs')
    op.drop_table('job_logs')
    op.drop_index(op.f('ix_job_attempts_team_id'), table_name='job_attempts')
    op.drop_index(op.f('ix_job_attempts_job_id'), table_name='job_attempts')
    op.drop_table('job_attempts')
    op.drop_index('ix_images_team_created', table_name='images')
    op.drop_index(op.f('ix_images_job_id'), table_name='images')
    op.drop_index('ix_images_expires', table_name='images', postgresql_where=sa.text('deleted_at IS NULL'))
    op.drop_table('images')
    op.drop_index('ix_jobs_team_created', table_name='jobs')
    op.drop_index('ix_jobs_running_team', table_name='jobs', postgresql_where=sa.text("state = 'running'"))
    op.drop_index('ix_jobs_running_lease', table_name='jobs', postgresql_where=sa.text("state = 'running'"))
    op.drop_index('ix_jobs_ready', table_name='jobs', postgresql_where=sa.text("state = 'queued'"))
    op.drop_index('ix_jobs_provider_request', table_name='jobs', postgresql_where=sa.text('provider_request_id IS NOT NULL'))
    op.drop_index('ix_jobs_custom_model', table_name='jobs', postgresql_where=sa.text('custom_model_id IS NOT NULL'))
    op.drop_index('ix_jobs_awaiting_team', table_name='jobs', postgresql_where=sa.text("state = 'awaiting_webhook'"))
    op.drop_table('jobs')
    op.drop_table('custom_model_versions')
    op.drop_index(op.f('ix_api_keys_team_id'), table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_index(op.f('ix_users_team_id'), table_name='users')
    op.drop_table('users')
    op.drop_index('ix_team_dispatch_ready', table_name='team_dispatch', postgresql_where=sa.text('has_ready'))
    op.drop_table('team_dispatch')
    op.drop_index('ix_stripe_events_customer_id_created', table_name='stripe_events')
    op.drop_table('stripe_events')
    op.drop_index(op.f('ix_custom_models_team_id'), table_name='custom_models')
    op.drop_table('custom_models')
    op.drop_index('ux_credit_transactions_voids', table_name='credit_transactions', postgresql_where=sa.text("type = 'void'"))
    op.drop_index('ix_credit_transactions_team_id_id', table_name='credit_transactions')
    op.drop_index(op.f('ix_credit_transactions_job_id'), table_name='credit_transactions')
    op.drop_index(op.f('ix_credit_transactions_app_id'), table_name='credit_transactions')
    op.drop_table('credit_transactions')
    op.drop_index('ix_credit_reservations_held', table_name='credit_reservations', postgresql_where=sa.text("status = 'held'"))
    op.drop_index('ix_credit_reservations_expiring', table_name='credit_reservations', postgresql_where=sa.text("status = 'held' AND expires_at IS NOT NULL"))
    op.drop_table('credit_reservations')
    op.drop_index('ix_credit_balances_next_replenishment_at', table_name='credit_balances', postgresql_where=sa.text('next_replenishment_at IS NOT NULL'))
    op.drop_table('credit_balances')
    op.drop_index(op.f('ix_app_grants_app_id'), table_name='app_grants')
    op.drop_table('app_grants')
    op.drop_table('teams')
    op.drop_table('app_operations')
    op.drop_index(op.f('ix_reference_models_category'), table_name='reference_models')
    op.drop_table('reference_models')
    op.drop_table('provider_webhook_events')
    op.drop_table('plans')
    op.drop_index('uq_idempotency_keys_team_id_key', table_name='idempotency_keys', postgresql_where=sa.text('team_id IS NOT NULL'))
    op.drop_index('uq_idempotency_keys_app_id_key', table_name='idempotency_keys', postgresql_where=sa.text('app_id IS NOT NULL'))
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_table('credit_pricing_config')
    op.drop_table('apps')
