"""The ``pixelmint`` command: serve, worker, admin and db commands.

It starts fast (``pixelmint --help`` imports no SQLAlchemy, FastAPI, boto3 or Pillow): the service's
modules are imported when a command runs, through the wrappers below and imports inside commands.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from pixelmint.bootstrap import DatabaseHandle
    from pixelmint.kit.db import Database
    from pixelmint.settings import Settings
    from pixelmint.storage.backend import Storage

T = TypeVar("T")


def get_settings() -> Settings:
    from pixelmint.settings import get_settings as load

    return load()


def resolve_database(settings: Settings) -> DatabaseHandle:
    from pixelmint.bootstrap import resolve_database as resolve

    return resolve(settings)


async def prepare_database(url: str, storage: Storage | None = None) -> None:
    from pixelmint.bootstrap import prepare_database as prepare

    await prepare(url, storage)


def storage_from_settings(settings: Settings) -> Storage:
    from pixelmint.storage.backend import from_settings

    return from_settings(settings)


def configure_logging(level: str, *, json: bool) -> None:
    from pixelmint.kit.logging import configure_logging as configure

    configure(level, json=json)


app = typer.Typer(help="Pixelmint: self-hostable, credit-metered AI image generation.", no_args_is_help=True)
admin = typer.Typer(help="Administration: teams, credits, ledger checks.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.add_typer(db_app, name="db")
storage_app = typer.Typer(help="Image storage: retention cleanup, S3 lifecycle rule.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


class PlanChoice(str, Enum):
    free = "free"
    basic = "basic"
    pro = "pro"
    enterprise = "enterprise"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run a worker in-process.")] = True,
    processes: Annotated[int, typer.Option(help="API processes (each with its own worker unless --no-worker).")] = 1,
) -> None:
    """Run the HTTP API (and, unless --no-worker, one in-process worker per API process)."""
    import uvicorn

    from pixelmint.api.app import create_app

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.json_logs)
    handle = _ready_database(settings)
    typer.echo(f"Pixelmint on http://{host}:{port}  (data: {settings.data_dir})", err=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit instead
    # lets atexit stop the embedded PostgreSQL server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if processes > 1:
        os.environ["DATABASE_URL"] = handle.url
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics adds the processes up (kit/metrics.py)
            import shutil
            import tempfile

            metrics_dir = tempfile.mkdtemp(prefix="pixelmint-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PIXELMINT_SERVE_WORKER"] = "1" if worker else "0"
        uvicorn.run(
            "pixelmint.api.app:create_app_from_environment", factory=True, workers=processes,
            host=host, port=port, log_level="warning",
        )
    else:
        uvicorn.run(create_app(settings, handle.url, run_worker=worker), host=host, port=port, log_level="warning")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs in flight at once.")] = None,
) -> None:
    """Run a worker process alone (run several against one database to scale out)."""
    from pixelmint.api.runtime import Runtime

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.json_logs)
    handle = resolve_database(settings)

    async def main() -> None:
        await prepare_database(handle.url, storage_from_settings(settings))
        if concurrency:
            settings.worker_concurrency = concurrency
        runtime = await Runtime.start(settings, handle.url, run_worker=True)
        assert runtime.worker is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runtime.worker.stop)
        typer.echo(f"worker {runtime.worker.id} ready", err=True)
        await runtime._worker_task  # type: ignore[misc]
        await runtime.stop()

    asyncio.run(main())


def _ready_database(settings: Settings) -> DatabaseHandle:
    """Start the embedded PostgreSQL unless DATABASE_URL is set, migrate, seed the catalog and
    render its missing previews, saying on stderr what it is waiting for."""
    if not settings.database_url:
        typer.echo(f"starting the embedded PostgreSQL in {settings.data_dir / 'pg'} (created on the first run)…", err=True)
    handle = resolve_database(settings)
    typer.echo("migrating the database and seeding the catalog (the first run renders its preview images)…", err=True)
    asyncio.run(prepare_database(handle.url, storage_from_settings(settings)))
    return handle


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations and seed the catalog (serve does it too when it starts)."""
    _ready_database(get_settings())
    typer.echo("database is at head")


