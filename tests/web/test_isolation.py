"""Teams cannot reach each other's pages, and no form is accepted without its CSRF token.

- Cross-team: a member of team B gets the HTML 404 page for every page of team A's objects, GET and
  POST. The routes come from the app itself (``web_routes``): every web route with a path
  parameter must be in ``OBJECT_PAGES``, so a new page fails this test until it is added.
- CSRF: every state-changing form route (every POST under ``/app/`` and the sign-in pages) refuses
  a post without the token, with another session's token (field or header), and — for the sign-in
  pages — a post with no cookie at all: the 403 page. The multipart form (``web/app.Csrf`` reads its
  token itself): token first accepted; a file before the token, a wrong or missing token refused,
  and refused before the rest of a huge body is read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from asgi_csrf import DEFAULT_SIGNING_NAMESPACE
from fastapi.routing import APIRoute
from itsdangerous import URLSafeSerializer
from sqlalchemy import text
from starlette.types import Message, Receive, Scope, Send

from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.web.app import TOKEN_WITHIN, Csrf
from tests.builders import solid_png
from tests.web.helpers import csrf, other_client, post_form, shown_secret, sign_up
from tests.web.paying import make_paying

# Every page of one object: its path parameter → the object of team A it names (``objects_of_a``),
# and the form a POST sends (valid, so that only the ownership check can refuse it).
OBJECT_PAGES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/app/generate/jobs/{job_id}/events"): {},  # the live SSE stream
    ("POST", "/app/generate/jobs/{job_id}/cancel"): {},
    ("GET", "/app/models/{model_id}"): {},
    ("POST", "/app/models/{model_id}/refine"): {"prompt": "make it mine"},
    ("POST", "/app/models/{model_id}/rename"): {"name": "mine", "description": ""},
    ("GET", "/app/models/{model_id}/delete"): {},
    ("POST", "/app/models/{model_id}/delete"): {},
    ("GET", "/app/gallery/{image_id}"): {},
    ("POST", "/app/gallery/{image_id}/favorite"): {"favorite": "true"},
    ("GET", "/app/gallery/{image_id}/download"): {},
    ("GET", "/app/gallery/{image_id}/delete"): {},
    ("POST", "/app/gallery/{image_id}/delete"): {},
    ("GET", "/app/jobs/{job_id}"): {},
    ("POST", "/app/jobs/{job_id}/cancel"): {},
    ("GET", "/app/webhooks/{endpoint_id}"): {},
    ("POST", "/app/webhooks/{endpoint_id}"): {"url": "http://127.0.0.1:9/mine", "event_types": ["job.succeeded"]},
    ("POST", "/app/webhooks/{endpoint_id}/enabled"): {"enabled": "false"},
    ("POST", "/app/webhooks/{endpoint_id}/rotate"): {},
    ("GET", "/app/webhooks/{endpoint_id}/delete"): {},
    ("POST", "/app/webhooks/{endpoint_id}/delete"): {},
    ("POST", "/app/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend"): {},
    ("POST", "/app/webhooks/{endpoint_id}/replay"): {"since": "2000-01-01T00:00"},
    ("POST", "/app/keys/{key_id}/revoke"): {},
    ("POST", "/app/team/invites/{invite_id}/revoke"): {},
    ("POST", "/app/team/members/{member_id}/role"): {"role": "member"},
    ("POST", "/app/team/members/{member_id}/remove"): {},
    ("POST", "/app/team/sessions/{session_id}/revoke"): {},
}
SIGN_IN_FORMS = ("/login", "/signup", "/logout", "/invite", "/set-password")
SECRET = "Autumn-of-team-A"  # the name and prompts of team A's objects: never shown to team B


def web_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, routers included by ``include_router`` among
    them (FastAPI keeps an included router whole, as ``original_router``); not HEAD."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((method, prefix + route.path) for method in sorted(route.methods) if method != "HEAD")
        elif hasattr(route, "original_router"):
            yield from web_routes(route.original_router.routes, prefix + route.include_context.prefix)


def object_routes(app: Any) -> set[tuple[str, str]]:
    return {(m, p) for m, p in web_routes(app.routes) if p.startswith("/app/") and "{" in p}


def form_routes(app: Any) -> list[str]:
    return sorted({p for m, p in web_routes(app.routes)
                   if m == "POST" and (p.startswith("/app/") or p == "/app" or p in SIGN_IN_FORMS)})


def filled(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def found(pattern: str, html: str) -> str:
    match = re.search(pattern, html)
    assert match, pattern
    return match.group(1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_urls": True})  # the webhook endpoint is on 127.0.0.1


async def objects_of_a(a: httpx.AsyncClient, db: Database) -> dict[str, str]:
    """Team A with one of everything: a key, a webhook endpoint with a delivery, a generated job and
    its image, a custom model, an invite; its owner's member id and session."""
    await sign_up(a, "a@example.com")
    await make_paying(db, "a@example.com", credits="1000")
    created = await post_form(a, "/app/keys", {"name": "a's key"})
    key = {"Authorization": f"Bearer {shown_secret(created.text, 'new-key-value')}"}
    keys_page = (await a.get("/app/keys")).text
    endpoint_page = await post_form(a, "/app/webhooks", {"url": "http://127.0.0.1:9/hooks",  # type: ignore[dict-item]
                                                         "event_types": ["job.succeeded"]})
    assert endpoint_page.status_code == 201, endpoint_page.text
    endpoint = found(r'data-endpoint-id="([0-9a-f-]{36})"', endpoint_page.text)
    answer = await a.post("/api/v1/generate", headers=key, json={
        "referenceModelId": "business-headshot", "prompt": SECRET, "resolution": "512x512", "waitForResult": True})
    assert answer.status_code == 200 and answer.json()["job"]["status"] == "succeeded", answer.text
    job = answer.json()["job"]
    model = await a.post("/app/models", data={
        "csrftoken": await csrf(a), "referenceModelId": "fashion-editorial", "name": SECRET, "triggerWord": "ohwx",
        "trainingSteps": "500", "imageCount": "2"},
        files=[("trainingImages", (f"{i}.png", solid_png((200, 40 * i, 90)), "image/png")) for i in range(2)])
    assert model.status_code == 303, model.text
    assert (await post_form(a, "/app/team/invites", {"role": "member"})).status_code in (200, 201)
    team_page = (await a.get("/app/team")).text
    async with db.transaction() as session:
        delivery = (await session.execute(text("SELECT id FROM webhook_deliveries WHERE endpoint_id = :e"),
                                          {"e": endpoint})).scalars().first()
    assert delivery is not None, "the job's success made a delivery to the endpoint"
    return {
        "job_id": job["id"], "image_id": job["images"][0]["id"], "model_id": model.headers["location"].rsplit("/", 1)[1],
        "endpoint_id": endpoint, "delivery_id": str(delivery), "key_id": found(r'/app/keys/([0-9a-f-]{36})/revoke', keys_page),
        "invite_id": found(r'/app/team/invites/([0-9a-f-]{36})/revoke', team_page),
        "member_id": found(r'/app/team/members/([0-9a-f-]{36})/role', team_page),
        "session_id": found(r'/app/team/sessions/([0-9a-f-]{36})/revoke', team_page),
    }


