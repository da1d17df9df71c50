"""``/api/v1/jobs``: listing with filters, detail with credits and logs, the event stream."""

from __future__ import annotations

import json

from tests.builders import auth, generate_body, make_team


async def test_list_filters_and_pagination(api, db) -> None:
    team, other = await make_team(db, plan="pro", credits="100"), await make_team(db, plan="pro", credits="100")
    ids = []
    for model in ("business-headshot", "fitness-yoga", "business-headshot"):
        ids.append((await api.post("/api/v1/generate", json=generate_body(referenceModelId=model), headers=auth(team))).json()["job"]["id"])
    await api.post("/api/v1/generate", json=generate_body(), headers=auth(other))
    await api.delete(f"/api/v1/jobs/{ids[0]}", headers=auth(team))

    everything = (await api.get("/api/v1/jobs", headers=auth(team))).json()
    assert [j["id"] for j in everything["items"]] == ids[::-1]
    queued = (await api.get("/api/v1/jobs?status=queued", headers=auth(team))).json()["items"]
    assert {j["id"] for j in queued} == set(ids[1:])
    by_model = (await api.get("/api/v1/jobs?modelId=fitness-yoga", headers=auth(team))).json()["items"]
    assert [j["id"] for j in by_model] == [ids[1]]
    assert (await api.get("/api/v1/jobs?type=model_creation", headers=auth(team))).json()["items"] == []
    page1 = (await api.get("/api/v1/jobs?limit=2", headers=auth(team))).json()
    page2 = (await api.get(f"/api/v1/jobs?limit=2&cursor={page1['nextCursor']}", headers=auth(team))).json()
    assert [j["id"] for j in page1["items"] + page2["items"]] == ids[::-1] and page2["nextCursor"] is None
    created = everything["items"][0]["createdAt"]
    later = (await api.get("/api/v1/jobs", params={"createdAfter": created}, headers=auth(team))).json()["items"]
    assert [j["id"] for j in later] == [ids[2]]
    assert (await api.get("/api/v1/jobs?status=bogus", headers=auth(team))).status_code == 422


async def test_job_detail_has_credit_transactions_and_logs(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    job = (await api_with_worker.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(team))).json()["job"]
    detail = (await api_with_worker.get(f"/api/v1/jobs/{job['id']}", headers=auth(team))).json()
    assert [t["type"] for t in detail["creditTransactions"]] == ["reserve", "capture"]
    assert detail["creditTransactions"][1]["amount"] == 4.8
    assert any("generating 1 image" in line["message"] for line in detail["logs"])
    assert detail["job"]["progress"] == 100


async def test_event_stream_reports_status_until_done(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    job = (await api_with_worker.post("/api/v1/generate", json=generate_body(numImages=2), headers=auth(team))).json()["job"]
    events = []
    async with api_with_worker.stream("GET", f"/api/v1/jobs/{job['id']}/events", headers=auth(team)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "done":
                    break
    statuses = [data["status"] for name, data in events if name == "status"]
    assert statuses[-1] == "succeeded" and events[-1] == ("done", {"status": "succeeded", "progress": 100})
    assert any(name == "log" for name, _ in events)
    other = await make_team(db)
    assert (await api_with_worker.get(f"/api/v1/jobs/{job['id']}/events", headers=auth(other))).status_code == 404


async def test_an_event_stream_ends_after_its_longest_time_without_done(api, settings, db) -> None:
    settings.event_stream_max_seconds = 0.3  # no worker: the job stays queued
    team = await make_team(db, plan="pro", credits="100")
    job = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]
    response = await api.get(f"/api/v1/jobs/{job['id']}/events", headers=auth(team), timeout=30)
    assert response.status_code == 200
    assert "event: status" in response.text and '"status": "queued"' in response.text
    assert "event: done" not in response.text


async def test_generation_history_lists_generations_with_their_credits(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    for prompt in ("a", "b"):
        await api_with_worker.post("/api/v1/generate", json=generate_body(prompt=prompt, waitForResult=True), headers=auth(team))
    items = (await api_with_worker.get("/api/v1/generate/history", headers=auth(team))).json()["items"]
    assert [(j["params"]["prompt"], j["chargedCredits"]) for j in items] == [("b", 4.8), ("a", 4.8)]
