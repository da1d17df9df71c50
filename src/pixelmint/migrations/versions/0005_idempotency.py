"""idempotency keys

Revision ID: 0005_idempotency
Revises: 0002_models

``idempotency_keys``: one row per ``Idempotency-Key`` of a team (API keys) or an app (service
keys), unique per owner, with the request fingerprint and the answer to replay
(``kit/idempotency.py``). No foreign keys: the claim is on the hot path of ``POST /generate`` and a
key-share lock on the team row per request buys nothing; rows are pruned after the retention.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_idempotency"
down_revision = "0002_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=True),
        sa.Column("app_id", sa.UUID(), nullable=True),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_method", sa.String(length=16), nullable=False),
        sa.Column("request_path", sa.String(length=2048), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("response_content_type", sa.String(length=255), nullable=True),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint("num_nonnulls(team_id, app_id) = 1", name=op.f("ck_idempotency_keys_one_owner")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "uq_idempotency_keys_team_id_key", "idempotency_keys", ["team_id", "key"], unique=True,
        postgresql_where=sa.text("team_id IS NOT NULL"),
    )
    op.create_index(
        "uq_idempotency_keys_app_id_key", "idempotency_keys", ["app_id", "key"], unique=True,
        postgresql_where=sa.text("app_id IS NOT NULL"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("uq_idempotency_keys_app_id_key", table_name="idempotency_keys")
    op.drop_index("uq_idempotency_keys_team_id_key", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
