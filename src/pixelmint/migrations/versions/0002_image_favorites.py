"""image favourites: images.favorited_at and a partial index for the favourites filter

Revision ID: 0002_image_favorites
Revises: 0001_schema
Create Date: 2026-12-02

``favorited_at`` is NULL for an image nobody starred (adding a nullable column without a default
rewrites nothing). The index serves ``GET /api/v1/images?favorite=true`` in the list's order
(team, newest first) and holds the starred, undeleted images only; it is built CONCURRENTLY, so
that writes to ``images`` go on while it is built.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_image_favorites"
down_revision = "0001_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("images", sa.Column("favorited_at", sa.TIMESTAMP(timezone=True), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_images_team_favorites", "images",
            ["team_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
            unique=False, postgresql_where=sa.text("favorited_at IS NOT NULL AND deleted_at IS NULL"),
            postgresql_concurrently=True, if_not_exists=True,
        )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index("ix_images_team_favorites", table_name="images", if_exists=True)
    op.drop_column("images", "favorited_at")
