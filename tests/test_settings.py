"""Settings from EXECUTOR_* variables and .env: defaults, parsing, one-line errors naming the variable."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from executor.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No EXECUTOR_* variable from the caller's shell, and a working directory with no stray .env."""
    for name in list(os.environ):
        if name.startswith("EXECUTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./executor.db"
    assert settings.plugins_dir is None
    assert settings.plugin_entry_points is True
    assert settings.default_for_task_types == {}
    assert settings.batch_size == 256
    assert settings.max_parallelism == 256
    assert settings.handle_timeout == timedelta(seconds=30)
    assert settings.poll_interval == timedelta(seconds=1)
    assert settings.default_requeue == timedelta(seconds=1)
    assert settings.lease_ttl == timedelta(seconds=120)
    assert settings.max_plugin_state_bytes == 1024 * 1024
    assert settings.default_max_attempts == 1
    assert settings.max_system_failures == 3
    assert settings.retry_backoff_base == timedelta(seconds=1)
    assert settings.retry_backoff_max == timedelta(minutes=5)
    assert settings.max_phase_versions == 1000
    assert settings.migrate_on_start is True
    assert settings.log_level == "info"
    assert settings.log_format == "auto"
    assert settings.secret_env_prefix == "EXECUTOR_SECRET_"
    assert settings.resource_quotas == {}
    assert settings.replica_id.endswith(f":{os.getpid()}")


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_POLL_INTERVAL", "250ms")
    monkeypatch.setenv("EXECUTOR_HANDLE_TIMEOUT", "1m30s")
    monkeypatch.setenv("EXECUTOR_LEASE_TTL", "600")
    monkeypatch.setenv("EXECUTOR_RETRY_BACKOFF_BASE", "0.5")
    monkeypatch.setenv("EXECUTOR_BATCH_SIZE", "10")
    monkeypatch.setenv("EXECUTOR_DATABASE_URL", "postgresql+asyncpg://u@localhost/db")
    monkeypatch.setenv("EXECUTOR_DEFAULT_FOR_TASK_TYPES", '{"shared": "second"}')
    monkeypatch.setenv("EXECUTOR_RESOURCE_QUOTAS", '{"gpu": 2}')
    monkeypatch.setenv("EXECUTOR_PLUGINS_DIR", "/opt/plugins")
    monkeypatch.setenv("EXECUTOR_MIGRATE_ON_START", "false")
    monkeypatch.setenv("EXECUTOR_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.poll_interval == timedelta(milliseconds=250)
    assert settings.handle_timeout == timedelta(seconds=90)
    assert settings.lease_ttl == timedelta(minutes=10)
    assert settings.retry_backoff_base == timedelta(seconds=0.5)
    assert settings.batch_size == 10
    assert settings.database_url == "postgresql+asyncpg://u@localhost/db"
    assert settings.default_for_task_types == {"shared": "second"}
    assert settings.resource_quotas == {"gpu": 2}
    assert settings.plugins_dir == Path("/opt/plugins")
    assert settings.migrate_on_start is False
    assert settings.log_level == "debug"


def test_dotenv_in_the_working_directory_is_read(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / ".env").write_text("EXECUTOR_BATCH_SIZE=7\nEXECUTOR_POLL_INTERVAL=2s\n")
    settings = load_settings()
    assert settings.batch_size == 7
    assert settings.poll_interval == timedelta(seconds=2)
    monkeypatch.setenv("EXECUTOR_BATCH_SIZE", "8")
    assert load_settings().batch_size == 8, "the environment overrides .env"


def test_overrides_take_python_values() -> None:
    settings = load_settings(batch_size=3, poll_interval="100ms")
    assert settings.batch_size == 3
    assert settings.poll_interval == timedelta(milliseconds=100)
    assert isinstance(settings, Settings)


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message, "the error must fit on one line"
    return message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXECUTOR_BATCH_SIZE", "many"),
        ("EXECUTOR_BATCH_SIZE", "0"),
        ("EXECUTOR_BATCH_SIZE", "100001"),
        ("EXECUTOR_MAX_PARALLELISM", "-1"),
        ("EXECUTOR_MAX_PLUGIN_STATE_BYTES", "0"),
        ("EXECUTOR_MAX_SYSTEM_FAILURES", "0"),
        ("EXECUTOR_DEFAULT_MAX_ATTEMPTS", "x"),
        ("EXECUTOR_MAX_PHASE_VERSIONS", "0"),
        ("EXECUTOR_POLL_INTERVAL", "soon"),
        ("EXECUTOR_POLL_INTERVAL", "-1s"),
        ("EXECUTOR_HANDLE_TIMEOUT", "1e20"),
        ("EXECUTOR_SHUTDOWN_GRACE", "nan"),
        ("EXECUTOR_LOG_LEVEL", "loud"),
        ("EXECUTOR_LOG_FORMAT", "xml"),
        ("EXECUTOR_MIGRATE_ON_START", "perhaps"),
        ("EXECUTOR_RESOURCE_QUOTAS", '{"gpu": "two"}'),
        ("EXECUTOR_RESOURCE_QUOTAS", "[1]"),
        ("EXECUTOR_DEFAULT_FOR_TASK_TYPES", "{not json"),
        ("EXECUTOR_RESOURCE_QUOTAS", "not json"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = _error(monkeypatch, **{name: value})
    assert message.startswith("invalid setting ")
    assert name in message


def test_invalid_value_shows_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, EXECUTOR_BATCH_SIZE="many")
    assert "EXECUTOR_BATCH_SIZE='many'" in message


def test_several_invalid_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, EXECUTOR_BATCH_SIZE="0", EXECUTOR_POLL_INTERVAL="later")
    assert "EXECUTOR_BATCH_SIZE" in message and "EXECUTOR_POLL_INTERVAL" in message


def test_invalid_value_in_dotenv_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("EXECUTOR_MAX_PARALLELISM=lots\n")
    with pytest.raises(SettingsError, match="EXECUTOR_MAX_PARALLELISM"):
        load_settings()


def test_backoff_base_above_max_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, EXECUTOR_RETRY_BACKOFF_BASE="10m", EXECUTOR_RETRY_BACKOFF_MAX="5m")
    assert "EXECUTOR_RETRY_BACKOFF_BASE" in message and "EXECUTOR_RETRY_BACKOFF_MAX" in message


