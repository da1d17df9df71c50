"""A team's credits (its API keys): ``/api/v1/credits`` balance and ledger history (filtered, paged,
or exported as CSV), and ``/api/v1/credits/apps``, the apps it lets use its credits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from pixelmint.accounts.auth import PrincipalDep
from pixelmint.accounts.service import Principal, get_user
from pixelmint.credits import apps, history, service
from pixelmint.credits.errors import AppNotFound, InvalidDateRange
from pixelmint.credits.schemas import (
    AppGrantOut,
    AppGrantPage,
    BalanceOut,
    BucketsOut,
    LowBalanceThresholdIn,
    LowBalanceThresholdOut,
    TransactionOut,
    TransactionPage,
    present_grant,
)
from pixelmint.kit.db import Database
from pixelmint.kit.errors import responses
from pixelmint.kit.http import DatabaseDep, SessionDep
from pixelmint.kit.pagination import bigint, decode_cursor, encode_cursor
from pixelmint.kit.schemas import UtcDatetime

router = APIRouter(prefix="/api/v1/credits", tags=["credits"])


@router.get("/balance", response_model=BalanceOut, summary="The team's credit balance")
async def balance(principal: PrincipalDep, session: SessionDep) -> BalanceOut:
    b = await service.get_balance(session, principal.team_id)
    user = await get_user(session, principal.user_id)
    return BalanceOut(**BucketsOut.fields_of(b), free_generations_remaining=user.free_generations_remaining,
                      low_balance_threshold=b.low_balance_threshold)


@router.put("/low-balance-threshold", response_model=LowBalanceThresholdOut, summary="Set the low-balance alert")
async def set_low_balance_threshold(
    body: LowBalanceThresholdIn, principal: PrincipalDep, session: SessionDep
) -> LowBalanceThresholdOut:
    """The team's ``credits.low_balance`` webhook (``/api/v1/webhook-endpoints``) is sent whenever
    its available credits fall from at least ``threshold`` to below it; ``null`` turns it off."""
    await service.set_low_balance_threshold(session, principal.team_id, body.threshold)
    return LowBalanceThresholdOut(threshold=body.threshold)


def ledger_filter(
    type_: Annotated[str | None, Query(
        alias="type", max_length=200,
        description="Row type, or several comma-separated: reserve, capture, release, consume, grant, …",
    )] = None,
    operation: Annotated[str | None, Query(max_length=64, examples=["image_generation"])] = None,
    job_id: Annotated[uuid.UUID | None, Query(alias="jobId")] = None,
    app_id: Annotated[uuid.UUID | None, Query(alias="appId", description="Rows of one credit-API app")] = None,
    since: Annotated[UtcDatetime | None, Query(
        alias="from", description="ISO 8601, inclusive; without an offset it is UTC")] = None,
    until: Annotated[UtcDatetime | None, Query(alias="to", description="ISO 8601, exclusive")] = None,
) -> history.LedgerFilter:
    """The history filters of the query string (shared by the JSON and the CSV answers)."""
    if since is not None and until is not None and since >= until:
        raise InvalidDateRange("'from' must be before 'to'.", field="from")
    types = tuple(t.strip() for t in type_.split(",") if t.strip()) if type_ else ()
    return history.LedgerFilter(types=types, operation=operation, job_id=job_id, app_id=app_id, since=since, until=until)


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for chunk in rest:
        yield chunk


async def _csv_batches(
    db: Database, team_id: uuid.UUID, filters: history.LedgerFilter, before: int | None
) -> AsyncIterator[str]:
    """``history.csv_lines`` in a session of its own, closed when the last batch is sent: the
    request's session ends when the endpoint returns, before the body streams."""
    async with db.sessionmaker() as session:
        async for chunk in history.csv_lines(session, team_id, filters, before_id=before):
            yield chunk


LedgerFilterDep = Annotated[history.LedgerFilter, Depends(ledger_filter)]


def _before(cursor: str | None) -> int | None:
    return decode_cursor(cursor, bigint)[0] if cursor else None


async def csv_response(db: Database, principal: Principal, filters: history.LedgerFilter, before: int | None) -> StreamingResponse:
    """The team's matching ledger rows as a streamed CSV attachment (also the dashboard's download)."""
    lines = _csv_batches(db, principal.team_id, filters, before)
    first = await anext(lines)  # the first batch's query runs before the 200 is sent: it may still fail
    return StreamingResponse(
        _chain(first, lines),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="credit-history.csv"'},
    )


@router.get(
    "/history", response_model=TransactionPage, summary="The credit ledger, newest first",
    responses={200: {"content": {"text/csv": {}}, "description": "JSON page, or CSV with format=csv"}},
)
async def history_page(
    principal: PrincipalDep,
    session: SessionDep,
    db: DatabaseDep,
    filters: LedgerFilterDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    format_: Annotated[Literal["json", "csv"], Query(
        alias="format", description="csv: every matching row (after the cursor) as CSV, like /history.csv")] = "json",
) -> TransactionPage | StreamingResponse:
    """Ledger rows matching the filters, newest first, ``limit`` per page (``nextCursor``)."""
    before = _before(cursor)
    if format_ == "csv":
        return await csv_response(db, principal, filters, before)
    rows = await history.list_transactions(session, principal.team_id, filters, limit=limit + 1, before_id=before)
    page = rows[:limit]
    return TransactionPage(
        items=[
            TransactionOut(
                id=t.id, type=t.type, amount=t.amount, allocation_delta=t.allocation_delta,
                bonus_delta=t.bonus_delta, reserved_delta=t.reserved_delta,
                available_after=t.allocation_after + t.bonus_after, reserved_after=t.reserved_after,
                operation=t.operation, job_id=t.job_id, app_id=t.app_id, reservation_id=t.reservation_id,
                description=t.description, metadata=t.metadata_, created_at=t.created_at,
            )
            for t in page
        ],
        next_cursor=encode_cursor(page[-1].id) if len(rows) > limit else None,
    )


@router.get(
    "/history.csv", response_class=StreamingResponse, summary="The credit ledger as CSV",
    responses={200: {"content": {"text/csv": {}}, "description": "A header row, then one row per ledger row"}},
)
async def history_csv(
    principal: PrincipalDep, db: DatabaseDep, filters: LedgerFilterDep, cursor: str | None = None
) -> StreamingResponse:
    """Every ledger row matching the filters (same as ``/history``), newest first, streamed as CSV
    with a header row; amounts as decimals, ``metadata`` as JSON."""
    return await csv_response(db, principal, filters, _before(cursor))


apps_router = APIRouter(prefix="/api/v1/credits/apps", tags=["credit API"])


@apps_router.get("", response_model=AppGrantPage, summary="The apps this team lets use its credits")
async def list_team_grants(principal: PrincipalDep, session: SessionDep) -> AppGrantPage:
    return AppGrantPage(items=[present_grant(g) for g in await apps.grants(session, team_id=principal.team_id)])


@apps_router.put("/{app_id}", response_model=AppGrantOut, summary="Let an app use this team's credits",
                 responses=responses(AppNotFound))
async def grant_app(app_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> AppGrantOut:
    """Idempotent: granting a granted app keeps the grant as it was."""
    return present_grant(await apps.authorize_app(session, team_id=principal.team_id, app_id=app_id, granted_by="team"))


@apps_router.delete("/{app_id}", status_code=204, summary="Withdraw an app's grant (its open holds are released)")
async def revoke_app(app_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> None:
    await apps.revoke_app(session, team_id=principal.team_id, app_id=app_id)
