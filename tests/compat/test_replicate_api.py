"""The official ``replicate`` SDK, unmodified, against a live Pixelmint (``/replicate``): runs by
model name and by version, create + wait, ``Prefer: wait`` running out into polling, cancel,
pagination, a training whose new version runs, and an error of each kind; the credits move as
through the native API, and the ledger adds up after each step."""

from __future__ import annotations

import asyncio
import threading
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.pagination import paginate
from sqlalchemy import text

from pixelmint.accounts.service import CreatedTeam
from pixelmint.api.app import create_app
from pixelmint.compat import names
from pixelmint.compat.replicate.service import prediction_event_for
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.tables import Job
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.storage.schemas import UrlSigner
from tests.builders import assert_ledger_ok, auth, make_team
from tests.helpers import NOOP_PARAMS, wait_for_state
from tests.providers.localserver import LocalServer

PNG = b"\x89PNG\r\n\x1a\n"
MODEL = "pixelmint/business-headshot"
INPUT = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_private_image_urls = True  # training images come from this very server (127.0.0.1)
    return settings


def sdk(base: str, team: CreatedTeam, **kwargs: Any) -> replicate.Client:
    return replicate.Client(api_token=team.api_key, base_url=f"{base}/replicate", **kwargs)


def native(base: str, team: CreatedTeam) -> httpx.Client:
    return httpx.Client(base_url=base, headers=auth(team), timeout=30)


def balance(base: str, team: CreatedTeam) -> dict[str, Any]:
    with native(base, team) as client:
        return client.get("/api/v1/credits/balance").json()


def estimate(base: str, team: CreatedTeam, **body: Any) -> Decimal:
    with native(base, team) as client:
        answer = client.post("/api/v1/credits/estimate", json=body)
        assert answer.status_code == 200, answer.text
        return Decimal(str(answer.json()["estimatedCredits"]))


def assert_pngs(urls: list[str], count: int) -> None:
    assert isinstance(urls, list) and len(urls) == count, urls
    for url in urls:
        assert isinstance(url, str) and url.startswith("http://127.0.0.1:")  # http: plain strings, not FileOutput
        image = httpx.get(url)
        assert image.status_code == 200 and image.content.startswith(PNG)


async def wait_job(database_url: str, db: Database, job_id: str, states: set[str]) -> str:
    hub = JobEvents(database_url)
    await hub.start()
    try:
        return await wait_for_state(db, hub, uuid.UUID(job_id), states)
    finally:
        await hub.stop()


async def test_run_by_model_name_and_by_version_returns_image_urls(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team)

    urls = await asyncio.to_thread(client.run, MODEL, input={**INPUT, "num_outputs": 2})
    assert_pngs(urls, 2)
    cost = estimate(live_service, team, operation="image_generation", referenceModelId="business-headshot",
                    resolution="256x256", numImages=2)
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("100") - cost
    await assert_ledger_ok(db)

    model = await asyncio.to_thread(client.models.get, MODEL)
    assert (model.owner, model.name, model.visibility) == ("pixelmint", "business-headshot", "public")
    [version] = (await asyncio.to_thread(model.versions.list)).results
    assert version == model.latest_version and len(version.id) == 64
    assert version.openapi_schema["components"]["schemas"]["Output"]["type"] == "array"
    assert "prompt" in version.openapi_schema["components"]["schemas"]["Input"]["properties"]
    # run("owner/name:<version>") sends the version id alone, then reads the version.
    urls = await asyncio.to_thread(client.run, f"{MODEL}:{version.id}", input={**INPUT, "seed": 7})
    assert_pngs(urls, 1)
    # The short version number works where the model is named with it, in the body...
    prediction = await asyncio.to_thread(client.predictions.create, version=f"{MODEL}:1", input=INPUT)
    await asyncio.to_thread(prediction.wait)
    assert_pngs(prediction.output, 1)
    # ...but not alone, which is all run("owner/name:1") sends: "1" names no model.
    with pytest.raises(ReplicateError) as refused:
        await asyncio.to_thread(client.run, f"{MODEL}:1", input=INPUT)
    assert refused.value.status == 422 and refused.value.title == "Invalid version"
    assert version.id in refused.value.detail or "version id" in refused.value.detail
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("100") - 2 * cost  # four images in all
    await assert_ledger_ok(db)


