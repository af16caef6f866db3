"""Settings from the environment (prefix REFERRALS_, also read from .env); no I/O at import."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_NOTIFY_BASE_URL = "https://api.notifications.service.gov.uk"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class Fatal(Exception):
    """Stop a `referrals` command with one line on stderr and a non-zero exit."""


class ConfigError(Fatal):
    """Configuration that cannot be used; the message is one line for the operator."""


class Settings(BaseSettings):
    """Every variable in CONTRACT.md's configuration table, validated."""

    model_config = SettingsConfigDict(
        env_prefix="REFERRALS_", env_file=".env", extra="ignore", validate_default=True
    )

    data_dir: Path = Path("./.referrals")
    database_url: str | None = None
    temporal_address: str | None = None
    temporal_namespace: str = Field(default="default", min_length=1)
    #: TLS to the Temporal frontend (temporal_connection.py): on with any of the files, the
    #: server name or an API key; the files are PEM, read when the process connects.
    temporal_tls: bool = False
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: str | None = None
    task_queue: str = Field(default="referrals", min_length=1)
    smtp_url: str | None = None
    notify_api_key: str | None = None
    notify_base_url: str = DEFAULT_NOTIFY_BASE_URL
    notify_template_id: str | None = None
    #: Optional templates of their own per message kind (else the generic one above).
    notify_template_reminder: str | None = None
    notify_template_escalation: str | None = None
    notify_template_outcome: str | None = None
    #: The bearer token Notify sends to POST /api/v1/integrations/notify/callbacks.
    notify_callback_token: str | None = None
    mail_from: str = "referrals@localhost"
    policy_file: Path | None = None
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = None
    encryption_key: str | None = None
    log_level: str = "INFO"
    #: Days after a referral closes before its personal details are purged. Six years (2192 days:
    #: 6 x 365 plus the two leap days any six years can hold) is "closure + 6 years", the usual
    #: local-authority retention for records with no longer statutory period, and the Limitation
    #: Act 1980's six years for a claim. The case record itself lives in the receiving team's
    #: system (its record id is kept here), so this copy need not follow case-file periods.
    retention_days: int = 2192
    #: Local time (Europe/London, "HH:MM") of the daily purge: night, outside office hours, and
    #: clear of 01:00-02:00, which the clocks skip or repeat in spring and autumn.
    purge_time: str = "02:30"
    #: How often the reconciler compares open referrals in SQL with running workflows
    #: (seconds, or ISO 8601 such as "PT5M").
    reconcile_every: timedelta = timedelta(minutes=5)
    #: Referral workflows a worker keeps in memory (Temporal's `max_cached_workflows`). About a
    #: quarter of a megabyte each (BENCHMARKS.md), so this bounds the worker's memory whatever the
    #: number of open referrals; a workflow not in the cache is rebuilt from its history when it
    #: next has work, which costs time in a storm of deadlines larger than the cache.
    workflow_cache: int = Field(default=1000, ge=1, le=1_000_000)
    #: Who is told of the reconciler's findings: comma-separated email addresses (none: metrics only).
    admin_emails: Annotated[list[str], NoDecode] = []

    @field_validator(
        "database_url",
        "smtp_url",
        "notify_api_key",
        "notify_template_id",
        "notify_template_reminder",
        "notify_template_escalation",
        "notify_template_outcome",
        "notify_callback_token",
        "secret_key",
        "temporal_address",
        "temporal_tls_server_name",
        "temporal_api_key",
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("notify_api_key")
    @classmethod
    def _notify_api_key(cls, value: str | None) -> str | None:
        if value is not None:
            from activities.notify_channel import parse_api_key

            # The message never repeats the key: it is a secret.
            parse_api_key(value)
        return value

    @field_validator(
        "notify_template_id",
        "notify_template_reminder",
        "notify_template_escalation",
        "notify_template_outcome",
    )
    @classmethod
    def _notify_template(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_UUID, value):
            raise ValueError("must be a Notify template id (a UUID, from the template's page)")
        return value

    @field_validator("notify_callback_token")
    @classmethod
    def _notify_callback_token(cls, value: str | None) -> str | None:
        # Notify's own minimum for a callback's bearer token.
        if value is not None and (len(value) < 10 or any(c.isspace() for c in value)):
            raise ValueError("must be at least 10 characters, without spaces")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme.split("+")[0] not in {"sqlite", "postgresql"}:
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://host:port or smtps://user:pass@host:port")
        try:
            parts.port  # noqa: B018 - raises on a non-numeric port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return value

    @field_validator("public_url", "notify_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// address")
        return value.rstrip("/")

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        if value.count("@") != 1:
            raise ValueError("must be an email address")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: str | None) -> str | None:
        if value:
            from codec import parse_keys  # cryptography is loaded only when a key is configured

            parse_keys(value)
        return value or None

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("retention_days")
    @classmethod
    def _retention_days(cls, value: int) -> int:
        # 0 would purge a referral the moment it closes, before anyone could read its outcome.
        if value < 1:
            raise ValueError("must be a whole number of days, at least 1")
        return value

    @field_validator("purge_time")
    @classmethod
    def _purge_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError('must be a time of day as "HH:MM", e.g. "02:30"')
        return value.strip()

    @field_validator("reconcile_every", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # pydantic reads "300" as a malformed ISO duration; a bare number means seconds.
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value

    @field_validator("reconcile_every")
    @classmethod
    def _reconcile_every(cls, value: timedelta) -> timedelta:
        # A run takes two looks half a minute apart; more often than every minute they would overlap,
        # and less often than daily a lost referral would go unnoticed for too long.
        if not timedelta(minutes=1) <= value <= timedelta(days=1):
            raise ValueError('must be between 60 seconds and 1 day, e.g. "300" or "PT5M"')
        return value

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _admin_emails(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for address in value:
                if not isinstance(address, str) or address.count("@") != 1 or " " in address:
                    raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("policy_file")
    @classmethod
    def _policy_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _notify(self) -> Settings:
        if self.notify_api_key and not self.notify_template_id:
            raise ValueError("REFERRALS_NOTIFY_TEMPLATE_ID is required with REFERRALS_NOTIFY_API_KEY")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ValueError("REFERRALS_SECRET_KEY must be at least 32 characters")
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError(
                "REFERRALS_TEMPORAL_TLS_CERT_FILE and REFERRALS_TEMPORAL_TLS_KEY_FILE go together "
                "(mutual TLS needs the client certificate and its private key)"
            )
        return self

    @property
    def temporal_tls_enabled(self) -> bool:
        """TLS to the Temporal frontend: asked for, or implied by a file, a server name or a key."""
        return self.temporal_tls or any(
            value is not None
            for value in (
                self.temporal_tls_ca_file,
                self.temporal_tls_cert_file,
                self.temporal_tls_key_file,
                self.temporal_tls_server_name,
                self.temporal_api_key,
            )
        )

    @property
    def resolved_database_url(self) -> str:
        """The read model's URL, defaulting to SQLite in the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'referrals.db'}"

    @property
    def resolved_temporal_address(self) -> str:
        """The Temporal frontend address."""
        return self.temporal_address or "localhost:7233"

    def require_secret_key(self, *, dev: bool) -> str:
        """The signing secret; `dev` generates and keeps one in the data folder."""
        if self.secret_key:
            return self.secret_key
        if not dev:
            raise ConfigError("REFERRALS_SECRET_KEY is required outside `referrals dev`")
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, or a ConfigError with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        # A validator's own message is clearer than pydantic's "Value error, ..." wrapping.
        reason = str(first.get("ctx", {}).get("error", "")) or first["msg"]
        if not field:
            raise ConfigError(reason) from None
        raise ConfigError(f"REFERRALS_{field.upper()}: {reason}") from None
