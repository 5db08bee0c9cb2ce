"""`/api/v1`'s history routes: requeue one execution or many, and the failures view, refused and
answered as `executor retry` and `executor failures` are (both call `executor.history.History`).

- `POST /executions/{id}/retry`: 202 and the execution when requeued; 409 with the reason when
  it cannot run again (still running, succeeded, clean-up owed); 404 when there is no such id.
- `POST /retries`: every execution a filter matches (the filters of `GET /failures`, as a JSON
  body), with `dry_run`; 200 and the counts.
- `GET /failures`: counts per phase and error code, and the executions, newest first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from executor.client import Client, SubmissionError
from executor.history.service import MAX_LIMIT, History, RetryOutcome
from executor.store.filters import ExecutionFilter
from executor.views import execution_dict

M = TypeVar("M", bound=BaseModel)

#: Who asked, when a request does not say.
API_CALLER = "the API"


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(None, description="Who asks; shown in the event that opens the new attempt.")


class BulkRetryRequest(BaseModel):
    """Which executions to requeue: every field given must match (none: every failed or aborted one)."""

    model_config = ConfigDict(extra="forbid")
    phases: list[str] = Field(default_factory=list, description="PERMANENT_FAILURE and/or ABORTED.")
    task_type: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="Every one of these labels.")
    since: str | None = Field(None, description="Created at or after this ISO 8601 time.")
    until: str | None = Field(None, description="Created before this ISO 8601 time.")
    error_code: str | None = None
    reason: str | None = Field(None, description="Text the reason contains.")
    dry_run: bool = Field(False, description="Count and list the ids; change nothing.")
    by: str | None = Field(None, description="Who asks; shown in each event.")


class HistoryApi:
    def __init__(self, client: Client) -> None:
        self.history = History(client)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/executions/{id}/retry", self.retry, methods=["POST"]),
            Route("/retries", self.retry_many, methods=["POST"]),
            Route("/failures", self.failures, methods=["GET"]),
        ]

    async def retry(self, request: Request) -> Response:
        from executor.http.api import ApiError, Json

        execution_id = request.path_params["id"]
        body = await _model(request, RetryRequest, required=False)
        try:
            result = await self.history.retry(execution_id, by=body.by or API_CALLER)
        except SubmissionError as err:
            raise _refused(err) from None
        if result.outcome is RetryOutcome.NOT_FOUND:
            raise ApiError(404, "not_found", result.message)
        shown = execution_dict(result.record) if result.record is not None else None
        answer = {"id": execution_id, "result": result.outcome.value, "message": result.message}
        if result.outcome is RetryOutcome.REFUSED:
            raise ApiError(409, "not_retryable", result.message, [{"id": execution_id, "execution": shown}])
        return Json({**answer, "execution": shown}, status_code=202)

    async def retry_many(self, request: Request) -> Response:
        from executor.http.api import Json

        body = await _model(request, BulkRetryRequest, required=True)
        try:
            selection = self.history.selection(
                phases=body.phases,
                task_type=body.task_type,
                labels=body.labels,
                since=_time("since", body.since),
                until=_time("until", body.until),
                error_code=body.error_code,
                reason=body.reason,
            )
            bulk = await self.history.retry_many(selection, by=body.by or API_CALLER, dry_run=body.dry_run)
        except SubmissionError as err:
            raise _refused(err) from None
        return Json(
            {
                "dry_run": bulk.dry_run,
                "matched": bulk.matched,
                "requeued": bulk.requeued,
                "refused": [{"id": i, "message": m} for i, m in bulk.refused.items()],
                "ids": bulk.ids,
            }
        )

    async def failures(self, request: Request) -> Response:
        from executor.http.api import ApiError, Json, _int_param, label_params

        params = request.query_params
        limit = _int_param(params.get("limit"), "limit", 50, 1, MAX_LIMIT)
        try:
            selection: ExecutionFilter = self.history.selection(
                phases=[name for value in params.getlist("phase") for name in value.split(",")],
                task_type=params.get("task_type") or None,
                labels=label_params(params.getlist("label")),
                since=_time("since", params.get("since")),
                until=_time("until", params.get("until")),
                error_code=params.get("error_code") or None,
                reason=params.get("reason") or None,
            )
            found = await self.history.failures(selection, limit=limit)
        except SubmissionError as err:
            raise ApiError(400, "invalid_parameter", str(err), [{"field": err.field}]) from None
        return Json(
            {
                "counts": [
                    {"phase": c.phase.name, "error_code": c.error_code, "count": c.count}
                    for c in found.counts
                ],
                "items": [execution_dict(r) for r in found.executions],
            }
        )


async def _model(request: Request, model: type[M], *, required: bool) -> M:
    from executor.http.api import ApiError, _body, _invalid

    raw = await _body(request)
    if not raw.strip() and not required:
        return model()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "bad_json", "the request body is nested too deeply to read") from None
    except ValueError as err:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        raise _invalid(err) from None


def _time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), refused as the other filters are."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SubmissionError(f"{name} must be an ISO 8601 time, got {value[:40]!r}", name) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _refused(err: SubmissionError) -> Exception:
    from executor.http.api import ApiError

    details = [{"field": err.field, "message": str(err)}] if err.field else None
    return ApiError(422, "invalid_filter", f"refused: {err}", details)


def openapi_paths() -> dict[str, Any]:
    """The history routes' part of the OpenAPI document (`executor.http.api.openapi_document`)."""
    from executor.core import Phase
    from executor.http.api import _errors, _id_param, _query

    def body(model: type[BaseModel], required: bool) -> dict[str, Any]:
        return {"required": required, "content": {"application/json": {"schema": model.model_json_schema()}}}

    def answer(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}

    conflict = {
        "description": "Not retried: still running, succeeded, or its clean-up is owed (the message says).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    phases = [p.name for p in Phase]
    return {
        "/executions/{id}/retry": {
            "post": {
                "operationId": "retryExecution",
                "summary": "Run an execution that ended PERMANENT_FAILURE or ABORTED again, as a new attempt",
                "parameters": [_id_param()],
                "requestBody": body(RetryRequest, False),
                "responses": {
                    "202": answer("Requeued: `execution` is its record now."),
                    "409": conflict,
                    **_errors(400, 404, 408, 413, 422),
                },
            }
        },
        "/retries": {
            "post": {
                "operationId": "retryExecutions",
                "summary": "Requeue every failed or aborted execution a filter matches (dry_run: count them)",
                "requestBody": body(BulkRetryRequest, True),
                "responses": {
                    "200": answer("`matched`, `requeued`, `refused` (id and reason), `ids`."),
                    **_errors(400, 408, 413, 422),
                },
            }
        },
        "/failures": {
            "get": {
                "operationId": "listFailures",
                "summary": "Executions that ended PERMANENT_FAILURE or ABORTED, with counts per error code",
                "parameters": [
                    _query(
                        "phase",
                        {"type": "array", "items": {"type": "string", "enum": phases}},
                        "Only these phases (default PERMANENT_FAILURE and ABORTED).",
                    ),
                    _query("task_type", {"type": "string"}, "Only this task type."),
                    _query(
                        "label",
                        {"type": "array", "items": {"type": "string", "pattern": "="}},
                        "Only executions carrying this label, as KEY=VALUE (repeat: all of them).",
                    ),
                    _query("since", {"type": "string", "format": "date-time"}, "Created at or after."),
                    _query("until", {"type": "string", "format": "date-time"}, "Created before."),
                    _query("error_code", {"type": "string"}, "Only this error code."),
                    _query("reason", {"type": "string"}, "Only reasons containing this text."),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
                        "How many executions.",
                    ),
                ],
                "responses": {
                    "200": answer("`counts` per phase and error code; `items`, newest first."),
                    **_errors(400),
                },
            }
        },
    }
