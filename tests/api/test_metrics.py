"""``GET /metrics``: Prometheus text that says what happened, a token when one is set, several
processes adding up; JSON log lines that carry the request id."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from pixelmint.kit.logging import configure_logging
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import wait_for_http

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client, headers: dict[str, str] | None = None) -> Samples:  # type: ignore[no-untyped-def]
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_a_generation_shows_in_the_metrics(api_with_worker, db) -> None:
    team = await make_team(db, plan="basic")
    before = await scrape(api_with_worker)
    response = await api_with_worker.post(
        "/api/v1/generate", json=generate_body(numImages=2, waitForResult=True), headers=auth(team)
    )
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["status"] == "succeeded"
    await api_with_worker.get(f"/api/v1/jobs/{job['id']}", headers=auth(team))
    after = await scrape(api_with_worker)

    kind = {"type": "image_generation", "provider": "procedural"}
    assert delta(before, after, "pixelmint_jobs_submitted_total", **kind) == 1
    assert delta(before, after, "pixelmint_jobs_finished_total", state="succeeded", **kind) == 1
    assert delta(before, after, "pixelmint_jobs_finished_total", state="failed", **kind) == 0
    assert delta(before, after, "pixelmint_job_run_seconds_count", **kind) == 1
    assert delta(before, after, "pixelmint_job_queue_wait_seconds_count", type="image_generation") == 1

    operation = {"operation": "image_generation"}
    # Prometheus counters are floats: earlier tests in this process leave totals that a difference rounds.
    assert delta(before, after, "pixelmint_credits_reserved_total", **operation) == pytest.approx(job["estimatedCredits"])
    assert delta(before, after, "pixelmint_credits_captured_total", **operation) == pytest.approx(job["chargedCredits"])
    assert job["chargedCredits"] > 0
    assert delta(before, after, "pixelmint_credits_released_total", **operation) == 0

    # Counted under the route's template, not the raw path; the scrape before counts itself.
    assert delta(before, after, "pixelmint_http_requests_total", method="POST", route="/api/v1/generate",
                 status="200") == 1
    assert delta(before, after, "pixelmint_http_requests_total", method="GET", route="/api/v1/jobs/{job_id}",
                 status="200") == 1
    assert delta(before, after, "pixelmint_http_request_duration_seconds_count", method="POST",
                 route="/api/v1/generate") == 1
    assert not [key for key in after if job["id"] in str(key)]
    assert value(after, "pixelmint_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    await assert_ledger_ok(db)


async def test_unknown_paths_and_failures_are_counted_by_template(api, db) -> None:
    before = await scrape(api)
    assert (await api.get("/api/v1/no/such/thing")).status_code == 404
    assert (await api.get("/api/v1/jobs/not-a-uuid", headers={"Authorization": "Bearer nope"})).status_code in (401, 422)
    after = await scrape(api)
    assert delta(before, after, "pixelmint_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not [key for key in after if "not-a-uuid" in str(key) or "no/such" in str(key)]


async def test_queue_depth_per_priority_is_read_at_scrape_time(api, db) -> None:
    basic = await make_team(db, plan="basic")
    pro = await make_team(db, plan="pro")
    for team, count in ((basic, 2), (pro, 1)):
        for _ in range(count):
            response = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
            assert response.status_code == 202, response.text
    samples = await scrape(api)
    assert value(samples, "pixelmint_queue_depth", priority="10") == 2  # basic
    assert value(samples, "pixelmint_queue_depth", priority="20") == 1  # pro
    assert ("pixelmint_queue_depth", frozenset({("priority", "0")})) in samples  # free: none queued, still shown
    assert value(samples, "pixelmint_queue_oldest_ready_age_seconds", priority="10") > 0
    assert value(samples, "pixelmint_queue_oldest_ready_age_seconds", priority="0") == 0

    # A canceled job leaves the queue and counts as finished; its hold is released.
    job_id = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(pro))).json()["job"]["id"]
    before = await scrape(api)
    assert (await api.delete(f"/api/v1/jobs/{job_id}", headers=auth(pro))).status_code == 200
    after = await scrape(api)
    assert value(after, "pixelmint_queue_depth", priority="20") == 1
    assert delta(before, after, "pixelmint_jobs_finished_total", type="image_generation", state="canceled",
                 provider="procedural") == 1
    assert delta(before, after, "pixelmint_credits_released_total", operation="image_generation") > 0


async def test_the_token_is_required_when_set(api, settings) -> None:
    settings.metrics_token = SecretStr("scrape-secret")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2NyYXBlLXNlY3JldA=="}):
            response = await api.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"] == "invalid_metrics_token"
            assert response.headers["www-authenticate"] == "Bearer"
        await scrape(api, headers={"Authorization": "Bearer scrape-secret"})
    finally:
        settings.metrics_token = None
    await scrape(api)  # open while unset


_COUNT_IN_A_PROCESS = """
import sys
from pixelmint.kit import metrics
metrics.webhook_deliveries.labels(outcome="succeeded").inc(int(sys.argv[1]))
metrics.jobs_submitted.labels(type="image_generation", provider="multi").inc()
"""


async def test_processes_add_up_in_multiprocess_mode(api, tmp_path: Path, monkeypatch) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for count in ("2", "3"):
        subprocess.run([sys.executable, "-c", _COUNT_IN_A_PROCESS, count], env=env, check=True, timeout=60)
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per process

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    samples = await scrape(api)
    assert value(samples, "pixelmint_webhook_deliveries_total", outcome="succeeded") == 5
    assert value(samples, "pixelmint_jobs_submitted_total", type="image_generation", provider="multi") == 2
    assert value(samples, "pixelmint_queue_depth", priority="10") == 0  # the database's gauges are there too


async def test_json_log_lines_carry_the_request_id(api) -> None:
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)

    async def noisy() -> dict[str, str]:
        structlog.get_logger("pixelmint.test").info("structlog_line", detail=1)
        logging.getLogger("some.library").warning("stdlib line %s", 2)
        return {"ok": "yes"}

    api.app.add_api_route("/test-logging", noisy)
    try:
        response = await api.get("/test-logging", headers={"X-Request-ID": "req-4242"})
        assert response.status_code == 200 and response.headers["x-request-id"] == "req-4242"
    finally:
        configure_logging("info")  # as conftest.py does
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["structlog_line"]["request_id"] == "req-4242" and by_event["structlog_line"]["detail"] == 1
    assert by_event["stdlib line 2"]["request_id"] == "req-4242"
    assert by_event["stdlib line 2"]["level"] == "warning" and by_event["stdlib line 2"]["logger"] == "some.library"
    assert all("timestamp" in line for line in lines)


@pytest.mark.slow
def test_serve_with_several_processes_adds_their_counts_up(database_url: str, tmp_path: Path) -> None:
    """``pixelmint serve --processes 2`` gives its processes a shared PROMETHEUS_MULTIPROC_DIR:
    whichever process answers /metrics counts the requests every process served."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(tmp_path / "data"),
           "PIXELMINT_LOG_LEVEL": "warning"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "pixelmint.cli", "serve", "--port", str(port), "--no-worker",
                                "--processes", "2"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", process, timeout=90)

        def healthz_count() -> float:
            with httpx.Client() as client:  # a new connection each time: either process may take it
                text = client.get(f"{base}/metrics", headers={"Connection": "close"}).text
            samples = {(s.name, frozenset(s.labels.items())): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            return value(samples, "pixelmint_http_requests_total", method="GET", route="/healthz", status="200")

        # Counted from here: a readiness try that timed out while a process was starting may still be
        # served, and counted, late.
        before = healthz_count()
        for _ in range(40):
            with httpx.Client() as client:
                assert client.get(f"{base}/healthz", headers={"Connection": "close"}).status_code == 200
        for _ in range(4):  # whichever process answers counts what both served
            assert healthz_count() == before + 40
    finally:
        process.terminate()
        process.wait(timeout=30)
