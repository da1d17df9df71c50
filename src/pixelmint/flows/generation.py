"""Generating images, across domains: submit (validate, resolve the reference or custom model,
price, use a free generation or reserve credits, enqueue) and the ``image_generation`` job type
(render with the model's provider and version, store the images).

``submit_generation`` is the hot path of ``POST /api/v1/generate``: after validation (the model
and the prices come from per-process caches) it runs ONE statement in the caller's transaction
(``SUBMIT``: queue capacity, free generation or reservation, enqueue); only what that statement
refuses goes the step-by-step way. The balance row is locked only from that statement to the commit.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import asyncpg
from sqlalchemy import Integer, Numeric, Table, TextClause, column, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pixelmint.accounts import service as accounts
from pixelmint.accounts.service import Principal
from pixelmint.catalog import service as catalog
from pixelmint.credits import ledger
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from pixelmint.credits.pricing import Pricing
from pixelmint.custom_models import service as custom_models
from pixelmint.custom_models.errors import PlanUpgradeRequired
from pixelmint.jobs import queue
from pixelmint.jobs import service as jobs
from pixelmint.jobs.registry import Registry
from pixelmint.jobs.schemas import GenerateRequest
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import (
    AwaitingWebhook,
    TaskContext,
    TaskOutcome,
    provider_trace,
    remote_generate,
    store_generated,
    webhook_url,
)
from pixelmint.kit.coalesce import Coalescer
from pixelmint.kit.db import DriverStatement, database_unreachable, driver_connection
from pixelmint.kit.ids import new_id
from pixelmint.providers.base import GenerationRequest, LoraWeight
from pixelmint.settings import Settings


def register(registry: Registry) -> None:
    registry.add("image_generation", image_generation)


@dataclass(frozen=True)
class ResolvedModel:
    reference_model_id: str | None
    custom_model_id: uuid.UUID | None
    custom_model_version: int | None
    complexity: Decimal
    provider: str
    model_key: str


async def resolve_model(
    session: AsyncSession, principal: Principal, request: GenerateRequest, settings: Settings
) -> ResolvedModel:
    """The model to generate from. Raises ``NotFound`` (model_not_found) for an unknown, inactive,
    deleted or another team's model and ``Conflict`` (model_not_ready) for an untrained one."""
    if request.reference_model_id is not None:
        model = await catalog.get_pricing_info(session, request.reference_model_id)
        return ResolvedModel(model.id, None, None, model.complexity_factor, catalog.provider_for(model, settings)[0], model.id)
    custom, version = await custom_models.ready_version(
        session, principal, request.custom_model_id, request.custom_model_version  # type: ignore[arg-type]
    )
    reference = await catalog.get_pricing_info(session, custom.reference_model_id, require_active=False)
    return ResolvedModel(
        reference.id, custom.id, version, reference.complexity_factor, catalog.provider_for(reference, settings)[0],
        f"custom:{custom.id}:v{version}",
    )


async def submit_generation(
    session: AsyncSession,
    principal: Principal,
    request: GenerateRequest,
    *,
    settings: Settings,
    pricing: Pricing,
    alone: bool = False,
) -> tuple[Job, int]:
    """Validate, price and queue an image-generation job; returns (job, free generations left).

    ``alone``: the caller writes nothing else with ``session`` (``POST /generate`` without an
    Idempotency-Key): when nothing ran in it yet either, the common case commits on its own in one
    round trip, and the job returned is in no session; a paid one that arrives while another of
    the team is in flight in this process goes with the others that arrive meanwhile, in one
    statement (``_SUBMIT_BATCH``, ``kit/coalesce.py``).

    A user's free generations are used first (cost 0, no reservation). Otherwise the estimate is
    reserved from the team's balance in the same transaction as the job insert. Raises
    ``InvalidRequest``, ``NotFound``/``Conflict`` (model), ``InsufficientCredits`` (402, nothing
    written) or ``Forbidden`` (plan_upgrade_required: a free plan after its free generations).
    """
    width, height = jobs.validate_generation(request, settings)
    model = await resolve_model(session, principal, request, settings)
    cost = pricing.image_generation(
        width=width, height=height, quality=request.quality, complexity=model.complexity,
        num_images=request.num_images,
    )
    seed = request.seed if request.seed is not None else secrets.randbelow(jobs.SEED_LIMIT)
    params = {
        "prompt": request.prompt,
        "negativePrompt": request.negative_prompt,
        "width": width,
        "height": height,
        "quality": request.quality,
        "numImages": request.num_images,
        "seed": seed,
        "modelKey": model.model_key,
    }
    submitted = await _submit_in_one_statement(session, principal, cost=cost, params=params, model=model,
                                               settings=settings, alone=alone and not session.in_transaction())
    if submitted is not None:
        return submitted
    # Refused or out of the ordinary (queue full, no free generation on a free plan, not enough
    # credits, fail-open cover, no balance): nothing was written; the step-by-step path below
    # decides and raises as it always has.
    await queue.ensure_queue_capacity(session, team_id=principal.team_id, limit=settings.max_queued_jobs_per_team)
    free_left = await accounts.take_free_generation(session, principal.user_id)
    is_free = free_left is not None
    if not is_free:
        free_left = 0
        if principal.plan_max_concurrent_jobs == 0:
            balance = await credits.get_balance(session, principal.team_id)
            available = balance.allocation_credits + balance.bonus_credits
            if available < cost:
                raise InsufficientCredits(required=cost, available=available, operation="image_generation")
            raise PlanUpgradeRequired("The free plan runs only its free generations; upgrade the plan for paid jobs.")
    job = await jobs.queue_job(
        session, principal, job_type="image_generation", cost=None if is_free else cost, params=params,
        reference_model_id=model.reference_model_id, custom_model_id=model.custom_model_id,
        custom_model_version=model.custom_model_version, provider=model.provider, settings=settings,
    )
    return job, free_left or 0


