"""The core workflow end to end: train a custom model from a reference model, refine it twice,
generate from each version, cancel a queued job, with the ledger checked at every step."""

from __future__ import annotations

import io
import uuid

from PIL import Image, ImageStat

from pixelmint.jobs.events import JobEvents
from tests.builders import assert_ledger_ok, auth, make_team, solid_png
from tests.helpers import wait_for_state

RED = [(200, 40, 30), (180, 30, 50), (220, 70, 40), (160, 20, 20), (210, 50, 60), (190, 60, 30)]
BLUE = [(30, 60, 200), (20, 40, 170), (50, 90, 220), (40, 50, 160), (25, 70, 190), (35, 45, 210)]


def training_files(colors) -> list[tuple[str, tuple[str, bytes, str]]]:  # type: ignore[no-untyped-def]
    return [("trainingImages", (f"img{i}.png", solid_png(c, stripes=i % 2 == 0), "image/png")) for i, c in enumerate(colors)]


async def wait_job(db, database_url, job_id: str) -> str:  # type: ignore[no-untyped-def]
    hub = JobEvents(database_url)
    await hub.start()
    try:
        return await wait_for_state(db, hub, uuid.UUID(job_id), {"succeeded", "failed", "canceled"})
    finally:
        await hub.stop()


async def mean_rgb(client, job: dict) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
    png = (await client.get(job["images"][0]["url"])).content
    return tuple(ImageStat.Stat(Image.open(io.BytesIO(png)).convert("RGB")).mean)


async def balance(client, team) -> dict:  # type: ignore[no-untyped-def]
    return (await client.get("/api/v1/credits/balance", headers=auth(team))).json()


async def test_train_refine_twice_generate_from_each_version(api_with_worker, db, database_url) -> None:
    client = api_with_worker
    team = await make_team(db, plan="pro", credits="1000")
    form = {"referenceModelId": "fashion-editorial", "name": "Red campaign", "triggerWord": "ohwx", "trainingSteps": "500"}
    created = await client.post("/api/v1/models", data=form, files=training_files(RED), headers=auth(team))
    assert created.status_code == 202, created.text
    model, job = created.json()["model"], created.json()["job"]
    # 50 × 1.2 (complexity) × 1.5 + 0.5 × (6 − 5) = 90.50
    assert model["status"] == "pending" and job["type"] == "model_creation" and job["estimatedCredits"] == 90.5
    assert (await balance(client, team))["reservedCredits"] in (90.5, 0.0)  # reserved until it finishes
    await assert_ledger_ok(db)

    assert await wait_job(db, database_url, job["id"]) == "succeeded"
    model = (await client.get(f"/api/v1/models/{model['id']}", headers=auth(team))).json()
    assert model["status"] == "ready" and model["version"] == 1 and model["trainingImageCount"] == 6
    assert model["artifact"]["style"]["palette"] and model["versions"][0]["cost"] == 90.5
    assert (await balance(client, team))["availableCredits"] == 909.5
    await assert_ledger_ok(db)

    costs = []
    for prompt in ("warmer light", "more grain, tighter crop"):
        refined = await client.post(f"/api/v1/models/{model['id']}/refine", json={"prompt": prompt}, headers=auth(team))
        assert refined.status_code == 202, refined.text
        refine_job = refined.json()["job"]
        costs.append(refine_job["estimatedCredits"])
        assert await wait_job(db, database_url, refine_job["id"]) == "succeeded"
        await assert_ledger_ok(db)
    # 30 × 1.2^iteration × 1.2 × 1.1 with iteration = the version refined: 1 then 2
    assert costs == [47.52, 57.02]
    model = (await client.get(f"/api/v1/models/{model['id']}", headers=auth(team))).json()
    assert model["version"] == 3
    assert [(v["version"], v["kind"], v["prompt"], v["iteration"]) for v in model["versions"]] == [
        (1, "creation", None, 0), (2, "refinement", "warmer light", 1), (3, "refinement", "more grain, tighter crop", 2)
    ]
    assert (await balance(client, team))["availableCredits"] == round(909.5 - 47.52 - 57.02, 2)

    renders = []
    for version in (1, 2, 3):
        body = {"customModelId": model["id"], "customModelVersion": version, "prompt": "a coat on a hanger",
                "resolution": "256x256", "seed": 5, "waitForResult": True}
        reply = await client.post("/api/v1/generate", json=body, headers=auth(team))
        assert reply.status_code == 200, reply.text
        generated = reply.json()["job"]
        assert generated["customModelVersion"] == version and generated["status"] == "succeeded"
        renders.append((await client.get(generated["images"][0]["url"])).content)
        r, g, b = await mean_rgb(client, generated)
        assert r > g + 20 and r > b + 20, (version, r, g, b)  # follows its red training images
    assert len(set(renders)) == 3  # every version renders differently
    await assert_ledger_ok(db)

    blue = await client.post("/api/v1/models", data={**form, "name": "Blue"}, files=training_files(BLUE), headers=auth(team))
    assert await wait_job(db, database_url, blue.json()["job"]["id"]) == "succeeded"
    reply = await client.post("/api/v1/generate", headers=auth(team), json={
        "customModelId": blue.json()["model"]["id"], "prompt": "a coat on a hanger", "resolution": "256x256",
        "seed": 5, "waitForResult": True})
    r, g, b = await mean_rgb(client, reply.json()["job"])
    assert b > r + 20, (r, g, b)
    await assert_ledger_ok(db)


