"""http-job: runs a job on an HTTP job service, polls it, and returns its result as outputs.

Built on the remote-service kit (`executor.webapi`): this file says only how to talk to the
service; the kit brings the persisted state machine, rate limits (429 and `Retry-After`
honoured), create retries, the shared status cache and deletes on abort and timeout.

The service's API:

    POST   {url}/jobs        {"name": ..., "payload": {...}} -> {"id", "status", ...}
                             (idempotent for a name: the same name returns the same job)
    GET    {url}/jobs/{id}   -> {"id", "status": PENDING|RUNNING|SUCCEEDED|FAILED|CANCELLED,
                                 "result": {...}, "error": "..."}
    DELETE {url}/jobs/{id}   -> 2xx (404 when already gone)

Inputs: `url` (the service, http or https), `payload` (an object, default {}), `auth_secret`
(the secret holding a bearer token; default `http_job_token`, sent only when set), `timeout`
(the job's own time limit, e.g. "10m": past it the job is deleted and the attempt fails with
`TimeoutExpired`). Outputs: the job's `result`.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from pydantic import BaseModel

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    SecretNotFoundError,
    TaskExecutionContext,
    TaskInfo,
    parse_duration,
)
from executor.webapi import AsyncPlugin, RemoteError, WebApiConfig, check_response, register_async_plugin

TASK_TYPE = "http-job"
DEFAULT_SECRET = "http_job_token"
FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class JobMeta(BaseModel):
    """What identifies a job; persisted as plugin state (the secret's name, never its value)."""

    url: str
    job_id: str
    submitted_at: float
    timeout: float | None = None
    auth_secret: str | None = None


Job = dict[str, Any]


class HttpJobPlugin(AsyncPlugin[JobMeta, Job]):
    config = WebApiConfig(read_rate=20, read_burst=20, write_rate=10, write_burst=10, resync_interval=2.0)

    def __init__(self, request_timeout: float = 10.0, max_connections: int = 16) -> None:
        self._request_timeout = request_timeout
        #: Connections to one service; hundreds of concurrent rounds must not open hundreds.
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self._slots: anyio.CapacityLimiter | None = None

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request; callers beyond the connection count queue here, first come first served
        (httpcore's own pool is quadratic in its queue: 256 rounds waiting there cost seconds)."""
        if self._client is None or self._slots is None:
            self._client = httpx.AsyncClient(timeout=self._request_timeout, limits=self._limits)
            self._slots = anyio.CapacityLimiter(self._max_connections)
        async with self._slots:
            return await self._client.request(method, url, **kw)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def create(self, tctx: TaskExecutionContext) -> tuple[JobMeta, Job | None]:
        inputs = await tctx.input_reader.get()
        url = inputs.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RemoteError(f"input 'url' must be an http(s) URL, got {url!r}", retryable=False)
        payload = inputs.get("payload", {})
        if not isinstance(payload, dict):
            raise RemoteError("input 'payload' must be an object", retryable=False)
        try:
            timeout = parse_duration(inputs["timeout"]).total_seconds() if "timeout" in inputs else None
        except ValueError as err:
            raise RemoteError(f"input 'timeout': {err}", retryable=False) from None
        secret = inputs.get("auth_secret")
        if secret is not None and not isinstance(secret, str):
            raise RemoteError("input 'auth_secret' must be the name of a secret", retryable=False)
        headers = self._auth(secret or DEFAULT_SECRET, required=secret is not None)
        name = tctx.task_execution_metadata.generated_name
        response = await self._request(
            "POST", f"{url.rstrip('/')}/jobs", json={"name": name, "payload": payload}, headers=headers
        )
        job: Job = check_response(response, "POST /jobs").json()
        meta = JobMeta(
            url=url.rstrip("/"),
            job_id=str(job["id"]),
            submitted_at=time.time(),
            timeout=timeout,
            auth_secret=(secret or DEFAULT_SECRET) if headers else None,
        )
        return meta, job

    async def get(self, resource_meta: JobMeta) -> Job:
        response = await self._request(
            "GET",
            f"{resource_meta.url}/jobs/{resource_meta.job_id}",
            headers=self._auth(resource_meta.auth_secret, required=True),
        )
        job: Job = check_response(response, f"GET /jobs/{resource_meta.job_id}").json()
        return job

    async def delete(self, resource_meta: JobMeta, reason: str) -> None:
        response = await self._request(
            "DELETE",
            f"{resource_meta.url}/jobs/{resource_meta.job_id}",
            headers=self._auth(resource_meta.auth_secret, required=True) | {"X-Reason": reason},
        )
        check_response(response, f"DELETE /jobs/{resource_meta.job_id}")

    def is_terminal(self, resource: Job) -> bool:
        return str(resource.get("status", "")).upper() in FINISHED

    async def status(self, tctx: TaskExecutionContext, resource_meta: JobMeta, resource: Job) -> PhaseInfo:
        state = str(resource.get("status", "")).upper()
        info = TaskInfo(external_resources=(f"{resource_meta.url}/jobs/{resource_meta.job_id}",))
        if state == "SUCCEEDED":
            result = resource.get("result")
            await tctx.output_writer.put(result if isinstance(result, dict) else {"result": result})
            return PhaseInfo.success(info)
        if state == "FAILED":
            return PhaseInfo.failure("JobFailed", str(resource.get("error") or "the job failed"), info)
        if state == "CANCELLED":
            return PhaseInfo.failure("JobCancelled", "the job was cancelled on the service", info)
        limit = resource_meta.timeout
        if limit is not None and time.time() - resource_meta.submitted_at > limit:
            return PhaseInfo.failure(
                "TimeoutExpired",
                f"the job ran longer than its timeout of {limit:g}s",
                info,
                cleanup_on_failure=True,  # still running remotely: the kit deletes it
            )
        if state == "PENDING":
            return PhaseInfo.queued("JobPending", info)
        if state == "RUNNING":
            return PhaseInfo.running(0, info)
        return PhaseInfo.system_failure("UnknownJobStatus", f"the service reported status {state!r}", info)

    def _auth(self, secret: str | None, *, required: bool = False) -> dict[str, str]:
        """A bearer header from the secret manager; the token never reaches logs or errors."""
        if secret is None or self.secrets is None:
            return {}
        try:
            token = self.secrets.get(secret)
        except SecretNotFoundError as err:
            if required:
                raise RemoteError(str(err.args[0]), retryable=False) from None
            return {}
        return {"Authorization": f"Bearer {token}"}


register_async_plugin(plugin_registry(), TASK_TYPE, [TASK_TYPE], lambda setup: HttpJobPlugin())