async def test_create_and_wait_with_version_id(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100", free_generations=1)
    client = sdk(live_service, team)
    version = names.version_id(names.catalog_key("business-headshot"), 1)

    prediction = await asyncio.to_thread(client.predictions.create, version=version, input=INPUT)
    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.model == MODEL and prediction.version == version
    assert prediction.urls["get"] == f"{live_service}/replicate/v1/predictions/{prediction.id}"
    await asyncio.to_thread(prediction.wait)
    assert prediction.status == "succeeded" and prediction.error is None
    assert_pngs(prediction.output, 1)
    assert prediction.input["prompt"] == INPUT["prompt"] and isinstance(prediction.input["seed"], int)
    assert prediction.metrics["predict_time"] >= 0 and prediction.completed_at.endswith("Z")
    # A free generation: nothing charged, as through POST /api/v1/generate.
    assert balance(live_service, team)["availableCredits"] == 100
    with native(live_service, team) as client_native:
        job = client_native.get(f"/api/v1/generate/{prediction.id}").json()["job"]
    assert job["isFree"] is True and job["status"] == "succeeded"
    await assert_ledger_ok(db)


# --------------------------------------------------------------------------------------------
# Prefer: wait running out, polling, cancel


async def occupy_slot(db: Database, team: CreatedTeam) -> uuid.UUID:
    """A job of the team that another worker is running (its lease far off): a basic plan's one
    slot is taken, so the team's next job stays queued."""
    async with db.transaction() as session:
        return await session.scalar(text("""
            INSERT INTO jobs (team_id, type, params, provider, estimated_credits, reference_model_id, state, attempt,
                              locked_by, lease_expires_at, started_at)
            VALUES (:t, 'image_generation', CAST(:p AS jsonb), 'procedural', 0, 'business-headshot', 'running', 1,
                    'elsewhere', now() + interval '1 hour', now())
            RETURNING id
        """), {"t": team.team_id, "p": NOOP_PARAMS})


async def free_slot(db: Database, job_id: uuid.UUID) -> None:
    async with db.transaction() as session:
        await session.execute(text("""
            UPDATE jobs SET state = 'canceled', finished_at = now(), error_code = 'canceled', locked_by = NULL
             WHERE id = :id
        """), {"id": job_id})
        await session.execute(text("SELECT pg_notify('pixelmint_jobs', '')"))  # wake the workers


class Recorder(httpx.HTTPTransport):
    """Watches what the SDK sends and gets (it is passed to the SDK as httpx's transport)."""

    def __init__(self) -> None:
        super().__init__()
        self.created = threading.Event()
        self.created_status: str | None = None
        self.polls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/predictions"):
            response.read()
            self.created_status = response.json().get("status")
            self.created.set()
        elif request.method == "GET" and "/v1/predictions/" in request.url.path:
            self.polls += 1
        return response


async def test_prefer_wait_runs_out_into_starting_then_polling_and_cancel_releases(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    blocker = await occupy_slot(db, team)
    client = sdk(live_service, team)
    cost = estimate(live_service, team, operation="image_generation", referenceModelId="business-headshot",
                    resolution="256x256")

    # Prefer: wait=1 runs out while the job is queued: "starting", the one status run() polls after.
    prediction = await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT, wait=1)
    assert prediction.status == "starting" and prediction.output is None
    assert balance(live_service, team)["reservedCredits"] == float(cost)
    # Cancel: at once for a queued job, with its reservation released.
    await asyncio.to_thread(prediction.cancel)
    assert prediction.status == "canceled" and prediction.completed_at
    again = await asyncio.to_thread(client.predictions.cancel, prediction.id)  # finished: answered as it is
    assert again.status == "canceled"
    assert balance(live_service, team)["availableCredits"] == 100 and balance(live_service, team)["reservedCredits"] == 0
    await assert_ledger_ok(db)

    # run() with the same wait: "starting", then it polls until the slot frees and the job runs.
    recorder = Recorder()
    polling = sdk(live_service, team, transport=recorder)
    run = asyncio.ensure_future(asyncio.to_thread(polling.run, MODEL, input=INPUT, wait=1))
    assert await asyncio.to_thread(recorder.created.wait, 30)
    assert recorder.created_status == "starting"
    await free_slot(db, blocker)
    assert_pngs(await run, 1)
    assert recorder.polls >= 1
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("100") - cost
    await assert_ledger_ok(db)


# --------------------------------------------------------------------------------------------
# Lists


async def test_predictions_and_models_paginate_with_absolute_next(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team)
    created = [(await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT)).id for _ in range(3)]

    first = f"{live_service}/replicate/v1/predictions?limit=2"
    pages = await asyncio.to_thread(
        lambda: list(paginate(lambda cursor: client.predictions.list(first if cursor is ... else cursor))))
    assert [len(page) for page in pages] == [2, 1]
    assert pages[0].next.startswith(f"{live_service}/replicate/v1/predictions?cursor=")
    assert [p.id for page in pages for p in page] == created[::-1]  # newest first
    whole = await asyncio.to_thread(client.predictions.list)
    assert whole.next is None and [p.id for p in whole] == created[::-1]
    assert all(p.model == MODEL for p in whole)

    first = f"{live_service}/replicate/v1/models?limit=7"
    pages = await asyncio.to_thread(
        lambda: list(paginate(lambda cursor: client.models.list(first if cursor is ... else cursor))))
    listed = [m.id for page in pages for m in page]
    assert len(pages) > 2 and len(listed) == len(set(listed)) and "pixelmint/fashion-editorial" in listed
    assert all(page.next is None or page.next.startswith(f"{live_service}/replicate/v1/models?cursor=")
               for page in pages)
    assert [m.id for m in await asyncio.to_thread(client.models.list)] == listed
    for prediction in created:
        await wait_job_done(live_service, client, prediction)
    await assert_ledger_ok(db)


