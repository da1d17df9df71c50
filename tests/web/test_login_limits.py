"""Sign-in attempts are rate limited per email (and per client address)."""

from __future__ import annotations

import httpx
import pytest

from pixelmint.settings import Settings
from tests.web.helpers import sign_in, sign_up


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.rate_limit_login_team = "3/minute"  # per email
    return settings


async def test_sign_in_attempts_are_limited_per_email(api: httpx.AsyncClient) -> None:
    await sign_up(api, "ada@example.com")
    answers = [(await sign_in(api, "ada@example.com", "wrong password")).status_code for _ in range(3)]
    assert answers == [401, 401, 401]
    limited = await sign_in(api, "ADA@example.com")  # the right password, but too many tries
    assert limited.status_code == 429 and "Too many attempts" in limited.text
    assert int(limited.headers["retry-after"]) >= 1
    assert (await sign_in(api, "someone@example.com", "whatever pw")).status_code == 401  # another email