# The common case of submit_generation in ONE statement (one round trip; the balance row is locked
# from this statement to the commit, with no statement in between): the queue-capacity check, a free
# generation or else the reservation, and the enqueue, each step gated on the ones before, composed
# of the fragments of the domains that own the tables (jobs/queue.py, accounts/service.py,
# credits/ledger.py). No job row means nothing was written.
_JOB_COLUMNS = cast(Table, Job.__table__).c


def _submit(*, alone: bool) -> TextClause:
    return text(
        "WITH " + queue.queued_jobs_cte("cap") + ",\n"
        + accounts.free_generation_cte("free", gate="SELECT room FROM cap") + ",\n"
        + ledger.reserve_ctes("NOT EXISTS (SELECT 1 FROM free) AND CAST(:paid AS boolean) AND (SELECT room FROM cap)",
                              alone=alone)
        + ",\n"
        + queue.enqueue_ctes(
            "EXISTS (SELECT 1 FROM free) OR EXISTS (SELECT 1 FROM d)",
            estimated_credits="CASE WHEN EXISTS (SELECT 1 FROM free) THEN 0 ELSE CAST(:amount AS numeric) END",
            reservation_id="(SELECT reservation_id FROM d)", is_free="EXISTS (SELECT 1 FROM free)",
        )
        + "\nSELECT " + ", ".join(f"job.{c.name}" for c in _JOB_COLUMNS) + """,
       (SELECT free_generations_remaining FROM free) AS free_left,
       (SELECT allocation_credits + bonus_credits FROM bal) AS available,
       (SELECT low_balance_threshold FROM bal) AS threshold
  FROM (SELECT 1) one LEFT JOIN job ON true"""
    )


SUBMIT = _submit(alone=False)
_SUBMIT = SUBMIT.columns(*_JOB_COLUMNS, column("free_left", Integer), column("available", Numeric),
                         column("threshold", Numeric))
_SUBMIT_ROW = select(Job, column("free_left", Integer), column("available", Numeric), column("threshold", Numeric))
# SUBMIT as a transaction of its own (``alone``): one round trip, no BEGIN/COMMIT; it does not
# reserve across the low-balance threshold (that reservation's webhook needs the transaction).
SUBMIT_ALONE = _submit(alone=True)
_SUBMIT_ALONE_SQL = DriverStatement(SUBMIT_ALONE)