async def wait_job_done(base: str, client: replicate.Client, prediction_id: str) -> None:
    prediction = await asyncio.to_thread(client.predictions.get, prediction_id)
    await asyncio.to_thread(prediction.wait)


# --------------------------------------------------------------------------------------------
# Trainings


async def test_training_makes_a_version_that_runs_and_refining_makes_the_next(live_service, db, database_url) -> None:
    team = await make_team(db, plan="pro", credits="1000")
    client = sdk(live_service, team)
    images = await asyncio.to_thread(client.run, MODEL, input={**INPUT, "num_outputs": 3})  # training data
    spent = 3 * estimate(live_service, team, operation="image_generation", referenceModelId="business-headshot",
                         resolution="256x256")
    base = (await asyncio.to_thread(client.models.get, "pixelmint/fashion-editorial")).latest_version
    cost = estimate(live_service, team, operation="model_creation", referenceModelId="fashion-editorial",
                    trainingImages=3)

    training = await asyncio.to_thread(
        client.trainings.create, model="pixelmint/fashion-editorial", version=base.id,
        input={"input_images": images, "trigger_word": "ohwx", "steps": 500},
        destination=f"{team.team_id}/autumn-campaign")
    assert training.status in ("starting", "processing") and training.model == "pixelmint/fashion-editorial"
    assert training.version == base.id and training.input["trigger_word"] == "ohwx"
    assert await wait_job(database_url, db, training.id, {"succeeded", "failed", "canceled"}) == "succeeded"
    await asyncio.to_thread(training.reload)
    assert training.status == "succeeded", training.error
    new_version = training.output["version"]
    destination, version_id = new_version.split(":")
    assert destination == training.destination and destination.startswith(f"{team.team_id}/")
    spent += cost
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("1000") - spent
    await assert_ledger_ok(db)

    # The new model and its version, as the SDK reads them; run() takes the version as it is.
    model = await asyncio.to_thread(client.models.get, destination)
    assert model.visibility == "private" and model.description.startswith("autumn-campaign")
    assert model.latest_version.id == version_id
    assert destination in [m.id for m in await asyncio.to_thread(client.models.list)]
    assert_pngs(await asyncio.to_thread(client.run, new_version, input=INPUT), 1)
    custom_model_id = destination.split("/")[1]
    spent += estimate(live_service, team, operation="image_generation", customModelId=custom_model_id,
                      resolution="256x256")

    # Training into the model itself refines it: its next version.
    cost = estimate(live_service, team, operation="model_refinement", customModelId=custom_model_id)
    refine = await asyncio.to_thread(client.trainings.create, model=destination, version=version_id,
                                     input={"prompt": "warmer light"}, destination=destination)
    assert await wait_job(database_url, db, refine.id, {"succeeded", "failed", "canceled"}) == "succeeded"
    refined = await asyncio.to_thread(client.trainings.get, refine.id)
    assert refined.status == "succeeded" and refined.output["version"] != new_version
    versions = (await asyncio.to_thread(model.versions.list)).results
    assert [v.id for v in versions] == [refined.output["version"].split(":")[1], version_id]
    listed = {m.id: m for m in await asyncio.to_thread(client.models.list)}  # the list shows the newest too
    assert listed[destination].latest_version.id == versions[0].id
    assert_pngs(await asyncio.to_thread(client.run, refined.output["version"], input=INPUT), 1)
    spent += cost + estimate(live_service, team, operation="image_generation", customModelId=custom_model_id,
                             resolution="256x256")
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("1000") - spent
    await assert_ledger_ok(db)

    # A training of the wrong kind is refused before anything is reserved.
    with pytest.raises(ReplicateError) as refused:
        await asyncio.to_thread(client.trainings.create, model=destination, version=version_id,
                                input={"prompt": "x"}, destination=f"{uuid.uuid4()}/elsewhere")
    assert refused.value.status == 422 and refused.value.title == "Invalid destination"
    # A queued training (the pro plan's three slots taken) cancels with its reservation released.
    for _ in range(3):
        await occupy_slot(db, team)
    queued = await asyncio.to_thread(client.trainings.create, model=destination, version=version_id,
                                     input={"prompt": "cooler light"}, destination=destination)
    assert queued.status == "starting" and balance(live_service, team)["reservedCredits"] > 0
    canceled = await asyncio.to_thread(client.trainings.cancel, queued.id)
    assert canceled.status == "canceled" and canceled.output is None
    assert balance(live_service, team)["reservedCredits"] == 0
    assert Decimal(str(balance(live_service, team)["availableCredits"])) == Decimal("1000") - spent
    await assert_ledger_ok(db)


