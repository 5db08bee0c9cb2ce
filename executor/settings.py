"""Settings from `EXECUTOR_*` environment variables and `.env`, validated before anything starts.

Durations take "5s", "250ms", "1m30s" or a number of seconds. A bad value is reported in one line
naming the variable (see `SettingsError`), and the daemon exits 2 without touching the store.

Every setting is bounded by what the store and the loop can take: counts that are stored fit a
32-bit column, names fit their 255-character columns and hold no character the database refuses,
and durations are positive (a zero interval would spin the loop) and at most a century (so that
"now + duration" is still a time). A daemon that would start only to fail every round is refused
before it starts.
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
from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from executor.core import parse_duration
from executor.limits import INT32_MAX, MAX_DURATION_SECONDS, MAX_NAME, name_problem


def _bounded(value: timedelta) -> timedelta:
    if value.total_seconds() > MAX_DURATION_SECONDS:
        raise ValueError("must be at most 100 years")
    return value


#: A duration of at most a century (zero and up: see `Positive`).
Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_bounded)]
#: A duration that is an interval something waits for: zero would make a loop spin.
Positive = Annotated[Duration, Field(gt=timedelta(0))]
#: A count the store keeps in a 32-bit column, or that sizes a loop's work.
Count = Annotated[int, Field(ge=1, le=INT32_MAX)]

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
    max_parallelism: int = Field(256, ge=1, le=100_000)
    #: A `handle` call running longer is abandoned and counted as a system failure.
    handle_timeout: Positive = timedelta(seconds=30)
    #: How long a round waits for its plugin calls before it commits what is ready; a call still
    #: running goes on in the background and a later commit takes its outcome.
    round_budget: Duration = timedelta(milliseconds=5)
    #: Worker threads for the calls of `blocking=True` plugins, all plugins together.
    blocking_threads: int = Field(40, ge=1, le=10_000)
    #: Worker processes for the calls of `cpu_bound=True` plugins, all plugins together; started
    #: when first needed.
    process_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    #: Longest sleep between rounds when nothing wakes the loop earlier.
    poll_interval: Positive = timedelta(seconds=1)
    #: Next round for a plugin that does not say when it wants one.
    default_requeue: Duration = timedelta(seconds=1)
    #: How long a claim stays ours; past it, another replica may take the execution.
    lease_ttl: Positive = timedelta(seconds=120)
    #: How often the leases of calls still running are extended (unset: a quarter of the TTL).
    lease_renew_interval: Positive | None = None
    #: How often a daemon records that it is alive (`executor replicas`); silent for three of
    #: these, it is shown as gone.
    heartbeat_interval: Annotated[Duration, Field(ge=timedelta(milliseconds=100))] = timedelta(seconds=5)
    #: Largest plugin state, as JSON bytes; a larger `put` fails the execution `PluginStateTooLarge`.
    max_plugin_state_bytes: int = Field(1024 * 1024, ge=1, le=1024**3)
    #: Attempts an execution gets when its submission does not say.
    default_max_attempts: Count = 1
    #: System failures (raises, timeouts, SYSTEM retryable failures) one attempt may have: the one
    #: that reaches this count fails the execution with MaxSystemFailuresExceeded.
    max_system_failures: Count = 3
    #: First delay of the exponential backoff (with jitter) between attempts, unless the submission says.
    retry_backoff_base: Positive = timedelta(seconds=1)
    #: Longest delay of that backoff.
    retry_backoff_max: Positive = timedelta(minutes=5)
    #: Highest phase version a plugin may report; above it, `TooManyPhaseVersions`.
    max_phase_versions: Count = 1000
    #: How long an attempt may run from its first round when its submission does not say
    #: (unset: no limit); past it the attempt fails `TimeoutExpired` (retryable).
    default_timeout: Positive | None = None
    #: How long a whole execution may take from submission when its submission does not say
    #: (unset: no deadline); past it the execution fails `DeadlineExceeded` (permanent).
    default_deadline: Positive | None = None
    #: Largest inputs (at submission) and outputs (per round), as JSON bytes.
    max_payload_bytes: int = Field(1024 * 1024, ge=1, le=1024**3)
    #: Apply pending migrations when the daemon starts.
    migrate_on_start: bool = True
    #: A TOML, JSON or YAML file of schedules the daemon declares at start-up (README: Schedules).
    schedules_file: Path | None = None
    #: Retention (README: Retention): finished executions and their events are deleted by the
    #: daemon this long after they finished, per final phase; unset or 0 keeps them forever.
    retain_success: Duration | None = None
    #: As EXECUTOR_RETAIN_SUCCESS, for executions that ended PERMANENT_FAILURE.
    retain_failed: Duration | None = None
    #: As EXECUTOR_RETAIN_SUCCESS, for executions that ended ABORTED.
    retain_aborted: Duration | None = None
    #: How often a daemon looks for executions past their retention.
    prune_interval: Positive = timedelta(minutes=1)
    #: Executions a prune deletes per transaction.
    prune_batch: int = Field(200, ge=1, le=10_000)
    #: How long a stopping daemon may spend finishing its round.
    shutdown_grace: Duration = timedelta(seconds=30)
    #: This daemon's name as the owner of its leases and in `executor replicas` (default `host:pid`).
    replica_id: str = Field(default_factory=_default_replica_id)
    #: The queues this replica claims from, comma-separated (`gpu,default`; `default` is the queue
    #: of executions submitted without one); unset: every queue.
    queues: Annotated[tuple[str, ...] | None, NoDecode] = None
    #: This replica's host, which outlives its restarts: executions pinned to a host (`pin_to_host`)
    #: are claimed only by replicas that say the same here. Default: the machine's hostname.
    host: str = Field(default_factory=socket.gethostname)
    #: Lowest level logged: `debug`, `info`, `warning` or `error`.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: `auto`: readable on a terminal, JSON lines otherwise.
    log_format: Literal["auto", "console", "json"] = "auto"
    #: Secrets: environment variables with this prefix, and files in `secrets_dir`.
    secret_env_prefix: str = "EXECUTOR_SECRET_"
    #: Directory of secret files, one per key, read by `tctx.secret_manager` after the environment.
    secrets_dir: Path | None = None
    #: Quota per resource namespace, overriding what plugins register (JSON object).
    resource_quotas: dict[str, Annotated[int, Field(ge=0, le=INT32_MAX)]] = Field(default_factory=dict)
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

    @pydantic.field_validator("replica_id")
    @classmethod
    def _replica_id(cls, value: str) -> str:
        # It is stored as every lease's owner and every heartbeat's key (255-character columns).
        problem = name_problem(value, MAX_NAME)
        if problem is not None:
            raise ValueError(problem)
        return value

    @pydantic.field_validator("queues", mode="before")
    @classmethod
    def _queues(cls, value: object) -> object:
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",")]
            if not value.strip():
                return None
            for name in names:
                problem = name_problem(name, MAX_NAME)
                if problem is not None:
                    raise ValueError(f"a queue name {problem} (write queues as gpu,default)")
            return tuple(dict.fromkeys(names))
        return value

    @pydantic.field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        # Stored in the pinned rows' 255-character column.
        problem = name_problem(value, MAX_NAME)
        if problem is not None:
            raise ValueError(problem)
        return value

    @pydantic.field_validator("resource_quotas")
    @classmethod
    def _resource_names(cls, value: dict[str, int]) -> dict[str, int]:
        for name in value:
            problem = name_problem(name, MAX_NAME)
            if problem is not None:
                raise ValueError(f"the resource name {name[:40]!r} {problem}")
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
        loc = [str(part) for part in error["loc"]]
        message = _message(error)
        if loc:
            value = error.get("input")
            shown = f"={_clip(value)!r}" if isinstance(value, str | int | float) else ""
            within = "".join(f"[{part}]" for part in loc[1:])  # a key of a JSON-object setting
            problems.append(f"EXECUTOR_{loc[0].upper()}{within}{shown}: {message}")
        else:
            problems.append(message)
    return "invalid setting " + "; ".join(problems)


def _message(error: Any) -> str:
    """pydantic's message, with a bound that is a duration said in seconds."""
    bound = str(next(iter((error.get("ctx") or {}).values()), ""))
    words = {"greater_than": "more than", "greater_than_equal": "at least", "less_than_equal": "at most"}
    match = re.fullmatch(r"datetime\.timedelta\((.*)\)", bound)
    if match and error["type"] in words:
        # pydantic shows the bound as the timedelta's repr: "datetime.timedelta(microseconds=100000)".
        parts = dict(part.split("=") for part in match.group(1).split(", ") if "=" in part)
        seconds = timedelta(**{unit: float(amount) for unit, amount in parts.items()}).total_seconds()
        return f"must be {words[error['type']]} {seconds:g}s"
    return str(error["msg"]).removeprefix("Value error, ")


def _clip(value: object) -> object:
    """A value short enough for a one-line message."""
    return value[:60] + "..." if isinstance(value, str) and len(value) > 60 else value


def _source_error(err: pydantic_settings.SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(err))
    name = f"EXECUTOR_{match.group(1).upper()}" if match else "a setting"
    cause = f": {err.__cause__}" if err.__cause__ is not None else ""
    return f"invalid setting {name}: not valid JSON{cause}"
