"""All ORM classes, imported once so ``metadata`` is complete (Alembic and the app use it)."""

from pixelmint.accounts.tables import ApiKey, Plan, Team, User
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
from pixelmint.jobs.tables import Job, JobAttempt, JobLog, TeamDispatch
from pixelmint.kit.db import Base
from pixelmint.storage.tables import Image

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
    "Job",
    "JobAttempt",
    "JobLog",
    "Plan",
    "ReferenceModel",
    "Team",
    "TeamDispatch",
    "User",
    "metadata",
]
