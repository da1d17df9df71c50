"""credit API apps, holds with expiry, pricing table

Revision ID: 0003_apps
Revises: 0002_models
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_apps"
down_revision = "0002_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "apps",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_apps_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_apps_name")),
    )
    op.create_table(
        "app_operations",
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_app_operations_app_id_apps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "operation", name=op.f("pk_app_operations")),
    )
    op.create_table(
        "credit_pricing_config",
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("operation", name=op.f("pk_credit_pricing_config")),
    )
    op.add_column("credit_reservations", sa.Column("app_id", sa.UUID(), nullable=True))
    op.add_column("credit_reservations", sa.Column("expires_at", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_credit_reservations_app_id_apps"), "credit_reservations", "apps", ["app_id"], ["id"]
    )
    op.create_index(
        "ix_credit_reservations_expiring", "credit_reservations", ["expires_at"],
        postgresql_where=sa.text("status = 'held' AND expires_at IS NOT NULL"),
    )
    op.add_column("credit_transactions", sa.Column("app_id", sa.UUID(), nullable=True))
    op.create_index(op.f("ix_credit_transactions_app_id"), "credit_transactions", ["app_id"])


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_credit_transactions_app_id"), table_name="credit_transactions")
    op.drop_column("credit_transactions", "app_id")
    op.drop_index("ix_credit_reservations_expiring", table_name="credit_reservations")
    op.drop_constraint(op.f("fk_credit_reservations_app_id_apps"), "credit_reservations", type_="foreignkey")
    op.drop_column("credit_reservations", "expires_at")
    op.drop_column("credit_reservations", "app_id")
    op.drop_table("credit_pricing_config")
    op.drop_table("app_operations")
    op.drop_table("apps")
