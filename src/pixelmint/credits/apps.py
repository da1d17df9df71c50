"""The credit API for other apps: register apps with a service key and a price list, then
validate → (operate) → consume, or reserve → capture | release for long operations.

Service keys are ``pms_`` + 43 URL-safe random characters; only their SHA-256 digest is stored
(as for API keys). An app names the team whose credits it uses in each call; apps are registered
by the operator (CLI or admin API). An app may act on a team only with that team's grant
(``app_grants``: created by an admin, or by the team with its API key); without one every call
about that team (validate, consume, reserve, capture, release, usage, team-balance) is 403
``app_not_authorized``, whether or not the team exists. Revoking a grant releases the app's open
holds on the team.

Holds taken through this API carry ``expires_at`` (a time-to-live, at most
``PIXELMINT_MAX_HOLD_SECONDS``); ``release_expired_holds`` releases the ones not settled in time
and runs periodically in every worker process; capturing an expired hold is 409 ``hold_expired``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.errors import TeamNotFound
from pixelmint.credits import service as credits
from pixelmint.credits.errors import (
    AppExists,
    AppNotAuthorized,
    AppNotFound,
    HoldAlreadySettled,
    HoldExpired,
    HoldNotFound,
    InsufficientCredits,
    InvalidAmount,
    InvalidCost,
    InvalidServiceKey,
    InvalidTtl,
    UnknownOperation,
)
from pixelmint.credits.pricing import to_credits
from pixelmint.credits.tables import App, AppGrant, AppOperation, CreditBalance, CreditReservation
from pixelmint.kit import cache
from pixelmint.kit.cache import TtlCache
from pixelmint.kit.errors import Conflict

SERVICE_KEY_PREFIX = "pms_"


@dataclass(frozen=True)
class AppPrincipal:
    app_id: uuid.UUID
    name: str


@dataclass(frozen=True)
class RegisteredApp:
    app_id: uuid.UUID
    service_key: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def register_app(session: AsyncSession, *, name: str, operations: dict[str, Decimal]) -> RegisteredApp:
    """Register an app and its operation costs (credits); the service key is returned once.
    Raises ``Conflict`` (app_exists) for a taken name."""
    if await session.scalar(select(App.id).where(App.name == name)) is not None:
        raise AppExists(f"An app named {name!r} exists.")
    key = SERVICE_KEY_PREFIX + secrets.token_urlsafe(32)
    app = App(id=uuid.uuid4(), name=name, key_hash=_hash(key), prefix=key[:10])
    session.add(app)
    await session.flush()
    await set_operation_costs(session, app.id, operations)
    return RegisteredApp(app.id, key)


async def set_operation_costs(session: AsyncSession, app_id: uuid.UUID, operations: dict[str, Decimal]) -> None:
    """Upsert an app's price list: ``{operation: credits}`` (>= 0, two places). Raises
    ``NotFound`` (app_not_found) for an unknown app."""
    if await session.get(App, app_id) is None:
        raise AppNotFound(f"No app {app_id}.")
    for operation, cost in operations.items():
        if cost < 0:
            raise InvalidCost(f"The cost of {operation!r} must be >= 0.")
        stmt = insert(AppOperation).values(app_id=app_id, operation=operation, cost=to_credits(cost))
        await session.execute(stmt.on_conflict_do_update(index_elements=["app_id", "operation"], set_={"cost": stmt.excluded.cost}))
    await cache.invalidate(session, "app_prices")


# Per-process caches of what every credit-API call reads (kit/cache.py): apps by service-key
# digest, grants that exist, operation prices. Only what exists is cached; a withdrawn grant or a
# changed price clears its cache here at once and in every other process by notification; the
# TTL bounds a missed notification.
APP_CACHE_TTL_SECONDS = 10.0
_apps: TtlCache[AppPrincipal] = TtlCache("apps", APP_CACHE_TTL_SECONDS)
_grants: TtlCache[bool] = TtlCache("app_grants", APP_CACHE_TTL_SECONDS)
_prices: TtlCache[Decimal] = TtlCache("app_prices", APP_CACHE_TTL_SECONDS)


async def authenticate_app(session: AsyncSession, service_key: str | None) -> AppPrincipal:
    if not service_key or not service_key.startswith(SERVICE_KEY_PREFIX):
        raise InvalidServiceKey("This endpoint takes an app's service key: 'Authorization: Bearer pms_…'.")
    key = (cache.database_key(session), _hash(service_key))
    principal = _apps.get(key)
    if principal is None:
        generation = _apps.generation
        app = await session.scalar(select(App).where(App.key_hash == key[1], App.revoked_at.is_(None)))
        if app is None:
            raise InvalidServiceKey("Invalid or revoked service key.")
        principal = AppPrincipal(app.id, app.name)
        _apps.put(key, principal, generation)
    return principal


@dataclass(frozen=True)
class Grant:
    team_id: uuid.UUID
    app_id: uuid.UUID
    app_name: str
    granted_by: str  # admin | team
    granted_at: dt.datetime


async def authorize_app(session: AsyncSession, *, team_id: uuid.UUID, app_id: uuid.UUID, granted_by: str) -> Grant:
    """Let app ``app_id`` use team ``team_id``'s credits (``granted_by``: ``admin`` | ``team``).
    Idempotent: an existing grant is kept as it is. Raises ``NotFound`` (app_not_found for an
    unknown or revoked app, team_not_found)."""
    if await session.scalar(select(App.id).where(App.id == app_id, App.revoked_at.is_(None))) is None:
        raise AppNotFound(f"No app {app_id}.")
    await team_balance(session, team_id)
    await session.execute(
        insert(AppGrant).values(team_id=team_id, app_id=app_id, granted_by=granted_by).on_conflict_do_nothing()
    )
    return (await grants(session, team_id=team_id, app_id=app_id))[0]


async def revoke_app(session: AsyncSession, *, team_id: uuid.UUID, app_id: uuid.UUID) -> int:
    """Withdraw app ``app_id``'s grant on team ``team_id`` (a no-op without one) and release the
    app's holds on the team that are still open. Returns how many holds were released."""
    await session.execute(delete(AppGrant).where(AppGrant.team_id == team_id, AppGrant.app_id == app_id))
    await cache.invalidate(session, "app_grants")
    held = await session.scalars(
        select(CreditReservation.id).where(
            CreditReservation.team_id == team_id, CreditReservation.app_id == app_id, CreditReservation.status == "held"
        )
    )
    return sum([await credits.release(session, hold_id, description="app's grant revoked") for hold_id in held.all()])