# The paid generations of one team that queued while one of its submissions was in flight in this
# process (``kit/coalesce.py``), in ONE statement that is its own transaction: for each, in arrival
# order, the queue-capacity check, the reservation and the enqueue of SUBMIT_ALONE, one reservation,
# one ``reserve`` ledger row and one job each (credits/ledger.reserve_batch_ctes,
# jobs/queue.enqueue_batch_ctes). A request whose user still has free generations is left out (its
# own SUBMIT_ALONE takes one), as are those past the balance (without crossing the low-balance
# threshold) or the queue cap: nothing written for them; they go their own way.
_SUBMIT_BATCH = text(
    "WITH " + queue.queued_jobs_cte("cap") + """,
req AS (
    SELECT r.*
      FROM unnest(CAST(:job_ids AS uuid[]), CAST(:reservation_ids AS uuid[]), CAST(:user_ids AS uuid[]),
                  CAST(:amounts AS numeric[]), CAST(:params AS text[]), CAST(:reference_model_ids AS text[]),
                  CAST(:custom_model_ids AS uuid[]), CAST(:custom_model_versions AS int[]), CAST(:providers AS text[]))
           WITH ORDINALITY AS r(job_id, reservation_id, user_id, amount, params, reference_model_id, custom_model_id,
                                custom_model_version, provider, ord)
), paid AS (
    SELECT req.* FROM req
     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = req.user_id AND u.free_generations_remaining > 0)
),"""
    + ledger.reserve_batch_ctes(
        "paid", "CAST(:queue_limit AS int) <= 0 OR (SELECT queued FROM cap) + run.n <= CAST(:queue_limit AS int)")
    + ",\n" + queue.enqueue_batch_ctes("d")
    + "\nSELECT " + ", ".join(f"job.{c.name}" for c in _JOB_COLUMNS) + """,
       d.allocation_after + d.bonus_after + d.amount AS available, bal.low_balance_threshold AS threshold
  FROM req LEFT JOIN bal ON true LEFT JOIN job ON job.id = req.job_id LEFT JOIN d ON d.job_id = req.job_id
 ORDER BY req.ord""")
_SUBMIT_BATCH_SQL = DriverStatement(_SUBMIT_BATCH)


@dataclass(frozen=True)
class _Paid:
    """One paid submission of a batch (``_SUBMIT_BATCH``'s arrays)."""

    job_id: uuid.UUID
    reservation_id: uuid.UUID
    user_id: uuid.UUID | None
    amount: Decimal
    params: str
    reference_model_id: str | None
    custom_model_id: uuid.UUID | None
    custom_model_version: int | None
    provider: str


@dataclass(frozen=True)
class _Submitted:
    """A submission's statement's answer: the job (``None``: nothing written), the free
    generations left, the available credits before its reservation and the team's threshold;
    ``batched``: it came from a batch."""

    job: Job | None
    free_left: int | None
    available: Decimal | None
    threshold: Decimal | None
    batched: bool = False


_NOT_SUBMITTED = _Submitted(None, None, None, None, batched=True)


async def _submit_batch(driver: Any, key: tuple[uuid.UUID, int, int], items: list[_Paid]) -> list[_Submitted]:
    """``_SUBMIT_BATCH`` for ``items`` (``key``: team, queue limit, max attempts), committed when
    this returns. Refused whole by PostgreSQL: nothing written, each goes its own way."""
    team_id, queue_limit, max_attempts = key
    values: dict[str, Any] = {
        "team_id": team_id, "queue_limit": queue_limit, "max_attempts": max_attempts, "job_type": "image_generation",
        "priority": 0, "operation": "image_generation",
        **{f"{name}s": [getattr(item, name) for item in items] for name in (
            "job_id", "reservation_id", "user_id", "amount", "reference_model_id", "custom_model_id",
            "custom_model_version", "provider")},
        "params": [item.params for item in items],
    }
    try:
        records = await _SUBMIT_BATCH_SQL.fetch(driver, values)
    except asyncpg.PostgresError as exc:
        if database_unreachable(exc):
            raise
        return [_NOT_SUBMITTED] * len(items)
    return [
        _Submitted(Job(**{c.name: r[c.name] for c in _JOB_COLUMNS}), 0, r["available"], r["threshold"], batched=True)
        if r["id"] is not None else _NOT_SUBMITTED
        for r in records
    ]


_generations: Coalescer[tuple[uuid.UUID, int, int], _Paid, _Submitted] = Coalescer(_submit_batch)
generation_stats = _generations.stats


