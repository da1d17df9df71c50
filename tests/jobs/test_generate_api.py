"""``/api/v1/generate`` end to end through the ASGI app, real PostgreSQL and the real worker."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image
from sqlalchemy import text

from tests.builders import assert_ledger_ok, auth, generate_body, make_team


async def fetch_png(client, url: str) -> Image.Image:  # type: ignore[no-untyped-def]
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


async def test_generate_waits_and_returns_a_real_png_at_the_requested_size(api_with_worker, db) -> None:
    team = await make_team(db, plan="basic")
    body = generate_body(resolution="640x384", seed=7, numImages=2, waitForResult=True)
    response = await api_with_worker.post("/api/v1/generate", json=body, headers=auth(team))
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["status"] == "succeeded"
    assert job["estimatedCredits"] == job["chargedCredits"] == 9.6  # 5 × 1.0 × 1.0 × 0.8 × 1.2 × 2
    assert [i["seed"] for i in job["images"]] == [7, 8]
    # time-ordered ids (kit/ids.py) for the rows that grow with use: job, reservation, images
    async with db.sessionmaker() as s:
        reservation_id = await s.scalar(text("SELECT reservation_id FROM jobs WHERE id = :id"), {"id": job["id"]})
    ids = [uuid.UUID(job["id"]), reservation_id, *(uuid.UUID(i["id"]) for i in job["images"])]
    assert [i.version for i in ids] == [7, 7, 7, 7]
    image = await fetch_png(api_with_worker, job["images"][0]["url"])
    assert image.size == (640, 384)
    recipe = json.loads(image.text["pixelmint"])
    assert recipe["prompt"] == "a lighthouse at dusk" and recipe["seed"] == 7
    assert "Seed: 7, Size: 640x384" in image.text["parameters"]
    await assert_ledger_ok(db)


async def test_images_are_deterministic_per_prompt_model_and_seed(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro")

    async def render(**overrides) -> bytes:  # type: ignore[no-untyped-def]
        body = generate_body(seed=123, waitForResult=True, **overrides)
        job = (await api_with_worker.post("/api/v1/generate", json=body, headers=auth(team))).json()["job"]
        return (await fetch_png(api_with_worker, job["images"][0]["url"])).convert("RGB").tobytes()

    first, again = await render(), await render()
    other_prompt = await render(prompt="a forest of glass trees")
    other_model = await render(referenceModelId="fitness-yoga")
    assert first == again
    for different in (other_prompt, other_model):
        changed = sum(a != b for a, b in zip(first, different, strict=True))
        assert changed > len(first) // 4  # visibly different, not a few pixels


async def test_async_generate_status_and_cancel_releases_the_whole_reservation(api, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    response = await api.post("/api/v1/generate", json=generate_body(numImages=2), headers=auth(team))
    assert response.status_code == 202
    job = response.json()["job"]
    assert job["status"] == "queued" and job["estimatedCredits"] == 9.6
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert (balance["availableCredits"], balance["reservedCredits"]) == (0.4, 9.6)

    status = await api.get(f"/api/v1/generate/{job['id']}", headers=auth(team))
    assert status.json()["job"]["status"] == "queued"
    alias = await api.get(f"/api/v1/generate/{job['id']}/status", headers=auth(team))
    assert alias.json()["job"]["id"] == job["id"]

    canceled = await api.delete(f"/api/v1/generate/{job['id']}", headers=auth(team))
    assert canceled.status_code == 200 and canceled.json()["job"]["status"] == "canceled"
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert (balance["availableCredits"], balance["reservedCredits"]) == (10.0, 0.0)
    history = (await api.get("/api/v1/credits/history", headers=auth(team))).json()["items"]
    assert [t["type"] for t in history] == ["release", "reserve", "grant"]
    await assert_ledger_ok(db)


async def test_insufficient_credits_is_402_and_creates_nothing(api, db) -> None:
    team = await make_team(db, plan="basic", credits="4.79")
    response = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
    assert response.status_code == 402
    assert response.json() == {
        "error": "insufficient_credits",
        "message": response.json()["message"],
        "requiredCredits": 4.8,
        "availableCredits": 4.79,
        "operation": "image_generation",
    }
    jobs = (await api.get("/api/v1/images", headers=auth(team))).json()["items"]
    assert jobs == []
    async with db.transaction() as s:
        from sqlalchemy import text

        assert await s.scalar(text("SELECT count(*) FROM jobs")) == 0
        assert await s.scalar(text("SELECT count(*) FROM credit_reservations")) == 0
    await assert_ledger_ok(db)


async def test_free_generations_count_down_then_the_fourth_is_charged(api, db) -> None:
    team = await make_team(db, plan="basic", credits="100", free_generations=3)
    seen = []
    for _ in range(4):
        reply = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()
        seen.append((reply["freeGenerationsRemaining"], reply["job"]["isFree"], reply["job"]["estimatedCredits"]))
    assert seen == [(2, True, 0.0), (1, True, 0.0), (0, True, 0.0), (0, False, 4.8)]
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["freeGenerationsRemaining"] == 0 and balance["reservedCredits"] == 4.8


async def test_free_plan_runs_only_free_generations(api, db) -> None:
    team = await make_team(db, plan="free", free_generations=1)
    assert (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).status_code == 202
    response = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
    assert response.status_code == 402
    assert response.json()["error"] == "insufficient_credits"


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"referenceModelId": "no-such-model"}, "model_not_found", None),
        ({"resolution": "big"}, "invalid_resolution", "resolution"),
        ({"resolution": "1000x10"}, "invalid_resolution", "resolution"),
        ({"resolution": "4096x4096"}, "invalid_resolution", "resolution"),
        ({"resolution": "1001x1000"}, "invalid_resolution", "resolution"),
        ({"prompt": "   "}, "invalid_prompt", "prompt"),
        ({"prompt": "x" * 2001}, "prompt_too_long", "prompt"),
        ({"numImages": 5}, "invalid_num_images", "numImages"),
        ({"numImages": 0}, "invalid_num_images", "numImages"),
        ({"seed": -1}, "invalid_seed", "seed"),
        ({"quality": "ultra"}, "invalid_request", "quality"),
        ({"numImages": "many"}, "invalid_request", "numImages"),
        ({"referenceModelId": None}, "model_required", "referenceModelId"),
        ({"customModelId": str(uuid.uuid4()), "referenceModelId": None}, "model_not_found", None),
    ],
)
async def test_bad_input_gets_a_stable_error_code_and_changes_nothing(api, db, overrides, code, field) -> None:
    team = await make_team(db, plan="basic", credits="50")
    response = await api.post("/api/v1/generate", json=generate_body(**overrides), headers=auth(team))
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"] == code and body["message"]
    if field:
        assert body["field"] == field
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["availableCredits"] == 50.0 and balance["reservedCredits"] == 0.0


async def test_malformed_json_is_a_422_not_a_500(api, db) -> None:
    team = await make_team(db)
    response = await api.post(
        "/api/v1/generate", content=b"{not json", headers={**auth(team), "content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


async def test_missing_or_wrong_key_is_401(api) -> None:
    assert (await api.get("/api/v1/credits/balance")).json()["error"] == "missing_api_key"
    wrong = await api.get("/api/v1/credits/balance", headers={"Authorization": "Bearer pm_nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_api_key"
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/openapi.json")).json()["info"]["title"] == "Pixelmint"


async def test_another_teams_job_and_image_are_404(api_with_worker, db) -> None:
    owner, other = await make_team(db, plan="pro"), await make_team(db, plan="pro")
    job = (await api_with_worker.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(owner))).json()["job"]
    image_id = job["images"][0]["id"]
    for method, path in [
        ("GET", f"/api/v1/generate/{job['id']}"),
        ("DELETE", f"/api/v1/generate/{job['id']}"),
        ("GET", f"/api/v1/images/{image_id}"),
        ("DELETE", f"/api/v1/images/{image_id}"),
    ]:
        response = await api_with_worker.request(method, path, headers=auth(other))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] in ("job_not_found", "image_not_found")
    assert (await api_with_worker.get(f"/api/v1/images/{image_id}", headers=auth(owner))).status_code == 200


async def test_finished_job_cannot_be_canceled(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro")
    job = (await api_with_worker.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(team))).json()["job"]
    response = await api_with_worker.delete(f"/api/v1/generate/{job['id']}", headers=auth(team))
    assert response.status_code == 409 and response.json()["error"] == "job_finished"


async def test_images_list_get_delete_and_signed_urls(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro")
    for prompt in ("one", "two", "three"):
        await api_with_worker.post("/api/v1/generate", json=generate_body(prompt=prompt, waitForResult=True), headers=auth(team))
    first = (await api_with_worker.get("/api/v1/images?limit=2", headers=auth(team))).json()
    second = (await api_with_worker.get(f"/api/v1/images?limit=2&cursor={first['nextCursor']}", headers=auth(team))).json()
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(set(ids)) == 3 and second["nextCursor"] is None
    assert [i["params"]["prompt"] for i in first["items"] + second["items"]] == ["three", "two", "one"]

    url = first["items"][0]["url"]
    assert (await api_with_worker.get(url.replace("signature=", "signature=0"))).status_code == 403
    assert (await api_with_worker.get(url)).status_code == 200

    assert (await api_with_worker.delete(f"/api/v1/images/{ids[0]}", headers=auth(team))).status_code == 204
    assert (await api_with_worker.get(f"/api/v1/images/{ids[0]}", headers=auth(team))).status_code == 404
    assert (await api_with_worker.get(url)).status_code == 404  # the object is gone too
