"""People in teams: email + password sign-in, roles, dashboard sessions, invites and set-password
links.

- Passwords: Argon2id through ``pwdlib`` (``PasswordHash.recommended()``: m=64 MiB, t=3, p=4),
  hashed and verified in a thread (~50 ms of CPU each); hashes made with older parameters are
  upgraded at sign-in (``verify_and_update``). An unknown email is checked against a dummy hash,
  so it costs the same time and gets the same ``InvalidCredentials`` as a wrong password.
- Roles (``users.role``): ``owner`` (everything, the only one who grants, changes or removes the
  owner role; a team keeps at least one), ``admin`` (API keys, members, invites, billing),
  ``member`` (generate, models, gallery). One team per user: see ``tables.User``.
- Sessions, invites and set-password links are random tokens (``secrets.token_urlsafe(32)``, 256
  bits) of which only the SHA-256 is stored, as for API keys: a database leak gives no usable
  token. Sessions expire (``PIXELMINT_WEB_SESSION_DAYS``), can be listed and revoked; invites and
  links work once, until they expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidLink,
    InviteNotFound,
    LastOwner,
    MemberNotFound,
    RoleForbidden,
    SessionNotFound,
    WeakPassword,
)
from pixelmint.accounts.service import Principal, get_team
from pixelmint.accounts.tables import ROLES, ApiKey, PasswordToken, Team, TeamInvite, User, WebSession
from pixelmint.kit.cache import invalidate as invalidate_caches

PASSWORD_MIN = 8
PASSWORD_MAX = 1024
MANAGERS = ("owner", "admin")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

_hasher = PasswordHash.recommended()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Emails and passwords


def normalize_email(email: str) -> str:
    """``email`` trimmed and lower-cased. Raises ``InvalidRequest`` 422 invalid_email."""
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise InvalidEmail("Enter a valid email address, like name@example.com.", field="email")
    return value


def check_password(password: str) -> None:
    """Raises ``InvalidRequest`` 422 weak_password for fewer than 8 or more than 1024 characters."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise WeakPassword(f"Choose a password of at least {PASSWORD_MIN} characters.", field="password")


