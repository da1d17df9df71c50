"""The webhooks pages: an endpoint added with its event types and its secret shown once, edit,
disable and enable, rotation (the new secret shown once), the delivery log with the attempts a
local receiver answered, resend, replay of failed deliveries, delete after a confirmation page;
members and other teams refused, and a post without the CSRF token refused."""

from __future__ import annotations

import re

import httpx
import pytest

from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.webhooks import service as webhooks
from tests.web.helpers import PASSWORD, csrf, other_client, post_form, shown_secret
from tests.web.pages import signed_up_with_key, team_id
from tests.webhooks.conftest import delivering, eventually
from tests.webhooks.receiver import Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_private_urls = True  # the receiver listens on 127.0.0.1
    settings.webhook_retry_schedule_seconds = [0, 0.2]
    settings.webhook_poll_interval_seconds = 1.0
    settings.webhook_timeout_seconds = 5
    return settings


def endpoint_ids(html: str) -> list[str]:
    return re.findall(r'data-endpoint-id="([0-9a-f-]{36})"', html)


def deliveries(html: str) -> list[tuple[str, str]]:
    return re.findall(r'data-delivery-id="([0-9a-f-]{36})" data-status="(\w+)"', html)


async def add(client: httpx.AsyncClient, url: str, *event_types: str) -> tuple[str, str]:
    """Add an endpoint through the form; (its id, the secret the answer showed)."""
    data: dict[str, str | list[str]] = {"url": url, "description": "tests", "event_types": list(event_types)}
    page = await post_form(client, "/app/webhooks", data)  # type: ignore[arg-type]
    assert page.status_code == 201, page.text
    return endpoint_ids(page.text)[0], shown_secret(page.text, "new-secret-value")


async def test_add_edit_disable_rotate_and_delete(api: httpx.AsyncClient, db: Database) -> None:
    key = await signed_up_with_key(api)
    endpoint, secret = await add(api, "http://127.0.0.1:9/hooks", "job.succeeded", "credits.low_balance")
    assert secret.startswith("whsec_")
    api_view = (await api.get(f"/api/v1/webhook-endpoints/{endpoint}", headers=key)).json()
    assert api_view["eventTypes"] == ["job.succeeded", "credits.low_balance"] and api_view["enabled"]
    # The secret is shown once: not on the list, not on the endpoint's page.
    assert secret not in (await api.get("/app/webhooks")).text
    page = await api.get(f"/app/webhooks/{endpoint}")
    assert page.status_code == 200 and secret not in page.text and 'id="no-deliveries"' in page.text

    # A refused URL is explained beside the field, nothing added.
    bad = await post_form(api, "/app/webhooks", {"url": "ftp://example.com/x"})
    assert bad.status_code == 422 and 'id="e-url"' in bad.text and 'value="ftp://example.com/x"' in bad.text
    assert endpoint_ids((await api.get("/app/webhooks")).text) == [endpoint]

    # Edit: another URL and every event type (none ticked).
    edited = await post_form(api, f"/app/webhooks/{endpoint}", {"url": "http://127.0.0.1:9/other", "description": ""})
    assert edited.status_code == 303
    api_view = (await api.get(f"/api/v1/webhook-endpoints/{endpoint}", headers=key)).json()
    assert api_view["url"] == "http://127.0.0.1:9/other" and api_view["eventTypes"] == []
    refused = await post_form(api, f"/app/webhooks/{endpoint}", {"url": "http://127.0.0.1:9/x", "event_types": "job.exploded"})
    assert refused.status_code == 422 and "is not an event type" in refused.text
    assert (await api.get(f"/api/v1/webhook-endpoints/{endpoint}", headers=key)).json()["url"] == "http://127.0.0.1:9/other"

    # Disable, enable.
    assert (await post_form(api, f"/app/webhooks/{endpoint}/enabled", {"enabled": "false"})).status_code == 303
    assert 'id="endpoint-state">disabled<' in (await api.get(f"/app/webhooks/{endpoint}")).text
    assert (await post_form(api, f"/app/webhooks/{endpoint}/enabled", {"enabled": "true"})).status_code == 303
    assert 'id="endpoint-state">enabled<' in (await api.get(f"/app/webhooks/{endpoint}")).text

    # Rotate: a new secret shown once.
    rotated = await post_form(api, f"/app/webhooks/{endpoint}/rotate")
    new_secret = shown_secret(rotated.text, "new-secret-value")
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert new_secret not in (await api.get(f"/app/webhooks/{endpoint}")).text

    # Delete after a confirmation page.
    assert f'action="/app/webhooks/{endpoint}/delete"' in (await api.get(f"/app/webhooks/{endpoint}/delete")).text
    assert (await post_form(api, f"/app/webhooks/{endpoint}/delete")).status_code == 303
    assert endpoint_ids((await api.get("/app/webhooks")).text) == []
    assert (await api.get(f"/api/v1/webhook-endpoints/{endpoint}", headers=key)).status_code == 404


