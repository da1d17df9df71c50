"""``Idempotency-Key`` for the POSTs that create or spend, with Stripe's semantics.

What a client sees
==================

- The first request with a key runs; its answer (status and body, 4xx errors included) is stored.
- The same key with the same request again gets that answer back, with ``Idempotent-Replayed: true``;
  nothing runs a second time.
- The same key with a different request (method, path or SHA-256 of the body) is 409
  ``idempotency_key_reused``.
- The same key while the first request is still running is 409 ``idempotency_key_in_progress``.
- Keys belong to their owner (the API key's team; for the credit API, the app) and are kept at least
  ``PIXELMINT_IDEMPOTENCY_RETENTION_HOURS`` (24 h), then pruned (``Pruner``).
- A key is not burned by a request that wrote nothing: a failure (5xx, crash) before the endpoint
  committed, a 429 (``rate_limited``, ``queue_full``: "try again later" must stay retryable), or a
  request the framework rejected before the endpoint ran (422 on the body). Stripe does the same.

Design: the claim commits with the endpoint's writes
====================================================

The rule (``credits.md``, appendix): never claim a dedup key before the write commits. So the key
is claimed *inside the request's own transaction* — the session of ``kit/http.SessionDep``, which
commits when the endpoint returns (or earlier, when the endpoint commits itself) — and becomes
visible exactly when the endpoint's writes do:

1. Before the endpoint (the dependency in ``kit/http.py``), one statement takes
   ``pg_try_advisory_xact_lock(hash(owner, key))`` and, when it got it, claims the key with
   ``INSERT … ON CONFLICT DO NOTHING`` (no answer yet), followed by a ``SAVEPOINT``.

   - Otherwise (lock busy, or a conflict) the committed row decides, without waiting: 409 reused
     (other fingerprint), replay (answer stored), or 409 in progress — no row yet (the lock holder
     is the first request, still running) or no final answer yet (the first request committed and
     is still answering). A busy lock alone proves nothing: once the first request has committed,
     its concurrent retries hold the lock in turn while they look the answer up.

2. The endpoint runs and its work commits (when it returns, or before, by the endpoint). One that
   knows its answer before the commit calls ``await idempotency.save(response)`` (then returns, or
   commits): the answer goes into the claim row in the same transaction as the job and its credit
   reservation, so no crash can leave the work done and the answer lost. ``save(response, final=False)`` stores a provisional answer
   (``POST /generate`` with ``waitForResult``: the queued job) that a retry is given only if the first
   request died before answering.
3. A domain error (a 4xx ``PixelmintError``) rolls back to the savepoint — the endpoint's partial
   work goes, the claim and the lock stay — stores the error as the answer and commits.
4. An answer not saved before the commit (endpoints that do not call ``save``; ``waitForResult``) is
   stored by ``IdempotencyMiddleware`` once it is rendered and before it is sent, in a short
   transaction of its own; a retry in between gets 409 in progress. If the process dies in that
   window, the committed claim keeps its provisional answer, or, with none, a retry later than
   ``stale_after`` gets 409 ``idempotency_key_unresolved`` (applied, answer lost: look the result up
   rather than run it twice).
5. Any other failure before the commit rolls the claim back with the work: the key stays unused. A
   failure after the commit finalises the row (its provisional answer, else a 500) so that a retry
   never applies the work twice.

Endpoints take the dependency (``IdempotencyDep`` or ``dependencies=[idempotent()]``); the key is
optional, and without it nothing here runs. Replays are raised as ``Replay`` and rendered by the
handler that ``install`` adds with the middleware.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, cast

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import CursorResult, text
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import SessionTransaction
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelmint.kit.db import Database
from pixelmint.kit.errors import Conflict, InvalidRequest, PixelmintError

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
STATE_ATTR = "idempotency"  # request.state.idempotency, read by the middleware from scope["state"]
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
_BOUNDARY = re.compile(r"boundary=\"?([^\";]+)\"?", re.IGNORECASE)
_SAVEPOINT = "pixelmint_idempotency"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"


_IN_PROGRESS = "A request with this Idempotency-Key is in progress; retry after it has finished."


class IdempotencyKeyUnresolved(Conflict):
    code = "idempotency_key_unresolved"


class InvalidIdempotencyKey(InvalidRequest):
    """422: the Idempotency-Key header is empty, too long, or not printable ASCII without spaces."""

    code = "invalid_idempotency_key"


@dataclass(frozen=True)
class Owner:
    """Whose keys: a team's (requests with an API key) or an app's (requests with a service key)."""

    column: Literal["team_id", "app_id"]
    id: uuid.UUID

    @classmethod
    def of(cls, caller: Any) -> Owner:
        """The owner of a caller: an object with ``app_id`` (an app) or ``team_id`` (a team)."""
        app_id = getattr(caller, "app_id", None)
        return cls("app_id", app_id) if app_id is not None else cls("team_id", caller.team_id)


@dataclass(frozen=True)
class Fingerprint:
    """What must match for a key to be reused: method, path (with query) and SHA-256 of the body.

    A multipart body is hashed without its boundary, which clients pick at random per request.
    """

    method: str
    path: str
    sha256: str

    @classmethod
    async def of(cls, request: Request) -> Fingerprint:
        body = await request.body()  # Starlette keeps it for the endpoint
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/") and (boundary := _BOUNDARY.search(content_type)):
            body = body.replace(boundary.group(1).encode("latin-1"), b"")
        query = request.url.query
        path = request.url.path + (f"?{query}" if query else "")
        return cls(request.method, path, hashlib.sha256(body).hexdigest())


@dataclass(frozen=True)
class Answer:
    """A stored answer: status, body bytes and content type."""

    status_code: int
    body: bytes
    content_type: str | None

    @classmethod
    def of_response(cls, response: Response) -> Answer:
        return cls(response.status_code, bytes(response.body), response.headers.get("content-type"))

    @classmethod
    def of_error(cls, exc: PixelmintError) -> Answer:
        # The same bytes as api/errors.py renders for it.
        return cls.of_response(JSONResponse(exc.body(), status_code=exc.status_code))

    def replay(self) -> Response:
        return Response(self.body, status_code=self.status_code, media_type=self.content_type,
                        headers={REPLAYED_HEADER: "true"})


_LOST = Answer(
    500,
    bytes(JSONResponse({
        "error": "internal_error",
        "message": "The request was applied, but producing its answer failed; look the result up rather "
                   "than retrying with a new key.",
    }).body),
    "application/json",
)


class Replay(Exception):  # noqa: N818 - not an error: control flow to answer with a stored answer
    """Raised instead of running the endpoint; ``install``'s handler answers with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("idempotent replay")
        self.answer = answer


