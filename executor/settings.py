"""Settings from `EXECUTOR_*` environment variables and `.env`, validated before anything starts.

Durations take "5s", "250ms", "1m30s" or a number of seconds. A bad value is reported in one line
naming the variable (see `SettingsError`), and the daemon exits 2 without touching the store.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings
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
    #: How long a round waits for its plugin calls before it commits what is ready; a call still
    #: running goes on in the background and a later commit takes its outcome.
    round_budget: Duration = timedelta(milliseconds=5)
    #: Worker threads for the calls of `blocking=True` plugins, all plugins together.
    blocking_threads: int = Field(40, ge=1)
    #: Worker processes for the calls of `cpu_bound=True` plugins, all plugins together; started
    #: when first needed.
    process_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    #: Longest sleep between rounds when nothing wakes the loop earlier.
    poll_interval: Duration = timedelta(seconds=1)
    #: Next round for a plugin that does not say when it wants one.
    default_requeue: Duration = timedelta(seconds=1)
    #: How long a claim stays ours; past it, another replica may take the execution.
    lease_ttl: Duration = timedelta(seconds=120)
    #: How often the leases of calls still running are extended (unset: a quarter of the TTL).
    lease_renew_interval: Duration | None = None
    #: How often a daemon records that it is alive (`executor replicas`); silent for three of
    #: these, it is shown as gone.
    heartbeat_interval: Duration = timedelta(seconds=5)
    max_plugin_state_bytes: int = Field(1024 * 1024, ge=1)
    #: Attempts an execution gets when its submission does not say.
    default_max_attempts: int = Field(1, ge=1)
    #: System failures (raises, timeouts, SYSTEM retryable failures) one attempt may have: the one
    #: that reaches this count fails the execution with MaxSystemFailuresExceeded.
    max_system_failures: int = Field(3, ge=1)
    retry_backoff_base: Duration = timedelta(seconds=1)
    retry_backoff_max: Duration = timedelta(minutes=5)
    max_phase_versions: int = Field(1000, ge=1)
    #: How long an attempt may run from its first round when its submission does not say
    #: (unset: no limit); past it the attempt fails `TimeoutExpired` (retryable).
    default_timeout: Duration | None = None
    #: How long a whole execution may take from submission when its submission does not say
    #: (unset: no deadline); past it the execution fails `DeadlineExceeded` (permanent).
    default_deadline: Duration | None = None
    #: Largest inputs (at submission) and outputs (per round), as JSON bytes.
    max_payload_bytes: int = Field(1024 * 1024, ge=1)
    #: Apply pending migrations when the daemon starts.
    migrate_on_start: bool = True
    #: A TOML, JSON or YAML file of schedules the daemon declares at start-up (README: Schedules).
    schedules_file: Path | None = None
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
    #: Per-plugin configuration, plugin id -> object (JSON), handed to `load_plugin` as
    #: `SetupContext.plugin_config`; e.g. `{"http-job": {"read_rate": 5, "resync_interval": "10s"}}`.
    plugin_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: `HOST:PORT` of the HTTP API, metrics, health checks and dashboard; empty turns HTTP off.
    http_addr: str = "127.0.0.1:8420"
    #: Bearer token every `/api` call must present; unset means the API is open.
    api_token: pydantic.SecretStr | None = None

    @property
    def effective_lease_renew_interval(self) -> timedelta:
        return self.lease_renew_interval or self.lease_ttl / 4

    @pydantic.field_validator("http_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_http_addr(value)
        return value

    @pydantic.field_validator("api_token")
    @classmethod
    def _api_token(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.retry_backoff_base > self.retry_backoff_max:
            raise ValueError("EXECUTOR_RETRY_BACKOFF_BASE must not exceed EXECUTOR_RETRY_BACKOFF_MAX")
        if self.lease_ttl < 3 * self.effective_lease_renew_interval:
            raise ValueError(
                "EXECUTOR_LEASE_TTL must be at least three EXECUTOR_LEASE_RENEW_INTERVALs, so that a "
                "lease outlives two renewals that fail"
            )
        if self.round_budget >= self.handle_timeout:
            raise ValueError("EXECUTOR_ROUND_BUDGET must be shorter than EXECUTOR_HANDLE_TIMEOUT")
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "EXECUTOR_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return self


def parse_http_addr(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` -> (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (such as 127.0.0.1:8420), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port}")
    return host, int(port)


class SettingsError(Exception):
    """Invalid settings, described in one line that names the variable."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except pydantic.ValidationError as err:
        raise SettingsError(_one_line(err)) from None
    except pydantic_settings.SettingsError as err:
        # A JSON-valued variable (a dict field) that does not parse: pydantic-settings names the
        # field, not the variable, and its error is not a ValidationError.
        raise SettingsError(_source_error(err)) from None


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


def _source_error(err: pydantic_settings.SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(err))
    name = f"EXECUTOR_{match.group(1).upper()}" if match else "a setting"
    cause = f": {err.__cause__}" if err.__cause__ is not None else ""
    return f"invalid setting {name}: not valid JSON{cause}"
