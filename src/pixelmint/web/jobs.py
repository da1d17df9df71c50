"""Jobs: the team's jobs with filters (state, type) and pages; a job's page with its timings,
logs, images, the credit trail (the ledger rows of its hold: reserved, then charged or given
back) and cancel while it can be. An unfinished job's page refreshes itself every 2 s (htmx),
answered with its ``detail`` block only."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.jobs import service as jobs
from pixelmint.jobs.deps import ProvidersDep
from pixelmint.jobs.presenters import present_job
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.tables import JOB_STATES, JOB_TYPES
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage.deps import UrlSignerDep
from pixelmint.web.auth import CurrentUserDep
from pixelmint.web.home import OPERATION_LABELS
from pixelmint.web.paging import Filters, with_query
from pixelmint.web.routing import web_router
from pixelmint.web.templating import is_htmx, render

router = web_router(prefix="/app/jobs")

PAGE_SIZE = 25
TYPE_LABELS = OPERATION_LABELS  # a job's type is the credit operation it is charged as
# Ledger row types of a job's hold, in words.
TRAIL_LABELS = {"reserve": "reserved", "capture": "charged", "release": "released (given back)",
                "consume": "charged", "grant": "granted", "adjust": "adjusted"}
CANCELLABLE = ("queued", "running", "awaiting_webhook")


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``end - start`` as people read it (``850 ms``, ``12.3 s``, ``4 min 05 s``); ``–`` if unknown."""
    if start is None or end is None:
        return "–"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@router.get("")
async def jobs_page(
    request: Request, session: SessionDep, user: CurrentUserDep, status: str = "", type: str = "",
    cursor: str = "",
) -> Response:
    """``?status=<state>&type=<job type>``, 25 a page (``cursor``), newest first."""
    filters = Filters()
    state = filters.choice("status", status, JOB_STATES)
    job_type = filters.choice("type", type, JOB_TYPES)
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await jobs.list_jobs(session, user.principal, status=state, job_type=job_type, limit=PAGE_SIZE + 1,
                                after=after)
    page = rows[:PAGE_SIZE]
    next_link = None
    if len(rows) > PAGE_SIZE:
        next_link = with_query(request, cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)))
    return render(request, "jobs.html", {
        "jobs": page, "states": JOB_STATES, "types": JOB_TYPES, "labels": TYPE_LABELS, "errors": filters.errors,
        "filters": {"status": status, "type": type}, "next_link": next_link,
        "first_link": with_query(request, cursor=None) if cursor else None,
    }, block="list")


def credit_trail(entries: list[Any]) -> dict[str, Decimal]:
    """Totals of a job's ledger rows: ``reserved``, ``charged``, ``released``."""
    totals = {"reserved": Decimal(0), "charged": Decimal(0), "released": Decimal(0)}
    for entry in entries:
        if entry.type == "reserve":
            totals["reserved"] += entry.amount
        elif entry.type in ("capture", "consume"):
            totals["charged"] += entry.amount
        elif entry.type == "release":
            totals["released"] += entry.amount
    return totals


async def _detail(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
    job_id: uuid.UUID, *, notice: str | None = None,
) -> Response:
    job = await jobs.get_job(session, user.principal, job_id)
    shown = await present_job(session, job, urls)
    entries = await jobs.job_credit_transactions(session, job)
    return render(request, "job.html", {
        "job": shown, "finished": job.state in FINISHED_STATES, "labels": TYPE_LABELS, "trail_labels": TRAIL_LABELS,
        "entries": entries, "trail": credit_trail(entries), "logs": await jobs.job_logs(session, job.id),
        "cancellable": job.state in CANCELLABLE and job.cancel_requested_at is None,
        "queue_wait": duration(job.created_at, job.started_at or (job.finished_at if job.state == "canceled" else None)),
        "run_time": duration(job.started_at, job.finished_at), "notice": notice,
        "placeholder": job.provider == "procedural" and bool(shown.images),
    }, block="detail")


@router.get("/{job_id}")
async def job_page(
    request: Request, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep,
    user: CurrentUserDep,
) -> Response:
    return await _detail(request, session, settings, urls, user, job_id)


@router.post("/{job_id}/cancel")
async def cancel(
    request: Request, job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep,
    providers: ProvidersDep, user: CurrentUserDep,
) -> Response:
    """Cancel as ``DELETE /api/v1/jobs/{id}`` does: a queued job at once (its hold released), a
    running one when its worker confirms; a finished one is 409."""
    job = await jobs.cancel_job(session, user.principal, job_id)
    await session.commit()  # canceled and released before the provider hears of it
    await jobs.cancel_at_provider(job, providers)
    if is_htmx(request):
        return await _detail(request, session, settings, urls, user, job_id)
    return RedirectResponse(f"/app/jobs/{job_id}", status_code=303)
