"""All ORM classes, imported once so ``metadata`` is complete (Alembic and the app use it)."""

from pixelmint.accounts.tables import ApiKey, PasswordToken, Plan, Team, TeamInvite, User, WebSession
from pixelmint.billing.tables import StripeEvent
from pixelmint.catalog.tables import ReferenceModel
from pixelmint.credits.tables import (
    App,
    AppOperation,
    CreditBalance,
    CreditReservation,
    CreditTransaction,
    PricingConfig,
)
from pixelmint.custom_models.tables import CustomModel, CustomModelVersion
from pixelmint.jobs.tables import Job, JobAttempt, JobLog, ProviderWebhookEvent, TeamDispatch
from pixelmint.kit.db import Base
from pixelmint.kit.tables import IdempotencyKey
from pixelmint.storage.tables import Image
from pixelmint.webhooks.tables import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    WebhookSigningSecret,
)

metadata = Base.metadata

__all__ = [
    "App",
    "AppOperation",
    "PricingConfig",
    "ApiKey",
    "CreditBalance",
    "CreditReservation",
    "CreditTransaction",
    "CustomModel",
    "CustomModelVersion",
    "Image",
    "IdempotencyKey",
    "Job",
    "JobAttempt",
    "JobLog",
    "PasswordToken",
    "Plan",
    "ProviderWebhookEvent",
    "ReferenceModel",
    "StripeEvent",
    "Team",
    "TeamDispatch",
    "TeamInvite",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookSigningSecret",
    "WebSession",
    "metadata",
]