def _statements(column: str) -> dict[str, Any]:
    owner = f"{column} = CAST(:owner_id AS uuid)"
    conflict = f"ON CONFLICT ({column}, key) WHERE {column} IS NOT NULL"
    return {
        "claim": text(f"""
            WITH lock AS (SELECT pg_try_advisory_xact_lock(:lock_key) AS acquired),
            claim AS (
                INSERT INTO idempotency_keys ({column}, key, request_method, request_path, request_sha256)
                SELECT CAST(:owner_id AS uuid), :key, :method, :path, :sha256 FROM lock WHERE acquired
                {conflict} DO NOTHING
                RETURNING id
            )
            SELECT lock.acquired, (SELECT id FROM claim) AS claimed FROM lock
        """),
        "lookup": text(f"""
            SELECT request_method, request_path, request_sha256, status_code, response_body,
                   response_content_type, completed_at IS NOT NULL AS completed,
                   created_at > now() - make_interval(secs => :stale_after) AS fresh
              FROM idempotency_keys WHERE {owner} AND key = :key
        """),
        # After the commit, in a transaction of its own: the final answer (the claim row may be gone
        # if the endpoint never committed; then this inserts it).
        "record": text(f"""
            INSERT INTO idempotency_keys AS k ({column}, key, request_method, request_path, request_sha256,
                                              status_code, response_body, response_content_type, completed_at)
            VALUES (CAST(:owner_id AS uuid), :key, :method, :path, :sha256, :status_code, :body, :content_type, now())
            {conflict} DO UPDATE
               SET status_code = EXCLUDED.status_code, response_body = EXCLUDED.response_body,
                   response_content_type = EXCLUDED.response_content_type, completed_at = EXCLUDED.completed_at
             WHERE k.completed_at IS NULL AND k.request_method = EXCLUDED.request_method
               AND k.request_path = EXCLUDED.request_path AND k.request_sha256 = EXCLUDED.request_sha256
        """),
    }