# --------------------------------------------------------------------------------------------
# Errors: Replicate's problem details, one of each kind


def problem_of(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"] == "application/problem+json", answer.headers
    body = answer.json()
    assert body["status"] == answer.status_code and body["title"] and body["detail"]
    return body


async def test_errors_are_problem_details_the_sdk_reads(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="0")
    client = sdk(live_service, team)
    raw = httpx.Client(base_url=f"{live_service}/replicate", headers=auth(team))

    with pytest.raises(ReplicateError) as caught:  # 401
        await asyncio.to_thread(replicate.Client(api_token="pm_nope", base_url=f"{live_service}/replicate").models.list)
    assert caught.value.status == 401 and caught.value.detail
    assert problem_of(httpx.get(f"{live_service}/replicate/v1/predictions"))["code"] == "missing_api_key"

    with pytest.raises(ReplicateError) as caught:  # 402, with our fields; nothing reserved, no job
        await asyncio.to_thread(client.run, MODEL, input=INPUT)
    assert caught.value.status == 402 and caught.value.title == "Insufficient credits"
    body = problem_of(raw.post("/v1/predictions", json={"version": MODEL, "input": INPUT}))
    assert body["code"] == "insufficient_credits" and body["availableCredits"] == 0
    assert body["requiredCredits"] > 0 and body["operation"] == "image_generation"
    assert len(await asyncio.to_thread(client.predictions.list)) == 0

    with pytest.raises(ReplicateError) as caught:  # 404s
        await asyncio.to_thread(client.run, "pixelmint/no-such-model", input=INPUT)
    assert caught.value.status == 404
    for path in (f"/v1/predictions/{uuid.uuid4()}", "/v1/predictions/not-an-id", f"/v1/trainings/{uuid.uuid4()}",
                 f"/v1/models/{uuid.uuid4()}/{uuid.uuid4()}", "/v1/models/pixelmint/business-headshot/versions/9",
                 "/v1/no-such-endpoint"):
        assert problem_of(raw.get(path))["status"] == 404, path
    assert raw.delete("/v1/predictions").headers["allow"] == "GET, POST"

    with pytest.raises(ReplicateError) as caught:  # 422: our limits, with the input's own field names
        await asyncio.to_thread(client.run, MODEL, input={**INPUT, "width": 100})
    assert caught.value.status == 422 and "resolution" in caught.value.detail
    body = problem_of(raw.post("/v1/predictions", json={"version": MODEL, "input": {"width": 256}}))
    assert body["invalid_fields"][0]["field"] == "input.prompt"
    body = problem_of(raw.post("/v1/predictions", json={"version": MODEL, "input": INPUT, "webhok": "x"}))
    assert body["invalid_fields"][0]["field"] == "webhok"
    body = problem_of(raw.post("/v1/predictions", json={"version": MODEL, "input": INPUT, "webhook": "ftp://x/y"}))
    assert body["code"] == "invalid_webhook_url" and body["field"] == "webhook"
    body = problem_of(raw.post("/v1/predictions", json={"version": MODEL, "input": INPUT, "webhook": "https://x.example/",
                                                          "webhook_events_filter": ["finished"]}))
    assert body["invalid_fields"][0]["field"] == "webhook_events_filter.0"
    await assert_ledger_ok(db)


async def test_rate_limit_is_429_with_retry_after(settings, database_url, db) -> None:
    limited = settings.model_copy(update={"rate_limit_generate": "1/minute"})
    team = await make_team(db, plan="basic", credits="100")
    with LocalServer(create_app(limited, database_url), lifespan="on", start_timeout=30) as server:
        client = sdk(server.url, team)
        await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT)
        with pytest.raises(ReplicateError) as caught:
            await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT)
        assert caught.value.status == 429
        answer = httpx.post(f"{server.url}/replicate/v1/predictions", headers=auth(team),
                            json={"version": MODEL, "input": INPUT})
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
        assert problem_of(answer)["code"] == "rate_limited"
    await assert_ledger_ok(db)


