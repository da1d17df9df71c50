"""The official ``openai`` SDK, unmodified, against the live service at ``/openai/v1``: images
(url and b64_json), models, an error of each kind in OpenAI's envelope, and credits that move
exactly as through the native API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import select

from pixelmint.api.app import create_app
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.tables import Job
from tests.builders import assert_ledger_ok, auth, make_team, solid_png
from tests.helpers import wait_for_state
from tests.providers.localserver import LocalServer


def sdk(base_url: str, api_key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key=api_key, max_retries=0, **options)


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The SDK is synchronous: run it in a thread, off the test's event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


async def balance(client: httpx.AsyncClient, team: Any) -> dict[str, Any]:
    return (await client.get("/api/v1/credits/balance", headers=auth(team))).json()


async def ledger(client: httpx.AsyncClient, team: Any) -> list[tuple[str, float]]:
    items = (await client.get("/api/v1/credits/history", headers=auth(team))).json()["items"]
    return [(t["type"], t["amount"]) for t in reversed(items)]


@pytest.fixture
def service_with(settings: Any, database_url: str) -> Iterator[Callable[..., str]]:
    """Start the live service with some settings changed: ``url = service_with(name=value)``."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> str:
            for name, value in overrides.items():
                setattr(settings, name, value)
            return stack.enter_context(LocalServer(create_app(settings, database_url), lifespan="on", start_timeout=30)).url

        yield start


async def test_generate_url_and_b64_json_and_credits_move_as_through_the_native_api(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team.api_key)

    as_b64 = await call(client.images.generate, model="pixelmint/business-headshot", prompt="a lighthouse at dusk",
                        size="1024x1536", quality="hd", response_format="b64_json",
                        extra_body={"frame_count": 3, "svg": False})  # fields this server never heard of: ignored
    [image] = as_b64.data
    assert image.url is None and png_size(base64.b64decode(image.b64_json)) == (1024, 1536)
    assert as_b64.created > 0 and as_b64.size == "1024x1536" and as_b64.output_format == "png"

    as_urls = await call(client.images.generate, model="business-headshot", prompt="a lighthouse at dusk",
                         n=2, size="512x512", response_format="url", style="vivid", user="someone")
    assert len(as_urls.data) == 2
    async with httpx.AsyncClient(base_url=live_service) as http:
        for item in as_urls.data:
            assert item.b64_json is None and item.url.startswith(live_service)
            fetched = await http.get(item.url)
            assert fetched.status_code == 200 and png_size(fetched.content) == (512, 512)

        # The same two generations through the native API: the same prices, the same ledger rows.
        after_openai = await ledger(http, team)
        for body in ({"resolution": "1024x1536", "quality": "hd", "numImages": 1},
                     {"resolution": "512x512", "quality": "standard", "numImages": 2}):
            native = await http.post("/api/v1/generate", headers=auth(team), json={
                "referenceModelId": "business-headshot", "prompt": "a lighthouse at dusk", "waitForResult": True, **body})
            assert native.status_code == 200 and native.json()["job"]["status"] == "succeeded", native.text
        full = await ledger(http, team)
        assert full[:len(after_openai)] == after_openai
        assert [kind for kind, _ in after_openai] == ["grant", "reserve", "capture", "reserve", "capture"]
        assert full[len(after_openai):] == after_openai[1:]
        charged = [extra["charged_credits"] for extra in (as_b64.model_extra["pixelmint"], as_urls.model_extra["pixelmint"])]
        assert charged == [amount for kind, amount in after_openai if kind == "capture"]
        assert (await balance(http, team))["availableCredits"] == 100 - 2 * sum(charged)
    await assert_ledger_ok(db)


async def test_free_generations_come_first_as_natively(live_service, db) -> None:
    team = await make_team(db, plan="free", free_generations=1)
    client = sdk(live_service, team.api_key)
    result = await call(client.images.generate, prompt="a quiet harbour", size="256x256")  # the default model
    assert png_size(httpx.get(result.data[0].url).content) == (256, 256)
    assert result.model_extra["pixelmint"]["free_generations_remaining"] == 0
    assert result.model_extra["pixelmint"]["charged_credits"] == 0
    with pytest.raises(openai.RateLimitError) as refused:  # free generations used up, no credits: as natively
        await call(client.images.generate, prompt="a quiet harbour", size="256x256")
    assert refused.value.code == "insufficient_quota"
    await assert_ledger_ok(db)


async def test_models_list_and_retrieve(live_service, db) -> None:
    team = await make_team(db, plan="basic")
    client = sdk(live_service, team.api_key)
    models = (await call(client.models.list)).data
    ids = [m.id for m in models]
    assert "pixelmint/business-headshot" in ids and all(i.startswith("pixelmint/") for i in ids)
    assert all(m.object == "model" and m.owned_by == "pixelmint" and m.created > 0 for m in models)
    for name in ("pixelmint/fashion-editorial", "fashion-editorial", "pixelmint/fashion-editorial:1"):
        assert (await call(client.models.retrieve, name)).id == "pixelmint/fashion-editorial"
    with pytest.raises(openai.NotFoundError) as missing:
        await call(client.models.retrieve, "dall-e-3")
    assert missing.value.code == "model_not_found"


