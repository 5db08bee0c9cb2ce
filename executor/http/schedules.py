"""`/api/v1/schedules`: the schedules through HTTP, refused and shown as by `executor schedule`."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from executor.client import Client, SubmissionError, UnknownTaskTypeError
from executor.schedules.model import ScheduleError, ScheduleSpec
from executor.schedules.service import Schedules, parse_spec
from executor.schedules.views import schedule_dict


class ScheduleApi:
    def __init__(self, client: Client, prefix: str) -> None:
        self.schedules = Schedules(client)
        self.prefix = prefix

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/schedules", self.create, methods=["POST"]),
            Route("/schedules", self.list, methods=["GET"]),
            Route("/schedules/{name}", self.get, methods=["GET"]),
            Route("/schedules/{name}", self.delete, methods=["DELETE"]),
            Route("/schedules/{name}/pause", self.pause, methods=["POST"]),
            Route("/schedules/{name}/resume", self.resume, methods=["POST"]),
            Route("/schedules/{name}/run-now", self.run_now, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        from executor.http.api import ApiError, _body

        raw = await _body(request)
        try:
            data: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, "bad_json", f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the request body must be a JSON object")
        try:
            row = await self.schedules.add(parse_spec(data), "api")
        except UnknownTaskTypeError as err:
            raise ApiError(422, "unknown_task_type", str(err), [{"known_task_types": err.known}]) from None
        except (ScheduleError, SubmissionError) as err:
            status = 409 if "exists" in str(err) else 422
            raise ApiError(status, "invalid_schedule", f"schedule refused: {err}") from None
        return JSONResponse(
            schedule_dict(row), status_code=201, headers={"Location": f"{self.prefix}/schedules/{row.name}"}
        )

    async def list(self, request: Request) -> Response:
        return JSONResponse({"items": [schedule_dict(row) for row in await self.schedules.all()]})

    async def get(self, request: Request) -> Response:
        name = request.path_params["name"]
        row = await self.schedules.get(name)
        if row is None:
            raise _not_found(name)
        return JSONResponse(schedule_dict(row, await self.schedules.store.slots(row.id)))

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self.schedules.delete(name)
        except LookupError:
            raise _not_found(name) from None
        return Response(status_code=204)

    async def pause(self, request: Request) -> Response:
        return await self._toggle(request, pause=True)

    async def resume(self, request: Request) -> Response:
        return await self._toggle(request, pause=False)

    async def _toggle(self, request: Request, *, pause: bool) -> Response:
        name = request.path_params["name"]
        try:
            row = await (self.schedules.pause(name) if pause else self.schedules.resume(name))
        except LookupError:
            raise _not_found(name) from None
        return JSONResponse(schedule_dict(row))

    async def run_now(self, request: Request) -> Response:
        from executor.http.api import ApiError

        name = request.path_params["name"]
        try:
            execution_id = await self.schedules.run_now(name)
        except LookupError:
            raise _not_found(name) from None
        except (ScheduleError, SubmissionError) as err:
            raise ApiError(422, "invalid_schedule", f"run refused: {err}") from None
        return JSONResponse(
            {"id": execution_id},
            status_code=201,
            headers={"Location": f"{self.prefix}/executions/{execution_id}"},
        )


def _not_found(name: str) -> Exception:
    from executor.http.api import ApiError

    return ApiError(404, "not_found", f"no schedule named {name!r}")


def openapi_paths() -> dict[str, Any]:
    """The schedules' part of the OpenAPI document (`executor.http.api.openapi_document`)."""
    from executor.http.api import _errors

    spec = ScheduleSpec.model_json_schema()
    shown = {"description": "The schedule (`executor schedule get --json`).", "content": _object()}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

    def action(operation: str, summary: str, ok: str = "200") -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation,
                "summary": summary,
                "parameters": [name],
                "responses": {ok: shown, **_errors(404, 422)},
            }
        }

    return {
        "/schedules": {
            "post": {
                "operationId": "addSchedule",
                "summary": "Declare a schedule (refused with 409 when the name exists)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": spec}}},
                "responses": {"201": shown, "409": {"description": "A schedule of that name exists."}}
                | _errors(400, 422),
            },
            "get": {
                "operationId": "listSchedules",
                "summary": "The schedules, with their next and last slot",
                "responses": {"200": {"description": "`items`: the schedules.", "content": _object()}}
                | _errors(),
            },
        },
        "/schedules/{name}": {
            "get": {
                "operationId": "getSchedule",
                "summary": "One schedule, and its latest slots with the executions they made",
                "parameters": [name],
                "responses": {"200": shown, **_errors(404)},
            },
            "delete": {
                "operationId": "deleteSchedule",
                "summary": "Remove a schedule (the executions it made stay)",
                "parameters": [name],
                "responses": {"204": {"description": "Deleted."}, **_errors(404)},
            },
        },
        "/schedules/{name}/pause": action("pauseSchedule", "Make no executions until resumed"),
        "/schedules/{name}/resume": action("resumeSchedule", "Resume from the next slot after now"),
        "/schedules/{name}/run-now": action("runScheduleNow", "One execution now, outside the slots", "201"),
    }


def _object() -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object"}}}
