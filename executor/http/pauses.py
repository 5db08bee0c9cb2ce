"""`/api/v1/paused` and `/api/v1/task-types/{task_type}/pause|resume`: pause and resume through
HTTP, refused and shown as by `executor pause`, `resume` and `paused` (the same client checks)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from executor.client import Client, SubmissionError, UnknownTaskTypeError
from executor.limits import MAX_REASON
from executor.queues.views import paused_dict


class PauseApi:
    def __init__(self, client: Client) -> None:
        self.client = client

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/paused", self.list, methods=["GET"]),
            Route("/task-types/{task_type}/pause", self.pause, methods=["POST"]),
            Route("/task-types/{task_type}/resume", self.resume, methods=["POST"]),
        ]

    async def list(self, request: Request) -> Response:
        return JSONResponse({"items": [paused_dict(row) for row in await self.client.paused()]})

    async def pause(self, request: Request) -> Response:
        from executor.http.api import ApiError, _body

        task_type = request.path_params["task_type"]
        raw = await _body(request)
        reason = None
        if raw.strip():
            try:
                data: Any = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ApiError(400, "bad_json", f"the request body is not valid JSON: {err}") from None
            if not isinstance(data, dict) or set(data) - {"reason"}:
                raise ApiError(400, "bad_json", 'the request body must be {"reason": "..."} or empty')
            reason = data.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise ApiError(422, "invalid_request", "reason must be text")
        try:
            changed = await self.client.pause(task_type, reason)
        except SubmissionError as err:
            raise _refused(err) from None
        return _answer(task_type, changed, "paused" if changed else "already paused")

    async def resume(self, request: Request) -> Response:
        task_type = request.path_params["task_type"]
        try:
            changed = await self.client.resume(task_type)
        except SubmissionError as err:
            raise _refused(err) from None
        return _answer(task_type, changed, "resumed" if changed else "not paused")


def _answer(task_type: str, changed: bool, message: str) -> Response:
    return JSONResponse({"task_type": task_type, "changed": changed, "message": message})


def _refused(err: SubmissionError) -> Exception:
    from executor.http.api import ApiError

    if isinstance(err, UnknownTaskTypeError):
        return ApiError(404, "unknown_task_type", str(err), [{"known_task_types": err.known}])
    return ApiError(422, "invalid_request", str(err), [{"field": err.field}] if err.field else None)


def openapi_paths() -> dict[str, Any]:
    """The pauses' part of the OpenAPI document (`executor.http.api.openapi_document`)."""
    from executor.http.api import _errors

    answer = {
        "description": "`changed` says whether this call changed anything (`message` says what).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "task_type": {"type": "string"},
                        "changed": {"type": "boolean"},
                        "message": {"type": "string"},
                    },
                }
            }
        },
    }
    task_type = {"name": "task_type", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/paused": {
            "get": {
                "operationId": "listPaused",
                "summary": "The paused task types (`executor paused --json`)",
                "responses": {
                    "200": {
                        "description": "`items`: task_type, paused_at, reason.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                }
                | _errors(),
            }
        },
        "/task-types/{task_type}/pause": {
            "post": {
                "operationId": "pauseTaskType",
                "summary": "Hold back the task type's executions on every replica (aborts still run)",
                "parameters": [task_type],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"reason": {"type": "string", "maxLength": MAX_REASON}},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {"200": answer, **_errors(400, 404, 422)},
            }
        },
        "/task-types/{task_type}/resume": {
            "post": {
                "operationId": "resumeTaskType",
                "summary": "Let a paused task type run again",
                "parameters": [task_type],
                "responses": {"200": answer, **_errors(404, 422)},
            }
        },
    }
