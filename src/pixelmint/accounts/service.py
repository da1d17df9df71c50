"""Teams, users and API keys.

API keys are ``pm_`` + 43 URL-safe random characters (256 bits); only their SHA-256 hex digest is
stored. A digest (not a slow password hash) is the right tool for high-entropy random tokens and
keeps authentication to one indexed lookup per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.errors import InvalidApiKey, MissingApiKey, TeamNotFound, UnknownPlan
from pixelmint.accounts.tables import ApiKey, Plan, Team, User
from pixelmint.kit import cache
from pixelmint.kit.cache import TtlCache

API_KEY_PREFIX = "pm_"
REPLENISHMENT_PERIOD = dt.timedelta(days=30)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user in a team, through an API key or (``api_key_id`` None) a signed-in
    dashboard session (``accounts/people.py``, ``web/auth.py``)."""

    team_id: uuid.UUID
    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    plan_code: str
    # The plan's paid-job concurrency; 0 means the team runs only free generations.
    plan_max_concurrent_jobs: int


@dataclass(frozen=True)
class CreatedTeam:
    team_id: uuid.UUID
    user_id: uuid.UUID
    # The first API key, shown once (None when the team was made without one: dashboard sign-up).
    api_key: str | None


async def list_plans(session: AsyncSession) -> list[Plan]:
    """Every plan, from the cheapest (lowest queue priority) up."""
    return list((await session.scalars(select(Plan).order_by(Plan.queue_priority, Plan.code))).all())


async def get_plan(session: AsyncSession, code: str) -> Plan:
    plan = await session.get(Plan, code)
    if plan is None:
        raise UnknownPlan(f"Unknown plan {code!r}.")
    return plan


async def add_team(
    session: AsyncSession,
    *,
    name: str,
    plan: Plan,
    user_name: str = "owner",
    email: str | None = None,
    free_generations: int = 3,
    password_hash: str | None = None,
    with_api_key: bool = True,
) -> CreatedTeam:
    """Add a team on ``plan`` with its first user, its owner, and (``with_api_key``) an API key
    (the plaintext key is returned once). ``email`` is stored lower-case; ``password_hash`` comes
    from ``people.hash_password``. The team's balance and claim gate are opened by
    ``flows/teams.create_team``. Raises ``Conflict`` 409 email_taken."""
    from pixelmint.accounts import people

    if email is not None:
        email = await people.available_email(session, email)
    team = Team(id=uuid.uuid4(), name=name, plan_code=plan.code)
    user = User(
        id=uuid.uuid4(), team_id=team.id, name=user_name, email=email,
        free_generations_remaining=free_generations, role="owner", password_hash=password_hash,
    )
    session.add(team)
    await session.flush()
    session.add(user)
    await session.flush()
    key = None
    if with_api_key:
        key = new_api_key()
        session.add(ApiKey(team_id=team.id, user_id=user.id, key_hash=hash_api_key(key), prefix=key[:10]))
        await session.flush()
    return CreatedTeam(team.id, user.id, key)


def _take_free_generation(gate: str = "") -> str:
    """The UPDATE taking one of the user ``:user_id``'s free generations, ``RETURNING`` how many
    are left; ``gate``: a further condition (`` AND …``)."""
    return f"""UPDATE users SET free_generations_remaining = free_generations_remaining - 1
     WHERE id = :user_id AND free_generations_remaining > 0{gate}
    RETURNING free_generations_remaining"""


_TAKE_FREE_GENERATION = text(_take_free_generation())


def free_generation_cte(name: str, gate: str) -> str:
    """``take_free_generation`` as a CTE ``name`` of a larger statement (``flows/generation.py``):
    the user ``:user_id``'s free generations left after taking one (no row: none left, or ``gate``,
    a SQL condition on the caller's earlier CTEs, is false)."""
    return f"{name} AS (\n    {_take_free_generation(f' AND ({gate})')}\n)"


async def take_free_generation(session: AsyncSession, user_id: uuid.UUID) -> int | None:
    """Use one of the user's free generations (one statement, locking the user's row until the
    commit): the number left, or ``None`` when none was left."""
    return await session.scalar(_TAKE_FREE_GENERATION, {"user_id": user_id})


