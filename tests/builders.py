"""Small keyword-only builders for test data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pixelmint.accounts.service import CreatedTeam
from pixelmint.credits.apps import RegisteredApp, authorize_app, register_app
from pixelmint.credits.service import check_ledger
from pixelmint.flows.teams import create_team
from pixelmint.kit.db import Database


async def make_team(
    db: Database,
    *,
    plan: str = "basic",
    credits: Decimal | str | None = None,
    free_generations: int = 0,
    name: str = "team",
) -> CreatedTeam:
    async with db.transaction() as session:
        return await create_team(
            session, name=name, plan_code=plan,
            credits_amount=Decimal(str(credits)) if credits is not None else None,
            free_generations=free_generations,
        )


async def make_app(
    db: Database, *, name: str = "flashcards", operations: dict[str, Decimal] | None = None,
    teams: tuple[CreatedTeam, ...] = (),
) -> RegisteredApp:
    """A credit-API app (default price list: ``deck`` = 10) that ``teams`` have granted."""
    async with db.transaction() as session:
        app = await register_app(session, name=name, operations=operations or {"deck": Decimal("10")})
        for team in teams:
            await authorize_app(session, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
        return app


def auth(team: CreatedTeam) -> dict[str, str]:
    return {"Authorization": f"Bearer {team.api_key}"}


def generate_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"referenceModelId": "business-headshot", "prompt": "a lighthouse at dusk", "resolution": "512x512"}
    body.update(overrides)
    return body


async def assert_ledger_ok(db: Database) -> None:
    async with db.transaction() as session:
        problems = await check_ledger(session)
    assert problems == [], problems


def solid_png(rgb: tuple[int, int, int], *, size: int = 96, stripes: bool = False) -> bytes:
    """A small PNG of one colour (with darker stripes when asked): training data with a known palette."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), rgb)
    if stripes:
        draw = ImageDraw.Draw(image)
        for x in range(0, size, 12):
            draw.line((x, 0, x, size), fill=tuple(max(0, c - 60) for c in rgb), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
