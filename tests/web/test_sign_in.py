"""Sign-up, sign-in, sign-out, sessions and CSRF, through the ASGI app."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import text

from pixelmint.kit.db import Database
from tests.builders import auth, make_team
from tests.web.helpers import PASSWORD, csrf, other_client, post_form, sign_in, sign_up


async def test_sign_up_creates_a_free_team_with_the_person_as_owner_and_signs_in(
    api: httpx.AsyncClient, db: Database
) -> None:
    answer = await sign_up(api, "Ada@Example.com", name="Ada", team="Analytical")
    assert answer.headers["location"] == "/app"
    home = await api.get("/app")
    assert home.status_code == 200
    assert 'id="free-generations">3<' in home.text and "Analytical" in home.text and "Free plan" in home.text
    async with db.transaction() as session:
        row = (await session.execute(text(
            "SELECT u.email, u.role, u.password_hash, t.plan_code, (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id)"
            " AS keys FROM users u JOIN teams t ON t.id = u.team_id"))).one()
    assert (row.email, row.role, row.plan_code, row.keys) == ("ada@example.com", "owner", "free", 0)
    assert row.password_hash.startswith("$argon2id$")


async def test_sign_up_refuses_a_taken_email_a_short_password_and_a_bad_email(api: httpx.AsyncClient) -> None:
    await sign_up(api, "ada@example.com")
    other = other_client(api)
    taken = await post_form(other, "/signup", {"email": "ADA@example.com", "password": PASSWORD})
    assert taken.status_code == 409 and "already exists" in taken.text
    short = await post_form(other, "/signup", {"email": "bob@example.com", "password": "short"})
    assert short.status_code == 422 and "at least 8 characters" in short.text
    bad = await post_form(other, "/signup", {"email": "not-an-email", "password": PASSWORD})
    assert bad.status_code == 422 and "valid email" in bad.text


async def test_wrong_password_and_unknown_email_get_the_same_answer(api: httpx.AsyncClient) -> None:
    await sign_up(api, "ada@example.com")
    stranger = other_client(api)
    wrong = await sign_in(stranger, "ada@example.com", "not the password")
    unknown = await sign_in(stranger, "nobody@example.com", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password." in wrong.text and "Wrong email or password." in unknown.text
    assert "pixelmint_session" not in stranger.cookies
    ok = await sign_in(stranger, "ADA@example.com")
    assert ok.status_code == 303 and "pixelmint_session" in stranger.cookies


async def test_the_session_cookie_is_httponly_lax_and_stored_hashed(api: httpx.AsyncClient, db: Database) -> None:
    answer = await sign_up(api)
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith("pixelmint_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/"} <= flags and "secure" not in flags
    token = api.cookies["pixelmint_session"]
    async with db.transaction() as session:
        stored = (await session.execute(text("SELECT token_hash FROM web_sessions"))).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]


async def test_the_session_cookie_is_secure_over_https(api: httpx.AsyncClient) -> None:
    browser = other_client(api, "https://testserver")
    answer = await sign_up(browser)
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith("pixelmint_session="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_sign_out_revokes_the_session(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    token = api.cookies["pixelmint_session"]
    out = await post_form(api, "/logout")
    assert out.status_code == 303 and out.headers["location"] == "/"
    replay = other_client(api)
    replay.cookies.set("pixelmint_session", token)
    gone = await replay.get("/app")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login?next=%2Fapp")


async def test_pages_redirect_to_sign_in_and_back(api: httpx.AsyncClient) -> None:
    away = await api.get("/app/keys")
    assert away.status_code == 303 and away.headers["location"] == "/login?next=%2Fapp%2Fkeys"
    await sign_up(api)
    await post_form(api, "/logout")
    back = await post_form(api, "/login", {"email": "ada@example.com", "password": PASSWORD, "next": "/app/keys"})
    assert back.headers["location"] == "/app/keys"
    offsite = await post_form(api, "/login", {"email": "ada@example.com", "password": PASSWORD,
                                              "next": "//evil.example/"})
    assert offsite.headers["location"] == "/app"


async def test_a_form_post_without_the_csrf_token_is_refused(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api)
    refused = await api.post("/app/keys", data={"name": "sneaky"})
    assert refused.status_code == 403 and "security token" in refused.text
    forged = await api.post("/app/keys", data={"name": "sneaky", "csrftoken": "forged"})
    assert forged.status_code == 403
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM api_keys")) == 0
    # Sign-in without any cookie (login CSRF) is refused too.
    fresh = other_client(api)
    assert (await fresh.post("/login", data={"email": "ada@example.com", "password": PASSWORD})).status_code == 403


async def test_bearer_api_calls_are_not_subject_to_csrf(api: httpx.AsyncClient, db: Database) -> None:
    team = await make_team(db, credits="100")
    await csrf(api)  # the client now carries a csrftoken cookie, as a browser would
    answer = await api.post("/api/v1/credits/estimate", headers=auth(team),
                            json={"operation": "image_generation", "referenceModelId": "business-headshot"})
    assert answer.status_code == 200, answer.text


async def test_sign_up_can_be_switched_off(api: httpx.AsyncClient) -> None:
    api.app.state.runtime.settings.signup_enabled = False  # type: ignore[attr-defined]
    page = await api.get("/signup")
    assert page.status_code == 403 and "switched off" in page.text
    assert (await post_form(api, "/signup", {"email": "a@example.com", "password": PASSWORD})).status_code == 403


async def test_form_text_postgresql_cannot_store_is_refused_with_a_page(api: httpx.AsyncClient) -> None:
    answer = await post_form(api, "/signup", {"email": "ada@example.com", "password": PASSWORD, "name": "A\x00da"})
    assert answer.status_code == 422 and "<html" in answer.text
    unknown = await post_form(api, "/signup", {"email": "ada@example.com", "password": PASSWORD, "admin": "yes"})
    assert unknown.status_code == 422
