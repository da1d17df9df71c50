"""Getting a database ready: resolve the URL (embedded server when none is set), migrate, seed."""

from __future__ import annotations

from typing import Any

from pixelmint.catalog import service as catalog
from pixelmint.kit.db import Database, embedded_server, migrate
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage


class DatabaseHandle:
    """The database URL plus, for the embedded server, the handle that keeps it running."""

    def __init__(self, url: str, server: Any = None) -> None:
        self.url = url
        self.server = server


def resolve_database(settings: Settings) -> DatabaseHandle:
    if settings.database_url:
        return DatabaseHandle(settings.database_url)
    server = embedded_server(settings.data_dir)
    return DatabaseHandle(server.get_uri(), server)


async def prepare_database(url: str, storage: Storage | None = None) -> None:
    """Apply migrations and upsert the catalog seed data; with ``storage``, also render the
    catalog's missing preview images."""
    import asyncio

    await asyncio.to_thread(migrate, url)
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            await catalog.seed(session)
            if storage is not None:
                await catalog.seed_previews(session, storage)
    finally:
        await db.dispose()
