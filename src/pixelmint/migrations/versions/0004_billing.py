"""billing: allocation periods, void ledger rows, Stripe customers and events

Revision ID: 0004_billing
Revises: 0002_models

- ``credit_balances.allocation_period`` (a counter, +1 per replenishment) and
  ``allocation_period_started_at``; ``credit_reservations.allocation_period`` (the balance's
  period when the hold was taken). A hold settled in a later period does not give its allocation
  part back (``credits/service.py``, ``_SETTLE``). The reservation column has no default on
  purpose: every insert must say which period it drew from.
- ``credit_balances.next_replenishment_at`` gets a partial index for the replenishment task.
- ``credit_transactions.type`` may be ``void``; a grant is voided at most once (unique index on
  ``metadata->>'voids'``).
- ``teams.stripe_customer_id`` (unique) and ``teams.stripe_subscription_id``.
- ``stripe_events``: every verified webhook event, unique on its id, with what processing did.
"""

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_billing"
down_revision = "0002_models"
branch_labels = None
depends_on = None

_TYPE_CHECK = "ck_credit_transactions_type_valid"


def _ledger_types() -> list[str]:
    """The ledger types the check constraint allows now (other branches may have added some)."""
    definition = op.get_bind().execute(
        sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :name"), {"name": _TYPE_CHECK}
    ).scalar_one()
    return re.findall(r"'([^']+)'", definition)


def _set_ledger_types(types: list[str]) -> None:
    op.drop_constraint(op.f(_TYPE_CHECK), "credit_transactions", type_="check")
    values = ", ".join(f"'{t}'" for t in types)
    op.create_check_constraint(op.f(_TYPE_CHECK), "credit_transactions", f"type IN ({values})")


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column(
        "credit_balances",
        sa.Column("allocation_period", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "credit_balances",
        sa.Column("allocation_period_started_at", postgresql.TIMESTAMP(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
    )
    # Before this revision nothing replenished: the current period began when the team was created.
    op.execute("""UPDATE credit_balances b SET allocation_period_started_at = t.created_at
                    FROM teams t WHERE t.id = b.team_id""")
    op.create_index(
        "ix_credit_balances_next_replenishment_at", "credit_balances", ["next_replenishment_at"],
        postgresql_where=sa.text("next_replenishment_at IS NOT NULL"),
    )
    op.add_column(
        "credit_reservations",
        sa.Column("allocation_period", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.alter_column("credit_reservations", "allocation_period", server_default=None)

    types = _ledger_types()
    if "void" not in types:
        _set_ledger_types([*types, "void"])
    op.create_index(
        "ux_credit_transactions_voids", "credit_transactions", [sa.literal_column("(metadata->>'voids')")],
        unique=True, postgresql_where=sa.text("type = 'void'"),
    )

    op.add_column("teams", sa.Column("stripe_customer_id", sa.String(length=255), nullable=True))
    op.add_column("teams", sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_teams_stripe_customer_id"), "teams", ["stripe_customer_id"])

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("livemode", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("event_created", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("team_id", sa.UUID(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("outcome", sa.String(length=64), server_default="received", nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("received_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_stripe_events_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index("ix_stripe_events_customer_id_created", "stripe_events", ["customer_id", "event_created"])


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index("ix_stripe_events_customer_id_created", table_name="stripe_events")
    op.drop_table("stripe_events")
    op.drop_constraint(op.f("uq_teams_stripe_customer_id"), "teams", type_="unique")
    op.drop_column("teams", "stripe_subscription_id")
    op.drop_column("teams", "stripe_customer_id")
    op.drop_index("ux_credit_transactions_voids", table_name="credit_transactions")
    # Fails while void rows exist (the narrower check would reject them): void rows are history.
    types = _ledger_types()
    if "void" in types:
        _set_ledger_types([t for t in types if t != "void"])
    op.drop_column("credit_reservations", "allocation_period")
    op.drop_index("ix_credit_balances_next_replenishment_at", table_name="credit_balances")
    op.drop_column("credit_balances", "allocation_period_started_at")
    op.drop_column("credit_balances", "allocation_period")
