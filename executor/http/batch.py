"""`POST /api/v1/executions:batch`: many submissions in one request, stored all or nothing.

The body is `{"executions": [row, ...]}`, each row what `POST /api/v1/executions` takes. Rows are
checked by the client (`executor.bulk`), as `Client.submit_many` and `executor submit --from`
check them: one bad row refuses the batch (422, `invalid_batch`), every bad row named in `details`
with its number (from 1), its field and the client's words; nothing is stored.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from executor.bulk import BulkSubmissionError
from executor.client import Client, SubmissionError

#: Rows one request may carry; larger batches are sent as several requests.
MAX_BATCH_ROWS: Final = 10_000


class BatchApi:
    def __init__(self, client: Client, body_timeout: float) -> None:
        self.client = client
        self.body_timeout = body_timeout

    def routes(self) -> list[BaseRoute]:
        return [Route("/executions:batch", self.submit_batch, methods=["POST"])]

    async def submit_batch(self, request: Request) -> Response:
        from executor.http.api import ApiError, Json, _body, _json_type, _refused

        raw = await _body(request, self.body_timeout)
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ApiError(400, "bad_json", "the request body is nested too deeply to read") from None
        except ValueError as err:
            raise ApiError(400, "bad_json", f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", f"the request body must be a JSON object, not {_json_type(data)}")
        unknown = sorted(set(data) - {"executions"})
        if unknown:
            raise ApiError(
                422,
                "invalid_request",
                f"the request is invalid: {unknown[0]}: Extra inputs are not permitted",
            )
        rows = data.get("executions")
        if not isinstance(rows, list) or not rows:
            raise ApiError(
                422,
                "invalid_request",
                "the request is invalid: executions: must be a non-empty array of rows",
            )
        if len(rows) > MAX_BATCH_ROWS:
            raise ApiError(
                413,
                "payload_too_large",
                f"a batch holds at most {MAX_BATCH_ROWS} rows, got {len(rows)}: send several",
            )
        try:
            ids = await self.client.submit_many(rows)
        except BulkSubmissionError as err:
            raise ApiError(
                422, "invalid_batch", f"submission refused: {err}", [p.to_dict() for p in err.problems]
            ) from None
        except SubmissionError as err:
            raise _refused(err) from None
        return Json({"ids": ids}, status_code=201)


def openapi_paths() -> dict[str, Any]:
    """The batch's part of the OpenAPI document (`executor.http.api.openapi_document`)."""
    from executor.http.api import SubmitRequest, _errors, _ref

    request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["executions"],
        "properties": {
            "executions": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_ROWS,
                "items": _ref(SubmitRequest),
                "description": "Rows of the shape of `POST /executions`' body, stored all or nothing; "
                "every bad row is named in the refusal's `details` (`row` from 1, `field`, `message`).",
            }
        },
    }
    stored = {
        "type": "object",
        "required": ["ids"],
        "properties": {
            "ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The executions' ids, in row order; a row whose idempotency key was "
                "already stored (or repeated earlier in the batch) gets the id that key first got.",
            }
        },
    }
    return {
        "/executions:batch": {
            "post": {
                "operationId": "submitBatch",
                "summary": "Submit many executions, all or nothing, each row validated as `executor submit`",
                "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                "responses": {
                    "201": {
                        "description": "Every row stored, QUEUED (or found by its idempotency key).",
                        "content": {"application/json": {"schema": stored}},
                    },
                    **_errors(400, 408, 413, 422),
                },
            }
        }
    }
