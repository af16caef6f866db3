"""Run alembic programmatically, so `referrals migrate` works from any folder."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from models.db import sync_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An alembic Config pointed at this project's migrations and the given database."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    url = sync_url(database_url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Upgrade the read model to the newest revision, creating the SQLite folder if needed."""
    target = sync_url(database_url)
    if target.get_backend_name() == "sqlite" and target.database and target.database != ":memory:":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")