@admin.command("create-team")
def create_team(
    name: str,
    plan: Annotated[PlanChoice, typer.Option(help="Plan of the team.")] = PlanChoice.free,
    credits: Annotated[str | None, typer.Option(help="Initial credits instead of the plan's allocation.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {teamId, userId, apiKey} as JSON.")] = False,
    email: Annotated[str | None, typer.Option(
        help="The owner's email: prints a one-time link to set their password and sign in to the dashboard.",
    )] = None,
) -> None:
    """Create a team with its first user and API key (the key is printed once)."""
    import datetime as dt

    from pixelmint.accounts import people
    from pixelmint.accounts.service import CreatedTeam
    from pixelmint.flows.teams import create_team
    from pixelmint.kit.db import Database
    from pixelmint.kit.errors import PixelmintError

    amount = None
    if credits is not None:
        try:
            amount = Decimal(credits)
            if amount < 0 or amount != amount.quantize(Decimal("0.01")):
                raise InvalidOperation
        except InvalidOperation:
            typer.echo(f"--credits must be a non-negative amount with at most 2 decimals, got {credits!r}", err=True)
            raise typer.Exit(2) from None
    settings = get_settings()
    handle = resolve_database(settings)

    async def main() -> tuple[CreatedTeam, str | None]:
        await prepare_database(handle.url)
        db = Database.connect(handle.url, pool_size=1)
        try:
            async with db.transaction() as session:
                created = await create_team(
                    session, name=name, plan_code=plan.value, credits_amount=amount,
                    free_generations=settings.free_generations_per_user, email=email,
                )
                token = None
                if email is not None:
                    token = await people.create_password_token(
                        session, user_id=created.user_id, lifetime=dt.timedelta(hours=settings.password_link_hours)
                    )
                return created, token
        finally:
            await db.dispose()

    try:
        created, token = asyncio.run(main())
    except PixelmintError as exc:  # email_taken, invalid_email
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from None
    link = f"{(settings.public_url or 'http://127.0.0.1:8000').rstrip('/')}/set-password?token={token}" if token else None
    if as_json:
        typer.echo(json.dumps({"teamId": str(created.team_id), "userId": str(created.user_id), "apiKey": created.api_key,
                               **({"setPasswordUrl": link} if link else {})}))
    else:
        typer.echo(f"team   {created.team_id}\nuser   {created.user_id}\napiKey {created.api_key}  (shown once)")
        if link:
            typer.echo(f"set-password link for {email} (works once, for {settings.password_link_hours:g} hours):\n{link}")


@admin.command("check-ledger")
def check_ledger(
    as_json: Annotated[bool, typer.Option("--json", help='Print {"ok", "problems": [{kind, teamId, detail}]} as JSON.')]
    = False,
) -> None:
    """Verify balance == sum(ledger) for every team and that every hold is settled exactly once.
    Exits 1 on any drift."""
    from pixelmint.credits.service import check_ledger as run_check
    from pixelmint.kit.db import Database

    handle = resolve_database(get_settings())

    async def main() -> list:
        db = Database.connect(handle.url, pool_size=1)
        try:
            async with db.transaction() as session:
                return await run_check(session)
        finally:
            await db.dispose()

    problems = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps({"ok": not problems, "problems": [
            {"kind": p.kind, "teamId": str(p.team_id), "detail": p.detail} for p in problems]}))
    elif problems:
        for problem in problems:
            typer.echo(f"{problem.kind}\tteam {problem.team_id}\t{problem.detail}")
        typer.echo(f"ledger check FAILED: {len(problems)} problem(s)", err=True)
    else:
        typer.echo("ledger check ok: every balance equals the sum of its ledger")
    if problems:
        sys.exit(1)


def _with_storage(what: str, action: Callable[[Database, Storage], Awaitable[T]]) -> T:
    """``await action(db, storage)`` on the configured database and storage; a storage error
    prints "<what> failed: …" and exits 1."""
    from pixelmint.kit.db import Database
    from pixelmint.storage.backend import StorageError

    settings = get_settings()
    handle = resolve_database(settings)

    async def main() -> T:
        db = Database.connect(handle.url, pool_size=1)
        try:
            return await action(db, storage_from_settings(settings))
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except StorageError as exc:
        typer.echo(f"{what} failed: {exc}", err=True)
        sys.exit(1)


