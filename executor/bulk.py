"""Bulk submission: many executions checked as one batch, then stored all or nothing.

Every door takes a batch as rows of the shape `POST /api/v1/executions` takes one submission in
(`task_type`, `inputs` and the options of `executor submit`), as Python values or as JSON: the
client (`Client.submit_many`), `executor submit TYPE --from FILE` (JSON lines) and
`POST /api/v1/executions:batch`. Every row is checked by `Client.validate`, as a single
submission is, before any is stored; one refused row refuses the batch, and the refusal names
each bad row (numbered from 1) with the client's own words about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from executor.client import SubmissionError
from executor.store import Submission
from executor.store.statements import DEFAULT_QUEUE

if TYPE_CHECKING:
    from executor.client import Client

#: What a row may hold: the task type, the inputs, and every option of `executor submit`.
ROW_FIELDS: Final = (
    "task_type",
    "inputs",
    "labels",
    "priority",
    "max_attempts",
    "not_before",
    "timeout",
    "deadline",
    "idempotency_key",
    "backoff_base",
    "backoff_max",
    "queue",
    "pin_to_host",
)
#: Bad rows a refusal's message names; `BulkSubmissionError.problems` holds all of them.
NAMED_IN_MESSAGE: Final = 10


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row was refused: `row` counts from 1, `field` names the option (or None)."""

    row: int
    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


#: A row: a mapping of `ROW_FIELDS` (JSON or Python values), or an already-built `Submission`;
#: or the `RowProblem` of a row its door could not read (a line of a file that is not JSON).
Row = Mapping[str, Any] | Submission | RowProblem


class BulkSubmissionError(SubmissionError):
    """A batch refused, nothing of it stored; `problems` names every bad row."""

    def __init__(self, problems: list[RowProblem], rows: int) -> None:
        named = "; ".join(f"row {p.row}: {p.message}" for p in problems[:NAMED_IN_MESSAGE])
        more = len(problems) - NAMED_IN_MESSAGE
        super().__init__(
            f"{len(problems)} of {rows} rows refused, nothing stored: {named}"
            + (f"; and {more} more" if more > 0 else "")
        )
        self.problems = problems
        self.rows = rows


def check_rows(client: Client, rows: list[Row], task_type: str | None = None) -> list[Submission]:
    """Every row validated by `client`; `BulkSubmissionError` naming the bad ones, if any.
    `task_type` is the task type of rows that name none."""
    checked: list[Submission] = []
    problems: list[RowProblem] = []
    for number, row in enumerate(rows, 1):
        if isinstance(row, RowProblem):
            problems.append(row)
            continue
        try:
            checked.append(check_row(client, row, task_type))
        except SubmissionError as err:
            problems.append(RowProblem(number, err.field, str(err)))
    if problems:
        raise BulkSubmissionError(problems, len(rows))
    return checked


def check_row(client: Client, row: Row, task_type: str | None = None) -> Submission:
    if isinstance(row, Submission):
        return client.validate(
            row.task_type,
            row.inputs,
            row.labels,
            row.priority,
            row.max_attempts,
            _time_of(row.not_before),
            timeout=row.timeout,
            deadline=row.deadline,
            idempotency_key=row.idempotency_key,
            backoff_base=row.backoff_base,
            backoff_max=row.backoff_max,
            # A Submission's defaults mean "not said": the plugin entry's placement applies.
            queue=row.queue if row.queue != DEFAULT_QUEUE else None,
            pin_to_host=row.pin_to_host or None,
        )
    if not isinstance(row, Mapping):
        raise SubmissionError(f"a row must be a JSON object, not {type(row).__name__}")
    unknown = [key for key in row if key not in ROW_FIELDS]
    if unknown:
        raise SubmissionError(f"unknown option {unknown[0]!r}; a row takes: {', '.join(ROW_FIELDS)}", "row")
    row_type = row.get("task_type", task_type)
    if row_type is None:
        raise SubmissionError("task_type is missing", "task_type")
    return client.validate(
        row_type,
        row.get("inputs"),
        row.get("labels"),
        row.get("priority", 0),
        row.get("max_attempts"),
        _when(row.get("not_before")),
        timeout=row.get("timeout"),
        deadline=row.get("deadline"),
        idempotency_key=row.get("idempotency_key"),
        backoff_base=row.get("backoff_base"),
        backoff_max=row.get("backoff_max"),
        queue=row.get("queue"),
        pin_to_host=row.get("pin_to_host"),
    )


def _when(value: object) -> Any:
    """`not_before` as JSON gives it (ISO 8601 text) read into the datetime the client checks."""
    if not isinstance(value, str):
        return value  # None, a datetime, or a wrong type the client refuses in its own words
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise SubmissionError(
            f"not_before must be an ISO 8601 time, such as 2030-01-01T00:00:00Z, got {value!r}", "not_before"
        ) from None


def _time_of(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        raise SubmissionError(
            "not_before must be between 1970-01-01 and 9000-01-01 (UTC)", "not_before"
        ) from None
