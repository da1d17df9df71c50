"""app grants: which credit-API apps may use a team's credits

Revision ID: 0009_app_grants
Revises: 0008_claim_ready

Until now any app's service key could charge any team. From here an app acts on a team only with
a row in ``app_grants`` (created by an admin or by the team; ``credits/apps.py``). Existing apps
get no grants: an operator grants them again (``pixelmint admin authorize-app``).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_app_grants"
down_revision = "0008_claim_ready"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "app_grants",
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("granted_by", sa.String(length=16), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("granted_by IN ('admin', 'team')", name=op.f("ck_app_grants_granted_by_valid")),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_app_grants_app_id_apps"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_app_grants_team_id_teams"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "app_id", name=op.f("pk_app_grants")),
    )
    op.create_index(op.f("ix_app_grants_app_id"), "app_grants", ["app_id"])


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_app_grants_app_id"), table_name="app_grants")
    op.drop_table("app_grants")