async def return_free_generation(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Give back a free generation whose job failed or was canceled."""
    await session.execute(
        text("UPDATE users SET free_generations_remaining = free_generations_remaining + 1 WHERE id = :id"),
        {"id": user_id},
    )


_AUTHENTICATE = text("""
SELECT k.id AS api_key_id, k.team_id, k.user_id, t.plan_code, p.max_concurrent_jobs
  FROM api_keys k JOIN teams t ON t.id = k.team_id JOIN plans p ON p.code = t.plan_code
 WHERE k.key_hash = :key_hash AND k.revoked_at IS NULL
""")


# The key's last use, to the minute: sent at most every TOUCH_EVERY_SECONDS per key and process,
# written when the stored time is older than that (so a key in use shows a time at most a minute
# old). SKIP LOCKED: a request that holds the row (it touched it in a transaction still open, e.g.
# waiting for a result) never makes another request wait.
_TOUCH_API_KEY = text("""
UPDATE api_keys SET last_used_at = now()
 WHERE id = (SELECT id FROM api_keys WHERE id = :id
                AND (last_used_at IS NULL OR last_used_at < now() - interval '30 seconds')
                FOR UPDATE SKIP LOCKED)
""")

# Principals by (database, key digest), kept API_KEY_TTL_SECONDS at most (kit/cache.py: cleared at
# once here and by notification in every other process when a key is revoked, a member removed or
# a plan changed; the TTL bounds a missed notification). "api_keys" is its invalidation name.
API_KEY_TTL_SECONDS = 10.0
_principals: TtlCache[Principal] = TtlCache("api_keys", API_KEY_TTL_SECONDS)
# When this process last touched each key's last_used_at (monotonic seconds), by (database, key id).
TOUCH_EVERY_SECONDS = 30.0
_touched: dict[tuple[str, uuid.UUID], float] = {}


async def authenticate(session: AsyncSession, api_key: str | None) -> Principal:
    """Resolve a bearer key to its principal. Raises ``Unauthorized`` for a missing or bad key.

    No statement in the common case: the principal comes from a per-process cache (above) and the
    key's ``last_used_at`` is touched at most every 30 seconds per key and process (one statement
    then, in the request's transaction). A revoked key is refused at once in the process that
    revoked it and in the others when its notification arrives, within ``API_KEY_TTL_SECONDS``
    at worst."""
    if not api_key:
        raise MissingApiKey("Missing API key: send 'Authorization: Bearer <apiKey>'.")
    database = cache.database_key(session)
    digest = hash_api_key(api_key)
    principal = _principals.get((database, digest))
    if principal is None:
        generation = _principals.generation
        row = (await session.execute(_AUTHENTICATE, {"key_hash": digest})).one_or_none()
        if row is None:
            raise InvalidApiKey("Invalid or revoked API key.")
        principal = Principal(
            team_id=row.team_id, user_id=row.user_id, api_key_id=row.api_key_id, plan_code=row.plan_code,
            plan_max_concurrent_jobs=row.max_concurrent_jobs,
        )
        _principals.put((database, digest), principal, generation)
    assert principal.api_key_id is not None
    now = time.monotonic()
    touched = (database, principal.api_key_id)
    if now - _touched.get(touched, -TOUCH_EVERY_SECONDS) >= TOUCH_EVERY_SECONDS:
        if len(_touched) > 100_000:
            _touched.clear()
        _touched[touched] = now
        await session.execute(_TOUCH_API_KEY, {"id": principal.api_key_id})
    return principal


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.scalar(select(User).where(User.id == user_id))
    assert user is not None
    return user


async def get_team(session: AsyncSession, team_id: uuid.UUID, *, for_update: bool = False) -> Team:
    """The team (locked with ``for_update``). Raises ``NotFound`` (team_not_found)."""
    query = select(Team).where(Team.id == team_id).execution_options(populate_existing=True)
    team = await session.scalar(query.with_for_update() if for_update else query)
    if team is None:
        raise TeamNotFound(f"No team {team_id}.")
    return team


@dataclass(frozen=True)
class PlanChange:
    team_id: uuid.UUID
    previous_plan: str
    plan: Plan


async def change_plan(session: AsyncSession, *, team_id: uuid.UUID, plan_code: str) -> PlanChange:
    """Set ``teams.plan_code`` (the team row locked). The queue's per-team priority and
    concurrency follow in ``billing.service.switch_plan``, which callers use. Credits do not move
    here: the plan's monthly credits apply from the next replenishment
    (``credits.service.replenish``; ``billing.service.change_plan`` can replenish now).
    Raises ``InvalidRequest`` 422 unknown_plan and ``NotFound`` 404 team_not_found.
    """
    plan = await get_plan(session, plan_code)
    team = await get_team(session, team_id, for_update=True)
    previous = team.plan_code
    team.plan_code = plan.code
    await session.flush()
    await cache.invalidate(session, "api_keys")  # principals carry the plan
    return PlanChange(team_id=team_id, previous_plan=previous, plan=plan)


async def team_for_stripe_customer(session: AsyncSession, customer_id: str) -> Team | None:
    """The team linked to a Stripe customer (``teams.stripe_customer_id``), locked, or ``None``."""
    return await session.scalar(
        select(Team).where(Team.stripe_customer_id == customer_id).with_for_update()
        .execution_options(populate_existing=True)
    )


async def link_stripe_customer(session: AsyncSession, team: Team, customer_id: str) -> None:
    """Record ``customer_id`` as the team's Stripe customer (unique: one customer, one team)."""
    team.stripe_customer_id = customer_id
    await session.flush()


async def set_stripe_subscription(session: AsyncSession, team: Team, subscription_id: str | None) -> None:
    """Record the team's active Stripe subscription (``None``: none). While one is set, Stripe
    invoices replenish the team and the periodic replenishment task leaves it alone."""
    team.stripe_subscription_id = subscription_id
    await session.flush()


# --------------------------------------------------------------------------------------------
# API keys of a team (the dashboard's keys page)


async def create_api_key(session: AsyncSession, *, team_id: uuid.UUID, user_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
    """A new key of the team, made by ``user_id``: the row and the plaintext key (shown once)."""
    key = new_api_key()
    row = ApiKey(team_id=team_id, user_id=user_id, key_hash=hash_api_key(key), prefix=key[:10], name=name)
    session.add(row)
    await session.flush()
    return row, key


async def list_api_keys(session: AsyncSession, team_id: uuid.UUID) -> list[tuple[ApiKey, User]]:
    """The team's keys not revoked, newest first, each with the user who made it."""
    rows = await session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id)
        .where(ApiKey.team_id == team_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return [(key, user) for key, user in rows.all()]


async def revoke_api_key(session: AsyncSession, *, team_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke one of the team's keys (at once: the next request with it is 401). Raises
    ``NotFound`` 404 api_key_not_found for an unknown, revoked or other team's key."""
    from pixelmint.accounts.errors import ApiKeyNotFound

    key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team_id, ApiKey.revoked_at.is_(None))
        .with_for_update()
    )
    if key is None:
        raise ApiKeyNotFound("No such API key in your team.")
    key.revoked_at = dt.datetime.now(dt.UTC)
    await session.flush()
    await cache.invalidate(session, "api_keys")
    return key
