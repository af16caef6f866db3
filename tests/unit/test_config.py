"""Settings: every variable in the contract, bad values refused with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings


class TestDefaults:
    """What an operator gets without setting anything."""

    def test_contract_defaults(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)
        settings = load_settings()
        assert settings.data_dir == Path("./.referrals")
        assert (
            settings.resolved_database_url == f"sqlite:///{(tmp_path / '.referrals').resolve()}/referrals.db"
        )
        assert settings.resolved_temporal_address == "localhost:7233"
        assert settings.temporal_namespace == "default"
        assert settings.task_queue == "referrals"
        assert settings.smtp_url is None
        assert settings.mail_from == "referrals@localhost"
        assert settings.public_url == "http://127.0.0.1:8000"
        assert settings.workflow_cache == 1000

    def test_environment_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REFERRALS_TASK_QUEUE", "q1")
        monkeypatch.setenv("REFERRALS_SMTP_URL", "smtps://user:pw@mail.example:465")
        monkeypatch.setenv("REFERRALS_DATABASE_URL", "postgresql+psycopg://u@h/db")
        monkeypatch.setenv("REFERRALS_WORKFLOW_CACHE", "250")
        settings = load_settings()
        assert settings.workflow_cache == 250
        assert settings.task_queue == "q1"
        assert settings.smtp_url == "smtps://user:pw@mail.example:465"
        assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"


class TestRefused:
    """Each bad value stops start-up with one line that names the variable."""

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("REFERRALS_SMTP_URL", "http://mail.example"),
            ("REFERRALS_SMTP_URL", "smtp://mail.example:notaport"),
            ("REFERRALS_DATABASE_URL", "mysql://x/y"),
            ("REFERRALS_PUBLIC_URL", "ftp://x"),
            ("REFERRALS_MAIL_FROM", "not-an-address"),
            ("REFERRALS_POLICY_FILE", "/no/such/policy.toml"),
            ("REFERRALS_SECRET_KEY", "short"),
            ("REFERRALS_LOG_LEVEL", "LOUD"),
            ("REFERRALS_TASK_QUEUE", ""),
            ("REFERRALS_WORKFLOW_CACHE", "0"),
            ("REFERRALS_WORKFLOW_CACHE", "many"),
        ],
    )
    def test_bad_value(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as refused:
            load_settings()
        message = str(refused.value)
        assert "\n" not in message
        assert variable in message or "REFERRALS_" in message

    def test_notify_key_needs_template(self, monkeypatch: pytest.MonkeyPatch) -> None:
        key = "live-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
        monkeypatch.setenv("REFERRALS_NOTIFY_API_KEY", key)
        with pytest.raises(ConfigError, match="REFERRALS_NOTIFY_TEMPLATE_ID"):
            load_settings()

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("REFERRALS_NOTIFY_API_KEY", "key-1234"),
            ("REFERRALS_NOTIFY_TEMPLATE_ID", "welcome-template"),
            ("REFERRALS_NOTIFY_TEMPLATE_OUTCOME", "1234"),
            ("REFERRALS_NOTIFY_CALLBACK_TOKEN", "short"),
        ],
    )
    def test_bad_notify_value(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as refused:
            load_settings()
        assert str(refused.value).startswith(f"{variable}: ")
        assert value not in str(refused.value)  # an API key is a secret: never echoed


class TestSecret:
    """The signing secret: generated and kept by `dev`, required elsewhere."""

    def test_dev_generates_and_keeps_it(self, tmp_path: Path) -> None:
        settings = load_settings(data_dir=tmp_path)
        first = settings.require_secret_key(dev=True)
        assert len(first) >= 32
        assert settings.require_secret_key(dev=True) == first
        assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0

    def test_required_outside_dev(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="REFERRALS_SECRET_KEY"):
            load_settings(data_dir=tmp_path).require_secret_key(dev=False)
