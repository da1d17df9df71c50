"""Provider lookup by name, built from settings."""

from __future__ import annotations

from pixelmint.kit.errors import PixelmintError
from pixelmint.providers.base import Provider, RemoteProvider
from pixelmint.providers.procedural import PLACEHOLDER_LABEL, ProceduralProvider
from pixelmint.settings import Settings


class ProviderNotConfigured(PixelmintError):
    status_code = 503
    code = "provider_not_configured"


def provider_label(name: str) -> str:
    """A job's provider as the API shows it: its name, but ``procedural (placeholder renderer)``
    for the offline placeholder, so nobody takes its pictures for a model's."""
    return PLACEHOLDER_LABEL if name == ProceduralProvider.name else name


class Providers:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self._providers = providers

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """``procedural`` always; ``fal``, ``replicate`` and ``openai`` when their credential
        (``PIXELMINT_FAL_KEY``, ``PIXELMINT_REPLICATE_API_TOKEN``, ``PIXELMINT_OPENAI_API_KEY``) is
        set; ``diffusers`` when ``PIXELMINT_DIFFUSERS_MODEL_DIR`` is. Backend modules (and their
        SDKs) are imported only then."""
        providers: dict[str, Provider] = {
            "procedural": ProceduralProvider(delay_seconds=settings.procedural_delay_seconds)
        }
        if settings.fal_key:
            from pixelmint.providers.fal import FalProvider

            providers["fal"] = FalProvider.from_settings(settings)
        if settings.replicate_api_token:
            from pixelmint.providers.replicate import ReplicateProvider

            providers["replicate"] = ReplicateProvider.from_settings(settings)
        if settings.openai_api_key:
            from pixelmint.providers.openai_images import OpenAIImagesProvider

            providers["openai"] = OpenAIImagesProvider.from_settings(settings)
        if settings.diffusers_model_dir:  # the optional "diffusers" extra
            from pixelmint.providers.diffusers_local import DiffusersProvider

            providers["diffusers"] = DiffusersProvider.from_settings(settings)
        return cls(providers)

    def names(self) -> list[str]:
        return sorted(self._providers)

    def remote(self, name: str) -> RemoteProvider | None:
        """The provider as a ``RemoteProvider`` (submit/status/webhooks…), or None for a local one
        (``procedural``). Raises ``ProviderNotConfigured`` for an unknown name."""
        provider = self.get(name)
        return provider if isinstance(provider, RemoteProvider) else None

    async def aclose(self) -> None:
        """Close the providers' HTTP clients (call at shutdown)."""
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderNotConfigured(
                f"Provider {name!r} is not configured on this server.", provider=name
            ) from None
