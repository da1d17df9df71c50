"""provider request ids on jobs, stored provider webhook events

Revision ID: 0006_provider_requests
Revises: 0002_models
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_provider_requests"
down_revision = "0002_models"
branch_labels = None
depends_on = None


# The claim function of 0001, with a job awaiting its provider's callback counted against the
# team's concurrency like a running one (it is running, at the provider).
CLAIM_TEMPLATE = """
CREATE OR REPLACE FUNCTION pixelmint_claim_jobs(
    p_worker text, p_demand int, p_lease_seconds double precision, p_per_team int DEFAULT 1
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE v_teams uuid[];
BEGIN
  SELECT array_agg(s.team_id) INTO v_teams FROM (
    SELECT d.team_id FROM team_dispatch d
     WHERE d.has_ready
       AND (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state {running}) < d.max_running
     ORDER BY d.priority DESC, d.last_dispatched_at, d.team_id
     LIMIT p_demand
     FOR UPDATE OF d SKIP LOCKED) s;
  IF v_teams IS NULL THEN RETURN; END IF;

  RETURN QUERY
  WITH cap AS (
    SELECT d.team_id,
           d.max_running - (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state {running}) AS free
      FROM team_dispatch d WHERE d.team_id = ANY (v_teams)
  ), picked AS (
    SELECT q.id FROM cap c CROSS JOIN LATERAL (
      SELECT j.id FROM jobs j
       WHERE j.team_id = c.team_id AND j.state = 'queued' AND j.run_at <= now()
       ORDER BY j.priority DESC, j.run_at, j.created_at
       LIMIT LEAST(c.free, p_per_team)
       FOR UPDATE OF j SKIP LOCKED) q
     WHERE c.free > 0
     LIMIT p_demand
  ), claimed AS (
    UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, locked_by = p_worker,
           lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           started_at = clock_timestamp(), progress = 0
      FROM picked WHERE j.id = picked.id
    RETURNING j.*
  ), attempts AS (
    INSERT INTO job_attempts (job_id, team_id, attempt, worker_id, started_at)
    SELECT c.id, c.team_id, c.attempt, p_worker, c.started_at FROM claimed c
  ), rr AS (
    UPDATE team_dispatch d SET last_dispatched_at = clock_timestamp()
     WHERE d.team_id IN (SELECT c.team_id FROM claimed c)
  )
  SELECT c.* FROM claimed c
   CROSS JOIN LATERAL pg_notify('pixelmint_job_events', c.id::text || ' running') AS announce;

  UPDATE team_dispatch d SET has_ready = false
   WHERE d.team_id = ANY (v_teams)
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.team_id = d.team_id AND j.state = 'queued');
END $$;
"""


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("jobs", sa.Column("provider_request_id", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("provider_handle", sa.String(length=300), nullable=True))
    op.create_index(
        "ix_jobs_provider_request", "jobs", ["provider", "provider_request_id"],
        postgresql_where=sa.text("provider_request_id IS NOT NULL"),
    )
    op.create_table(
        "provider_webhook_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("delivery_id", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_webhook_events")),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_provider_webhook_events_delivery"),
    )
    op.create_index("ix_jobs_awaiting_team", "jobs", ["team_id"], postgresql_where=sa.text("state = 'awaiting_webhook'"))
    op.execute(CLAIM_TEMPLATE.format(running="IN ('running', 'awaiting_webhook')"))


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(CLAIM_TEMPLATE.format(running="= 'running'"))
    op.drop_index("ix_jobs_awaiting_team", table_name="jobs")
    op.drop_table("provider_webhook_events")
    op.drop_index("ix_jobs_provider_request", table_name="jobs")
    op.drop_column("jobs", "provider_handle")
    op.drop_column("jobs", "provider_request_id")