async def test_a_custom_model_by_its_name(live_service, db, database_url) -> None:
    team = await make_team(db, plan="pro", credits="1000")
    other = await make_team(db, plan="pro", credits="1000", name="other")
    async with httpx.AsyncClient(base_url=live_service) as http:
        files = [("trainingImages", (f"{i}.png", solid_png((200, 40 + i * 10, 30)), "image/png")) for i in range(3)]
        created = await http.post("/api/v1/models", headers=auth(team), files=files,
                                  data={"referenceModelId": "fashion-editorial", "name": "Red"})
        assert created.status_code == 202, created.text
    model_id, job_id = created.json()["model"]["id"], created.json()["job"]["id"]
    hub = JobEvents(database_url)
    await hub.start()
    try:
        assert await wait_for_state(db, hub, uuid.UUID(job_id), {"succeeded", "failed"}) == "succeeded"
    finally:
        await hub.stop()

    name = f"{team.team_id}/{model_id}"
    client = sdk(live_service, team.api_key)
    assert name in [m.id for m in (await call(client.models.list)).data]
    assert (await call(client.models.retrieve, f"{name}:1")).owned_by == str(team.team_id)
    result = await call(client.images.generate, model=f"{name}:1", prompt="ohwx coat", size="256x256",
                        response_format="b64_json")
    assert png_size(base64.b64decode(result.data[0].b64_json)) == (256, 256)
    for bad in (f"{name}:2", f"{team.team_id}/{uuid.uuid4()}"):
        with pytest.raises(openai.NotFoundError) as missing:
            await call(client.images.generate, model=bad, prompt="ohwx coat", size="256x256")
        assert missing.value.param == "model"
    theirs = sdk(live_service, other.api_key)  # another team's model is not theirs to see
    assert name not in [m.id for m in (await call(theirs.models.list)).data]
    with pytest.raises(openai.NotFoundError):
        await call(theirs.images.generate, model=name, prompt="ohwx coat", size="256x256")
    await assert_ledger_ok(db)


async def test_errors_in_openais_envelope(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team.api_key)

    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await call(sdk(live_service, "pm_not_a_key").models.list)
    assert unauthenticated.value.code == "invalid_api_key" and unauthenticated.value.type == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as bad_size:
        await call(client.images.generate, prompt="a cat", size="999x999")
    assert (bad_size.value.param, bad_size.value.code) == ("size", "invalid_size")
    assert "1024x1536" in bad_size.value.message

    with pytest.raises(openai.BadRequestError) as bad_n:
        await call(client.images.generate, prompt="a cat", n=5)  # over PIXELMINT_MAX_IMAGES_PER_REQUEST
    assert bad_n.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad_quality:
        await call(client.images.generate, prompt="a cat", extra_body={"quality": "ultra"})
    assert bad_quality.value.param == "quality"
    with pytest.raises(openai.BadRequestError) as nul:
        await call(client.images.generate, prompt="a\x00cat")
    assert (nul.value.param, nul.value.code) == ("prompt", "invalid_text")
    with pytest.raises(openai.BadRequestError) as jpeg:
        await call(client.images.generate, prompt="a cat", output_format="jpeg")
    assert jpeg.value.param == "output_format"

    with pytest.raises(openai.NotFoundError) as unknown_model:
        await call(client.images.generate, model="dall-e-3", prompt="a cat")
    assert (unknown_model.value.param, unknown_model.value.code) == ("model", "model_not_found")

    async with httpx.AsyncClient(base_url=live_service) as http:
        raw = await http.post("/openai/v1/images/generations", headers=auth(team), json={"size": "auto"})
        assert raw.status_code == 400
        assert raw.json() == {"error": {"message": "Missing required parameter: 'prompt'.", "type": "invalid_request_error",
                                        "param": "prompt", "code": "missing_required_parameter"}}
        not_json = await http.post("/openai/v1/images/generations", headers={**auth(team), "content-type": "application/json"},
                                   content=b'{"prompt": ')
        assert not_json.status_code == 400
        assert not_json.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                              "param": None, "code": "invalid_json"}
        unknown = await http.get("/openai/v1/images/variations", headers=auth(team))
        assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"message", "type", "param", "code"}
        assert (await balance(http, team))["availableCredits"] == 100  # nothing was reserved
    await assert_ledger_ok(db)


