"""ORM classes of the shared plumbing in ``kit/``: stored ``Idempotency-Key`` answers."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of one caller, claimed by the first request that used it
    (``kit/idempotency.py``).

    The owner is a team (requests with a team's API key) or an app (requests with an app's service
    key); a key is unique per owner. ``status_code``/``response_body`` are the answer to replay:
    NULL until it is known; ``completed_at`` is NULL while the first request may still change its
    answer (a provisional answer, e.g. a queued job while ``waitForResult`` waits). Rows older than
    ``PIXELMINT_IDEMPOTENCY_RETENTION_HOURS`` are pruned.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("num_nonnulls(team_id, app_id) = 1", name="one_owner"),
        Index("uq_idempotency_keys_team_id_key", "team_id", "key", unique=True,
              postgresql_where=text("team_id IS NOT NULL")),
        Index("uq_idempotency_keys_app_id_key", "app_id", "key", unique=True,
              postgresql_where=text("app_id IS NOT NULL")),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[uuid.UUID | None]
    app_id: Mapped[uuid.UUID | None]
    key: Mapped[str] = mapped_column(String(255))
    # The request fingerprint: a key may only be reused with the same method, path and body.
    request_method: Mapped[str] = mapped_column(String(16))
    request_path: Mapped[str] = mapped_column(String(2048))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_content_type: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = created_at_column()
    completed_at: Mapped[dt.datetime | None]