async def _submit_in_one_statement(
    session: AsyncSession, principal: Principal, *, cost: Decimal, params: dict[str, Any], model: ResolvedModel,
    settings: Settings, alone: bool,
) -> tuple[Job, int] | None:
    """(job, free generations left) when queued, else ``None`` with nothing written. ``alone``:
    the statement is its own transaction, through the driver (the job is then a transient object,
    in no session)."""
    values: dict[str, Any] = {
        "queue_limit": settings.max_queued_jobs_per_team, "team_id": principal.team_id, "user_id": principal.user_id,
        "paid": principal.plan_max_concurrent_jobs > 0,
        # the reservation (credits/ledger.py's parameters)
        "amount": cost, "reserved_delta": cost, "type": "reserve", "expires_at": None, "operation": "image_generation",
        "job_id": new_id(), "reservation_id": new_id(), "app_id": None, "description": None, "metadata": "{}",
        # the job (jobs/queue.py's)
        "job_type": "image_generation", "priority": 0, "params": json.dumps(params),
        "reference_model_id": model.reference_model_id, "custom_model_id": model.custom_model_id,
        "custom_model_version": model.custom_model_version, "provider": model.provider,
        "max_attempts": settings.max_attempts,
    }
    job: Job | None
    free_left: Any
    available: Any
    threshold: Any
    if alone:
        async def one() -> _Submitted:  # SUBMIT_ALONE on the caller's session
            record = await _SUBMIT_ALONE_SQL.fetchrow(await driver_connection(session), values)
            assert record is not None
            return _Submitted(Job(**{c.name: record[c.name] for c in _JOB_COLUMNS}) if record["id"] is not None
                              else None, record["free_left"], record["available"], record["threshold"])

        if values["paid"]:  # paid generations of one team may go together (kit/coalesce.py)
            engine = session.bind
            assert isinstance(engine, AsyncEngine)
            submitted = await _generations.submit(
                (principal.team_id, settings.max_queued_jobs_per_team, settings.max_attempts),
                _Paid(values["job_id"], values["reservation_id"], principal.user_id, cost, values["params"],
                      model.reference_model_id, model.custom_model_id, model.custom_model_version, model.provider),
                engine, one)
            if submitted.job is None and submitted.batched:  # left out of a batch: its own statement
                submitted = await one()
        else:
            submitted = await one()
        job, free_left, available, threshold = (submitted.job, submitted.free_left, submitted.available,
                                                submitted.threshold)
    else:
        row = (await session.execute(_SUBMIT_ROW.from_statement(_SUBMIT), values,
                                     execution_options={"populate_existing": True})).one()
        job, free_left, available, threshold = row
    if job is None:
        return None
    queue.count_submitted(None if alone else session, job)
    if job.is_free:
        return job, free_left
    await credits.after_reservation(session, principal.team_id, amount=cost, available=available,
                                    threshold=threshold, operation="image_generation", committed=alone)
    return job, 0


async def _model_for_provider(ctx: TaskContext, job: Job) -> tuple[str | None, tuple[LoraWeight, ...], dict[str, Any]]:
    """(provider model, LoRAs, custom model artifact) for a generation job."""
    artifact: dict[str, Any] = {}
    async with ctx.db.transaction() as session:
        if job.custom_model_id is not None and job.custom_model_version is not None:
            artifact = await custom_models.version_artifact(session, job.custom_model_id, job.custom_model_version)
        reference = (
            await catalog.get_pricing_info(session, job.reference_model_id, require_active=False)
            if job.reference_model_id
            else None
        )
    if artifact.get("providerModel") and artifact.get("provider") == job.provider:
        loras = (LoraWeight(artifact["loraPath"]),) if artifact.get("loraPath") else ()
        return artifact["providerModel"], loras, artifact
    return (reference.provider_models.get(job.provider) if reference else None), (), artifact


async def generation_request(ctx: TaskContext, job: Job) -> GenerationRequest:
    """The provider request of an ``image_generation`` job (model, LoRAs, style of its version)."""
    p = job.params
    provider_model, loras, artifact = await _model_for_provider(ctx, job)
    prompt = p["prompt"]
    if artifact.get("refinements") and artifact.get("providerModel"):
        prompt = ", ".join([prompt, *artifact["refinements"]])  # a remote model's refinements guide the prompt
    return GenerationRequest(
        prompt=prompt, negative_prompt=p.get("negativePrompt"), width=p["width"], height=p["height"],
        num_images=p["numImages"], seed=p["seed"], quality=p["quality"], model_key=p["modelKey"],
        provider_model=provider_model, style=artifact.get("style", {}), loras=loras,
    )


async def image_generation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Render the job's images with its provider and store them; the image rows are added in the
    success transaction. Remote providers are polled, or (with a public URL and a provider that
    supports callbacks) left to call back: ``AwaitingWebhook``. Raises ``ProviderError``; a storage
    failure is retryable."""
    request = await generation_request(ctx, job)
    await ctx.log(f"generating {request.num_images} image(s) of {request.width}x{request.height} with {job.provider}")
    remote = ctx.providers.remote(job.provider)
    provider_details: dict[str, Any] = {}
    if remote is None:
        generated = await ctx.providers.get(job.provider).generate(request, progress=ctx.progress)
    elif not job.provider_handle and (callback := webhook_url(ctx, job.provider, remote)):
        await provider_trace(ctx, job).submitted(await remote.submit(request, webhook_url=callback))
        raise AwaitingWebhook
    else:
        generated, provider_details = await remote_generate(ctx, job, remote, request)
    return await store_generated(ctx, job, request, generated, provider_details)
