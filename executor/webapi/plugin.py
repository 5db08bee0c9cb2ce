"""The interface a remote-service plugin implements: create, get, delete, status.

After Flyte's `pluginmachinery/webapi`: the author writes only the four remote operations and how
a remote resource maps to a phase. The kit (`executor.webapi.core`) wraps it into a core `Plugin`
with a persisted state machine, quotas, rate limits, create retries and a shared status cache.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from executor.core import PhaseInfo, SecretManager, TaskExecutionContext
from executor.webapi.config import WebApiConfig

#: What identifies a remote resource (a job id, a URL); persisted as plugin state, so it must
#: be JSON-serialisable (a pydantic model, a dataclass, a TypedDict, a dict, a str). The kit reads
#: the type from `AsyncPlugin[Meta, Resource]` and validates the stored JSON back into it.
MetaT = TypeVar("MetaT")
#: What `get` returns about the resource; held in memory by the cache only.
ResourceT = TypeVar("ResourceT")


@dataclass(frozen=True, slots=True)
class ResourceRequirements:
    """One unit of quota in `namespace` for the execution's lifetime (released by `finalize`)."""

    namespace: str
    constraints: Mapping[str, Any] = field(default_factory=dict)


class AsyncPlugin(abc.ABC, Generic[MetaT, ResourceT]):
    """A plugin that starts work on a remote service and polls it.

    Rules, because the kit calls these from many executions at once:
    - `create` must be idempotent for one `tctx.task_execution_metadata.generated_name` (the same
      name for every round of an attempt): after a crash it runs again for the same attempt.
    - `get` and `delete` see only the resource meta; they must not need the execution.
    - `delete` must tolerate a resource that is already gone (raise `ResourceNotFoundError` or return).
    - `status` does no remote I/O: it reads the resource `get` returned (it may write outputs).
    Errors: raise `RemoteError` (or let `check_response` raise it); `RateLimitedError` slows the plugin
    down instead of failing anything.
    """

    #: Defaults for this plugin; the daemon's plugin configuration overrides them.
    config: WebApiConfig = WebApiConfig()
    #: The type the resource meta is read back into from plugin state. Optional: by default the
    #: kit takes it from the class's parameters, `AsyncPlugin[Meta, Resource]`; set here, it wins.
    resource_meta_type: ClassVar[Any]

    #: The daemon's secret manager, bound by the kit before the first remote call.
    secrets: SecretManager | None = None

    def resource_requirements(self, tctx: TaskExecutionContext) -> ResourceRequirements | None:
        """The quota an execution needs before `create`; None (the default) needs none."""
        return None

    @abc.abstractmethod
    async def create(self, tctx: TaskExecutionContext) -> tuple[MetaT, ResourceT | None]:
        """Start the remote work; return its meta and, when the answer already says, the resource."""

    @abc.abstractmethod
    async def get(self, resource_meta: MetaT) -> ResourceT:
        """The resource as the remote sees it now."""

    @abc.abstractmethod
    async def delete(self, resource_meta: MetaT, reason: str) -> None:
        """Stop and remove the remote work; an already-gone resource is not an error."""

    def is_terminal(self, resource: ResourceT) -> bool:
        """True when `resource` will not change any more, so the cache stops fetching it.

        Optional (the default says False): without it a finished resource is fetched again each
        resync interval until the execution's next round reads it.
        """
        return False

    @abc.abstractmethod
    async def status(
        self, tctx: TaskExecutionContext, resource_meta: MetaT, resource: ResourceT
    ) -> PhaseInfo:
        """The phase `resource` means. No remote I/O; may write outputs on success."""

    async def aclose(self) -> None:
        """Release clients (an httpx client); the daemon calls it once, at shutdown."""
        return None
