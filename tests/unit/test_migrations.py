"""The alembic revisions match the tables, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect

from models.db import sync_url
from models.migrate import alembic_config


def test_no_drift_between_tables_and_migrations(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate would add anything


def test_schema_has_every_table_and_the_listing_indexes(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    try:
        inspector = inspect(engine)
        assert {"referral", "referral_event", "outbox_message", "app_user", "api_token"} <= set(
            inspector.get_table_names()
        )
        indexes = {i["name"] for i in inspector.get_indexes("referral")}
        assert {"ix_referral_status_due_at", "ix_referral_awaiting_team_due_at"} <= indexes
        uniques = {u["name"] for u in inspector.get_unique_constraints("outbox_message")}
        assert "uq_outbox_message_key" in uniques
    finally:
        engine.dispose()
