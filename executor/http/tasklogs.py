"""`GET /api/v1/executions/{id}/logs`: an execution's log file (`executor.tasklogs`), as `executor logs`.

Served by the daemon on the host that runs the work (the file is there). `offset` says where to
start (negative: from the end); the answer is raw text and its headers say where to go on:
`X-Log-Offset` (the next offset) and `X-Log-Size`. A follower polls with the offset it got.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from executor.client import Client
from executor.tasklogs import MAX_CHUNK, NoLogError, log_path, read_log

#: Offsets a request may give: what a signed 64-bit integer holds.
OFFSET_LIMIT = 2**63 - 1


class LogApi:
    def __init__(self, client: Client) -> None:
        self.client = client

    def routes(self) -> list[BaseRoute]:
        return [Route("/executions/{id}/logs", self.logs, methods=["GET"])]

    async def logs(self, request: Request) -> Response:
        from executor.http.api import ApiError, _int_param, _not_found

        execution_id = request.path_params["id"]
        offset = _int_param(request.query_params.get("offset"), "offset", 0, -OFFSET_LIMIT, OFFSET_LIMIT)
        limit = _int_param(request.query_params.get("limit"), "limit", MAX_CHUNK, 1, MAX_CHUNK)
        record = await self.client.get(execution_id)
        if record is None:
            raise _not_found(execution_id)
        try:
            chunk = read_log(log_path(record), offset, limit)
        except NoLogError as err:
            raise ApiError(404, "no_log", str(err)) from None
        return Response(
            chunk.data,
            media_type="text/plain; charset=utf-8",
            headers={
                "X-Log-Offset": str(chunk.next_offset),
                "X-Log-Size": str(chunk.size),
                "X-Execution-Phase": record.phase.name,
            },
        )


def openapi_paths() -> dict[str, Any]:
    """The logs' part of the OpenAPI document (`executor.http.api.openapi_document`)."""
    from executor.http.api import _errors, _id_param

    def integer(name: str, low: int, high: int, text: str) -> dict[str, Any]:
        schema = {"type": "integer", "minimum": low, "maximum": high}
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}

    header = {"schema": {"type": "integer"}}
    return {
        "/executions/{id}/logs": {
            "get": {
                "operationId": "getLogs",
                "summary": "An execution's output log (of a shell command, say), from an offset",
                "parameters": [
                    _id_param(),
                    integer("offset", -OFFSET_LIMIT, OFFSET_LIMIT, "First byte; negative: from the end."),
                    integer("limit", 1, MAX_CHUNK, "Most bytes to return (default and maximum 1 MiB)."),
                ],
                "responses": {
                    "200": {
                        "description": "The bytes from `offset`; `X-Log-Offset` is where to read on.",
                        "headers": {"X-Log-Offset": header, "X-Log-Size": header},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 404),
                },
            }
        }
    }
