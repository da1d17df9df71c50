"""the claim picks only teams with a job ready now, so jobs waiting out a retry backoff cannot starve it

Revision ID: 0008_claim_ready
Revises: 0007_merge

``has_ready`` says a team may have queued jobs, ready or not: a job requeued with a backoff raises
it and the claim clears it only when nothing is queued. Step 1 of 0006's claim picked teams by
that flag alone, so a team whose queued jobs all wait out a backoff was picked, yielded nothing and
kept its place at the head of the round robin (its ``last_dispatched_at`` never moves): as many
such teams as a worker's free slots made every claim of that worker come back empty while other
teams had ready work.

Step 1 now also asks for a job ready now (``run_at <= now()``): one probe per candidate team into
the ready partial index ``ix_jobs_ready`` (team_id, priority, run_at), which stops at the team's
first ready job. ``OFFSET 0`` keeps it a per-team probe: without it the planner may turn the
EXISTS into a semi-join that scans every queued job of every team on each claim. ``has_ready``
stays the cheap pre-filter that keeps idle teams out of the scan.

The running count (steps 1 and 2) is two counts, one per partial index (``ix_jobs_running_team``,
``ix_jobs_awaiting_team``): 0006's ``state IN ('running', 'awaiting_webhook')`` matches neither
index, so PostgreSQL counted through ``ix_jobs_team_created``, every job the team ever had, for
each candidate team on each claim (EXPLAIN ANALYZE of step 1 with a team of 200k jobs first in
line: 70–180 ms per claim, against 0.2–0.5 ms now).
"""

from alembic import op

revision = "0008_claim_ready"
down_revision = "0007_merge"
branch_labels = None
depends_on = None


# 0006's claim function with {ready} added to step 1's filter and {running}, a team's running
# count, as a parameter: with READY_NOW_0006 and RUNNING_0006 it is 0006's function again.
READY_NOW_0006 = ""
RUNNING_0006 = "(SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state IN ('running', 'awaiting_webhook'))"
CLAIM_TEMPLATE = """
CREATE OR REPLACE FUNCTION pixelmint_claim_jobs(
    p_worker text, p_demand int, p_lease_seconds double precision, p_per_team int DEFAULT 1
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE v_teams uuid[];
BEGIN
  SELECT array_agg(s.team_id) INTO v_teams FROM (
    SELECT d.team_id FROM team_dispatch d
     WHERE d.has_ready{ready}
       AND {running} < d.max_running
     ORDER BY d.priority DESC, d.last_dispatched_at, d.team_id
     LIMIT p_demand
     FOR UPDATE OF d SKIP LOCKED) s;
  IF v_teams IS NULL THEN RETURN; END IF;

  RETURN QUERY
  WITH cap AS (
    SELECT d.team_id,
           d.max_running - {running} AS free
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

READY_NOW = """
       AND EXISTS (SELECT FROM jobs j WHERE j.team_id = d.team_id AND j.state = 'queued' AND j.run_at <= now()
                   OFFSET 0)"""
RUNNING = """((SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'running')
         + (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'awaiting_webhook'))"""


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(CLAIM_TEMPLATE.format(ready=READY_NOW, running=RUNNING))


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(CLAIM_TEMPLATE.format(ready=READY_NOW_0006, running=RUNNING_0006))
