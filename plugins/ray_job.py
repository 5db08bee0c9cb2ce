"""ray-job: runs work on a Ray cluster as a Ray job, through the cluster's job REST API.

Built on the remote-service kit (`executor.webapi`): this file says how to talk to Ray's job
server (the dashboard's `/api/jobs/`); the kit brings the persisted state machine, rate limits,
create retries, the shared status cache and the stop on abort and timeout. Ray's Python package is
not needed by the daemon: the API is plain HTTP.

- `create` submits the job with the attempt's generated name as its `submission_id`, so a lost
  answer never starts a second job: a resubmission is refused by Ray as a duplicate, and the
  plugin then takes the job that exists.
- `get` reads the job's status (and, once it has ended, the tail of its logs); `delete` stops it.
- Ray's status maps onto phases: PENDING -> QUEUED (INITIALIZING once Ray has a driver for it),
  RUNNING -> RUNNING, SUCCEEDED -> SUCCESS, FAILED and STOPPED -> failures with Ray's message.
- The Ray dashboard's page of the job is the execution's log link.

Inputs: `entrypoint` (the shell command Ray runs on the cluster), `runtime_env`, `metadata`,
`entrypoint_num_cpus`, `entrypoint_num_gpus`, `entrypoint_memory`, `entrypoint_resources`.
Outputs: `submission_id`, `status`, `message`, `output_tail` (the end of the job's logs).

Configuration (`EXECUTOR_PLUGIN_CONFIG["ray-job"]`, with every knob of the kit): `address` (the
dashboard's URL, default http://127.0.0.1:8265), `token_secret` (the name of a secret holding a
bearer token, sent when that secret is set), `tail_bytes`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    SecretNotFoundError,
    SetupContext,
    TaskExecutionContext,
    TaskInfo,
    TaskLog,
)
from executor.webapi import AsyncPlugin, RemoteError, ResourceNotFoundError, WebApiConfig, async_plugin_entry

PLUGIN_ID = "ray-job"
TASK_TYPE = "ray-job"
FINISHED = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobConfig(WebApiConfig):
    """The kit's knobs and where the cluster is."""

    address: str = "http://127.0.0.1:8265"
    token_secret: str = "ray_job_token"
    tail_bytes: int = Field(4096, ge=0, le=1024 * 1024)


class RayJobInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entrypoint: str = Field(min_length=1)
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    entrypoint_num_cpus: float | None = Field(None, ge=0)
    entrypoint_num_gpus: float | None = Field(None, ge=0)
    entrypoint_memory: int | None = Field(None, ge=0)
    entrypoint_resources: dict[str, float] | None = None


class RayJobMeta(BaseModel):
    """What identifies the job; persisted as plugin state."""

    address: str
    submission_id: str


Job = dict[str, Any]


