"""Provider lookup by name, built from settings."""

from __future__ import annotations

from pixelmint.kit.errors import PixelmintError
from pixelmint.providers.base import Provider
from pixelmint.providers.procedural import ProceduralProvider
from pixelmint.settings import Settings


class ProviderNotConfigured(PixelmintError):
    status_code = 503
    code = "provider_not_configured"


class Providers:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self._providers = providers

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        return cls({"procedural": ProceduralProvider(delay_seconds=settings.procedural_delay_seconds)})

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderNotConfigured(
                f"Provider {name!r} is not configured on this server.", provider=name
            ) from None
