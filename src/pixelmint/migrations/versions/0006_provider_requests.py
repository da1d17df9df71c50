"""provider request ids on jobs, stored provider webhook events

Revision ID: 0006_provider_requests
Revises: 0002_models
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_provider_requests"
down_revision = "0002_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("jobs", sa.Column("provider_request_id", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("provider_handle", sa.String(length=300), nullable=True))
    op.create_index(
        "ix_jobs_provider_request", "jobs", ["provider", "provider_request_id"],
        postgresql_where=sa.text("provider_request_id IS NOT NULL"),
    )
    op.create_table(
        "provider_webhook_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("delivery_id", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_webhook_events")),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_provider_webhook_events_delivery"),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("provider_webhook_events")
    op.drop_index("ix_jobs_provider_request", table_name="jobs")
    op.drop_column("jobs", "provider_handle")
    op.drop_column("jobs", "provider_request_id")
