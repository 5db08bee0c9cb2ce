"""Settings from `EXECUTOR_*` environment variables and `.env`, validated before anything starts.

Durations take "5s", "250ms", "1m30s" or a number of seconds. A bad value is reported in one line
naming the variable (see `SettingsError`), and the daemon exits 2 without touching the store.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import pydantic
from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from executor.core import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./executor.db"


def _default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EXECUTOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    #: SQLAlchemy async URL: `sqlite+aiosqlite:///path.db` or `postgresql+asyncpg://user@host/db`.
    database_url: str = DEFAULT_DATABASE_URL
    #: Directory of drop-in plugin modules; unset means `./plugins`, or the packaged built-ins.
    plugins_dir: Path | None = None
    #: Also load plugins from the `executor.plugins` entry-point group.
    plugin_entry_points: bool = True
    #: Task type -> plugin id, for task types several plugins claim (JSON object).
    default_for_task_types: dict[str, str] = Field(default_factory=dict)
    #: Executions claimed per round.
    batch_size: int = Field(256, ge=1, le=100_000)
    #: `handle` calls running at once within a round.
    max_parallelism: int = Field(256, ge=1)
    #: A `handle` call running longer is abandoned and counted as a system failure.
    handle_timeout: Duration = timedelta(seconds=30)
    #: Longest sleep between rounds when nothing wakes the loop earlier.
    poll_interval: Duration = timedelta(seconds=1)
    #: Next round for a plugin that does not say when it wants one.
    default_requeue: Duration = timedelta(seconds=1)
    #: How long a claim stays ours; past it, another replica may take the execution.
    lease_ttl: Duration = timedelta(seconds=120)
    #: How often a daemon records that it is alive (`executor replicas`); silent for three of
    #: these, it is shown as gone.
    heartbeat_interval: Duration = timedelta(seconds=5)
    max_plugin_state_bytes: int = Field(1024 * 1024, ge=1)
    #: Attempts an execution gets when its submission does not say.
    default_max_attempts: int = Field(1, ge=1)
    #: System failures (raises, timeouts, SYSTEM retryable failures) an attempt may have; the next fails it.
    max_system_failures: int = Field(3, ge=1)
    retry_backoff_base: Duration = timedelta(seconds=1)
    retry_backoff_max: Duration = timedelta(minutes=5)
    max_phase_versions: int = Field(1000, ge=1)
    #: Apply pending migrations when the daemon starts.
    migrate_on_start: bool = True
    #: How long a stopping daemon may spend finishing its round.
    shutdown_grace: Duration = timedelta(seconds=30)
    replica_id: str = Field(default_factory=_default_replica_id)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: `auto`: readable on a terminal, JSON lines otherwise.
    log_format: Literal["auto", "console", "json"] = "auto"
    #: Secrets: environment variables with this prefix, and files in `secrets_dir`.
    secret_env_prefix: str = "EXECUTOR_SECRET_"
    secrets_dir: Path | None = None
    #: Quota per resource namespace, overriding what plugins register (JSON object).
    resource_quotas: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.retry_backoff_base > self.retry_backoff_max:
            raise ValueError("EXECUTOR_RETRY_BACKOFF_BASE must not exceed EXECUTOR_RETRY_BACKOFF_MAX")
        if self.lease_ttl <= self.handle_timeout:
            raise ValueError(
                "EXECUTOR_LEASE_TTL must exceed EXECUTOR_HANDLE_TIMEOUT, or a slow round would lose its lease"
            )
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "EXECUTOR_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return self


class SettingsError(Exception):
    """Invalid settings, described in one line that names the variable."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except pydantic.ValidationError as err:
        raise SettingsError(_one_line(err)) from None


def _one_line(err: pydantic.ValidationError) -> str:
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if field:
            value = error.get("input")
            shown = f"={value!r}" if isinstance(value, str | int | float) else ""
            problems.append(f"EXECUTOR_{field.upper()}{shown}: {message}")
        else:
            problems.append(message)
    return "invalid setting " + "; ".join(problems)
