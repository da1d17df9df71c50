"""``kit.metrics.after_commit``: actions run once the transaction commits, savepoints respected."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pixelmint.kit import metrics
from pixelmint.kit.db import Database


async def test_a_rolled_back_savepoint_drops_only_its_own_actions(db: Database) -> None:
    fired: list[str] = []
    async with db.transaction() as s:
        metrics.after_commit(s, lambda: fired.append("before"))
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                metrics.after_commit(s, lambda: fired.append("rolled back"))
                await s.execute(text("SELECT 1"))
                raise RuntimeError
        async with s.begin_nested():
            metrics.after_commit(s, lambda: fired.append("released"))
        assert fired == []  # a released savepoint is not a commit
    assert fired == ["before", "released"]


async def test_nothing_runs_when_the_transaction_rolls_back(db: Database) -> None:
    fired: list[str] = []
    with pytest.raises(RuntimeError):
        async with db.transaction() as s:
            async with s.begin_nested():
                metrics.after_commit(s, lambda: fired.append("released"))
            metrics.after_commit(s, lambda: fired.append("outer"))
            raise RuntimeError
    assert fired == []