_SQL = {"team_id": _statements("team_id"), "app_id": _statements("app_id")}

# In the endpoint's transaction: the answer (final or provisional) into the claim row.
_SAVE = text("""
    UPDATE idempotency_keys
       SET status_code = :status_code, response_body = :body, response_content_type = :content_type,
           completed_at = CASE WHEN CAST(:final AS boolean) THEN now() END
     WHERE id = :id
""")

# After a failure past the commit: keep a provisional answer if there is one, else store ``:status_code``.
_FINALIZE = text("""
    UPDATE idempotency_keys
       SET response_body = CASE WHEN status_code IS NULL THEN :body ELSE response_body END,
           response_content_type = CASE WHEN status_code IS NULL THEN :content_type ELSE response_content_type END,
           status_code = COALESCE(status_code, :status_code),
           completed_at = now()
     WHERE id = :id AND completed_at IS NULL
""")

_PRUNE = text("""
    DELETE FROM idempotency_keys WHERE id IN (
        SELECT id FROM idempotency_keys WHERE created_at < now() - make_interval(secs => :retention)
         ORDER BY created_at LIMIT :batch_size)
""")


def _lock_key(owner: Owner, key: str) -> int:
    digest = hashlib.sha256(f"idempotency:{owner.column}:{owner.id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _retryable(exc: BaseException) -> bool:
    """Errors that store no answer when raised before the commit: all but 4xx domain errors, and 429."""
    return not isinstance(exc, PixelmintError) or exc.status_code >= 500 or exc.status_code == 429


class Idempotency:
    """The current request's ``Idempotency-Key``; ``key`` is None when the request sent none (then
    every method is a no-op)."""

    def __init__(
        self, *, key: str | None = None, owner: Owner | None = None, fingerprint: Fingerprint | None = None,
        session: AsyncSession | None = None, db: Database | None = None,
    ) -> None:
        self.key = key
        self.owner = owner
        self.fingerprint = fingerprint
        self.session = session
        self.db = db
        self._claim_id: int | None = None
        self._transaction: SessionTransaction | AsyncSessionTransaction | None = None
        self._answered = False  # a final answer is stored, or nothing is left to store
        self.awaiting_answer = False  # the middleware stores the rendered answer

    async def save(self, response: Response, *, final: bool = True) -> None:
        """Store ``response`` as this key's answer in the endpoint's open transaction: call it just
        before ``session.commit()``, so that the answer commits with the work. With
        ``final=False`` it is provisional: the answer the endpoint will return later (stored by the
        middleware) replaces it, and only if the request dies first is it what retries get."""
        if self._claim_id is None or self.session is None:
            return
        answer = Answer.of_response(response)
        await self.session.execute(_SAVE, {
            "id": self._claim_id, "status_code": answer.status_code, "body": answer.body,
            "content_type": answer.content_type, "final": final,
        })
        self._answered = final

    # -- the dependency's side ---------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        assert self.owner is not None and self.fingerprint is not None
        return {
            "owner_id": self.owner.id, "key": self.key, "method": self.fingerprint.method,
            "path": self.fingerprint.path, "sha256": self.fingerprint.sha256,
        }

    async def _claim(self, *, stale_after: float) -> None:
        """Claim the key in the session's transaction, or raise ``Replay`` / a 409."""
        assert self.session is not None and self.owner is not None and self.key is not None
        sql = _SQL[self.owner.column]
        row = (await self.session.execute(sql["claim"], {**self._params(), "lock_key": _lock_key(self.owner, self.key)})).one()
        if row.claimed is not None:
            self._claim_id = row.claimed
            await self.session.execute(text(f"SAVEPOINT {_SAVEPOINT}"))
            self._transaction = self.session.get_transaction()
            return
        found = (await self.session.execute(
            sql["lookup"], {"owner_id": self.owner.id, "key": self.key, "stale_after": stale_after}
        )).one_or_none()
        if found is None:  # the lock holder has not committed its claim (or the row was just pruned)
            raise IdempotencyKeyInProgress(
                _IN_PROGRESS if not row.acquired else "This Idempotency-Key was just released; retry.")
        if (found.request_method, found.request_path, found.request_sha256) != (
            self.fingerprint.method, self.fingerprint.path, self.fingerprint.sha256  # type: ignore[union-attr]
        ):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request (method, path or body); "
                "use a new key for a new request.")
        stored = None if found.status_code is None else Answer(
            found.status_code, found.response_body, found.response_content_type)
        if stored is not None and (found.completed or not found.fresh):
            raise Replay(stored)
        if found.fresh:
            raise IdempotencyKeyInProgress(_IN_PROGRESS)
        raise IdempotencyKeyUnresolved(
            "A request with this Idempotency-Key was applied, but the server stopped before storing its "
            "answer; look the result up instead of retrying.")

    def _claim_open(self) -> bool:
        """The claim is still in the session's open, uncommitted transaction (with its savepoint)."""
        assert self.session is not None
        return self._transaction is not None and self.session.get_transaction() is self._transaction \
            and self._transaction.is_active

    async def _on_error(self, exc: BaseException) -> None:
        """The endpoint raised. See the module docstring, steps 3 and 5."""
        assert self.session is not None
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            return
        if not _retryable(exc):
            answer = Answer.of_error(exc)  # type: ignore[arg-type]
            if self._claim_open():
                await self.session.execute(text(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}"))
                self.session.expunge_all()  # nothing the endpoint left unflushed may reach the commit
                await self.session.execute(_SAVE, {
                    "id": self._claim_id, "status_code": answer.status_code, "body": answer.body,
                    "content_type": answer.content_type, "final": True,
                })
                await self.session.commit()
            else:
                await self.session.rollback()
                await self._store("record", answer)
            self._answered = True
        elif not self._claim_open():
            await self.session.rollback()  # end whatever the endpoint left open before writing elsewhere
            await self._store("finalize", _LOST)
            self._answered = True
        # else: nothing was committed; closing the session rolls the claim back with the work.

    async def _on_return(self) -> None:
        """The endpoint returned; its answer is rendered next. Runs before the answer is sent."""
        assert self.session is not None
        if self._answered:
            return
        if self._claim_open():
            # It returned without committing: commit its work with the claim now (the session
            # dependency would, after this exit), so that the middleware can store the answer
            # from another connection without waiting for this transaction's locks.
            await self.session.commit()
        self.awaiting_answer = True

    async def _store(self, how: Literal["record", "finalize"], answer: Answer) -> None:
        """Write an answer in a transaction of its own (after the endpoint's transaction ended)."""
        assert self.db is not None and self.owner is not None
        try:
            async with self.db.transaction() as session:
                if how == "record":
                    await session.execute(_SQL[self.owner.column]["record"], {
                        **self._params(), "status_code": answer.status_code, "body": answer.body,
                        "content_type": answer.content_type,
                    })
                elif self._claim_id is not None:
                    await session.execute(_FINALIZE, {
                        "id": self._claim_id, "status_code": answer.status_code, "body": answer.body,
                        "content_type": answer.content_type,
                    })
        except Exception:
            log.exception("idempotency_answer_not_stored", key=self.key, owner=str(self.owner.id))

    async def record_response(self, status_code: int, body: bytes, content_type: str | None) -> None:
        """The middleware's part: store the rendered answer (step 4)."""
        self.awaiting_answer = False
        self._answered = True
        answer = Answer(status_code, body, content_type)
        await self._store("finalize" if status_code >= 500 or status_code == 429 else "record", answer)


@asynccontextmanager
async def guard(
    request: Request, session: AsyncSession, db: Database, *, key: str | None, owner: Owner, stale_after: float,
) -> AsyncIterator[Idempotency]:
    """The dependency's body: claim ``key`` for ``owner`` in ``session``'s transaction, yield the
    handle while the endpoint runs, then store or release as the module docstring says.

    Raises ``Replay`` (answer with the stored answer), ``IdempotencyKeyReused``,
    ``IdempotencyKeyInProgress``, ``IdempotencyKeyUnresolved`` or ``InvalidIdempotencyKey`` before the endpoint runs. ``stale_after``: seconds after which a
    first request that has not answered is presumed dead (longer than any request may take).
    """
    if key is None:
        yield Idempotency()
        return
    if not (0 < len(key) <= MAX_KEY_LENGTH and _KEY_CHARS.match(key)):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1..{MAX_KEY_LENGTH} printable ASCII characters without spaces.", field=HEADER)
    handle = Idempotency(key=key, owner=owner, fingerprint=await Fingerprint.of(request), session=session, db=db)
    await handle._claim(stale_after=stale_after)
    setattr(request.state, STATE_ATTR, handle)
    try:
        yield handle
    except BaseException as exc:
        try:
            await handle._on_error(exc)
        except Exception:
            log.exception("idempotency_error_answer_not_stored", key=key)
        raise
    else:
        await handle._on_return()


class IdempotencyMiddleware:
    """Stores the answers the endpoint did not ``save`` before committing, once they are rendered
    and before they are sent (pure ASGI; only POSTs whose dependency asked for it are buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        handle: Idempotency | None = None
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal handle, start
            if message["type"] == "http.response.start":
                candidate = (scope.get("state") or {}).get(STATE_ATTR)
                if isinstance(candidate, Idempotency) and candidate.awaiting_answer:
                    handle, start = candidate, message
                    return
            elif handle is not None and start is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await handle.record_response(start["status"], bytes(body), Headers(raw=start["headers"]).get("content-type"))
                handle = None
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body), "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, capture)


def install(app: FastAPI) -> None:
    """Add the middleware and the handler that answers ``Replay`` with the stored answer."""

    async def replay(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Replay)
        return exc.answer.replay()

    app.add_middleware(IdempotencyMiddleware)
    app.add_exception_handler(Replay, replay)


# -- retention ---------------------------------------------------------------------------------


async def prune(session: AsyncSession, *, retention: dt.timedelta, batch_size: int = 5000) -> int:
    """Delete up to ``batch_size`` keys older than ``retention``; returns how many went."""
    result = await session.execute(_PRUNE, {"retention": retention.total_seconds(), "batch_size": batch_size})
    return cast(CursorResult[Any], result).rowcount  # a DELETE's result


class Pruner:
    """Deletes keys past the retention now and then every ``interval_seconds`` until ``stop()``
    (started by ``api/runtime.py`` in every API process; concurrent runs only delete the same rows)."""

    def __init__(self, db: Database, *, retention: dt.timedelta, interval_seconds: float, batch_size: int = 5000) -> None:
        self.db = db
        self.retention = retention
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self._stopping = asyncio.Event()

    async def run_once(self) -> int:
        total = 0
        while not self._stopping.is_set():
            async with self.db.transaction() as session:
                deleted = await prune(session, retention=self.retention, batch_size=self.batch_size)
            total += deleted
            if deleted < self.batch_size:
                break
        return total

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if deleted := await self.run_once():
                    log.info("idempotency_keys_pruned", count=deleted)
            except Exception:
                log.exception("idempotency_prune_failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)

    def stop(self) -> None:
        self._stopping.set()
