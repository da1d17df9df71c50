-- pixelmint_claim_jobs(worker, demand, lease seconds[, per team]): claims up to `demand` queued
-- jobs, by plan priority and fairly across the teams of a priority, within each team's concurrency
-- limit. Its one definition, run by revision 0001_schema. A later revision that changes it edits
-- this file and runs it again (CREATE OR REPLACE); that revision's downgrade carries the text it
-- replaced (0005_claim_by_priority: the claim hands out slots by priority whatever its size).
--
-- Statement 1 locks up to p_demand teams that have a job ready now and free capacity, highest plan
-- priority first, then least recently served (round robin), skipping teams other workers hold.
-- `has_ready` (a team may have queued jobs, ready or waiting out a backoff) is the cheap
-- pre-filter; the EXISTS probes the ready partial index ix_jobs_ready once per candidate team, so
-- a team whose jobs all wait out a backoff cannot hold the head of the round robin (OFFSET 0
-- keeps it a per-team probe rather than a semi-join over every queued job). A team's running
-- count is two counts, one per partial index (ix_jobs_running_team, ix_jobs_awaiting_team): a
-- job awaiting its provider's callback counts as running.
-- Statement 2 runs with a fresh snapshot taken after those locks, so its running count is exact.
-- It hands the p_demand slots out as one claim at a time would: every locked team offers its
-- ready jobs up to its free capacity (at most p_per_team when given; k = 1, 2… in the team's own
-- order, read on ix_jobs_ready); the offers go highest plan priority first, and within a priority
-- round robin (each team's first job, in least-recently-served order, before any team's second).
-- Only the jobs taken are locked, re-checked as still queued. So a claim of 32 with 30 teams ready still serves the higher plans first,
-- as 32 claims of one would. Each claimed job is announced on pixelmint_job_events as
-- '<id> running'. A full claim that locked teams it gave no job to (other workers skipped them
-- meanwhile) wakes the workers on pixelmint_jobs. Statement 3 clears has_ready for teams with
-- nothing queued (safe because enqueue holds the same team_dispatch row lock until it commits).
CREATE OR REPLACE FUNCTION pixelmint_claim_jobs(
    p_worker text, p_demand int, p_lease_seconds double precision, p_per_team int DEFAULT NULL
) RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE v_teams uuid[]; v_now timestamptz; v_claimed int; v_served int;
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

  v_now := clock_timestamp();
  RETURN QUERY
  WITH cap AS (
    SELECT d.team_id, d.priority, d.last_dispatched_at,
           LEAST(d.max_running - ((SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'running')
         + (SELECT count(*) FROM jobs r WHERE r.team_id = d.team_id AND r.state = 'awaiting_webhook')), p_per_team) AS free
      FROM team_dispatch d WHERE d.team_id = ANY (v_teams)
  ), ready AS (
    SELECT c.team_id, c.priority, c.last_dispatched_at, q.id, q.k FROM cap c CROSS JOIN LATERAL (
      SELECT j.id, row_number() OVER (ORDER BY j.priority DESC, j.run_at, j.created_at) AS k FROM jobs j
       WHERE j.team_id = c.team_id AND j.state = 'queued' AND j.run_at <= now()
       ORDER BY j.priority DESC, j.run_at, j.created_at
       LIMIT c.free) q
     WHERE c.free > 0
  ), picked AS (
    SELECT j.id FROM jobs j
     WHERE j.id IN (SELECT r.id FROM ready r ORDER BY r.priority DESC, r.k, r.last_dispatched_at, r.team_id
                     LIMIT p_demand)
       AND j.state = 'queued' AND j.run_at <= now()
       FOR UPDATE OF j SKIP LOCKED
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
    UPDATE team_dispatch d SET last_dispatched_at = v_now
     WHERE d.team_id IN (SELECT c.team_id FROM claimed c)
  )
  SELECT c.* FROM claimed c
   CROSS JOIN LATERAL pg_notify('pixelmint_job_events', c.id::text || ' running') AS announce;
  GET DIAGNOSTICS v_claimed = ROW_COUNT;

  -- A full claim that left locked teams without a job (higher plans took their slots) kept other
  -- workers from them meanwhile: wake the workers, there is more to claim.
  IF v_claimed >= p_demand THEN
    SELECT count(*) INTO v_served FROM team_dispatch d WHERE d.team_id = ANY (v_teams) AND d.last_dispatched_at = v_now;
    IF v_served < cardinality(v_teams) THEN
      PERFORM pg_notify('pixelmint_jobs', '');
    END IF;
  END IF;

  UPDATE team_dispatch d SET has_ready = false
   WHERE d.team_id = ANY (v_teams)
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.team_id = d.team_id AND j.state = 'queued');
END $$;