async def test_out_of_credits_is_insufficient_quota_and_not_retried(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="1")
    client = sdk(live_service, team.api_key)
    with pytest.raises(openai.RateLimitError) as broke:
        await call(client.images.generate, prompt="a cat", size="1024x1024")
    error = broke.value
    assert (error.status_code, error.code, error.type) == (429, "insufficient_quota", "insufficient_quota")
    assert error.response.headers["x-should-retry"] == "false"  # the SDK does not retry it
    async with httpx.AsyncClient(base_url=live_service) as http:
        assert (await balance(http, team))["availableCredits"] == 1
        assert await ledger(http, team) == [("grant", 1.0)]
    await assert_ledger_ok(db)


async def test_rate_limits_are_429_with_retry_after(service_with, db) -> None:
    url = service_with(rate_limit_generate="2/minute")
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(url, team.api_key)
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):  # counted, then refused for its size
            await call(client.images.generate, prompt="a cat", size="1x1")
    with pytest.raises(openai.RateLimitError) as limited:
        await call(client.images.generate, prompt="a cat")
    assert limited.value.code == "rate_limit_exceeded" and int(limited.value.response.headers["retry-after"]) >= 1


async def test_a_generation_that_outlasts_the_wait_is_canceled_and_released(service_with, db, database_url) -> None:
    url = service_with(wait_for_result_timeout_seconds=0.2, procedural_delay_seconds=30.0)
    team = await make_team(db, plan="basic", credits="100")
    with pytest.raises(openai.InternalServerError) as timed_out:
        await call(sdk(url, team.api_key).images.generate, prompt="a slow cat", size="256x256")
    assert (timed_out.value.status_code, timed_out.value.code) == (503, "generation_timeout")
    assert timed_out.value.type == "server_error" and "retry-after" in timed_out.value.response.headers
    async with db.transaction() as session:
        job_id = await session.scalar(select(Job.id).where(Job.team_id == team.team_id))
    hub = JobEvents(database_url)
    await hub.start()
    try:
        assert await wait_for_state(db, hub, job_id, {"canceled", "succeeded", "failed"}) == "canceled"
    finally:
        await hub.stop()
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await balance(http, team))["availableCredits"] == 100
        assert [kind for kind, _ in await ledger(http, team)] == ["grant", "reserve", "release"]
    await assert_ledger_ok(db)


async def test_idempotency_key_replays_the_answer_and_a_stored_error_in_the_envelope(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="20")
    client = sdk(live_service, team.api_key)
    first = await call(client.images.generate, prompt="a red kite", size="512x512", extra_headers={"Idempotency-Key": "k-1"})
    again = await call(client.images.with_raw_response.generate, prompt="a red kite", size="512x512",
                       extra_headers={"Idempotency-Key": "k-1"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().model_extra["pixelmint"]["job_id"] == first.model_extra["pixelmint"]["job_id"]
    for _ in range(2):  # 18 credits: more than the 14 left; the stored 402 is replayed as OpenAI's 429
        with pytest.raises(openai.RateLimitError) as broke:
            await call(client.images.generate, prompt="a red kite", size="1024x1536", quality="hd",
                       extra_headers={"Idempotency-Key": "k-2"})
        assert broke.value.code == "insufficient_quota" and broke.value.response.headers["x-should-retry"] == "false"
    assert broke.value.response.headers["idempotent-replayed"] == "true"
    with pytest.raises(openai.ConflictError) as reused:  # the same key for another request
        await call(client.images.generate, prompt="a blue kite", size="512x512", extra_headers={"Idempotency-Key": "k-1"})
    assert reused.value.code == "idempotency_key_reused"
    async with httpx.AsyncClient(base_url=live_service) as http:
        assert [kind for kind, _ in await ledger(http, team)] == ["grant", "reserve", "capture"]
    await assert_ledger_ok(db)


async def test_unexpected_failures_are_server_errors_in_the_envelope_after_the_dependencies_saw_them() -> None:
    """The route class renders what nothing else did, a bug (500) and an unreachable database
    (503), once the dependencies have exited through the error (the session rolls back)."""
    import asyncpg
    from fastapi import APIRouter, Depends, FastAPI

    from pixelmint.compat.openai_images.errors import OpenAIRoute

    seen: list[str] = []

    async def session_like() -> Any:
        try:
            yield
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise

    router = APIRouter(route_class=OpenAIRoute, dependencies=[Depends(session_like, scope="function")])

    @router.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @router.get("/database-down")
    async def database_down() -> None:
        raise asyncpg.PostgresConnectionError("connection refused")

    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        bug_answer, down = await client.get("/bug"), await client.get("/database-down")
    assert bug_answer.status_code == 500
    assert bug_answer.json()["error"] | {"message": ""} == {"message": "", "type": "server_error", "param": None,
                                                            "code": "internal_error"}
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    assert (down.json()["error"]["type"], down.json()["error"]["code"]) == ("server_error", "database_unavailable")
    assert seen == ["RuntimeError", "PostgresConnectionError"]
