"""one head again: 0003–0006 all branched from 0002

Revision ID: 0007_merge
Revises: 0003_apps, 0004_billing, 0005_idempotency, 0006_provider_requests

Alembic refuses `alembic revision` while a repository has several heads; this merge revision
joins them so that later revisions form one line. It changes nothing in the schema.
"""

revision = "0007_merge"
down_revision = ("0003_apps", "0004_billing", "0005_idempotency", "0006_provider_requests")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