async def grants(
    session: AsyncSession, *, team_id: uuid.UUID | None = None, app_id: uuid.UUID | None = None
) -> list[Grant]:
    """The grants of a team, of an app, or of both (oldest first)."""
    query = select(AppGrant, App.name).join(App, App.id == AppGrant.app_id).order_by(AppGrant.created_at, App.name)
    if team_id is not None:
        query = query.where(AppGrant.team_id == team_id)
    if app_id is not None:
        query = query.where(AppGrant.app_id == app_id)
    return [Grant(g.team_id, g.app_id, name, g.granted_by, g.created_at) for g, name in await session.execute(query)]


async def require_grant(session: AsyncSession, app: AppPrincipal, team_id: uuid.UUID) -> None:
    """Raises ``Forbidden`` (403 app_not_authorized) unless team ``team_id`` granted ``app``."""
    key = (cache.database_key(session), team_id, app.app_id)
    if _grants.get(key):
        return
    generation = _grants.generation
    granted = await session.scalar(
        select(AppGrant.app_id).where(AppGrant.team_id == team_id, AppGrant.app_id == app.app_id)
    )
    if granted is None:
        raise AppNotAuthorized(f"App {app.name!r} is not authorized to use team {team_id}'s credits: the team "
                               "(or an admin) must grant it first.", teamId=str(team_id))
    _grants.put(key, True, generation)