async def test_every_page_of_another_teams_objects_is_404(api_with_worker: httpx.AsyncClient, db: Database) -> None:
    a = api_with_worker
    uncovered = object_routes(a.app) - set(OBJECT_PAGES)  # type: ignore[attr-defined]
    assert not uncovered, f"pages of an object missing from OBJECT_PAGES (add them): {sorted(uncovered)}"
    assert set(OBJECT_PAGES) <= object_routes(a.app), "OBJECT_PAGES names a route that no longer exists"  # type: ignore[attr-defined]
    ids = await objects_of_a(a, db)

    b = other_client(a)
    await sign_up(b, "b@example.com")  # the owner of team B: no role check comes first
    await make_paying(db, "b@example.com", credits="1000")  # nor a plan check
    for (method, template), data in OBJECT_PAGES.items():
        url = filled(template, ids)
        answer = await (b.get(url) if method == "GET" else post_form(b, url, data))
        assert answer.status_code == 404, (method, url, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html") and "<h1>Not found</h1>" in answer.text, url
        assert SECRET not in answer.text, url
    # Nor through query parameters or form fields that name them.
    for url in (f"/app/generate?customModelId={ids['model_id']}&version=1", f"/app/gallery?jobId={ids['job_id']}",
                f"/app/generate/estimate?model=custom:{ids['model_id']}:1", f"/app/jobs?customModelId={ids['model_id']}"):
        answer = await b.get(url)
        assert answer.status_code in (200, 404, 422) and SECRET not in answer.text, (url, answer.status_code)
    submitted = await post_form(b, "/app/generate", {"model": f"custom:{ids['model_id']}:1", "prompt": "mine"})
    assert submitted.status_code in (404, 422) and SECRET not in submitted.text, submitted.status_code

    # Team A's things are untouched, and A still sees them.
    for template in ("/app/models/{model_id}", "/app/gallery/{image_id}", "/app/jobs/{job_id}", "/app/webhooks/{endpoint_id}"):
        assert (await a.get(filled(template, ids))).status_code == 200, template
    assert SECRET in (await a.get(filled("/app/models/{model_id}", ids))).text
    assert ids["key_id"] in (await a.get("/app/keys")).text and ids["invite_id"] in (await a.get("/app/team")).text
    assert ids["endpoint_id"] in (await a.get("/app/webhooks")).text


def refused(answer: httpx.Response, what: str) -> None:
    assert answer.status_code == 403, (what, answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("text/html"), what
    assert "security token" in answer.text or "before its csrftoken field" in answer.text, what


async def test_every_form_refuses_a_post_without_its_token_or_with_another_sessions(
    api: httpx.AsyncClient, db: Database,
) -> None:
    routes = form_routes(api.app)  # type: ignore[attr-defined]
    assert {"/login", "/signup", "/logout", "/app/keys", "/app/models", "/app/generate"} <= set(routes)
    await sign_up(api, "a@example.com")
    other = other_client(api)
    their_token = await csrf(other)
    assert their_token != await csrf(api)
    ids = {name: str(uuid.uuid4()) for name in ("job_id", "model_id", "image_id", "endpoint_id", "delivery_id",
                                                "key_id", "invite_id", "member_id", "session_id")}
    for template in routes:
        url = filled(template, ids)
        refused(await api.post(url, data={"name": "x"}), f"{url} without a token")
        refused(await api.post(url, data={"csrftoken": their_token, "name": "x"}), f"{url} with another session's token")
        refused(await api.post(url, data={"name": "x"}, headers={"x-csrftoken": their_token}),
                f"{url} with another session's token in the header")
    for url in ("/login", "/signup", "/invite", "/set-password"):  # against login CSRF: even with no cookie at all
        async with httpx.AsyncClient(transport=api._transport, base_url="http://testserver") as stranger:  # noqa: SLF001
            refused(await stranger.post(url, data={"email": "a@example.com", "password": "x"}), f"{url} cookie-less")
    # Still signed in, nothing was done: the one key-less team has no key.
    home = await api.get("/app/keys")
    assert home.status_code == 200 and "/revoke" not in home.text


def upload(count: int = 1) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("trainingImages", (f"{i}.png", solid_png((20 * i, 90, 200)), "image/png")) for i in range(count)]


def model_fields(token: str | None) -> dict[str, str]:
    fields = {"referenceModelId": "fashion-editorial", "name": "Mine", "triggerWord": "ohwx", "imageCount": "1"}
    return fields if token is None else {"csrftoken": token, **fields}


async def test_the_multipart_form_reads_its_token_first(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, "a@example.com")
    await make_paying(db, "a@example.com", credits="1000")
    token = await csrf(api)
    their_token = await csrf(other_client(api))

    refused(await api.post("/app/models", data=model_fields(None), files=upload()), "no token")
    refused(await api.post("/app/models", data=model_fields(their_token), files=upload()), "another session's token")
    refused(await api.post("/app/models", data=model_fields(token + "x"), files=upload()), "a forged token")
    # A file part before the token: refused, saying why.
    boundary = "pixelmint-boundary"
    file_first = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"trainingImages\"; filename=\"a.png\"\r\n"
                  f"Content-Type: image/png\r\n\r\n").encode() + solid_png((1, 2, 3)) + (
                  f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"csrftoken\"\r\n\r\n{token}\r\n"
                  f"--{boundary}--\r\n").encode()
    answer = await api.post("/app/models", content=file_first,
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 403 and "before its csrftoken field" in answer.text
    assert not re.search(r"/app/models/[0-9a-f-]{36}", (await api.get("/app/models")).text)  # nothing was created

    # The token first: accepted, the model created from the uploaded images.
    created = await api.post("/app/models", data=model_fields(token), files=upload())
    assert created.status_code == 303 and re.search(r"/app/models/[0-9a-f-]{36}$", created.headers["location"])


class Body:
    """An ASGI ``receive`` sending ``head`` then endless 64 KiB chunks of ``filler`` (a huge
    upload), counting what was taken."""

    def __init__(self, head: bytes, filler: bytes = b"x") -> None:
        self.head, self.filler, self.taken = head, filler, 0

    async def __call__(self) -> Message:
        self.taken += 1
        if self.taken == 1:
            return {"type": "http.request", "body": self.head, "more_body": True}
        if self.taken > 10_000:  # 640 MiB: the middleware read it all
            raise AssertionError("the whole huge body was read")
        return {"type": "http.request", "body": self.filler * 65536, "more_body": True}


async def forged_upload(head: bytes, cookie: str) -> tuple[int | None, int, bool]:
    """Post ``head`` and then a huge body through ``Csrf`` alone; (status, chunks read, whether the
    app behind it was reached)."""
    reached = [False]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached[0] = True

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    body = Body(head)
    scope: Scope = {
        "type": "http", "method": "POST", "path": "/app/models", "raw_path": b"/app/models", "query_string": b"",
        "root_path": "", "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 1), "http_version": "1.1",
        "headers": [(b"content-type", b"multipart/form-data; boundary=B"), (b"cookie", f"csrftoken={cookie}".encode()),
                    (b"host", b"testserver")],
    }
    await Csrf(app, secret="s", secure=False)(scope, body, send)
    return (sent[0]["status"] if sent else None), body.taken, reached[0]


async def test_a_forged_upload_is_refused_before_its_huge_body_is_read() -> None:
    cookie = URLSafeSerializer("s").dumps("a" * 16, DEFAULT_SIGNING_NAMESPACE)
    file_part = b'--B\r\nContent-Disposition: form-data; name="trainingImages"; filename="a.png"\r\n\r\n'
    token_part = b'--B\r\nContent-Disposition: form-data; name="csrftoken"\r\n\r\n%s\r\n'
    field_part = b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
    cases = {
        "a file before the token": file_part,
        "a wrong token, then a huge file": token_part % b"wrong" + file_part,
        "a huge field before the token": field_part,
    }
    for what, head in cases.items():
        status, taken, reached = await forged_upload(head, cookie)
        assert status == 403 and not reached, what
        assert taken * 65536 <= TOKEN_WITHIN + 2 * 65536, (what, taken)  # refused within the first chunks
    # The right token first: passed on without reading the file (the app reads it).
    status_ok = await forged_upload(token_part % cookie.encode() + file_part, cookie)
    assert status_ok[1] == 1 and status_ok[2], status_ok
