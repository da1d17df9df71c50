"""The SSRF guard's address rules and the one setting that relaxes them (with its old name)."""

from __future__ import annotations

import ipaddress

import pytest

from pixelmint.kit.netguard import is_global, refused_address
from pixelmint.settings import Settings


@pytest.mark.parametrize(("address", "allowed"), [
    ("93.184.215.14", True), ("2606:4700::1", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("::1", False), ("::ffff:127.0.0.1", False), ("64:ff9b::a00:1", False), ("2002:7f00:1::", False), ("224.0.0.1", False),
])
def test_only_global_addresses_pass(address: str, allowed: bool) -> None:
    assert is_global(ipaddress.ip_address(address)) is allowed


async def test_refused_ahead_of_time_unless_allowed() -> None:
    assert str(await refused_address("http://127.0.0.1:8080/x", allow_private=False)) == "127.0.0.1"
    assert await refused_address("http://127.0.0.1:8080/x", allow_private=True) is None
    assert await refused_address("http://[::1]/x", allow_private=False) is not None


@pytest.mark.parametrize("name", ["PIXELMINT_ALLOW_PRIVATE_URLS", "PIXELMINT_ALLOW_PRIVATE_IMAGE_URLS"])
def test_one_setting_under_its_new_and_its_old_name(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "true")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allow_private_urls is True and settings.allow_private_image_urls is True
    assert Settings(_env_file=None).allow_private_urls is True  # type: ignore[call-arg]
