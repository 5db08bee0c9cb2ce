"""The kit for remote-service plugins: write `create`, `get`, `delete` and `status`; get the rest.

    from executor import plugin_registry
    from executor.webapi import AsyncPlugin, register_async_plugin

An `AsyncPlugin` is wrapped into a core plugin (`WebApiPlugin`) whose state machine is persisted as
plugin state, with per-plugin read and write rate limits that honour 429 and `Retry-After`, create
retries with backoff that show in the execution's events, a status cache shared by all executions
and refreshed in the background (started by the daemon through `Plugin.start`), quotas, and
deletes on abort and whenever an attempt ends before its remote resource does. The meta and
resource types come from `AsyncPlugin[Meta, Resource]`. See the README, "Remote-service plugins".
"""

from executor.webapi.cache import CacheItem, StatusCache
from executor.webapi.config import WebApiConfig
from executor.webapi.core import Stage, WebApiPlugin, WebApiState
from executor.webapi.errors import RateLimitedError, RemoteError, ResourceNotFoundError
from executor.webapi.http import check_response, parse_retry_after
from executor.webapi.plugin import AsyncPlugin, ResourceRequirements
from executor.webapi.ratelimit import RateLimits, TokenBucket
from executor.webapi.registration import async_plugin_entry, register_async_plugin
from executor.webapi.typeparams import PluginTypeError, infer_plugin_types

__all__ = [
    "AsyncPlugin",
    "CacheItem",
    "PluginTypeError",
    "RateLimitedError",
    "RateLimits",
    "RemoteError",
    "ResourceNotFoundError",
    "ResourceRequirements",
    "Stage",
    "StatusCache",
    "TokenBucket",
    "WebApiConfig",
    "WebApiPlugin",
    "WebApiState",
    "async_plugin_entry",
    "check_response",
    "infer_plugin_types",
    "parse_retry_after",
    "register_async_plugin",
]