async def price(session: AsyncSession, app: AppPrincipal, operation: str, amount: Decimal | None) -> Decimal:
    """The credits an operation costs: ``amount`` when given, else the app's configured cost.
    Raises ``NotFound`` (unknown_operation) for an operation without a price."""
    if amount is not None:
        if amount <= 0:
            raise InvalidAmount("amount must be > 0.", field="amount")
        return to_credits(amount)
    key = (cache.database_key(session), app.app_id, operation)
    cost = _prices.get(key)
    if cost is not None:
        return cost
    generation = _prices.generation
    cost = await session.scalar(
        select(AppOperation.cost).where(AppOperation.app_id == app.app_id, AppOperation.operation == operation)
    )
    if cost is None:
        raise UnknownOperation(
            f"App {app.name!r} has no price for operation {operation!r}; give an amount or configure it."
        )
    _prices.put(key, cost, generation)
    return cost


async def team_balance(session: AsyncSession, team_id: uuid.UUID) -> CreditBalance:
    """A team's balance row. Raises ``NotFound`` (team_not_found)."""
    balance = await session.get(CreditBalance, team_id, populate_existing=True)
    if balance is None:
        raise TeamNotFound(f"No team {team_id}.")
    return balance


@dataclass(frozen=True)
class Validation:
    has_credits: bool
    available_credits: Decimal
    required_credits: Decimal


async def validate(
    session: AsyncSession, app: AppPrincipal, *, team_id: uuid.UUID, operation: str, amount: Decimal | None
) -> Validation:
    """Would ``operation`` be affordable now? (A hint: only ``consume``/``reserve`` decide.)"""
    await require_grant(session, app, team_id)
    required = await price(session, app, operation, amount)
    balance = await team_balance(session, team_id)
    available = balance.allocation_credits + balance.bonus_credits
    return Validation(available >= required, available, required)


async def consume(
    session: AsyncSession, app: AppPrincipal, *, team_id: uuid.UUID, operation: str, amount: Decimal | None,
    description: str | None, metadata: dict[str, Any], fail_open: bool, alone: bool = False,
) -> credits.Consumption:
    """Charge the team for an operation the app has performed. Raises ``InsufficientCredits``.
    ``alone``: see ``credits.service.consume`` (the charge may commit on its own)."""
    await require_grant(session, app, team_id)
    cost = await price(session, app, operation, amount)
    return await credits.consume(
        session, team_id=team_id, amount=cost, operation=operation, app_id=app.app_id, description=description,
        metadata=metadata, fail_open=fail_open, alone=alone and not session.in_transaction(),
    )


async def hold(
    session: AsyncSession, app: AppPrincipal, *, team_id: uuid.UUID, operation: str, amount: Decimal | None,
    ttl_seconds: int, max_ttl_seconds: int, fail_open: bool,
) -> CreditReservation:
    """Reserve credits for a long operation; settle with ``capture`` or ``release`` within
    ``ttl_seconds`` (1..max) or the sweeper releases the hold."""
    if not 1 <= ttl_seconds <= max_ttl_seconds:
        raise InvalidTtl(f"ttlSeconds must be 1..{max_ttl_seconds}.", field="ttlSeconds")
    await require_grant(session, app, team_id)
    cost = await price(session, app, operation, amount)
    reservation = await credits.reserve(
        session, team_id=team_id, amount=cost, operation=operation, app_id=app.app_id,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl_seconds), fail_open=fail_open,
    )
    held = await session.get(CreditReservation, reservation.id)
    assert held is not None
    return held


async def _app_hold(session: AsyncSession, app: AppPrincipal, hold_id: uuid.UUID) -> CreditReservation:
    """The app's hold, read afresh. Raises ``NotFound`` (hold_not_found), ``Forbidden``
    (app_not_authorized: the team withdrew its grant)."""
    held = await session.scalar(
        select(CreditReservation)
        .where(CreditReservation.id == hold_id, CreditReservation.app_id == app.app_id)
        .execution_options(populate_existing=True)
    )
    if held is None:
        raise HoldNotFound(f"No hold {hold_id}.")
    await require_grant(session, app, held.team_id)
    return held


