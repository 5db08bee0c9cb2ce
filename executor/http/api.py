"""The JSON API under `/api/v1`: the CLI's operations, for services written in any language.

Submissions go through `Client.submit` of a client the composition root made with the daemon's
settings (`executor.app.parts.client_for`), so the API refuses exactly what `executor submit`
refuses, for the same reasons, before anything is stored; the request model below checks only
the JSON types, and every rule beyond that is the client's. Every error is a 4xx (or a 503 when
the database does not answer) with the body `{"error": {"code": ..., "message": ..., "details": [...]}}`.

Executions, events and replicas have the shapes of `executor get --json`, `executor events --json`
and `executor replicas --json` (`executor.views`); the response models below describe them for
the OpenAPI document, and a test holds the two together.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
import pydantic
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic.json_schema import models_json_schema
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from executor import __version__
from executor.client import Client, SubmissionError, UnknownTaskTypeError
from executor.core import Phase
from executor.http.history import HistoryApi
from executor.http.history import openapi_paths as history_openapi_paths
from executor.http.metrics import Metrics
from executor.http.schedules import ScheduleApi
from executor.http.schedules import openapi_paths as schedule_openapi_paths
from executor.http.tasklogs import LogApi
from executor.http.tasklogs import openapi_paths as log_openapi_paths
from executor.limits import (
    INT32_MAX,
    INT32_MIN,
    MAX_DEPTH,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_NAME,
    MAX_REASON,
    name_problem,
)
from executor.plugin.registry import LoadedPlugins
from executor.settings import Settings
from executor.store import AbortResult
from executor.store.replicas import list_replicas
from executor.store.stats import FINAL_PHASES, finished_per_minute, lease_holders
from executor.views import event_dict, execution_dict, iso, own_replica_dict, replica_dicts

PREFIX = "/api/v1"
#: Largest request body accepted; a submission's inputs belong in the store, not a file upload.
MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_CHART_MINUTES = 24 * 60
#: Seconds a client may take to send a request's whole body once its headers are in: a body sent
#: slowly, or never finished, would otherwise hold its connection (and a worker's read) open.
BODY_READ_TIMEOUT = 10.0


# -- errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class Json(JSONResponse):
    """A JSON response that every stored value can be rendered into.

    Starlette writes UTF-8 without escapes, which a lone surrogate (a string no UTF-8 can carry)
    makes fail; such a body is written with every non-ASCII character escaped instead, which is
    JSON all the same. Nothing a caller stored can turn a read into a 500.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return Json({"error": body}, status_code=status, headers=headers)


# -- request and response models (the OpenAPI document is made from these) --------------------


_DURATION = "Seconds, or text such as '5s', '250ms', '1m30s'."


def _duration_type(value: object) -> float | str:
    """Only the JSON type is checked here; the client parses and refuses the value itself."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number of seconds or text such as '5s'")
    return value


_TIME = pydantic.TypeAdapter(datetime)


def _time_type(value: object) -> datetime:
    """An ISO 8601 time, read as a JSON string is (the body is validated after `json.loads`)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time, such as 2030-01-01T00:00:00Z")
    return _TIME.validate_json(json.dumps(value))


