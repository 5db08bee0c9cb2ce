"""A remote-service plugin's knobs: rate limits, the status cache, create retries, quotas.

Defaults come from the plugin (`AsyncPlugin.config`); the daemon's per-plugin configuration
(`SetupContext.plugin_config[plugin_id]`, a mapping) overrides them field by field at start-up.
Durations are seconds, or text such as "250ms" and "1m".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from executor.core import parse_duration


def _seconds(value: Any) -> float:
    return parse_duration(value).total_seconds() if not isinstance(value, float) else value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class WebApiConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: `get` calls a second, and how many may be saved up for a burst.
    read_rate: float = Field(50.0, gt=0)
    read_burst: int = Field(50, ge=1)
    #: `create` and `delete` calls a second, and their burst.
    write_rate: float = Field(10.0, gt=0)
    write_burst: int = Field(10, ge=1)
    #: How often the status cache refreshes every resource it holds; also when `handle` asks for
    #: the next round while a resource runs (the cache has nothing newer before that).
    resync_interval: Seconds = 5.0
    #: Concurrent `get` calls of one refresh, and how many resources a worker takes at a time.
    workers: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    #: Consecutive failed `get`s of one resource after which its execution fails with the error.
    max_sync_failures: int = Field(5, ge=1)
    #: Resources no `handle` asked about for this long leave the cache (another replica took them).
    cache_idle_evict: Seconds = 600.0
    #: `create` attempts before the execution's attempt fails, and the backoff between them.
    create_max_attempts: int = Field(5, ge=1)
    create_backoff_base: Seconds = 1.0
    create_backoff_max: Seconds = 60.0
    #: Pause after a 429 that says no `Retry-After`.
    default_retry_after: Seconds = 1.0
    #: Quota per resource namespace, registered at start-up (see `AsyncPlugin.resource_requirements`).
    resource_quotas: dict[str, int] = Field(default_factory=dict)

    def with_overrides(self, overrides: Any) -> WebApiConfig:
        """This config with `overrides` (a mapping, or None) applied and validated.

        Of the same class: a plugin may subclass `WebApiConfig` with knobs of its own (the Ray
        cluster's address, say), set in the same `EXECUTOR_PLUGIN_CONFIG` object."""
        if not overrides:
            return self
        return type(self).model_validate({**self.model_dump(), **dict(overrides)})

    @property
    def resync(self) -> timedelta:
        return timedelta(seconds=self.resync_interval)
