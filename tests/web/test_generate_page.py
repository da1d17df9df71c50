"""The generate page through httpx: prefill links, the estimate partial following the inputs, free
generations, submitting (plain and htmx) and the queue panel showing the job with its live stream,
the stream itself, cancel, refusals in words (402, a bad seed or prompt beside the field), another
team's job answering 404, and a post without its CSRF token refused."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text

from pixelmint.kit.db import Database
from tests.web.helpers import other_client, post_form, sign_up
from tests.web.paying import make_paying

EMAIL = "ada@example.com"
FORM = {"model": "ref:business-headshot", "prompt": "a lighthouse at dusk", "negativePrompt": "", "resolution": "512x512",
        "quality": "standard", "numImages": "1", "seed": "42"}


async def no_free_generations(db: Database, email: str = EMAIL) -> None:
    async with db.transaction() as session:
        await session.execute(text("UPDATE users SET free_generations_remaining = 0 WHERE email = :e"), {"e": email})


def job_ids(html: str) -> list[str]:
    return re.findall(r'<article class="job[^"]*" id="job-([0-9a-f-]{36})"', html)


async def test_links_prefill_the_form(api: httpx.AsyncClient) -> None:
    await sign_up(api, EMAIL)
    page = await api.get("/app/generate?referenceModelId=fashion-editorial&prompt=red+coat&seed=7&numImages=2&quality=hd")
    assert page.status_code == 200
    assert '<option value="ref:fashion-editorial" selected>' in page.text
    assert ">red coat</textarea>" in page.text and 'name="seed" inputmode="numeric" pattern="[0-9]*" value="7"' in page.text
    assert '<option value="2" selected>' in page.text and '<option value="hd" selected>' in page.text
    assert "this uses one of your 3 free generations" in page.text
    assert 'id="queue-empty"' in page.text and "Refresh" in page.text


async def test_the_estimate_follows_the_inputs(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    await make_paying(db, EMAIL, credits="100")
    await no_free_generations(db)
    base = "/app/generate/estimate?model=ref:business-headshot&quality=standard"
    small = await api.get(base + "&resolution=512x512&numImages=1", headers={"HX-Request": "true"})
    large = await api.get(base + "&resolution=1024x1024&numImages=2", headers={"HX-Request": "true"})
    hd = await api.get("/app/generate/estimate?model=ref:business-headshot&quality=hd&resolution=512x512&numImages=1")
    costs = [re.search(r'id="estimate-cost">([^<]+)<', r.text).group(1) for r in (small, large, hd)]  # type: ignore[union-attr]
    assert len(set(costs)) == 3, costs
    assert "you have no free generations left" in small.text and 'id="estimate-warning"' not in small.text
    unknown = await api.get("/app/generate/estimate?model=ref:nope&resolution=512x512&numImages=1")
    assert 'id="estimate-error"' in unknown.text


async def test_a_short_balance_and_bad_fields_are_explained(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    await no_free_generations(db)
    estimate = await api.get("/app/generate/estimate?model=ref:business-headshot&resolution=512x512&numImages=1")
    assert "The free plan runs only free generations, and yours are used up" in estimate.text
    refused = await post_form(api, "/app/generate", FORM)
    assert refused.status_code == 402
    assert "Not enough credits: this needs" in refused.text and "the team has 0 available" in refused.text
    assert ">a lighthouse at dusk</textarea>" in refused.text  # what was typed stays

    await make_paying(db, EMAIL, credits="1")
    refused = await post_form(api, "/app/generate", FORM, headers={"HX-Request": "true"})
    assert refused.status_code == 200 and "<html" not in refused.text and "Not enough credits" in refused.text

    await make_paying(db, EMAIL, credits="100")
    bad_seed = await post_form(api, "/app/generate", {**FORM, "seed": "abc"})
    assert bad_seed.status_code == 422 and 'id="e-seed"' in bad_seed.text
    blank = await post_form(api, "/app/generate", {**FORM, "prompt": "   "})
    assert blank.status_code == 422 and 'id="e-prompt"' in blank.text
    assert job_ids((await api.get("/app/generate")).text) == []


async def test_submit_shows_the_job_live_in_the_queue_and_cancel(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    plain = await post_form(api, "/app/generate", FORM)
    assert plain.status_code == 303 and plain.headers["location"].startswith("/app/generate?")
    assert "prompt=a+lighthouse+at+dusk" in plain.headers["location"]
    page = await api.get(plain.headers["location"])
    [first] = job_ids(page.text)
    assert f'sse-connect="/app/generate/jobs/{first}/events"' in page.text and "status-queued" in page.text
    assert "this uses one of your 2 free generations" in page.text

    live = await post_form(api, "/app/generate", FORM, headers={"HX-Request": "true"})
    assert live.status_code == 200 and "<html" not in live.text and 'id="workspace"' in live.text
    second = job_ids(live.text)[0]
    assert second != first and f'id="job-{second}"' in live.text and "job-new" in live.text
    queue = await api.get("/app/generate/queue", headers={"HX-Request": "true"})
    assert job_ids(queue.text) == [second, first] and "<html" not in queue.text
    assert (await api.get("/app/generate/queue")).status_code == 303  # without htmx: the page

    canceled = await post_form(api, f"/app/generate/jobs/{first}/cancel")
    assert canceled.status_code == 303
    assert (await post_form(api, f"/app/generate/jobs/{second}/cancel", headers={"HX-Request": "true"})).status_code == 204
    page = await api.get("/app/generate")
    assert page.text.count("status-canceled") == 2 and "sse-connect" not in page.text
    # The stream of a finished job: its card once, then done.
    stream = await api.get(f"/app/generate/jobs/{first}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "event: job" in stream.text and "Canceled" in stream.text and "event: done" in stream.text
    assert (await post_form(api, f"/app/generate/jobs/{first}/cancel")).status_code == 303  # finished: no change


async def test_another_teams_job_is_404_and_csrf_is_required(api: httpx.AsyncClient) -> None:
    await sign_up(api, EMAIL)
    await post_form(api, "/app/generate", FORM)
    [job] = job_ids((await api.get("/app/generate")).text)
    async with other_client(api) as bob:
        await sign_up(bob, "bob@example.com")
        assert (await bob.get(f"/app/generate/jobs/{job}/events")).status_code == 404
        assert (await post_form(bob, f"/app/generate/jobs/{job}/cancel")).status_code == 404
        assert job not in (await bob.get("/app/generate")).text
    refused = await api.post("/app/generate", data=FORM)
    assert refused.status_code == 403 and "security token" in refused.text


async def test_generating_from_a_custom_models_version_is_prefilled(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    page = await api.get("/app/generate?customModelId=00000000-0000-0000-0000-000000000000&version=2")
    assert page.status_code == 200 and "selected" in page.text  # an unknown model: the first choice