JsonTime = Annotated[
    datetime,
    PlainValidator(_time_type),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

#: A duration as the CLI and the settings take it: seconds, or text such as "5s".
JsonDuration = Annotated[
    float | str,
    PlainValidator(_duration_type),
    WithJsonSchema({"oneOf": [{"type": "number"}, {"type": "string"}]}),
]


class SubmitRequest(BaseModel):
    """A new execution: the options of `executor submit` and `Client.submit`. Only `task_type` is
    required. Values are checked by the same client as the CLI's, with the same messages."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # The bounds below are documented here and enforced by the client, in the CLI's words.
    task_type: str = Field(
        description="A task type some loaded plugin handles.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME},
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description=f"The plugin's inputs (a JSON object), nested at most {MAX_DEPTH} levels deep, "
        "within EXECUTOR_MAX_PAYLOAD_BYTES as JSON.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description=f"At most {MAX_LABELS}; keys of 1 to {MAX_LABEL_KEY} characters, values of at most "
        f"{MAX_LABEL_VALUE}.",
        json_schema_extra={
            "maxProperties": MAX_LABELS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_KEY},
            "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE},
        },
    )
    priority: int = Field(
        0,
        description="Higher is claimed first; a 32-bit integer.",
        json_schema_extra={"minimum": INT32_MIN, "maximum": INT32_MAX},
    )
    max_attempts: int | None = Field(
        None,
        description="At least 1. Default: EXECUTOR_DEFAULT_MAX_ATTEMPTS.",
        json_schema_extra={"minimum": 1, "maximum": INT32_MAX},
    )
    not_before: JsonTime | None = Field(
        None,
        description="No round runs before this time (ISO 8601 with a time zone), "
        "between 1970 and the year 9000.",
    )
    timeout: JsonDuration | None = Field(
        None, description=f"Per attempt, from its first round. {_DURATION} Default: EXECUTOR_DEFAULT_TIMEOUT."
    )
    deadline: JsonDuration | None = Field(
        None,
        description=f"The whole execution's, from now. {_DURATION} Default: EXECUTOR_DEFAULT_DEADLINE.",
    )
    idempotency_key: str | None = Field(
        None,
        description="1 to 255 characters; a repeat with this key returns the first execution's id.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME},
    )
    backoff_base: JsonDuration | None = Field(
        None,
        description=f"This execution's retry backoff. {_DURATION} Default: EXECUTOR_RETRY_BACKOFF_BASE.",
    )
    backoff_max: JsonDuration | None = Field(
        None, description=f"{_DURATION} Default: EXECUTOR_RETRY_BACKOFF_MAX."
    )


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field("Aborted by user", min_length=1, json_schema_extra={"maxLength": MAX_REASON})


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable, machine-readable: bad_json, invalid_request, unknown_task_type, ..."
    )
    message: str
    details: list[Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ExecutionErrorInfo(BaseModel):
    code: str
    message: str
    kind: str


class Execution(BaseModel):
    """An execution, as `executor get --json` prints it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task_type: str
    phase: str = Field(json_schema_extra={"enum": [phase.name for phase in Phase]})
    phase_version: int
    reason: str | None
    error: ExecutionErrorInfo | None
    attempt: int
    max_attempts: int
    system_failures: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    labels: dict[str, str]
    priority: int
    timeout: float | None = Field(description="Seconds per attempt, as submitted (or the default).")
    deadline: float | None = Field(description="Seconds from submission, as submitted (or the default).")
    deadline_at: str | None = Field(description="When the deadline falls.")
    not_before: str | None = Field(
        description="The submission's not-before time, until the first round has run (then null)."
    )
    idempotency_key: str | None
    backoff_base: float | None = Field(description="Seconds; null: EXECUTOR_RETRY_BACKOFF_BASE.")
    backoff_max: float | None = Field(description="Seconds; null: EXECUTOR_RETRY_BACKOFF_MAX.")
    rounds: int
    plugin_state_version: int
    abort_requested: bool
    finalized: bool
    finalize_error: str | None
    created_at: str | None
    updated_at: str | None
    next_round_at: str | None
    finished_at: str | None


class Event(BaseModel):
    """One entry of an execution's timeline, as `executor events --json` prints it."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    attempt: int
    phase: str = Field(json_schema_extra={"enum": [phase.name for phase in Phase]})
    phase_version: int
    reason: str | None
    error: ExecutionErrorInfo | None
    info: dict[str, Any] | None
    occurred_at: str | None


class ExecutionPage(BaseModel):
    items: list[Execution]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class EventList(BaseModel):
    items: list[Event]


class SubmitResponse(BaseModel):
    id: str
    execution: Execution


class AbortResponse(BaseModel):
    id: str
    result: Literal["requested", "already_finished"]
    message: str


class PluginInfo(BaseModel):
    id: str
    task_types: list[str]
    is_default: bool = Field(description="Handles task types no other plugin claims.")


class PluginList(BaseModel):
    items: list[PluginInfo]
    task_types: list[str]


class Replica(BaseModel):
    """A replica, as `executor replicas --json` prints it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    this: bool = Field(description="The replica that answered this request (never, from the CLI).")
    live: bool | None = Field(
        description="Heartbeat within 3 x EXECUTOR_HEARTBEAT_INTERVAL; null: seen only holding leases."
    )
    host: str | None
    pid: int | None
    started_at: str | None
    heartbeat_at: str | None
    silent_for: float | None = Field(description="Seconds since its last heartbeat.")
    rounds: int | None
    last_round_at: str | None
    in_flight: int | None = Field(description="Executions of its rounds under way.")
    executions_leased: int = Field(description="Executions it holds an unexpired lease on.")


class ReplicaList(BaseModel):
    """Live replicas (their heartbeats), and any other replica holding a lease."""

    items: list[Replica]


class PhaseCounts(BaseModel):
    counts: dict[str, int]
    total: int


class FinishedMinute(BaseModel):
    minute: str
    SUCCESS: int
    PERMANENT_FAILURE: int
    ABORTED: int


class FinishedStats(BaseModel):
    bucket_seconds: int
    outcomes: list[str]
    minutes: list[FinishedMinute]


# -- authentication ---------------------------------------------------------------------------


class BearerAuth:
    """Every request needs `Authorization: Bearer <token>` when a token is configured.

    Both sides are hashed before the constant-time compare, so neither the token's content nor
    its length leaks through timing.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._digest is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            message = (
                "this API needs a bearer token: send the header Authorization: Bearer <EXECUTOR_API_TOKEN>"
            )
        elif not hmac.compare_digest(hashlib.sha256(credentials.encode()).digest(), self._digest):
            message = "the bearer token is wrong"
        else:
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="executor"'}
        )
        await response(scope, receive, send)


# -- the endpoints ----------------------------------------------------------------------------


def encode_cursor(created_at: float, execution_id: str) -> str:
    raw = json.dumps([created_at, execution_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, execution_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError
        if not isinstance(execution_id, str):
            raise ValueError
        if not math.isfinite(created_at) or name_problem(execution_id) is not None:
            raise ValueError
    except (ValueError, TypeError, RecursionError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_parameter", "cursor is not one this API handed out") from None
    return float(created_at), execution_id


class Api:
    def __init__(
        self,
        client: Client,
        plugins: LoadedPlugins,
        settings: Settings,
        metrics: Metrics,
        *,
        body_timeout: float = BODY_READ_TIMEOUT,
    ) -> None:
        self.client = client
        self.store = client.store
        self.plugins = plugins
        self.settings = settings
        self.metrics = metrics
        self.body_timeout = body_timeout
        self.router = Router(routes=self.routes())
        #: The query parameters of each documented operation, by method and path template.
        self._query = {
            (method, path): frozenset(
                p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"
            )
            for path, item in openapi_document()["paths"].items()
            for method, operation in item.items()
        }

    def routes(self) -> list[BaseRoute]:
        return [
            # One route per path, so that a 405 lists every method the path has in `Allow`.
            Route("/executions", self.executions, methods=["GET", "POST"]),
            Route("/executions/{id}", self.get_execution, methods=["GET"]),
            Route("/executions/{id}/events", self.events, methods=["GET"]),
            Route("/executions/{id}/abort", self.abort, methods=["POST"]),
            Route("/plugins", self.plugins_list, methods=["GET"]),
            Route("/replicas", self.replicas, methods=["GET"]),
            Route("/stats/phases", self.phase_counts, methods=["GET"]),
            Route("/stats/finished", self.finished, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *ScheduleApi(self.client, PREFIX).routes(),
            *LogApi(self.client).routes(),
            *HistoryApi(self.client).routes(),
        ]

    async def executions(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.submit(request)
        return await self.list_executions(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The API as one ASGI app: its routes, every documented operation's query parameters
        checked against its document (a misspelt filter would otherwise be ignored, and the answer
        unfiltered). An operation the document does not describe is not checked."""
        if scope["type"] == "http":
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            for route in self.router.routes:
                if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
                    known = self._query.get((method.lower(), route.path))
                    if known is not None:
                        _check_query(Request(scope), known)
                    break
        await self.router(scope, receive, send)

    # POST /executions
    async def submit(self, request: Request) -> Response:
        raw = await _body(request, self.body_timeout)
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ApiError(400, "bad_json", "the request body is nested too deeply to read") from None
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
            raise ApiError(400, "bad_json", f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", f"the request body must be a JSON object, not {_json_type(data)}")
        try:
            # From the parsed body, not the raw bytes: pydantic's own JSON parser refuses a lone
            # surrogate escape, which the client refuses in its own words, as for the other doors.
            body = SubmitRequest.model_validate(data)
        except pydantic.ValidationError as err:
            raise _invalid(err) from None
        try:
            execution_id = await self.client.submit(
                body.task_type,
                body.inputs,
                labels=body.labels,
                priority=body.priority,
                max_attempts=body.max_attempts,
                not_before=body.not_before,
                timeout=body.timeout,
                deadline=body.deadline,
                idempotency_key=body.idempotency_key,
                backoff_base=body.backoff_base,
                backoff_max=body.backoff_max,
            )
        except SubmissionError as err:
            raise _refused(err) from None
        record = await self.client.get(execution_id)
        assert record is not None
        return Json(
            {"id": execution_id, "execution": execution_dict(record)},
            status_code=201,
            headers={"Location": f"{PREFIX}/executions/{execution_id}"},
        )

    # GET /executions
    async def list_executions(self, request: Request) -> Response:
        params = request.query_params
        phases = [_phase(name) for value in params.getlist("phase") for name in value.split(",")]
        limit = _int_param(params.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        unfinalized = _bool_param(params.get("unfinalized"), "unfinalized")
        cursor = params.get("cursor")
        before = decode_cursor(cursor) if cursor else None
        labels = label_params(params.getlist("label"))
        try:
            records = await self.client.list_executions(
                phases=phases,
                task_type=params.get("task_type") or None,
                unfinalized=unfinalized,
                limit=limit + 1,
                before=before,
                labels=labels,
            )
        except SubmissionError as err:
            raise ApiError(400, "invalid_parameter", str(err), [{"field": err.field}]) from None
        page, more = records[:limit], len(records) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
        return Json({"items": [execution_dict(r) for r in page], "next_cursor": next_cursor})

    # GET /executions/{id}
    async def get_execution(self, request: Request) -> Response:
        execution_id = request.path_params["id"]
        record = await self.client.get(execution_id)
        if record is None:
            raise _not_found(execution_id)
        return Json(execution_dict(record))

    # GET /executions/{id}/events
    async def events(self, request: Request) -> Response:
        execution_id = request.path_params["id"]
        if await self.client.get(execution_id) is None:
            raise _not_found(execution_id)
        timeline = await self.client.events(execution_id)
        return Json({"items": [event_dict(event) for event in timeline]})

    # POST /executions/{id}/abort
    async def abort(self, request: Request) -> Response:
        execution_id = request.path_params["id"]
        raw = await _body(request, self.body_timeout)
        reason = AbortRequest().reason
        if raw.strip():
            try:
                reason = AbortRequest.model_validate_json(raw).reason
            except pydantic.ValidationError as err:
                if any(e["type"] == "json_invalid" for e in err.errors()):
                    raise ApiError(400, "bad_json", "the request body is not valid JSON") from None
                raise _invalid(err) from None
        try:
            result = await self.client.abort(execution_id, reason)
        except SubmissionError as err:
            raise _refused(err) from None
        if result is AbortResult.NOT_FOUND:
            raise _not_found(execution_id)
        if result is AbortResult.ALREADY_FINISHED:
            message = "already finished; nothing to abort"
            return Json({"id": execution_id, "result": result.value, "message": message})
        message = "abort requested; the daemon aborts it in its next round"
        return Json({"id": execution_id, "result": result.value, "message": message}, status_code=202)

    # GET /plugins
    async def plugins_list(self, request: Request) -> Response:
        resolver = self.plugins.resolver
        items = [
            {
                "id": plugin_id,
                "task_types": [t for t in resolver.task_types if resolver.plugin_id_for(t) == plugin_id],
                "is_default": resolver.default_plugin_id == plugin_id,
            }
            for plugin_id in sorted(self.plugins.by_id)
        ]
        return Json({"items": items, "task_types": resolver.task_types})

    # GET /replicas
    async def replicas(self, request: Request) -> Response:
        live_within = 3 * self.settings.heartbeat_interval.total_seconds()  # as `executor replicas`
        beating = await list_replicas(self.store, live_within=live_within)
        leases = {h.owner: h.executions for h in await lease_holders(self.store, now=time.time())}
        me = self.settings.replica_id
        items = replica_dicts(beating, leases, this=me)
        if me not in {r.id for r in beating}:  # before its first heartbeat: what it knows itself
            items = [item for item in items if item["id"] != me]
            mine = own_replica_dict(
                me,
                started_at=self.metrics.started_at,
                rounds=self.metrics.rounds,
                last_round_at=self.metrics.last_round_at,
                executions_leased=leases.get(me, 0),
            )
            items.insert(0, mine)
        return Json({"items": items})

    # GET /stats/phases
    async def phase_counts(self, request: Request) -> Response:
        counts = await self.store.count_by_phase()
        return Json(
            {"counts": {phase.name: counts.get(phase, 0) for phase in Phase}, "total": sum(counts.values())}
        )

    # GET /stats/finished
    async def finished(self, request: Request) -> Response:
        minutes = _int_param(request.query_params.get("minutes"), "minutes", 30, 1, MAX_CHART_MINUTES)
        current = int(time.time()) // 60 * 60
        first = current - (minutes - 1) * 60
        buckets: dict[int, dict[str, Any]] = {
            minute: {"minute": iso(minute), **{phase.name: 0 for phase in FINAL_PHASES}}
            for minute in range(first, current + 60, 60)
        }
        for item in await finished_per_minute(self.store, since=first):
            if item.minute in buckets:
                buckets[item.minute][item.phase.name] += item.count
        return Json(
            {
                "bucket_seconds": 60,
                "outcomes": [phase.name for phase in FINAL_PHASES],
                "minutes": list(buckets.values()),
            }
        )

    # GET /openapi.json
    async def openapi(self, request: Request) -> Response:
        return Json(openapi_document())


# -- request helpers --------------------------------------------------------------------------


def _check_query(request: Request, known: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise ApiError(
            400, "invalid_parameter", f"unknown query parameter {unknown[0]!r}; this operation takes: {names}"
        )


async def _body(request: Request, within: float = BODY_READ_TIMEOUT) -> bytes:
    """The whole body, within `MAX_BODY_BYTES` and `within` seconds (then 413, 408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    try:
        with anyio.fail_after(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _too_large()
                chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "the client disconnected before sending the whole body") from None
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"the request body did not arrive within {within:g}s",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _refused(err: SubmissionError) -> ApiError:
    """A refusal of the client's, with the field it names (the same words as the CLI's)."""
    if isinstance(err, UnknownTaskTypeError):
        return ApiError(
            422, "unknown_task_type", str(err), [{"field": "task_type", "known_task_types": err.known}]
        )
    details = [{"field": err.field, "message": str(err)}] if err.field else None
    return ApiError(422, "invalid_submission", f"submission refused: {err}", details)


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is over {MAX_BODY_BYTES} bytes")


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _invalid(err: pydantic.ValidationError) -> ApiError:
    details = [
        {
            "field": ".".join(str(part) for part in e["loc"]) or "(body)",
            "message": e["msg"],
            "type": e["type"],
        }
        for e in err.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return ApiError(422, "invalid_request", f"the request is invalid: {summary}", details)


def _not_found(execution_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no execution with id {execution_id}")


def _phase(name: str) -> Phase:
    try:
        return Phase[name.strip().upper().replace("-", "_")]
    except KeyError:
        phases = ", ".join(p.name for p in Phase)
        raise ApiError(400, "invalid_parameter", f"unknown phase {name!r}; phases: {phases}") from None


def label_params(values: list[str]) -> dict[str, str]:
    """`label=KEY=VALUE` parameters (repeated) as the labels an execution must carry, as the CLI's
    `--label KEY=VALUE`."""
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise ApiError(
                400, "invalid_parameter", f"label {item!r} is not KEY=VALUE", [{"field": "labels"}]
            )
        labels[key] = value
    return labels


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an integer from {low} to {high}, got {value!r}"
        )
    return number


def _bool_param(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false, got {value!r}")


# -- the OpenAPI document ---------------------------------------------------------------------

_MODELS: list[type[BaseModel]] = [
    SubmitRequest,
    AbortRequest,
    ErrorBody,
    Execution,
    Event,
    ExecutionPage,
    EventList,
    SubmitResponse,
    AbortResponse,
    PluginList,
    ReplicaList,
    PhaseCounts,
    FinishedStats,
]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Malformed request: bad JSON, a body that is not an object, a bad query parameter.",
        401: "Missing or wrong bearer token (only when EXECUTOR_API_TOKEN is set).",
        404: "No execution with that id.",
        408: "The request body did not arrive in time.",
        413: "Request body too large.",
        422: "Refused: invalid fields, unknown task type, invalid inputs. Nothing was stored.",
        503: "The database does not answer.",
    }
    return {str(code): _json(ErrorBody, meaning[code]) for code in (*codes, 401, 503)}


def _id_param() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def openapi_document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )
    phase_names = [phase.name for phase in Phase]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "executor",
            "version": __version__,
            "description": "Submit, inspect and abort executions of the executor daemon. When "
            "EXECUTOR_API_TOKEN is set, every call needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": PREFIX}],
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/executions": {
                "post": {
                    "operationId": "submit",
                    "summary": "Submit an execution, validated as `executor submit` validates",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(SubmitRequest)}},
                    },
                    "responses": {
                        "201": _json(SubmitResponse, "Stored, QUEUED."),
                        **_errors(400, 408, 413, 422),
                    },
                },
                "get": {
                    "operationId": "listExecutions",
                    "summary": "List executions, newest first, a page at a time",
                    "parameters": [
                        _query(
                            "phase",
                            {"type": "array", "items": {"type": "string", "enum": phase_names}},
                            "Only these phases (repeat, or comma-separate).",
                        ),
                        _query("task_type", {"type": "string"}, "Only this task type."),
                        _query(
                            "label",
                            {"type": "array", "items": {"type": "string", "pattern": "="}},
                            "Only executions carrying this label, as KEY=VALUE (repeat: all of them).",
                        ),
                        _query(
                            "unfinalized",
                            {"type": "boolean"},
                            "Only finished ones whose finalize has not run.",
                        ),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                            "Page size.",
                        ),
                        _query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
                    ],
                    "responses": {"200": _json(ExecutionPage, "A page."), **_errors(400)},
                },
            },
            "/executions/{id}": {
                "get": {
                    "operationId": "getExecution",
                    "summary": "One execution",
                    "parameters": [_id_param()],
                    "responses": {"200": _json(Execution, "The execution."), **_errors(404)},
                }
            },
            "/executions/{id}/events": {
                "get": {
                    "operationId": "listEvents",
                    "summary": "An execution's timeline, across attempts",
                    "parameters": [_id_param()],
                    "responses": {"200": _json(EventList, "Oldest first."), **_errors(404)},
                }
            },
            "/executions/{id}/abort": {
                "post": {
                    "operationId": "abort",
                    "summary": "Ask the daemon to abort an execution",
                    "parameters": [_id_param()],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref(AbortRequest)}},
                    },
                    "responses": {
                        "202": _json(AbortResponse, "Requested; the next round carries it out."),
                        "200": _json(AbortResponse, "Already finished: nothing to do."),
                        **_errors(400, 404, 408, 413, 422),
                    },
                }
            },
            "/plugins": {
                "get": {
                    "operationId": "listPlugins",
                    "summary": "The plugins this replica loaded and the task types they handle",
                    "responses": {"200": _json(PluginList, "Plugins."), **_errors()},
                }
            },
            "/replicas": {
                "get": {
                    "operationId": "listReplicas",
                    "summary": "Live replicas, from their heartbeats, and any other replica holding a lease",
                    "responses": {"200": _json(ReplicaList, "Replicas."), **_errors()},
                }
            },
            "/stats/phases": {
                "get": {
                    "operationId": "countByPhase",
                    "summary": "How many executions are in each phase",
                    "responses": {"200": _json(PhaseCounts, "Counts."), **_errors()},
                }
            },
            "/stats/finished": {
                "get": {
                    "operationId": "finishedPerMinute",
                    "summary": "Executions finished per minute, by outcome, oldest minute first",
                    "parameters": [
                        _query(
                            "minutes",
                            {"type": "integer", "minimum": 1, "maximum": MAX_CHART_MINUTES, "default": 30},
                            "How many minutes back, the current one included.",
                        )
                    ],
                    "responses": {"200": _json(FinishedStats, "One entry per minute."), **_errors(400)},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1."}, **_errors()},
                }
            },
            **schedule_openapi_paths(),
            **log_openapi_paths(),
            **history_openapi_paths(),
        },
    }
