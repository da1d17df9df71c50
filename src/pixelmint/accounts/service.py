"""Teams, users and API keys.

API keys are ``pm_`` + 43 URL-safe random characters (256 bits); only their SHA-256 hex digest is
stored. A digest (not a slow password hash) is the right tool for high-entropy random tokens and
keeps authentication to one indexed lookup per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.tables import ApiKey, Plan, Team, User
from pixelmint.credits import service as credits
from pixelmint.jobs import queue
from pixelmint.kit.errors import InvalidRequest, Unauthorized

API_KEY_PREFIX = "pm_"
REPLENISHMENT_PERIOD = dt.timedelta(days=30)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of a user in a team."""

    team_id: uuid.UUID
    user_id: uuid.UUID
    api_key_id: uuid.UUID
    plan_code: str
    # The plan's paid-job concurrency; 0 means the team runs only free generations.
    plan_max_concurrent_jobs: int


@dataclass(frozen=True)
class CreatedTeam:
    team_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str


async def get_plan(session: AsyncSession, code: str) -> Plan:
    plan = await session.get(Plan, code)
    if plan is None:
        raise InvalidRequest(f"Unknown plan {code!r}.", code="unknown_plan")
    return plan


async def create_team(
    session: AsyncSession,
    *,
    name: str,
    plan_code: str,
    credits_amount: Decimal | None = None,
    user_name: str = "owner",
    email: str | None = None,
    free_generations: int = 3,
) -> CreatedTeam:
    """Create a team on ``plan_code`` with its first user and API key.

    The team starts with the plan's monthly allocation, or ``credits_amount`` if given, granted
    into the allocation bucket through the ledger. The plaintext key is returned once.
    """
    plan = await get_plan(session, plan_code)
    team = Team(id=uuid.uuid4(), name=name, plan_code=plan.code)
    user = User(
        id=uuid.uuid4(), team_id=team.id, name=user_name, email=email,
        free_generations_remaining=free_generations,
    )
    key = new_api_key()
    session.add(team)
    await session.flush()
    session.add(user)
    await session.flush()
    session.add(ApiKey(team_id=team.id, user_id=user.id, key_hash=hash_api_key(key), prefix=key[:10]))
    now = dt.datetime.now(dt.UTC)
    await credits.open_balance(
        session,
        team_id=team.id,
        next_replenishment_at=now + REPLENISHMENT_PERIOD if plan.monthly_credits > 0 else None,
    )
    amount = plan.monthly_credits if credits_amount is None else credits_amount
    if amount > 0:
        await credits.grant(
            session, team_id=team.id, amount=amount, bucket="allocation", ledger_type="grant",
            description=f"initial allocation ({plan.code} plan)",
        )
    await queue.open_team_dispatch(session, team_id=team.id, plan=plan)
    return CreatedTeam(team.id, user.id, key)


_AUTHENTICATE = text("""
SELECT k.id AS api_key_id, k.team_id, k.user_id, t.plan_code, p.max_concurrent_jobs
  FROM api_keys k JOIN teams t ON t.id = k.team_id JOIN plans p ON p.code = t.plan_code
 WHERE k.key_hash = :key_hash AND k.revoked_at IS NULL
""")


async def authenticate(session: AsyncSession, api_key: str | None) -> Principal:
    """Resolve a bearer key to its principal. Raises ``Unauthorized`` for a missing or bad key."""
    if not api_key:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <apiKey>'.", code="missing_api_key")
    row = (await session.execute(_AUTHENTICATE, {"key_hash": hash_api_key(api_key)})).one_or_none()
    if row is None:
        raise Unauthorized("Invalid or revoked API key.", code="invalid_api_key")
    return Principal(
        team_id=row.team_id, user_id=row.user_id, api_key_id=row.api_key_id, plan_code=row.plan_code,
        plan_max_concurrent_jobs=row.max_concurrent_jobs,
    )


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.scalar(select(User).where(User.id == user_id))
    assert user is not None
    return user
