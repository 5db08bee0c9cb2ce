"""The core plugin the kit wraps an `AsyncPlugin` into: a state machine persisted as plugin state.

    not_started --quota--> quota_acquired --create--> resource_created --status--> terminal
         |                      |    ^                      |
         |  (quota refused:     |    | create failed:       | get failed max_sync_failures
         |   WAITING_FOR_       |    | QUEUED, a new phase  | times in a row: the attempt
         |   RESOURCES)         +----+ version per attempt, | fails with the remote error
         |                             with the error       |

Each round reads the state the previous round wrote, so a daemon that restarts resumes where it
was: a created resource is never created twice (and `create` is idempotent for the attempt's
generated name, for the crash between the remote call and the commit).

Cleaning up: `abort` deletes a created resource; `finalize` deletes one that did not finish on
its own (whatever ended the attempt: a timeout, a deadline, a retry, a failure with
`cleanup_on_failure`, a fault of the plugin) and then releases the quota token. A resource is
deleted at most once per process, so abort followed by finalize makes one call.

Lifetime: the daemon calls `start`, which starts the status cache's refresher in the daemon's
task group, and `aclose` at shutdown, which closes the `AsyncPlugin`'s clients. The resource meta
is read back from plugin state into the type `AsyncPlugin[Meta, Resource]` names
(`executor.webapi.typeparams`), so a restarted daemon hands the plugin a `Meta`, not a dict.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, TypeAdapter

from executor.core import (
    ErrorKind,
    ExecutionError,
    Logger,
    Phase,
    PhaseInfo,
    Plugin,
    PluginProperties,
    StartContext,
    TaskExecutionContext,
    Transition,
    do_transition,
)
from executor.webapi.cache import StatusCache
from executor.webapi.config import WebApiConfig
from executor.webapi.errors import RateLimitedError, RemoteError, ResourceNotFoundError, describe
from executor.webapi.plugin import AsyncPlugin
from executor.webapi.ratelimit import RateLimits
from executor.webapi.typeparams import infer_plugin_types

#: Resources remembered as deleted, so that abort then finalize calls `delete` once.
_DELETED_MEMORY = 10_000


class Stage(enum.StrEnum):
    NOT_STARTED = "not_started"
    QUOTA_ACQUIRED = "quota_acquired"
    RESOURCE_CREATED = "resource_created"
    TERMINAL = "terminal"


class WebApiState(BaseModel):
    """The wrapper's plugin state; what a restarted daemon needs to carry on."""

    stage: Stage = Stage.NOT_STARTED
    #: The generated name the resource was created under: the cache key and the quota token.
    name: str | None = None
    resource_meta: Any = None
    quota_namespace: str | None = None
    create_attempts: int = 0
    sync_failures: int = 0
    last_error: str | None = None
    #: Terminal, but the remote resource may still exist (a failure with `cleanup_on_failure`).
    needs_cleanup: bool = False


