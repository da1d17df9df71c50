"""The API keys, team and home pages: keys shown once and usable, invites, roles, removal, sessions,
and another team's objects answering 404."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text

from pixelmint.kit.db import Database
from tests.web.helpers import PASSWORD, other_client, post_form, shown_secret, sign_in, sign_up


async def create_key(client: httpx.AsyncClient, name: str = "production") -> str:
    page = await post_form(client, "/app/keys", {"name": name})
    assert page.status_code == 201, page.text
    return shown_secret(page.text, "new-key-value")


async def test_a_key_is_shown_once_works_lists_its_last_use_and_revokes(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    key = await create_key(api)
    assert key.startswith("pm_")
    listing = await api.get("/app/keys")
    assert key not in listing.text and f"<code>{key[:10]}…</code>" in listing.text
    assert "production" in listing.text and "ada@example.com" in listing.text and ">never<" in listing.text
    used = await api.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {key}"})
    assert used.status_code == 200
    assert ">never<" not in (await api.get("/app/keys")).text
    key_id = re.search(r'action="/app/keys/([0-9a-f-]+)/revoke"', listing.text).group(1)  # type: ignore[union-attr]
    revoked = await post_form(api, f"/app/keys/{key_id}/revoke")
    assert revoked.status_code == 303
    assert (await api.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {key}"})).status_code == 401


async def test_htmx_gets_the_keys_block_alone(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    partial = await post_form(api, "/app/keys", {"name": "ci"}, headers={"HX-Request": "true"})
    assert partial.status_code == 201 and "<html" not in partial.text and 'id="new-key-value"' in partial.text
    assert "<html" in (await api.get("/app/keys")).text


async def invite(client: httpx.AsyncClient, role: str = "member") -> str:
    page = await post_form(client, "/app/team/invites", {"role": role})
    assert page.status_code == 201, page.text
    return shown_secret(page.text, "invite-link-value")


async def join(client: httpx.AsyncClient, link: str, email: str) -> httpx.AsyncClient:
    guest = other_client(client)
    token = link.split("token=")[1]
    page = await guest.get(f"/invite?token={token}")
    assert page.status_code == 200 and "Join" in page.text
    joined = await post_form(guest, "/invite", {"token": token, "email": email, "password": PASSWORD})
    assert joined.status_code == 303, joined.text
    return guest


def member_id(team_page: str, email: str) -> str:
    row = re.search(rf"<td>{re.escape(email)}.*?/app/team/members/([0-9a-f-]+)/role", team_page, re.S)
    assert row, email
    return row.group(1)


async def test_invites_roles_and_removal(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, "owner@example.com")
    link = await invite(api)
    assert link.startswith("http://") and "/invite?token=" in link
    bob = await join(api, link, "bob@example.com")
    assert (await other_client(api).get(f"/invite?token={link.split('token=')[1]}")).status_code == 404  # used up
    # A member sees the team, not the keys; cannot invite.
    assert (await bob.get("/app/team")).status_code == 200
    assert (await bob.get("/app/keys")).status_code == 403
    assert (await post_form(bob, "/app/team/invites", {"role": "member"})).status_code == 403
    assert 'href="/app/keys"' not in (await bob.get("/app")).text
    # The owner makes Bob an admin; an admin cannot make owners.
    page = (await api.get("/app/team")).text
    bob_id, owner_id = member_id(page, "bob@example.com"), member_id(page, "owner@example.com")
    assert (await post_form(api, f"/app/team/members/{bob_id}/role", {"role": "admin"})).status_code == 303
    assert (await bob.get("/app/keys")).status_code == 200
    assert (await post_form(bob, f"/app/team/members/{bob_id}/role", {"role": "owner"})).status_code == 403
    assert (await post_form(bob, "/app/team/invites", {"role": "owner"})).status_code == 403
    # The last owner cannot step down.
    last = await post_form(api, f"/app/team/members/{owner_id}/role", {"role": "member"})
    assert last.status_code == 409 and "at least one owner" in last.text
    # Removal ends Bob's sessions and keys.
    bob_key = await create_key(bob, "bob's")
    assert (await post_form(api, f"/app/team/members/{bob_id}/remove")).status_code == 303
    assert (await bob.get("/app")).status_code == 303
    assert (await api.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {bob_key}"})).status_code == 401
    assert (await sign_in(other_client(api), "bob@example.com")).status_code == 401


async def test_sessions_are_listed_and_revocable(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    laptop = other_client(api)
    await sign_in(laptop, "ada@example.com")
    page = (await api.get("/app/team")).text
    ids = re.findall(r'action="/app/team/sessions/([0-9a-f-]+)/revoke"', page)
    assert len(ids) == 2
    this_one = re.search(r'this one</span></td>.*?/app/team/sessions/([0-9a-f-]+)/revoke', page, re.S).group(1)  # type: ignore[union-attr]
    other = next(i for i in ids if i != this_one)
    assert (await post_form(api, f"/app/team/sessions/{other}/revoke")).status_code == 303
    assert (await laptop.get("/app")).status_code == 303
    assert (await api.get("/app")).status_code == 200


async def test_another_teams_objects_answer_404(api: httpx.AsyncClient) -> None:
    await sign_up(api, "a@example.com")
    key_a = await create_key(api)
    page_a = (await api.get("/app/keys")).text
    key_id = re.search(r'action="/app/keys/([0-9a-f-]+)/revoke"', page_a).group(1)  # type: ignore[union-attr]
    member_a = member_id((await api.get("/app/team")).text, "a@example.com")
    session_a = re.search(r'/app/team/sessions/([0-9a-f-]+)/revoke', (await api.get("/app/team")).text).group(1)  # type: ignore[union-attr]
    await invite(api)
    invite_a = re.search(r'/app/team/invites/([0-9a-f-]+)/revoke', (await api.get("/app/team")).text).group(1)  # type: ignore[union-attr]

    b = other_client(api)
    await sign_up(b, "b@example.com")
    for url, data in ((f"/app/keys/{key_id}/revoke", {}), (f"/app/team/members/{member_a}/role", {"role": "member"}),
                      (f"/app/team/members/{member_a}/remove", {}), (f"/app/team/sessions/{session_a}/revoke", {}),
                      (f"/app/team/invites/{invite_a}/revoke", {})):
        answer = await post_form(b, url, data)
        assert answer.status_code == 404, (url, answer.status_code)
        assert "<html" in answer.text  # an HTML page, not JSON
    assert (await api.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {key_a}"})).status_code == 200
    assert (await api.get("/app")).status_code == 200


async def test_home_shows_the_buckets_and_warns_at_one_and_zero_free_generations(
    api: httpx.AsyncClient, db: Database
) -> None:
    await sign_up(api)
    home = (await api.get("/app")).text
    assert 'id="free-generations">3<' in home and 'id="free-warning"' not in home
    for left, warning in ((1, "1 free generation left"), (0, "used all your free generations")):
        async with db.transaction() as session:
            await session.execute(text("UPDATE users SET free_generations_remaining = :n"), {"n": left})
        home = (await api.get("/app")).text
        assert 'id="free-warning"' in home and warning in home
    for bucket in ("Monthly allocation", "Bonus", "Reserved", "Available credits"):
        assert bucket in home
