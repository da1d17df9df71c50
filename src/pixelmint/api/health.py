"""``GET /healthz``: the process answers and its database does."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from pixelmint.kit.http import DatabaseDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(db: DatabaseDep) -> dict[str, str]:
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok"}