@storage_app.command("cleanup")
def storage_cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be deleted; change nothing.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per transaction and delete request.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete expired images now (objects, then rows; their jobs become 'expired'). Workers also
    do this every PIXELMINT_RETENTION_INTERVAL_SECONDS. Exits 1 on a storage error."""
    from pixelmint.flows.retention import cleanup_expired

    report = _with_storage("cleanup", lambda db, storage: cleanup_expired(
        db, storage, batch_size=batch_size, dry_run=dry_run))
    typer.echo(json.dumps(report.as_dict()) if as_json else report.summary())


@storage_app.command("apply-lifecycle")
def storage_apply_lifecycle() -> None:
    """S3 only: set the bucket's lifecycle rule that expires generated images after
    PIXELMINT_IMAGE_RETENTION_DAYS (other rules are kept). Exits 2 for the local backend, 1 on
    an S3 error."""
    from pixelmint.storage.backend import StorageError

    settings = get_settings()
    if settings.storage_backend != "s3":
        typer.echo("apply-lifecycle needs the S3 backend (PIXELMINT_STORAGE_BACKEND=s3). The local backend has "
                   "no lifecycle rules: `pixelmint storage cleanup` and the workers delete expired images.", err=True)
        sys.exit(2)
    try:
        storage = storage_from_settings(settings)
        rule = asyncio.run(storage.apply_lifecycle(days=settings.image_retention_days))  # type: ignore[attr-defined]
    except StorageError as exc:
        typer.echo(f"apply-lifecycle failed: {exc}", err=True)
        sys.exit(1)
    typer.echo(f"rule {rule['ID']}: objects under '{rule['Filter']['Prefix']}' expire after "
               f"{settings.image_retention_days} days")


@admin.command("check-storage")
def check_storage_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print {ok, checkedImages, missing} as JSON.")] = False,
) -> None:
    """Verify that every image row (not deleted) has its object in storage; lists those that do
    not. Exits 1 if any object is missing or the storage cannot be read."""
    from pixelmint.storage.check import check_storage

    report = _with_storage("storage check", check_storage)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        for missing in report.missing:
            typer.echo(f"missing_object\tteam {missing.team_id}\tjob {missing.job_id}\timage {missing.image_id}"
                       f"\t{missing.storage_key}")
    if report.missing:
        typer.echo(f"storage check FAILED: {len(report.missing)} of {report.checked} image(s) have no object", err=True)
        sys.exit(1)
    if not as_json:
        typer.echo(f"storage check ok: all {report.checked} image(s) have their object")



def _run_in_transaction(action):
    """Run ``await action(session)`` in one transaction on the configured database."""
    from pixelmint.kit.db import Database

    settings = get_settings()
    handle = resolve_database(settings)

    async def main():
        await prepare_database(handle.url)
        db = Database.connect(handle.url, pool_size=1)
        try:
            async with db.transaction() as session:
                return await action(session)
        finally:
            await db.dispose()

    return asyncio.run(main())


@admin.command("create-app")
def create_app_command(
    name: str,
    operation: Annotated[list[str] | None, typer.Option(help="An operation's cost: NAME=CREDITS (repeatable).")] = None,
    team: Annotated[list[uuid.UUID] | None, typer.Option(help="A team that lets the app use its credits (repeatable).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {appId, serviceKey} as JSON.")] = False,
) -> None:
    """Register an app for the credit API; its service key is printed once. The app may use only
    the credits of teams that grant it (--team, 'authorize-app', or the team's PUT /credits/apps/ID)."""
    from pixelmint.credits import apps

    costs = {}
    for item in operation or []:
        op, _, cost = item.partition("=")
        try:
            costs[op] = Decimal(cost)
        except InvalidOperation:
            typer.echo(f"--operation takes NAME=CREDITS, got {item!r}", err=True)
            raise typer.Exit(2) from None
    async def action(session):
        created = await apps.register_app(session, name=name, operations=costs)
        for team_id in team or []:
            await apps.authorize_app(session, team_id=team_id, app_id=created.app_id, granted_by="admin")
        return created

    created = _run_in_transaction(action)
    if as_json:
        typer.echo(json.dumps({"appId": str(created.app_id), "serviceKey": created.service_key}))
    else:
        typer.echo(f"app        {created.app_id}\nserviceKey {created.service_key}  (shown once)")


@admin.command("authorize-app")
def authorize_app_command(
    app_id: uuid.UUID,
    team_ids: Annotated[list[uuid.UUID], typer.Argument(metavar="TEAM_ID", help="One or more teams.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw the grants (open holds are released).")] = False,
) -> None:
    """Let an app use these teams' credits through the credit API, or with --revoke no longer."""
    from pixelmint.credits import apps

    async def action(session):
        done = []
        for team_id in team_ids:
            if revoke:
                released = await apps.revoke_app(session, team_id=team_id, app_id=app_id)
                done.append(f"team {team_id}: app {app_id} revoked; {released} open holds released")
            else:
                await apps.authorize_app(session, team_id=team_id, app_id=app_id, granted_by="admin")
                done.append(f"team {team_id}: app {app_id} authorized")
        return done

    typer.echo("\n".join(_billing_transaction(action)))


@admin.command("pricing")
def pricing_command(
    operation: Annotated[str | None, typer.Argument(help="image_generation | model_creation | model_refinement")] = None,
    config: Annotated[str | None, typer.Option("--set", help='JSON fields to set, e.g. \'{"base": 6}\'')] = None,
) -> None:
    """Show the pricing table, or replace one operation's prices with --set (new jobs only)."""
    from pixelmint.credits.pricing import current_pricing, pricing_as_config, set_pricing

    async def action(session):
        if config is not None:
            if operation is None:
                raise ValueError("name the operation to change")
            return pricing_as_config(await set_pricing(session, operation, json.loads(config)))
        return pricing_as_config(await current_pricing(session))

    try:
        table = _run_in_transaction(action)
    except (ValueError, TypeError) as exc:
        typer.echo(f"pricing: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(table if operation is None else table[operation], indent=2))


# ---------------------------------------------------------------------------------------------
# Billing: replenishment, grant / adjust / void with a reason, plan changes (billing/service.py)


class BucketChoice(str, Enum):
    bonus = "bonus"
    allocation = "allocation"


def _billing_transaction(action):
    """Run ``await action(session)`` in one transaction on the configured (migrated) database.
    A refusal (``PixelmintError``) prints ``error <code>: <message>`` and exits 1."""
    from pixelmint.kit.db import Database
    from pixelmint.kit.errors import PixelmintError

    handle = resolve_database(get_settings())

    async def main():
        db = Database.connect(handle.url, pool_size=1)
        try:
            async with db.transaction() as session:
                return await action(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except PixelmintError as exc:
        typer.echo(f"error {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _amount(value: str, *, signed: bool) -> Decimal:
    try:
        amount = Decimal(value)
        if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")) or (not signed and amount <= 0):
            raise InvalidOperation
    except InvalidOperation:
        kind = "a non-zero signed" if signed else "a positive"
        typer.echo(f"AMOUNT must be {kind} amount with at most 2 decimals, got {value!r}", err=True)
        raise typer.Exit(2) from None
    return amount


def _print_credit_change(session_result, as_json: bool) -> None:
    entry, balance = session_result
    if as_json:
        typer.echo(json.dumps({"transaction": entry, "balance": balance}))
    else:
        typer.echo(f"ledger entry {entry['id']} ({entry['type']}): allocation {entry['allocationDelta']:+}, bonus "
                   f"{entry['bonusDelta']:+}; now allocation {balance['allocationCredits']}, bonus "
                   f"{balance['bonusCredits']}, reserved {balance['reservedCredits']}")


def _credit_change(team_id: uuid.UUID, change):
    """Apply ``await change(session)`` (returns a ledger row) and return (row, balance) as JSON dicts."""
    from pixelmint.credits import service as credits
    from pixelmint.credits.schemas import present_balance, present_transaction

    async def action(session):
        entry = await change(session)
        balance = await credits.get_balance(session, team_id)
        return (present_transaction(entry).model_dump(by_alias=True, mode="json"),
                present_balance(balance).model_dump(by_alias=True, mode="json"))

    return _billing_transaction(action)


Reason = Annotated[str, typer.Option(help="Why (required); stored in the ledger row.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print {transaction, balance} as JSON.")]


@admin.command("grant")
def grant_command(
    team_id: uuid.UUID,
    amount: Annotated[str, typer.Argument(help="Credits > 0, at most 2 decimals.")],
    reason: Reason,
    bucket: Annotated[BucketChoice, typer.Option(help="bonus persists; allocation expires at the next replenishment.")]
    = BucketChoice.bonus,
    as_json: JsonFlag = False,
) -> None:
    """Grant credits to a team (a 'grant' ledger row; reverse it with 'void')."""
    from pixelmint.billing import service as billing

    value = _amount(amount, signed=False)
    result = _credit_change(team_id, lambda s: billing.grant(
        s, team_id=team_id, amount=value, bucket=bucket.value, reason=reason, source="cli"))
    _print_credit_change(result, as_json)


@admin.command("adjust", context_settings={"ignore_unknown_options": True})  # AMOUNT may be negative
def adjust_command(
    team_id: uuid.UUID,
    amount: Annotated[str, typer.Argument(help="Signed credits, e.g. 25 or -10.")],
    reason: Reason,
    bucket: Annotated[BucketChoice, typer.Option(help="The bucket to correct.")] = BucketChoice.bonus,
    as_json: JsonFlag = False,
) -> None:
    """Correct a bucket by a signed amount; refused (exit 1) if the bucket would go below 0."""
    from pixelmint.billing import service as billing

    value = _amount(amount, signed=True)
    result = _credit_change(team_id, lambda s: billing.adjust(
        s, team_id=team_id, amount=value, bucket=bucket.value, reason=reason, source="cli"))
    _print_credit_change(result, as_json)


@admin.command("void")
def void_command(
    team_id: uuid.UUID,
    transaction_id: Annotated[int, typer.Argument(help="Ledger id of the grant to reverse.")],
    reason: Reason,
    as_json: JsonFlag = False,
) -> None:
    """Reverse a grant by its ledger id, once (refused if its credits were spent or expired)."""
    from pixelmint.billing import service as billing

    result = _credit_change(team_id, lambda s: billing.void(
        s, team_id=team_id, transaction_id=transaction_id, reason=reason, source="cli"))
    _print_credit_change(result, as_json)


@admin.command("set-plan")
def set_plan_command(
    team_id: uuid.UUID,
    plan: PlanChoice,
    replenish_now: Annotated[bool, typer.Option("--replenish-now", help="Replenish to the new plan's credits now.")]
    = False,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the ledger row of --replenish-now).")] = None,
) -> None:
    """Move a team to another plan: new jobs get its priority and concurrency at once."""
    from pixelmint.billing import service as billing

    async def action(session):
        done = await billing.change_plan(session, team_id=team_id, plan_code=plan.value,
                                         replenish_now=replenish_now, reason=reason, source="cli")
        return done.change.previous_plan, done.balance.allocation_credits, done.balance.next_replenishment_at

    previous, allocation, next_at = _billing_transaction(action)
    typer.echo(f"team {team_id}: plan {previous} -> {plan.value}; allocation {allocation}; "
               f"next replenishment {next_at.isoformat() if next_at else 'none'}")


@admin.command("replenish-due")
def replenish_due_command(
    batch_size: Annotated[int, typer.Option(min=1, help="Teams per transaction.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replenish now every team whose next replenishment is due (workers also do this every
    PIXELMINT_REPLENISH_INTERVAL_SECONDS). Teams with a Stripe subscription are left to Stripe."""
    from pixelmint.billing.replenishment import replenish_due
    from pixelmint.kit.db import Database

    handle = resolve_database(get_settings())

    async def main():
        db = Database.connect(handle.url, pool_size=1)
        try:
            return await replenish_due(db, batch_size=batch_size)
        finally:
            await db.dispose()

    report = asyncio.run(main())
    typer.echo(json.dumps(report.as_dict()) if as_json else report.summary())

if __name__ == "__main__":
    app()
