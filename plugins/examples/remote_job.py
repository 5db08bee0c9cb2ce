"""example-remote-job: a remote-service plugin on the kit (`executor.webapi`), in one file.

It runs a job on a service speaking the job API of `plugins/http_job.py` (POST /jobs, GET and
DELETE /jobs/{id}) and takes a unit of the `example-jobs` quota while it runs. The author writes
the four remote operations; the kit persists the state machine, rate-limits and retries the
calls, polls through its shared cache, and deletes the job on abort or when the attempt ends
first. `AsyncPlugin[Meta, Job]` is all the kit needs to know the types: the meta is stored as
JSON and handed back as a `Meta`. Copy it into `plugins/` to run it.
"""

from typing import Any

import httpx
from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, TaskExecutionContext
from executor.webapi import (
    AsyncPlugin,
    RemoteError,
    ResourceRequirements,
    WebApiConfig,
    check_response,
    register_async_plugin,
)

TASK_TYPE = "example-remote-job"


class Meta(BaseModel):
    """What identifies a job. Persisted as plugin state (JSON); `get`, `delete` and `status` are
    handed a `Meta` again, after a restart too: the kit reads the type from `AsyncPlugin[Meta, Job]`."""

    url: str
    job_id: str


Job = dict[str, Any]  # what GET answers: held in memory by the cache only


class RemoteJobPlugin(AsyncPlugin[Meta, Job]):
    # At most 5 creates/deletes and 20 status reads a second; every job looked at each 2 s; at
    # most 10 jobs at once. The daemon's plugin configuration may override any of these.
    config = WebApiConfig(write_rate=5, read_rate=20, resync_interval=2, resource_quotas={"example-jobs": 10})

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made inside the daemon's event loop, on first use
            self._client = httpx.AsyncClient(timeout=10.0)
        return self._client

    def resource_requirements(self, tctx: TaskExecutionContext) -> ResourceRequirements:
        return ResourceRequirements("example-jobs")

    async def create(self, tctx: TaskExecutionContext) -> tuple[Meta, Job | None]:
        url = (await tctx.input_reader.get()).get("url")
        if not isinstance(url, str):
            raise RemoteError("input 'url' is required", retryable=False)  # fails at once
        # The generated name is the same in every round of an attempt: the service returns the
        # job it already has for it, so a create repeated after a crash starts nothing new.
        name = tctx.task_execution_metadata.generated_name
        job: Job = check_response(
            await self.client.post(f"{url}/jobs", json={"name": name}), "POST /jobs"
        ).json()
        return Meta(url=url, job_id=str(job["id"])), job

    async def get(self, resource_meta: Meta) -> Job:
        response = await self.client.get(f"{resource_meta.url}/jobs/{resource_meta.job_id}")
        job: Job = check_response(response, "GET /jobs/{id}").json()
        return job

    async def delete(self, resource_meta: Meta, reason: str) -> None:
        response = await self.client.delete(f"{resource_meta.url}/jobs/{resource_meta.job_id}")
        check_response(response, "DELETE /jobs/{id}")  # a 404 (already gone) is fine by the kit

    def is_terminal(self, resource: Job) -> bool:
        return resource.get("status") in ("SUCCEEDED", "FAILED", "CANCELLED")

    async def status(self, tctx: TaskExecutionContext, resource_meta: Meta, resource: Job) -> PhaseInfo:
        match resource.get("status"):
            case "SUCCEEDED":
                await tctx.output_writer.put(resource.get("result") or {})
                return PhaseInfo.success()
            case "FAILED" | "CANCELLED":
                return PhaseInfo.failure("JobFailed", str(resource.get("error") or resource.get("status")))
            case _:
                return PhaseInfo.running(0)

    async def aclose(self) -> None:
        """Called by the daemon at shutdown, after the last call and the cache's last refresh."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


register_async_plugin(plugin_registry(), TASK_TYPE, [TASK_TYPE], lambda setup: RemoteJobPlugin())
