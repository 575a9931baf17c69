"""The one typed settings object. Nothing else in the project reads ``os.environ``.

Values come from the environment, then from ``.env``. Secrets are ``SecretStr`` so they never
print in a repr, a log line or a traceback.
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MissingSettingError(RuntimeError):
    """A required setting is missing or invalid; the message names it (never its value)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- store
    database_url: str = "sqlite+aiosqlite:///./data/bridge.db"
    # PostgreSQL connections per process: at most pool size + overflow (docs/operations.md).
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)

    # --- User.com
    usercom_api_url: str = Field(min_length=1)
    usercom_api_key: SecretStr
    usercom_rate_limit: float = Field(default=10.0, gt=0)
    usercom_timeout_seconds: float = Field(default=15.0, gt=0)

    # --- Caterings
    caterings_api_url: str = Field(min_length=1)
    caterings_api_token: SecretStr
    caterings_brand_id: str | None = None
    caterings_rate_limit: float = Field(default=5.0, gt=0)
    caterings_timeout_seconds: float = Field(default=15.0, gt=0)
    caterings_webhook_secret: SecretStr
    caterings_feed_url: str | None = None
    feed_sync_interval_seconds: float = Field(default=0, ge=0)  # 0 = only on demand

    # --- full sync (docs/sync.md)
    sync_page_size: int = Field(default=100, ge=1, le=500)
    sync_heartbeat_seconds: float = Field(default=5.0, gt=0)
    sync_stale_seconds: float = Field(default=30.0, gt=0)  # a job silent this long is taken over
    # Pause paging while the outbox holds more open deliveries than this (0: 2 s of USERCOM_RATE_LIMIT).
    sync_outbox_high_water: int = Field(default=0, ge=0)

    # --- inbound
    consent_callback_token: SecretStr
    admin_token: SecretStr
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    bridge_timezone: str = "Europe/Warsaw"

    # --- delivery engine
    worker_in_process: bool = True  # the web process also drains the outbox
    worker_concurrency: int = Field(default=8, ge=1)
    worker_batch_size: int = Field(default=50, ge=1)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    # Each sending process takes 1/N of the User.com and Caterings limits (docs/operations.md).
    sender_processes: int = Field(default=1, ge=1)
    # SIGTERM: how long in-flight deliveries may take to finish before they are given back.
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)
    # `bridge worker` serves /health and /metrics here when set (0: off).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_cap_seconds: float = Field(default=600.0, gt=0)
    retry_max_attempts: int = Field(default=30, ge=1)
    retry_min_age_hours: float = Field(default=24.0, ge=0)
    retention_days: int = Field(default=30, ge=1)

    # --- logs
    log_level: str = "INFO"
    log_format: str = "auto"  # auto | json | console

    @field_validator("bridge_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("caterings_webhook_secret")
    @classmethod
    def _secrets_look_right(cls, value: SecretStr) -> SecretStr:
        from standardwebhooks.webhooks import Webhook

        secrets = [s.strip() for s in value.get_secret_value().split(",") if s.strip()]
        if not secrets:
            raise ValueError("at least one whsec_ secret is needed")
        for position, secret in enumerate(secrets, start=1):
            try:
                Webhook(secret)
            except Exception:
                # Never echo the secret itself: say which one is wrong.
                raise ValueError(f"secret number {position} is not a valid whsec_<base64> secret") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.bridge_timezone)

    @property
    def webhook_secrets(self) -> list[str]:
        return [s.strip() for s in self.caterings_webhook_secret.get_secret_value().split(",") if s.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's error into one that names each bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "?"
            reason = "is required but not set" if error["type"] == "missing" else error["msg"]
            problems.append(f"{name} {reason}")
        raise MissingSettingError("invalid configuration: " + "; ".join(problems)) from None


class _DatabaseOnly(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")
    database_url: str = Settings.model_fields["database_url"].default
    bridge_timezone: str = Settings.model_fields["bridge_timezone"].default

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.bridge_timezone)


def database_url_from_env() -> str:
    """Only the database setting, for commands (migrate) that must not demand the API secrets."""
    return _DatabaseOnly().database_url


def store_settings_from_env() -> _DatabaseOnly:
    """The database and time-zone settings, for commands (import-orders) that only write the store."""
    return _DatabaseOnly()


@lru_cache
def get_settings() -> Settings:
    return load_settings()


class MaintenanceSettings(BaseSettings):
    """The store and its retention, for ``bridge purge`` (which must not demand the API secrets)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")
    database_url: str = Settings.model_fields["database_url"].default
    retention_days: int = Field(default=Settings.model_fields["retention_days"].default, ge=1)
    log_level: str = "INFO"
    log_format: str = "auto"