async def test_cancel_queued_training_releases_and_fails_the_model(api, db) -> None:
    team = await make_team(db, plan="basic", credits="200")
    created = (await api.post("/api/v1/models", data={"referenceModelId": "business-headshot", "name": "m"},
                              files=training_files(RED[:3]), headers=auth(team))).json()
    assert (await balance(api, team))["reservedCredits"] == 60.0  # 50 × 0.8 × 1.5
    canceled = await api.delete(f"/api/v1/jobs/{created['job']['id']}", headers=auth(team))
    assert canceled.status_code == 200 and canceled.json()["job"]["status"] == "canceled"
    assert (await balance(api, team))["availableCredits"] == 200.0
    model = (await api.get(f"/api/v1/models/{created['model']['id']}", headers=auth(team))).json()
    assert model["status"] == "failed"
    detail = (await api.get(f"/api/v1/jobs/{created['job']['id']}", headers=auth(team))).json()
    assert [t["type"] for t in detail["creditTransactions"]] == ["reserve", "release"]
    await assert_ledger_ok(db)


async def test_models_crud_and_generating_from_unready_or_deleted_models(api_with_worker, db, database_url) -> None:
    client = api_with_worker
    team, other = await make_team(db, plan="pro", credits="500"), await make_team(db, plan="pro")
    created = (await client.post("/api/v1/models", headers=auth(team), json={
        "referenceModelId": "fitness-yoga", "name": "Yoga", "trainingImageUrls": []})).json()
    assert created["error"] == "invalid_training_images"

    created = (await client.post("/api/v1/models", data={"referenceModelId": "fitness-yoga", "name": "Yoga"},
                                 files=training_files(BLUE[:2]), headers=auth(team))).json()
    model_id = created["model"]["id"]
    assert await wait_job(db, database_url, created["job"]["id"]) == "succeeded"
    patched = await client.patch(f"/api/v1/models/{model_id}", json={"name": "Calm yoga", "description": "v1"},
                                 headers=auth(team))
    assert patched.json()["name"] == "Calm yoga" and patched.json()["description"] == "v1"
    listed = (await client.get("/api/v1/models?status=ready", headers=auth(team))).json()["items"]
    assert [m["id"] for m in listed] == [model_id]
    assert (await client.get(f"/api/v1/models/{model_id}", headers=auth(other))).status_code == 404

    assert (await client.delete(f"/api/v1/models/{model_id}", headers=auth(team))).status_code == 204
    assert (await client.get(f"/api/v1/models/{model_id}", headers=auth(team))).status_code == 404
    reply = await client.post("/api/v1/generate", json={"customModelId": model_id, "prompt": "x"}, headers=auth(team))
    assert reply.status_code == 409 and reply.json()["error"] == "model_deleted"
    refine = await client.post(f"/api/v1/models/{model_id}/refine", json={"prompt": "x"}, headers=auth(team))
    assert refine.status_code == 404

    bad = await client.post("/api/v1/models", data={"referenceModelId": "fitness-yoga", "name": "x"},
                            files=[("trainingImages", ("a.png", b"not an image", "image/png"))], headers=auth(team))
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_training_images"
    await assert_ledger_ok(db)


async def test_generating_from_an_untrained_model_is_409(api, db) -> None:
    team = await make_team(db, plan="pro", credits="500")
    created = (await api.post("/api/v1/models", data={"referenceModelId": "fitness-yoga", "name": "y"},
                              files=training_files(RED[:1]), headers=auth(team))).json()
    reply = await api.post("/api/v1/generate", json={"customModelId": created["model"]["id"], "prompt": "x"},
                           headers=auth(team))
    assert reply.status_code == 409 and reply.json()["error"] == "model_not_ready"
    refine = await api.post(f"/api/v1/models/{created['model']['id']}/refine", json={"prompt": "x"}, headers=auth(team))
    assert refine.status_code == 409 and refine.json()["error"] == "model_not_ready"


async def test_training_images_by_url(api_with_worker, db, database_url, settings) -> None:
    """Images given as URLs are downloaded (here from a local HTTP server, which only an operator
    who allows private addresses may use)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    png = solid_png((10, 200, 10))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/missing.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        team = await make_team(db, plan="pro", credits="500")
        body = {"referenceModelId": "lifestyle-home", "name": "Green", "trainingImageUrls": [f"{base}/a.png", f"{base}/b.png"]}
        refused = await api_with_worker.post("/api/v1/models", json=body, headers=auth(team))
        assert refused.status_code == 422 and refused.json()["error"] == "training_image_url_not_allowed"
        settings.allow_private_image_urls = True
        created = await api_with_worker.post("/api/v1/models", json=body, headers=auth(team))
        assert created.status_code == 202, created.text
        assert created.json()["model"]["trainingImageCount"] == 2
        assert await wait_job(db, database_url, created.json()["job"]["id"]) == "succeeded"
        missing = await api_with_worker.post("/api/v1/models", headers=auth(team),
                                             json={**body, "trainingImageUrls": [f"{base}/missing.png"]})
        assert missing.status_code == 422 and missing.json()["error"] == "training_image_unreachable"
    finally:
        server.shutdown()
    await assert_ledger_ok(db)
