"""claim by priority: pixelmint_claim_jobs hands a claim's slots out by plan priority, then round robin

Revision ID: 0005_claim_by_priority
Revises: 0004_people
Create Date: 2026-12-02

A claim of many slots (a worker whose jobs finished together) used to give every locked team one
job (``p_per_team`` defaulted to 1), so with as many teams ready as slots free the plan priority
stopped mattering. The function now offers one slot per job a team could start (free capacity,
ready jobs) and hands them out highest priority first, round robin within a priority: what one
claim at a time would do (``migrations/pixelmint_claim_jobs.sql``). ``p_per_team`` now defaults to
no cap. The downgrade puts the previous definition back.
"""

from pathlib import Path

from alembic import op

revision = "0005_claim_by_priority"
down_revision = "0004_people"
branch_labels = None
depends_on = None

CLAIM_FUNCTION = Path(__file__).resolve().parent.parent / "pixelmint_claim_jobs.sql"

# The definition this revision replaced (0001_schema's).
PREVIOUS = r"""-- pixelmint_claim_jobs(worker, demand, lease seconds, per team): claims up to `demand` queued jobs,
-- fairly across teams and within each team's concurrency limit. Its one definition, run by
-- revision 0001_schema. A later revision that changes it edits this file and runs it again
-- (CREATE OR REPLACE); that revision's downgrade carries the text it replaced.
--
-- Statement 1 locks up to p_demand teams that have a job ready now and free capacity, highest plan
-- priority first, then least recently served (round robin), skipping teams other workers hold.
-- `has_ready` (a team may have queued jobs, ready or waiting out a backoff) is the cheap
-- pre-filter; the EXISTS probes the ready partial index ix_jobs_ready once per candidate team, so
-- a team whose jobs all wait out a backoff cannot hold the head of the round robin (OFFSET 0
-- keeps it a per-team probe rather than a semi-join over every queued job). A team's running
-- count is two counts, one per partial index (ix_jobs_running_team, ix_jobs_awaiting_team): a
-- job awaiting its provider's callback counts as running.
-- Statement 2 runs with a fresh snapshot taken after those locks, so its running count is exact,
-- and claims at most least(free, p_per_team) jobs per team, each announced on
-- pixelmint_job_events as '<id> running'. Statement 3 clears has_ready for teams with nothing
-- queued (safe because enqueue holds the same team_dispatch row lock until it commits).
CREATE OR REPLACE FUNCTION pixelmint_claim_jobs(
    p_worker text, p_demand int, p_lease_seconds double precision, p_per_team int DEFAULT 1
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE v_teams uuid[];
BEGIN
  SELECT array_agg(s.team_id) INTO v_teams FROM (
    SELECT d.team_id FROM team_dispatch d
     WHERE d.has_ready
       AND EXISTS (SELECT FROM jobs j WHERE j.team_id = d.team_id AND j.state = 'queued' AND j.run_at <= now()
                   OFFSET 0)
       AND ((SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'running')
         + (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'awaiting_webhook')) < d.max_running
     ORDER BY d.priority DESC, d.last_dispatched_at, d.team_id
     LIMIT p_demand
     FOR UPDATE OF d SKIP LOCKED) s;
  IF v_teams IS NULL THEN RETURN; END IF;

  RETURN QUERY
  WITH cap AS (
    SELECT d.team_id,
           d.max_running - ((SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'running')
         + (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'awaiting_webhook')) AS free
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
    op.execute(CLAIM_FUNCTION.read_text())


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(PREVIOUS)