class RayJobPlugin(AsyncPlugin[RayJobMeta, Job]):
    #: Ray's job server is polled for every job at once: once a second is plenty.
    config: RayJobConfig = RayJobConfig(resync_interval=1.0)

    def __init__(self, config: RayJobConfig, request_timeout: float = 10.0) -> None:
        self.config = config
        self._request_timeout = request_timeout
        self._client: httpx.AsyncClient | None = None
        self._slots = anyio.CapacityLimiter(16)

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._request_timeout)
        async with self._slots:
            try:
                return await self._client.request(
                    method, f"{self.config.address.rstrip('/')}{path}", headers=self._auth(), **kw
                )
            except httpx.HTTPError as err:
                raise RemoteError(f"{method} {path}: {type(err).__name__}: {err}", retryable=True) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def create(self, tctx: TaskExecutionContext) -> tuple[RayJobMeta, Job | None]:
        try:
            inputs = RayJobInputs.model_validate(await tctx.input_reader.get())
        except ValidationError as err:
            raise RemoteError(f"invalid inputs: {err.errors(include_url=False)}", retryable=False) from None
        name = tctx.task_execution_metadata.generated_name
        body = inputs.model_dump(exclude_none=True) | {"submission_id": name}
        body["metadata"] = {
            "executor_execution_id": tctx.task_execution_metadata.execution_id
        } | inputs.metadata
        response = await self._request("POST", "/api/jobs/", json=body)
        meta = RayJobMeta(address=self.config.address.rstrip("/"), submission_id=name)
        if response.is_success:
            return meta, None
        if "already exists" in response.text:  # submitted before a crash: that job is ours
            return meta, None
        raise _error(response, "POST /api/jobs/")

    async def get(self, resource_meta: RayJobMeta) -> Job:
        path = f"/api/jobs/{resource_meta.submission_id}"
        response = await self._request("GET", path)
        if response.status_code == 404:
            raise RemoteError(f"GET {path}: Ray knows no job {resource_meta.submission_id}", retryable=True)
        if not response.is_success:
            raise _error(response, f"GET {path}")
        job: Job = response.json()
        if str(job.get("status")) in FINISHED:
            logs = await self._request("GET", f"{path}/logs")
            text = str(logs.json().get("logs", "")) if logs.is_success else ""
            text = text.replace("\x00", "\ufffd")  # PostgreSQL stores no NUL in text
            job["output_tail"] = text[-self.config.tail_bytes :] if self.config.tail_bytes else ""
        return job

    async def delete(self, resource_meta: RayJobMeta, reason: str) -> None:
        path = f"/api/jobs/{resource_meta.submission_id}/stop"
        response = await self._request("POST", path)
        if response.status_code == 404:
            raise ResourceNotFoundError(path)
        if not response.is_success:
            raise _error(response, f"POST {path}")

    def is_terminal(self, resource: Job) -> bool:
        return str(resource.get("status")) in FINISHED

    async def status(self, tctx: TaskExecutionContext, resource_meta: RayJobMeta, resource: Job) -> PhaseInfo:
        state = str(resource.get("status"))
        page = f"{resource_meta.address}/#/jobs/{resource_meta.submission_id}"
        info = TaskInfo(
            logs=(TaskLog("Ray dashboard", page),),
            external_resources=(f"{resource_meta.address}/api/jobs/{resource_meta.submission_id}",),
        )
        message = str(resource.get("message") or "")
        if state in FINISHED:
            await tctx.output_writer.put(
                {
                    "submission_id": resource_meta.submission_id,
                    "status": state,
                    "message": message,
                    "output_tail": resource.get("output_tail", ""),
                }
            )
        if state == "SUCCEEDED":
            return PhaseInfo.success(info)
        if state == "FAILED":
            tail = str(resource.get("output_tail", "")).strip()
            text = f"{message}; the job's log ends with:\n{tail}" if tail else message
            return PhaseInfo.retryable_failure("RayJobFailed", text or "the Ray job failed", info)
        if state == "STOPPED":
            return PhaseInfo.failure("RayJobStopped", message or "the Ray job was stopped", info)
        if state == "PENDING":
            if resource.get("driver_info"):
                return PhaseInfo.initializing("RayJobStarting", info)
            return PhaseInfo.queued("RayJobPending", info)
        if state == "RUNNING":
            return PhaseInfo.running(0, info)
        return PhaseInfo.system_failure("UnknownRayJobStatus", f"Ray reported status {state!r}", info)

    def _auth(self) -> dict[str, str]:
        """A bearer header from the secret manager when the secret is set; never logged."""
        if self.secrets is None:
            return {}
        try:
            return {"Authorization": f"Bearer {self.secrets.get(self.config.token_secret)}"}
        except SecretNotFoundError:
            return {}


def _error(response: httpx.Response, call: str) -> RemoteError:
    status = response.status_code
    text = response.text.strip().splitlines()
    detail = text[-1] if text else ""
    return RemoteError(f"{call}: {status} {detail}"[:2000], retryable=status >= 500 or status == 429)


def load(setup: SetupContext) -> RayJobPlugin:
    """The plugin with its configuration; a bad value is refused by the kit in one line."""
    try:
        config = RayJobPlugin.config.with_overrides(setup.plugin_config.get(PLUGIN_ID))
    except ValidationError:
        config = RayJobPlugin.config  # the kit validates the same overrides next and says what is wrong
    assert isinstance(config, RayJobConfig)
    return RayJobPlugin(config)


# The kit's entry, with the input model every door checks submissions against.
plugin_registry().register_core_plugin(
    dataclasses.replace(async_plugin_entry(PLUGIN_ID, [TASK_TYPE], load), input_model=RayJobInputs)
)

__all__ = ["RayJobConfig", "RayJobInputs", "RayJobMeta", "RayJobPlugin"]