def test_backoff_base_equal_to_max_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_RETRY_BACKOFF_BASE", "5m")
    monkeypatch.setenv("EXECUTOR_RETRY_BACKOFF_MAX", "300")
    assert load_settings().retry_backoff_base == timedelta(minutes=5)


@pytest.mark.parametrize(("ttl", "renew"), [("30s", "11s"), ("1s", "500ms")])
def test_a_lease_ttl_below_three_renewals_is_rejected(
    monkeypatch: pytest.MonkeyPatch, ttl: str, renew: str
) -> None:
    message = _error(monkeypatch, EXECUTOR_LEASE_TTL=ttl, EXECUTOR_LEASE_RENEW_INTERVAL=renew)
    assert "EXECUTOR_LEASE_TTL" in message and "EXECUTOR_LEASE_RENEW_INTERVAL" in message


def test_the_lease_is_renewed_four_times_a_ttl_by_default_whatever_the_handle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call may now outlive the lease's TTL (its lease is renewed): the two are independent.
    monkeypatch.setenv("EXECUTOR_LEASE_TTL", "20s")
    monkeypatch.setenv("EXECUTOR_HANDLE_TIMEOUT", "10m")
    settings = load_settings()
    assert settings.effective_lease_renew_interval == timedelta(seconds=5)


def test_a_round_budget_not_below_the_handle_timeout_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, EXECUTOR_ROUND_BUDGET="30s", EXECUTOR_HANDLE_TIMEOUT="30s")
    assert "EXECUTOR_ROUND_BUDGET" in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./executor.db",
        "postgresql://u@host/db",
        "postgresql+psycopg://u@host/db",
        "mysql+aiomysql://u@host/db",
        "executor.db",
    ],
)
def test_database_url_with_a_bad_scheme_is_rejected(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = _error(monkeypatch, EXECUTOR_DATABASE_URL=url)
    assert "EXECUTOR_DATABASE_URL" in message


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:////tmp/x.db", "postgresql+asyncpg://u:p@h:5432/db"])
def test_supported_database_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("EXECUTOR_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_unrelated_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_NOT_A_SETTING", "whatever")
    monkeypatch.setenv("EXECUTOR_SECRET_API_KEY", "s3cret")
    load_settings()


def test_queues_are_a_comma_separated_list_and_the_host_defaults_to_the_hostname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    assert (load_settings().queues, load_settings().host) == (None, socket.gethostname())
    monkeypatch.setenv("EXECUTOR_QUEUES", " gpu, default ,gpu")
    monkeypatch.setenv("EXECUTOR_HOST", "worker-7")
    settings = load_settings()
    assert (settings.queues, settings.host) == (("gpu", "default"), "worker-7")
    monkeypatch.setenv("EXECUTOR_QUEUES", "")
    assert load_settings().queues is None  # set but empty: every queue, as unset


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("EXECUTOR_QUEUES", "gpu,,cpu", "a queue name must be 1 to 255 characters, got 0"),
        ("EXECUTOR_QUEUES", "q" * 256, "a queue name must be 1 to 255 characters, got 256"),
        ("EXECUTOR_HOST", "h" * 256, "must be 1 to 255 characters, got 256"),
    ],
)
def test_a_queue_or_host_the_store_cannot_hold_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as refused:
        load_settings()
    assert words in str(refused.value)