# --------------------------------------------------------------------------------------------
# Webhooks: kept with the prediction; what a delivery would send


@pytest.fixture
def live_app(settings: Settings, database_url: str) -> Any:
    app = create_app(settings, database_url)
    with LocalServer(app, lifespan="on", start_timeout=30) as server:
        yield server.url, app


async def test_webhook_is_kept_and_its_payload_is_the_prediction(live_app, db) -> None:
    base, app = live_app
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(base, team)
    prediction = await asyncio.to_thread(
        client.predictions.create, version=MODEL, input=INPUT, webhook="https://hooks.example/replicate",
        webhook_events_filter=["start", "completed"], wait=True)
    assert prediction.status == "succeeded"
    plain = await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT, wait=True)

    urls = UrlSigner(app.state.runtime.storage, f"{base}/", 3600)
    async with db.transaction() as session:
        job = await session.get(Job, uuid.UUID(prediction.id))
        assert job is not None and job.params["replicate"] == {
            "webhook": "https://hooks.example/replicate", "webhookEventsFilter": ["start", "completed"],
            "baseUrl": f"{base}/"}
        event = await prediction_event_for(session, job, urls)
        assert event is not None and event.url == "https://hooks.example/replicate" and event.event == "completed"
        payload = event.payload
        assert await prediction_event_for(session, await session.get(Job, uuid.UUID(plain.id)), urls) is None
        job.state = "running"  # (not flushed) the start event
        started = await prediction_event_for(session, job, urls)
        assert started is not None and started.event == "start"
        await session.rollback()
    # The payload is the prediction as GET answers it (signed URLs aside), and the SDK reads it.
    got = await asyncio.to_thread(client.predictions.get, prediction.id)
    assert {k: v for k, v in payload.items() if k != "output"} == {
        k: v for k, v in got.dict().items() if k not in ("output", "data_removed", "source")} | {
        "data_removed": False, "source": "api"}
    assert [u.split("?")[0] for u in payload["output"]] == [u.split("?")[0] for u in got.output]
    assert replicate.prediction.Prediction(**payload).status == "succeeded"
    await assert_ledger_ok(db)


def test_version_ids_name_their_model() -> None:
    team, model = uuid.uuid4(), uuid.uuid4()
    custom = names.version_id(model, 3)
    assert len(custom) == 64 and names.parse_version_id(custom) == (model, 3)
    assert names.parse_model_name(f"{team}/{model}:{custom}", team) == names.ModelName(custom_model_id=model, version=3)
    catalog = names.version_id(names.catalog_key("fashion-editorial"), 1)
    assert names.parse_model_name(f"pixelmint/fashion-editorial:{catalog}", team) == names.ModelName(
        reference_model_id="fashion-editorial")
    # Another model's version id, or a number, is no version of this one.
    assert names.parse_model_name(f"pixelmint/business-headshot:{catalog}", team) is None
    assert names.parse_model_name(f"{team}/{uuid.uuid4()}:{custom}", team) is None
    assert names.parse_version_id("1") is None and names.parse_version_id(model.hex + "0" * 32) is None