async def test_the_delivery_log_resend_and_replay(api: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    await signed_up_with_key(api)
    team = await team_id(db)
    async with Receiver(script=[(500, {}), (503, {})]) as receiver, delivering(db, settings):
        endpoint, _ = await add(api, receiver.url + "/hooks")
        async with db.transaction() as session:
            assert await webhooks.emit(session, team, "job.succeeded", {"id": "job-1"}) == 1

        async def failed() -> list[tuple[str, str]]:
            shown = deliveries((await api.get(f"/app/webhooks/{endpoint}")).text)
            return shown if shown and shown[0][1] == "failed" else []

        [(delivery, _)] = await eventually(failed)
        page = (await api.get(f"/app/webhooks/{endpoint}")).text
        attempts = re.findall(r"<td>(\d)</td><td><time [^>]*>.*?</time></td><td>(\d+)</td><td>\d+ ms</td>", page)
        assert attempts == [("1", "500"), ("2", "503")]
        assert "answer 500" in page and "answer 503" in page and "job.succeeded" in page

        # Resend: a new delivery of the same message, which the receiver now takes (204).
        resent = await post_form(api, f"/app/webhooks/{endpoint}/deliveries/{delivery}/resend")
        assert resent.status_code == 303 and resent.headers["location"].endswith("?resent=1")
        requests = await receiver.wait_for(3)
        assert requests[2].headers["webhook-id"] == requests[0].headers["webhook-id"]

        async def succeeded() -> list[tuple[str, str]]:
            shown = deliveries((await api.get(f"/app/webhooks/{endpoint}?status=succeeded")).text)
            return shown

        assert len(await eventually(succeeded)) == 1
        assert [d for d, _ in deliveries((await api.get(f"/app/webhooks/{endpoint}?status=failed")).text)] == [delivery]

        # Replay the failed ones since midnight: the original delivery goes again.
        replayed = await post_form(api, f"/app/webhooks/{endpoint}/replay", {"since": "2000-01-01T00:00"})
        assert replayed.status_code == 303 and replayed.headers["location"].endswith("?replayed=1")
        assert 'id="replayed">1 failed deliveries' in (await api.get(replayed.headers["location"])).text
        await receiver.wait_for(4)
        bad = await post_form(api, f"/app/webhooks/{endpoint}/replay", {"since": "yesterday"})
        assert bad.status_code == 422 and "Use a time such as" in bad.text


async def test_members_other_teams_and_forged_posts_are_refused(api: httpx.AsyncClient, db: Database) -> None:
    await signed_up_with_key(api, "a@example.com")
    endpoint, _ = await add(api, "http://127.0.0.1:9/hooks")

    b = other_client(api)
    await signed_up_with_key(b, "b@example.com")
    assert endpoint_ids((await b.get("/app/webhooks")).text) == []
    assert (await b.get(f"/app/webhooks/{endpoint}")).status_code == 404
    for path, data in (("", {"url": "http://127.0.0.1:9/x"}), ("/enabled", {"enabled": "false"}), ("/rotate", {}),
                       ("/delete", {}), ("/replay", {"since": "2000-01-01T00:00"})):
        answer = await post_form(b, f"/app/webhooks/{endpoint}{path}", data)
        assert answer.status_code == 404 and "<html" in answer.text, path

    # A member of the team (not an owner or admin) gets 403 and no navigation entry.
    invite = await post_form(api, "/app/team/invites", {"role": "member"})
    token = shown_secret(invite.text, "invite-link-value").split("token=")[1]
    member = other_client(api)
    await member.get(f"/invite?token={token}")
    await post_form(member, "/invite", {"token": token, "email": "m@example.com", "password": PASSWORD})
    assert (await member.get("/app/webhooks")).status_code == 403
    assert 'href="/app/webhooks"' not in (await member.get("/app")).text

    await csrf(api)
    assert (await api.post(f"/app/webhooks/{endpoint}/delete")).status_code == 403
    assert endpoint_ids((await api.get("/app/webhooks")).text) == [endpoint]
