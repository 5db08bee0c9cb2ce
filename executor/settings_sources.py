"""The effective settings and where each value came from, for `executor config`.

pydantic-settings reads, highest priority first: the environment, then `.env`, then the field's
default. It does not record which one won, so this looks again at the same places with the same
rules (the `EXECUTOR_` prefix, names matched case-insensitively) and names the winner. Secrets are
masked: the API token as ********, the password inside a database URL as ***.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
from dotenv import dotenv_values

from executor.settings import Settings
from executor.store.base import url_without_password

PREFIX = "EXECUTOR_"
MASK = "********"
#: Variables with the prefix that are not settings but are not mistakes either.
_NOT_SETTINGS = ("EXECUTOR_SECRET_", "EXECUTOR_TEST_")


@dataclass(frozen=True, slots=True)
class EffectiveSetting:
    variable: str
    value: Any
    source: str


def effective_settings(
    settings: Settings, *, environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[EffectiveSetting]:
    environ = os.environ if environ is None else environ
    env_file = Path(_env_file_name()) if env_file is None else env_file
    from_env = {key.upper(): key for key in environ if key.upper().startswith(PREFIX)}
    from_file = _dotenv(env_file)
    rows = []
    for name in type(settings).model_fields:
        variable = PREFIX + name.upper()
        if variable in from_env:
            source = "environment" + _as_written(from_env[variable], variable)
        elif variable in from_file:
            source = f"{env_file}" + _as_written(from_file[variable], variable)
        else:
            source = "default"
        rows.append(EffectiveSetting(variable, _shown(name, getattr(settings, name)), source))
    return rows


def unknown_variables(
    settings: Settings, *, environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[str]:
    """`EXECUTOR_*` names no setting has: pydantic-settings ignores them, so a typo goes unnoticed."""
    environ = os.environ if environ is None else environ
    env_file = Path(_env_file_name()) if env_file is None else env_file
    known = {PREFIX + name.upper() for name in type(settings).model_fields}
    names = {key for key in environ if key.upper().startswith(PREFIX)}
    names |= {original for original in _dotenv(env_file).values()}
    return sorted(
        name for name in names if name.upper() not in known and not name.upper().startswith(_NOT_SETTINGS)
    )


def _as_written(written: str, variable: str) -> str:
    return "" if written == variable else f" (as {written})"


def _env_file_name() -> str:
    configured = Settings.model_config.get("env_file")
    return str(configured) if isinstance(configured, str | Path) else ".env"


def _dotenv(path: Path) -> dict[str, str]:
    """Upper-cased variable -> the name as written, for the `EXECUTOR_*` lines of a .env file."""
    if not path.is_file():
        return {}
    return {key.upper(): key for key in dotenv_values(path) if key.upper().startswith(PREFIX)}


def _shown(name: str, value: Any) -> Any:
    if isinstance(value, pydantic.SecretStr):
        return MASK
    if name == "database_url" and isinstance(value, str):
        return url_without_password(value)  # the password as ***
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return json.loads(json.dumps(value))
    return value