class WebApiPlugin(Plugin):
    """Drives an `AsyncPlugin` through the core contract (see the module docstring)."""

    properties = PluginProperties(blocking=False)

    def __init__(
        self,
        plugin_id: str,
        plugin: AsyncPlugin[Any, Any],
        config: WebApiConfig | None = None,
        *,
        logger: Logger | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.id = plugin_id
        self.plugin = plugin
        types = infer_plugin_types(type(plugin))  # refuses a plugin whose meta type is unknown
        self.resource_meta_type: Any = types.resource_meta
        self.resource_type: Any = types.resource
        self.config = config if config is not None else plugin.config
        self._log = logger
        self.limits = limits or RateLimits(
            read_rate=self.config.read_rate,
            read_burst=self.config.read_burst,
            write_rate=self.config.write_rate,
            write_burst=self.config.write_burst,
        )
        self.cache = StatusCache(
            plugin.get, self.limits, self.config, is_terminal=plugin.is_terminal, logger=logger
        )
        self._meta = TypeAdapter[Any](self.resource_meta_type)
        self._deleted: OrderedDict[str, None] = OrderedDict()

    # -- the core contract ---------------------------------------------------------------------

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        self.plugin.secrets = tctx.secret_manager
        _, state = tctx.plugin_state_reader.get(WebApiState)
        if state.stage is Stage.NOT_STARTED:
            return await self._acquire_quota(tctx, state)
        if state.stage is Stage.QUOTA_ACQUIRED:
            return await self._create(tctx, state)
        if state.stage is Stage.RESOURCE_CREATED:
            return await self._monitor(tctx, state)
        # A terminal state is committed with its terminal phase, so no further round should come.
        return do_transition(
            PhaseInfo.system_failure(
                "InconsistentState", f"{self.id}: handle called after the resource reached a terminal phase"
            )
        )

    async def abort(self, tctx: TaskExecutionContext) -> None:
        self.plugin.secrets = tctx.secret_manager
        _, state = tctx.plugin_state_reader.get(WebApiState)
        if _holds_remote(state):
            await self._delete(state, "Aborted")
        self.cache.discard(state.name)

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        self.plugin.secrets = tctx.secret_manager
        _, state = tctx.plugin_state_reader.get(WebApiState)
        if _holds_remote(state):
            # The attempt ended before its resource did (timeout, deadline, retry, a failure that
            # asked for clean-up, a fault): never leave remote work running unowned.
            await self._delete(state, "Finalized before the remote resource finished")
        self.cache.discard(state.name)
        if state.quota_namespace is not None and state.name is not None:
            await tctx.resource_manager.release(state.quota_namespace, state.name)

    async def start(self, ctx: StartContext) -> None:
        """The shared status cache refreshes in the daemon's task group from now on."""
        ctx.tasks.start_soon(self.cache.run, name="status cache")

    async def aclose(self) -> None:
        """Close the plugin's clients; the daemon has cancelled the refresher by now."""
        await self.plugin.aclose()

    # -- the stages ----------------------------------------------------------------------------

    async def _acquire_quota(self, tctx: TaskExecutionContext, state: WebApiState) -> Transition:
        name = tctx.task_execution_metadata.generated_name
        requirements = self.plugin.resource_requirements(tctx)
        if requirements is not None:
            granted = await tctx.resource_manager.allocate(
                requirements.namespace, name, requirements.constraints
            )
            if not granted:
                return do_transition(
                    PhaseInfo.waiting_for_resources(f"QuotaExhausted:{requirements.namespace}"),
                    requeue_after=self.config.resync_interval,
                )
        state = state.model_copy(
            update={
                "stage": Stage.QUOTA_ACQUIRED,
                "name": name,
                "quota_namespace": requirements.namespace if requirements is not None else None,
            }
        )
        return await self._create(tctx, state, changed=True)

    async def _create(
        self, tctx: TaskExecutionContext, state: WebApiState, changed: bool = False
    ) -> Transition:
        writer = tctx.plugin_state_writer
        wait = self.limits.write.try_acquire()
        if wait > 0:  # never wait inside handle: ask for the round when a token is free
            if changed:
                writer.put(0, state)
            return do_transition(_queued(state), requeue_after=wait)
        try:
            meta, resource = await self.plugin.create(tctx)
        except RateLimitedError as err:
            pause = err.retry_after if err.retry_after is not None else self.config.default_retry_after
            self.limits.slow_down(pause)
            tctx.logger.info("webapi.rate_limited", call="create", pause_seconds=pause)
            if changed:
                writer.put(0, state)
            return do_transition(_queued(state), requeue_after=pause)
        except Exception as err:
            return self._create_failed(tctx, state, err)

        name = state.name or tctx.task_execution_metadata.generated_name
        state = state.model_copy(
            update={
                "stage": Stage.RESOURCE_CREATED,
                "name": name,
                "resource_meta": self._meta.dump_python(meta, mode="json"),
                "sync_failures": 0,
                "last_error": None,
            }
        )
        item = self.cache.get_or_create(name, meta)
        if resource is None:
            writer.put(0, state)
            return do_transition(
                PhaseInfo(Phase.QUEUED, version=state.create_attempts, reason="ResourceCreated"),
                requeue_after=self.config.resync_interval,
            )
        item.resource, item.synced = resource, True
        item.terminal = self.plugin.is_terminal(resource)
        return await self._report(tctx, state, meta, resource, changed=True)

    def _create_failed(self, tctx: TaskExecutionContext, state: WebApiState, err: Exception) -> Transition:
        attempts = state.create_attempts + 1
        message = describe(err)
        tctx.logger.warning("webapi.create_failed", attempt=attempts, error=message)
        tctx.plugin_state_writer.put(
            0, state.model_copy(update={"create_attempts": attempts, "last_error": message})
        )
        if isinstance(err, RemoteError) and not err.retryable:
            return do_transition(PhaseInfo.failure("CreateFailed", message))
        limit = self.config.create_max_attempts
        if attempts >= limit:
            return do_transition(
                PhaseInfo.retryable_failure(
                    "CreateFailed", f"{attempts} of {limit} create attempts failed; last: {message}"
                )
            )
        delay = self._create_backoff(tctx.task_execution_metadata.generated_name, attempts)
        error = ExecutionError(
            "CreateFailed",
            f"create attempt {attempts} of {limit} failed: {message}; retrying in {delay:.3g}s",
            ErrorKind.SYSTEM,
        )
        # A new phase version per attempt: each failed attempt is its own event, with its error.
        return do_transition(
            PhaseInfo(Phase.QUEUED, version=attempts, reason="CreateFailed", error=error),
            requeue_after=delay,
        )

    async def _monitor(self, tctx: TaskExecutionContext, state: WebApiState) -> Transition:
        assert state.name is not None  # set together with the stage
        meta = self._meta.validate_python(state.resource_meta)
        item = self.cache.get_or_create(
            state.name, meta, sync_failures=state.sync_failures, last_error=state.last_error
        )
        if (item.sync_failures, item.last_error) != (state.sync_failures, state.last_error):
            state = state.model_copy(
                update={"sync_failures": item.sync_failures, "last_error": item.last_error}
            )
            tctx.plugin_state_writer.put(0, state)
        if item.sync_failures >= self.config.max_sync_failures:
            self.cache.discard(state.name)
            message = (
                f"{item.sync_failures} consecutive status checks of the remote resource failed; "
                f"last: {item.last_error}"
            )
            # The stage stays resource_created: finalize deletes whatever is left remotely.
            return do_transition(PhaseInfo.retryable_failure("RemoteStatusFailed", message))
        if not item.synced:
            if not self.cache.running:  # never fetched by anyone: fail loudly, not wait forever
                raise RuntimeError(
                    f"{self.id}: the status cache is not running (Plugin.start was not called)"
                )
            # Nothing fetched yet: keep the phase, look again once the cache may know more.
            return do_transition(PhaseInfo(Phase.UNDEFINED), requeue_after=self.config.resync_interval)
        return await self._report(tctx, state, meta, item.resource, changed=False)

    async def _report(
        self, tctx: TaskExecutionContext, state: WebApiState, meta: Any, resource: Any, *, changed: bool
    ) -> Transition:
        info = await self.plugin.status(tctx, meta, resource)
        if not info.phase.is_terminal:
            if changed:
                tctx.plugin_state_writer.put(0, state)
            return do_transition(info, requeue_after=self.config.resync_interval)
        self.cache.discard(state.name)
        needs_cleanup = info.phase.is_failure and info.cleanup_on_failure
        tctx.plugin_state_writer.put(
            0, state.model_copy(update={"stage": Stage.TERMINAL, "needs_cleanup": needs_cleanup})
        )
        return do_transition(info)

    # -- remote writes outside handle ------------------------------------------------------------

    async def _delete(self, state: WebApiState, reason: str) -> None:
        key = state.name or ""
        if key in self._deleted:
            return
        meta = self._meta.validate_python(state.resource_meta)
        while True:
            await self.limits.write.acquire()
            try:
                await self.plugin.delete(meta, reason)
            except ResourceNotFoundError:
                pass  # already gone: what we wanted
            except RateLimitedError as err:
                pause = err.retry_after if err.retry_after is not None else self.config.default_retry_after
                self.limits.slow_down(pause)
                continue
            break
        self._deleted[key] = None
        while len(self._deleted) > _DELETED_MEMORY:
            self._deleted.popitem(last=False)
        if self._log is not None:
            self._log.info("webapi.deleted", plugin=self.id, key=key, reason=reason)

    def _create_backoff(self, name: str, attempts: int) -> float:
        """Exponential, with a jitter derived from the name so that a burst of failures spreads."""
        base, ceiling = self.config.create_backoff_base, self.config.create_backoff_max
        digest = hashlib.blake2b(f"{name}:{attempts}".encode(), digest_size=8).digest()
        jitter = int.from_bytes(digest, "big") / 2.0**64
        return min(ceiling, base * 2.0 ** min(attempts - 1, 32) * (1.0 + 0.5 * jitter))


def _holds_remote(state: WebApiState) -> bool:
    """True when a remote resource may still exist and be running."""
    return state.stage is Stage.RESOURCE_CREATED or (state.stage is Stage.TERMINAL and state.needs_cleanup)


def _queued(state: WebApiState) -> PhaseInfo:
    """Still waiting to create: repeats the last failure (no new event) when there was one."""
    if state.last_error is not None and state.create_attempts > 0:
        error = ExecutionError("CreateFailed", state.last_error, ErrorKind.SYSTEM)
        return PhaseInfo(Phase.QUEUED, version=state.create_attempts, reason="CreateFailed", error=error)
    return PhaseInfo(Phase.QUEUED, version=state.create_attempts, reason="WaitingForRateLimit")