def _already_settled(held: CreditReservation) -> Conflict:
    return HoldAlreadySettled(f"Hold {held.id} is already {held.status}.", status=held.status)


async def capture(
    session: AsyncSession, app: AppPrincipal, hold_id: uuid.UUID, *, amount: Decimal | None
) -> CreditReservation:
    """Charge a hold (all of it, or ``amount`` <= held: the rest goes back). Exactly once: a
    second capture, a capture after a release, and the loser of a capture racing a release are
    409 ``hold_already_settled`` (``status``: what the hold became); after expiry 409
    ``hold_expired``."""
    held = await _app_hold(session, app, hold_id)
    if held.status != "held":
        raise _already_settled(held)
    if held.expires_at is not None and held.expires_at <= dt.datetime.now(dt.UTC):
        raise HoldExpired(f"Hold {hold_id} expired at {held.expires_at.isoformat()}; the sweeper releases it.")
    if amount is not None and not Decimal("0") <= amount <= held.amount:
        raise InvalidAmount(f"amount must be 0..{held.amount} (the held amount).")
    settled = await credits.capture(session, held.id, amount=to_credits(amount) if amount is not None else None)
    await session.refresh(held)
    if settled is None:  # settled by a concurrent release (or the sweeper) after we read it
        raise _already_settled(held)
    return held


async def release(session: AsyncSession, app: AppPrincipal, hold_id: uuid.UUID) -> CreditReservation:
    """Return a hold's credits. Releasing a released hold is a no-op; a captured one (also when a
    capture wins a race with this release) is 409 ``hold_already_settled``."""
    held = await _app_hold(session, app, hold_id)
    if held.status == "held":
        await credits.release(session, held.id, description="released by app")
        await session.refresh(held)  # released, by us or meanwhile, or captured meanwhile
    if held.status != "released":
        raise _already_settled(held)
    return held


async def release_expired_holds(session: AsyncSession, *, batch: int = 500) -> int:
    """Release holds past ``expires_at`` (``SKIP LOCKED``: safe from every worker). Returns how many.
    The oldest ``batch`` holds, released team by team in team id order: each release locks its
    team's balance, and two workers locking balances in one order cannot deadlock."""
    holds = (
        await session.execute(
            text("""SELECT id, team_id FROM credit_reservations
                     WHERE status = 'held' AND expires_at IS NOT NULL AND expires_at <= now()
                     ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED"""),
            {"batch": batch},
        )
    ).all()
    for hold in sorted(holds, key=lambda hold: (hold.team_id, hold.id)):
        await credits.release(session, hold.id, description="hold expired")
    return len(holds)


@dataclass(frozen=True)
class UsageRow:
    app: str
    operation: str
    count: int
    credits: Decimal


async def usage(
    session: AsyncSession, *, team_id: uuid.UUID | None = None, app_id: uuid.UUID | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None,
) -> list[UsageRow]:
    """Credits spent per app and operation (consumes and captures), for a team, an app or both.
    Pixelmint's own jobs appear as app ``pixelmint``."""
    rows = await session.execute(
        text("""
            SELECT COALESCE(a.name, 'pixelmint') AS app, t.operation, count(*) AS count, sum(t.amount) AS credits
              FROM credit_transactions t LEFT JOIN apps a ON a.id = t.app_id
             WHERE t.type IN ('consume', 'capture')
               AND (CAST(:team AS uuid) IS NULL OR t.team_id = :team)
               AND (CAST(:app AS uuid) IS NULL OR t.app_id = :app)
               AND (CAST(:since AS timestamptz) IS NULL OR t.created_at >= :since)
               AND (CAST(:until AS timestamptz) IS NULL OR t.created_at < :until)
             GROUP BY 1, 2 ORDER BY 1, 2
        """),
        {"team": team_id, "app": app_id, "since": since, "until": until},
    )
    return [UsageRow(r.app, r.operation or "", r._mapping["count"], r.credits) for r in rows]  # r.count: the tuple method


__all__ = ["InsufficientCredits"]
