-- bench_scale.py's data, made in SQL (one INSERT ... SELECT generate_series per table), as
-- session-local functions: pg_temp.seed(tag, teams, plan, jobs, queued, expired) adds `teams`
-- teams named <tag><n> (API key <tag>key<n>, plan `plan`, 100,000,000 credits granted) with
--   * `jobs` finished image generations each: a captured reservation, a `reserve` and a `capture`
--     ledger row (balance == sum(ledger) holds), a job, its attempt and one image; the image is
--     expired and not deleted with `expired`, else every other image was deleted by retention
--     long ago and the rest are unexpired;
--   * `queued` queued jobs each (no credits held, as bench_drain's), has_ready raised.
-- It raises a NOTICE with the seconds of each step. Ids are md5 of (tag, kind, team, job): random
-- like the service's uuid4 keys of teams, users and keys, and the same in every run; jobs,
-- reservations and images get UUIDv7 ids from their creation time, as the service's (kit/ids.py).

CREATE FUNCTION pg_temp.sid(tag text, k text, n int, j int DEFAULT 0) RETURNS uuid IMMUTABLE LANGUAGE sql
  AS $$ SELECT md5(tag || k || n || '.' || j)::uuid $$;

-- Job j of a team of `jobs` finished j hours before the last; teams 1 ms apart.
CREATE FUNCTION pg_temp.at(jobs int, j int, n int) RETURNS timestamptz STABLE LANGUAGE sql
  AS $$ SELECT now() - make_interval(hours => jobs - j + 2, secs => n / 1000.0) $$;

-- `id` made a UUIDv7 of time `at` (RFC 9562 §5.7): its first 48 bits the Unix milliseconds, then
-- version 7 (bits 52-55 = 0111, numbered from the right within each byte) and variant 10.
CREATE FUNCTION pg_temp.v7(id uuid, at timestamptz) RETURNS uuid IMMUTABLE LANGUAGE sql
  AS $$ SELECT encode(set_bit(set_bit(set_bit(set_bit(set_bit(set_bit(
           overlay(uuid_send(id) PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                   FROM 1 FOR 6), 52, 1), 53, 1), 54, 1), 55, 0), 70, 0), 71, 1), 'hex')::uuid $$;

-- The id of kind k ('j' job, 'r' reservation, 'i' image) of job j of team n: time-ordered.
CREATE FUNCTION pg_temp.tid(tag text, k text, n int, j int, jobs int) RETURNS uuid STABLE LANGUAGE sql
  AS $$ SELECT pg_temp.v7(pg_temp.sid(tag, k, n, j), pg_temp.at(jobs, j, n)) $$;

CREATE FUNCTION pg_temp.step(INOUT t timestamptz, what text) LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE '    % rows: % s', what, round(extract(epoch FROM clock_timestamp() - t)::numeric, 1);
  t := clock_timestamp();
END $$;

CREATE FUNCTION pg_temp.seed(tag text, teams int, plan text, jobs int, queued int, expired boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  grant_ numeric := 100000000;
  cost numeric := 4.80;
  params jsonb := '{"prompt": "p", "negativePrompt": null, "width": 512, "height": 512, "quality": "standard",
                    "numImages": 1, "seed": 1, "modelKey": "business-headshot"}';
  t timestamptz := clock_timestamp();
BEGIN
  INSERT INTO teams (id, name, plan_code, created_at)
  SELECT pg_temp.sid(tag, 't', n), tag || n, plan, now() - interval '400 days' FROM generate_series(1, teams) n;
  INSERT INTO users (id, team_id, name, free_generations_remaining, role)
  SELECT pg_temp.sid(tag, 'u', n), pg_temp.sid(tag, 't', n), 'owner', 0, 'owner' FROM generate_series(1, teams) n;
  INSERT INTO api_keys (id, team_id, user_id, key_hash, prefix)
  SELECT pg_temp.sid(tag, 'k', n), pg_temp.sid(tag, 't', n), pg_temp.sid(tag, 'u', n),
         encode(sha256(convert_to(tag || 'key' || n, 'UTF8')), 'hex'), 'pms_'
    FROM generate_series(1, teams) n;
  INSERT INTO credit_balances (team_id, allocation_credits, total_allocated)
  SELECT pg_temp.sid(tag, 't', n), grant_ - jobs * cost, grant_ FROM generate_series(1, teams) n;
  INSERT INTO team_dispatch (team_id, priority, max_running, has_ready)
  SELECT pg_temp.sid(tag, 't', n), p.queue_priority, greatest(p.max_concurrent_jobs, 1), queued > 0
    FROM generate_series(1, teams) n, plans p WHERE p.code = plan;
  INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, allocation_after, bonus_after,
                                   reserved_after, description, created_at)
  SELECT pg_temp.sid(tag, 't', n), 'grant', grant_, grant_, grant_, 0, 0, 'initial allocation',
         now() - interval '400 days'
    FROM generate_series(1, teams) n;
  t := pg_temp.step(t, 'teams, users, keys, balances, dispatch, grants');
  IF jobs > 0 THEN
    INSERT INTO credit_reservations (id, team_id, job_id, operation, amount, from_allocation, from_bonus, status,
                                     captured_amount, created_at, settled_at, allocation_period)
    SELECT pg_temp.tid(tag, 'r', n, j, jobs), pg_temp.sid(tag, 't', n), pg_temp.tid(tag, 'j', n, j, jobs), 'image_generation',
           cost, cost, 0, 'captured', cost, pg_temp.at(jobs, j, n), pg_temp.at(jobs, j, n) + interval '5 s', 0
      FROM generate_series(1, teams) n, generate_series(1, jobs) j;
    t := pg_temp.step(t, 'reservations');
    INSERT INTO jobs (id, team_id, user_id, type, state, params, reference_model_id, provider, estimated_credits,
                      charged_credits, reservation_id, attempt, progress, run_at, created_at, started_at, finished_at)
    SELECT pg_temp.tid(tag, 'j', n, j, jobs), pg_temp.sid(tag, 't', n), pg_temp.sid(tag, 'u', n), 'image_generation',
           'succeeded', params, 'business-headshot', 'procedural', cost, cost, pg_temp.tid(tag, 'r', n, j, jobs), 1, 100,
           pg_temp.at(jobs, j, n), pg_temp.at(jobs, j, n), pg_temp.at(jobs, j, n) + interval '1 s',
           pg_temp.at(jobs, j, n) + interval '5 s'
      FROM generate_series(1, teams) n, generate_series(1, jobs) j;
    t := pg_temp.step(t, 'jobs');
    INSERT INTO job_attempts (job_id, team_id, attempt, worker_id, started_at, finished_at, outcome)
    SELECT pg_temp.tid(tag, 'j', n, j, jobs), pg_temp.sid(tag, 't', n), 1, 'seed', pg_temp.at(jobs, j, n) + interval '1 s',
           pg_temp.at(jobs, j, n) + interval '5 s', 'succeeded'
      FROM generate_series(1, teams) n, generate_series(1, jobs) j;
    t := pg_temp.step(t, 'attempts');
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, reserved_delta, allocation_after,
                                     bonus_after, reserved_after, operation, job_id, reservation_id, user_id,
                                     description, created_at)
    SELECT pg_temp.sid(tag, 't', n), k.type, cost, CASE k.type WHEN 'reserve' THEN -cost ELSE 0 END,
           CASE k.type WHEN 'reserve' THEN cost ELSE -cost END, grant_ - j * cost, 0,
           CASE k.type WHEN 'reserve' THEN cost ELSE 0 END, 'image_generation', pg_temp.tid(tag, 'j', n, j, jobs),
           pg_temp.tid(tag, 'r', n, j, jobs), pg_temp.sid(tag, 'u', n), CASE k.type WHEN 'capture' THEN 'job succeeded' END,
           pg_temp.at(jobs, j, n) + CASE k.type WHEN 'capture' THEN interval '5 s' ELSE interval '0 s' END
      FROM generate_series(1, teams) n, generate_series(1, jobs) j, (VALUES ('reserve'), ('capture')) k(type);
    t := pg_temp.step(t, 'ledger');
    INSERT INTO images (id, team_id, job_id, user_id, storage_key, width, height, size_bytes, seed, created_at,
                        expires_at, deleted_at)
    SELECT pg_temp.tid(tag, 'i', n, j, jobs), pg_temp.sid(tag, 't', n), pg_temp.tid(tag, 'j', n, j, jobs), pg_temp.sid(tag, 'u', n),
           'generated/' || pg_temp.sid(tag, 't', n) || '/' || pg_temp.tid(tag, 'i', n, j, jobs) || '.png', 512, 512, 300000,
           j, pg_temp.at(jobs, j, n) + interval '5 s',
           CASE WHEN expired THEN now() - interval '1 day'
                WHEN j % 2 = 0 THEN pg_temp.at(jobs, j, n) + interval '30 days'
                ELSE now() + interval '30 days' END,
           CASE WHEN NOT expired AND j % 2 = 0 THEN pg_temp.at(jobs, j, n) + interval '30 days' END
      FROM generate_series(1, teams) n, generate_series(1, jobs) j;
    t := pg_temp.step(t, 'images');
  END IF;
  IF queued > 0 THEN
    INSERT INTO jobs (id, team_id, user_id, type, params, reference_model_id, provider, estimated_credits, created_at)
    SELECT pg_temp.v7(pg_temp.sid(tag, 'q', n, q), clock_timestamp()), pg_temp.sid(tag, 't', n),
           pg_temp.sid(tag, 'u', n), 'image_generation', params, 'business-headshot', 'procedural', 0, clock_timestamp()
      FROM generate_series(1, teams) n, generate_series(1, queued) q;
    t := pg_temp.step(t, 'queued jobs');
  END IF;
END $$;