async def hash_password(password: str) -> str:
    """The Argon2id hash of an acceptable password (``check_password``), computed in a thread."""
    check_password(password)
    return await asyncio.to_thread(_hasher.hash, password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


async def _active_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(
        select(User).where(func.lower(User.email) == email, User.removed_at.is_(None))
    )


async def available_email(session: AsyncSession, email: str) -> str:
    """``email`` normalized, when nobody signs in with it yet. Raises ``InvalidRequest`` 422
    invalid_email and ``Conflict`` 409 email_taken."""
    value = normalize_email(email)
    if await _active_user_by_email(session, value) is not None:
        raise EmailTaken("An account with this email already exists: sign in instead.", field="email")
    return value


async def check_credentials(session: AsyncSession, email: str, password: str) -> User:
    """The person who signs in with ``email`` and ``password``. Raises ``Unauthorized`` 401
    invalid_credentials, the same for an unknown email, a wrong password, a removed member or a
    user without a password, after the same work."""
    try:
        user = await _active_user_by_email(session, normalize_email(email))
    except InvalidEmail:
        user = None
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok, updated = await asyncio.to_thread(_hasher.verify_and_update, password[:PASSWORD_MAX], stored)
    if user is None or user.password_hash is None or not ok:
        raise InvalidCredentials("Wrong email or password.")
    if updated is not None:
        user.password_hash = updated
        await session.flush()
    return user


# --------------------------------------------------------------------------------------------
# Dashboard sessions


@dataclass(frozen=True)
class SignedIn:
    """The person behind a dashboard request: the ``Principal`` the services take, and more."""

    principal: Principal
    session_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    team_name: str

    @property
    def team_id(self) -> uuid.UUID:
        return self.principal.team_id

    @property
    def manages(self) -> bool:
        """Owner or admin: manages API keys, members and invites."""
        return self.role in MANAGERS


async def start_session(
    session: AsyncSession, *, user_id: uuid.UUID, lifetime: dt.timedelta, user_agent: str | None = None
) -> str:
    """A new signed-in session of the user: the token for the cookie (stored only hashed)."""
    token = new_token()
    session.add(WebSession(
        user_id=user_id, token_hash=hash_token(token), expires_at=now() + lifetime,
        user_agent=(user_agent or "")[:300] or None,
    ))
    await session.flush()
    return token


_SIGNED_IN = text("""
SELECT s.id AS session_id, u.id AS user_id, u.email, u.name, u.role, t.id AS team_id, t.name AS team_name,
       t.plan_code, p.max_concurrent_jobs
  FROM web_sessions s JOIN users u ON u.id = s.user_id JOIN teams t ON t.id = u.team_id
  JOIN plans p ON p.code = t.plan_code
 WHERE s.token_hash = :token_hash AND s.revoked_at IS NULL AND s.expires_at > now() AND u.removed_at IS NULL
""")
# Last seen, to the minute; SKIP LOCKED so that no request waits for another's open transaction.
_TOUCH_SESSION = text("""
UPDATE web_sessions SET last_seen_at = now()
 WHERE id = (SELECT id FROM web_sessions WHERE id = :id AND last_seen_at < now() - interval '1 minute'
               FOR UPDATE SKIP LOCKED)
""")


async def signed_in(session: AsyncSession, token: str | None) -> SignedIn | None:
    """The person whose session ``token`` is (live, not revoked, not expired, not removed), or None."""
    if not token:
        return None
    row = (await session.execute(_SIGNED_IN, {"token_hash": hash_token(token)})).one_or_none()
    if row is None:
        return None
    await session.execute(_TOUCH_SESSION, {"id": row.session_id})
    return SignedIn(
        principal=Principal(
            team_id=row.team_id, user_id=row.user_id, api_key_id=None, plan_code=row.plan_code,
            plan_max_concurrent_jobs=row.max_concurrent_jobs,
        ),
        session_id=row.session_id, user_id=row.user_id, email=row.email or "", name=row.name, role=row.role,
        team_name=row.team_name,
    )


async def end_session(session: AsyncSession, token: str) -> None:
    """Revoke the session of ``token`` (sign-out); nothing when it is unknown."""
    await session.execute(
        update(WebSession).where(WebSession.token_hash == hash_token(token), WebSession.revoked_at.is_(None))
        .values(revoked_at=now())
    )


async def list_sessions(
    session: AsyncSession, *, team_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> list[tuple[WebSession, User]]:
    """Live sessions of the team's members (of ``user_id`` alone when given), most recent first."""
    query = (
        select(WebSession, User).join(User, User.id == WebSession.user_id)
        .where(User.team_id == team_id, WebSession.revoked_at.is_(None), WebSession.expires_at > now())
        .order_by(WebSession.last_seen_at.desc(), WebSession.id)
    )
    if user_id is not None:
        query = query.where(WebSession.user_id == user_id)
    return [(s, u) for s, u in (await session.execute(query)).all()]


async def revoke_session(
    session: AsyncSession, *, team_id: uuid.UUID, session_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> None:
    """Revoke a live session of the team (of ``user_id`` alone when given). Raises ``NotFound``
    404 session_not_found otherwise."""
    query = (
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None),
               WebSession.user_id.in_(select(User.id).where(User.team_id == team_id)))
        .values(revoked_at=now()).returning(WebSession.id)
    )
    if user_id is not None:
        query = query.where(WebSession.user_id == user_id)
    if (await session.execute(query)).first() is None:
        raise SessionNotFound("No such session.")


# --------------------------------------------------------------------------------------------
# Members and roles


async def list_members(session: AsyncSession, team_id: uuid.UUID) -> list[User]:
    """The team's members (not removed), oldest first."""
    return list((await session.scalars(
        select(User).where(User.team_id == team_id, User.removed_at.is_(None)).order_by(User.created_at, User.id)
    )).all())


def _require_manager(actor_role: str) -> None:
    if actor_role not in MANAGERS:
        raise RoleForbidden("Only the team's owners and admins can do this.")


async def _member(session: AsyncSession, team_id: uuid.UUID, member_id: uuid.UUID) -> User:
    await get_team(session, team_id, for_update=True)  # one role change of a team at a time
    user = await session.scalar(
        select(User).where(User.id == member_id, User.team_id == team_id, User.removed_at.is_(None))
        .with_for_update()
    )
    if user is None:
        raise MemberNotFound("No such member in your team.")
    return user


async def _keep_an_owner(session: AsyncSession, member: User) -> None:
    if member.role != "owner":
        return
    owners = await session.scalar(
        select(func.count()).where(User.team_id == member.team_id, User.role == "owner", User.removed_at.is_(None))
    )
    if (owners or 0) <= 1:
        raise LastOwner("The team needs at least one owner: make someone else owner first.")


async def change_role(
    session: AsyncSession, *, team_id: uuid.UUID, actor_role: str, member_id: uuid.UUID, role: str
) -> User:
    """Give a member ``role``. Raises ``Forbidden`` 403 role_forbidden (a member acting, or an
    admin touching the owner role), ``NotFound`` 404 member_not_found, ``Conflict`` 409 last_owner,
    ``InvalidRequest`` 422 invalid_request for an unknown role."""
    from pixelmint.kit.errors import InvalidRequest

    _require_manager(actor_role)
    if role not in ROLES:
        raise InvalidRequest(f"Unknown role {role!r}: owner, admin or member.", field="role")
    member = await _member(session, team_id, member_id)
    if "owner" in (role, member.role) and actor_role != "owner":
        raise RoleForbidden("Only an owner can grant or change the owner role.")
    if role != "owner":
        await _keep_an_owner(session, member)
    member.role = role
    await session.flush()
    return member


async def remove_member(session: AsyncSession, *, team_id: uuid.UUID, actor_role: str, member_id: uuid.UUID) -> User:
    """Remove a member: they can no longer sign in, and their sessions and API keys are revoked.
    Raises ``Forbidden`` 403 role_forbidden, ``NotFound`` 404 member_not_found, ``Conflict`` 409
    last_owner."""
    _require_manager(actor_role)
    member = await _member(session, team_id, member_id)
    if member.role == "owner" and actor_role != "owner":
        raise RoleForbidden("Only an owner can remove an owner.")
    await _keep_an_owner(session, member)
    at = now()
    member.removed_at = at
    await session.execute(
        update(WebSession).where(WebSession.user_id == member.id, WebSession.revoked_at.is_(None)).values(revoked_at=at)
    )
    await session.execute(
        update(ApiKey).where(ApiKey.user_id == member.id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
    await session.flush()
    await invalidate_caches(session, "api_keys")  # the member's keys: kit/cache.py
    return member


# --------------------------------------------------------------------------------------------
# Invites


async def create_invite(
    session: AsyncSession, *, team_id: uuid.UUID, actor_id: uuid.UUID, actor_role: str, role: str,
    lifetime: dt.timedelta,
) -> tuple[TeamInvite, str]:
    """An invite link's token (shown once to the inviter) to join the team with ``role``. Raises
    ``Forbidden`` 403 role_forbidden (members; admins inviting owners), ``InvalidRequest`` 422."""
    from pixelmint.kit.errors import InvalidRequest

    _require_manager(actor_role)
    if role not in ROLES:
        raise InvalidRequest(f"Unknown role {role!r}: owner, admin or member.", field="role")
    if role == "owner" and actor_role != "owner":
        raise RoleForbidden("Only an owner can invite another owner.")
    token = new_token()
    invite = TeamInvite(team_id=team_id, role=role, token_hash=hash_token(token), created_by=actor_id,
                        expires_at=now() + lifetime)
    session.add(invite)
    await session.flush()
    return invite, token


def _open_invites(team_id: uuid.UUID) -> Select[TeamInvite]:
    return select(TeamInvite).where(
        TeamInvite.team_id == team_id, TeamInvite.accepted_at.is_(None), TeamInvite.revoked_at.is_(None),
        TeamInvite.expires_at > now(),
    )


async def list_invites(session: AsyncSession, team_id: uuid.UUID) -> list[TeamInvite]:
    """The team's invites still open (not used, revoked or expired), newest first."""
    return list((await session.scalars(_open_invites(team_id).order_by(TeamInvite.created_at.desc()))).all())


async def revoke_invite(session: AsyncSession, *, team_id: uuid.UUID, actor_role: str, invite_id: uuid.UUID) -> None:
    """Revoke an open invite. Raises ``Forbidden`` 403 role_forbidden, ``NotFound`` 404 invite_not_found."""
    _require_manager(actor_role)
    invite = await session.scalar(_open_invites(team_id).where(TeamInvite.id == invite_id).with_for_update())
    if invite is None:
        raise InviteNotFound("No such open invite in your team.")
    invite.revoked_at = now()
    await session.flush()


async def open_invite(session: AsyncSession, token: str, *, for_update: bool = False) -> tuple[TeamInvite, Team]:
    """The open invite of ``token`` and its team. Raises ``NotFound`` 404 invalid_link."""
    query = (
        select(TeamInvite, Team).join(Team, Team.id == TeamInvite.team_id)
        .where(TeamInvite.token_hash == hash_token(token), TeamInvite.accepted_at.is_(None),
               TeamInvite.revoked_at.is_(None), TeamInvite.expires_at > now())
    )
    row = (await session.execute(query.with_for_update(of=TeamInvite) if for_update else query)).first()
    if row is None:
        raise InvalidLink("This invite link is unknown, was already used, revoked, or has expired: ask for a new one.")
    return row


async def accept_invite(
    session: AsyncSession, *, token: str, email: str, name: str, password: str, free_generations: int
) -> User:
    """Join the invite's team as a new user with the invite's role; the invite is used up.
    Raises ``NotFound`` 404 invalid_link, ``InvalidRequest`` 422 invalid_email / weak_password,
    ``Conflict`` 409 email_taken."""
    invite, _ = await open_invite(session, token, for_update=True)
    address = await available_email(session, email)
    password_hash = await hash_password(password)
    user = User(
        id=uuid.uuid4(), team_id=invite.team_id, name=name.strip() or address.split("@")[0], email=address,
        free_generations_remaining=free_generations, role=invite.role, password_hash=password_hash,
    )
    session.add(user)
    await session.flush()
    invite.accepted_at = now()
    invite.accepted_by = user.id
    await session.flush()
    return user


# --------------------------------------------------------------------------------------------
# Set-password links


async def create_password_token(session: AsyncSession, *, user_id: uuid.UUID, lifetime: dt.timedelta) -> str:
    """A one-time token to set the user's password (the link is shown once)."""
    token = new_token()
    session.add(PasswordToken(user_id=user_id, token_hash=hash_token(token), expires_at=now() + lifetime))
    await session.flush()
    return token


async def open_password_token(session: AsyncSession, token: str, *, for_update: bool = False) -> tuple[PasswordToken, User]:
    """The unused, unexpired token and its (not removed) user. Raises ``NotFound`` 404 invalid_link."""
    query = (
        select(PasswordToken, User).join(User, User.id == PasswordToken.user_id)
        .where(PasswordToken.token_hash == hash_token(token), PasswordToken.used_at.is_(None),
               PasswordToken.expires_at > now(), User.removed_at.is_(None))
    )
    row = (await session.execute(query.with_for_update(of=PasswordToken) if for_update else query)).first()
    if row is None:
        raise InvalidLink("This link is unknown, was already used, or has expired: ask your administrator for a new one.")
    return row


async def use_password_token(session: AsyncSession, *, token: str, password: str) -> User:
    """Set the password of the token's user and use the token up. Raises ``NotFound`` 404
    invalid_link, ``InvalidRequest`` 422 weak_password."""
    record, user = await open_password_token(session, token, for_update=True)
    user.password_hash = await hash_password(password)
    record.used_at = now()
    await session.flush()
    return user
