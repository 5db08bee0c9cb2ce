"""The Python API over the store, for services that enqueue work and for the CLI.

A submission is checked before anything is stored: the task type must be one some plugin
handles, the inputs a JSON object. The daemon need not be running; it picks the work up when it is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from executor.core import Phase, parse_duration
from executor.core.records import EventRecord, ExecutionRecord
from executor.limits import (
    INT32_MIN,
    MAX_DURATION_SECONDS,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_NAME,
    MAX_REASON,
    int_problem,
    json_problem,
    name_problem,
    text_problem,
    time_problem,
)
from executor.plugin.registry import TaskTypeResolver
from executor.plugin.task_exec_context import field_errors
from executor.settings import Settings
from executor.store import AbortResult, Store, Submission
from executor.store.migrate import current_revision, head_revision, upgrade

#: A duration as every door takes it: a timedelta, seconds, or text such as "5s" or "1m30s".
Duration = timedelta | float | str


class SubmissionError(ValueError):
    """A submission refused before anything was stored; the message says why, and `field` names
    the option it is about (None when it is about the whole submission)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownTaskTypeError(SubmissionError):
    """No loaded plugin handles the task type; `known` lists those that are handled."""

    def __init__(self, task_type: str, known: list[str]) -> None:
        super().__init__(
            f"unknown task type {task_type!r}; known task types: {', '.join(known) or 'none'}", "task_type"
        )
        self.known = known


class SchemaError(RuntimeError):
    """The database is not migrated to the schema this version needs."""


class Client:
    def __init__(
        self,
        store: Store,
        *,
        task_types: TaskTypeResolver | None = None,
        default_max_attempts: int = 1,
        default_timeout: timedelta | None = None,
        default_deadline: timedelta | None = None,
        max_payload_bytes: int | None = None,
    ):
        self.store = store
        self._task_types = task_types
        self._default_max_attempts = default_max_attempts
        self._default_timeout = default_timeout
        self._default_deadline = default_deadline
        self._max_payload_bytes = max_payload_bytes

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        *,
        task_types: TaskTypeResolver | None = None,
        migrate: bool | None = None,
    ) -> Client:
        """Open the store the settings name (default: EXECUTOR_* and .env), bringing its schema up
        to date when allowed. Made by the composition root, as every door's client is."""
        from executor.app.parts import connect

        return await connect(settings, task_types=task_types, migrate=migrate)

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def submit(
        self,
        task_type: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        not_before: datetime | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 -- the execution's, not this call's
        deadline: Duration | None = None,
        idempotency_key: str | None = None,
        backoff_base: Duration | None = None,
        backoff_max: Duration | None = None,
    ) -> str:
        """Store an execution and return its id (with `idempotency_key`, the id the key first got).

        `timeout` bounds each attempt from its first round (then `TimeoutExpired`, retried while
        attempts remain); `deadline` bounds the whole execution from now (then `DeadlineExceeded`).
        Durations take a timedelta, seconds or text such as "5s"; unset ones take the daemon's defaults.
        """
        submission = self.validate(
            task_type,
            inputs,
            labels,
            priority,
            max_attempts,
            not_before,
            timeout=timeout,
            deadline=deadline,
            idempotency_key=idempotency_key,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        return await self.store.submit(submission, now=time.time())

    async def submit_many(self, submissions: Sequence[Submission]) -> list[str]:
        """Bulk submission of already-built submissions (each still validated)."""
        checked = [
            self.validate(
                s.task_type,
                s.inputs,
                s.labels,
                s.priority,
                s.max_attempts,
                None,
                timeout=s.timeout,
                deadline=s.deadline,
                idempotency_key=s.idempotency_key,
                backoff_base=s.backoff_base,
                backoff_max=s.backoff_max,
            )
            for s in submissions
        ]
        for s in submissions:
            if s.not_before is not None and time_problem(s.not_before) is not None:
                raise SubmissionError(
                    f"not_before {time_problem(s.not_before)}, got {s.not_before}", "not_before"
                )
        checked = [replace(c, not_before=s.not_before) for s, c in zip(submissions, checked, strict=True)]
        return await self.store.submit_many(checked, now=time.time())

    def validate(
        self,
        task_type: str,
        inputs: Mapping[str, Any] | None,
        labels: Mapping[str, str] | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        not_before: datetime | None = None,
        *,
        timeout: Duration | None = None,
        deadline: Duration | None = None,
        idempotency_key: str | None = None,
        backoff_base: Duration | None = None,
        backoff_max: Duration | None = None,
    ) -> Submission:
        _check_name("task_type", task_type)
        if self._task_types is not None and self._task_types.plugin_id_for(task_type) is None:
            raise UnknownTaskTypeError(task_type, self._task_types.task_types)
        inputs = {} if inputs is None else inputs
        if not isinstance(inputs, Mapping):
            raise SubmissionError(f"inputs must be a JSON object, not {type(inputs).__name__}", "inputs")
        # Before any other reader walks them: a model's validation recurses, and so does JSON.
        problem = json_problem(inputs)
        if problem is not None:
            raise SubmissionError(f"inputs cannot be stored: {problem}", "inputs")
        model = self._task_types.input_model_for(task_type) if self._task_types is not None else None
        if model is not None:
            try:
                inputs = model.model_validate(dict(inputs)).model_dump(mode="json")
            except ValidationError as err:
                raise SubmissionError(
                    f"inputs do not fit {model.__name__} for task type {task_type!r}: {field_errors(err)}",
                    "inputs",
                ) from None
        try:
            encoded = json.dumps(inputs, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as err:
            raise SubmissionError(f"inputs cannot be stored as JSON: {err}", "inputs") from None
        size = len(encoded.encode())
        if self._max_payload_bytes is not None and size > self._max_payload_bytes:
            raise SubmissionError(
                f"inputs are {size} bytes as JSON, over the limit of {self._max_payload_bytes} bytes "
                "(EXECUTOR_MAX_PAYLOAD_BYTES)",
                "inputs",
            )
        timeout_s = _seconds("timeout", timeout, self._default_timeout)
        deadline_s = _seconds("deadline", deadline, self._default_deadline)
        base_s = _seconds("backoff_base", backoff_base, None)
        max_s = _seconds("backoff_max", backoff_max, None)
        if base_s is not None and max_s is not None and base_s > max_s:
            raise SubmissionError("backoff_base must not exceed backoff_max", "backoff_base")
        if idempotency_key is not None:
            _check_name("idempotency_key", idempotency_key)
        _check_int("priority", priority)
        labels = _checked_labels(labels)
        attempts = self._default_max_attempts if max_attempts is None else max_attempts
        _check_int("max_attempts", attempts, low=1)
        when = _timestamp(not_before)
        return Submission(
            task_type=task_type,
            inputs=dict(inputs),
            labels=labels,
            priority=priority,
            max_attempts=attempts,
            not_before=when,
            timeout=timeout_s,
            deadline=deadline_s,
            backoff_base=base_s,
            backoff_max=max_s,
            idempotency_key=idempotency_key,
        )

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The execution, or None; an id no execution could have (not text the store holds) is
        simply not found, without asking the database."""
        if name_problem(execution_id) is not None:
            return None
        return await self.store.get(execution_id)

    async def list_executions(
        self,
        *,
        phases: Sequence[Phase] = (),
        task_type: str | None = None,
        unfinalized: bool = False,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[ExecutionRecord]:
        """Newest first; `before` (created_at, id) continues after that execution; `labels`: only
        executions carrying every one of them. A filter no execution could match is refused
        (`SubmissionError` naming it), not sent to the database."""
        if task_type is not None:
            _check_name("task_type", task_type)
        if before is not None:
            created_at, last_id = before
            if not math.isfinite(created_at) or name_problem(last_id) is not None:
                raise SubmissionError("the cursor names no execution", "cursor")
        _check_int("limit", limit, low=1)
        labels = _checked_labels(labels)
        return await self.store.list_executions(
            phases=phases,
            task_type=task_type,
            unfinalized=unfinalized,
            limit=limit,
            before=before,
            labels=labels,
        )

    def checked_labels(self, labels: Mapping[str, str] | None) -> dict[str, str]:
        """Labels to filter by, refused as a submission's labels are (`SubmissionError`)."""
        return _checked_labels(labels)

    async def events(self, execution_id: str) -> list[EventRecord]:
        if name_problem(execution_id) is not None:
            return []
        return await self.store.events(execution_id)

    async def abort(self, execution_id: str, reason: str = "Aborted by user") -> AbortResult:
        """Ask for an abort; the reason is checked as a submission's text is (`SubmissionError`)."""
        if not isinstance(reason, str):
            raise SubmissionError(f"reason must be text, not {type(reason).__name__}", "reason")
        _check_name("reason", reason, MAX_REASON)
        if name_problem(execution_id) is not None:
            return AbortResult.NOT_FOUND
        return await self.store.request_abort(execution_id, reason, now=time.time())


def _seconds(name: str, value: Duration | None, default: timedelta | None) -> float | None:
    """A duration option in seconds, refused with the same words whichever door it came through."""
    if value is None:
        return default.total_seconds() if default is not None else None
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError as err:
            raise SubmissionError(f"{name}: {err}", name) from None
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise SubmissionError(f"{name} must be a positive duration, got {value!r}", name)
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except OverflowError:
        seconds = math.inf
    if not seconds > 0:
        raise SubmissionError(f"{name} must be a positive duration, got {seconds:g}s", name)
    if not seconds <= MAX_DURATION_SECONDS:
        raise SubmissionError(f"{name} must be at most 100 years, got {seconds:g}s", name)
    return seconds


def _check_name(field: str, value: object, limit: int = MAX_NAME) -> None:
    if not isinstance(value, str):
        raise SubmissionError(f"{field} must be text, not {type(value).__name__}", field)
    problem = name_problem(value, limit)
    if problem is not None:
        raise SubmissionError(f"{field} {problem}", field)


def _check_int(field: str, value: object, *, low: int = INT32_MIN) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SubmissionError(f"{field} must be an int, not {type(value).__name__}", field)
    problem = int_problem(value, low)
    if problem is not None:
        raise SubmissionError(f"{field} {problem}, got {value}", field)


def _checked_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Labels bounded in count and size: every reader of an execution reads all of them."""
    if labels is not None and not isinstance(labels, Mapping):
        raise SubmissionError(f"labels must map strings to strings, not {type(labels).__name__}", "labels")
    labels = dict(labels or {})
    if len(labels) > MAX_LABELS:
        raise SubmissionError(f"labels: {len(labels)} labels, over the limit of {MAX_LABELS}", "labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SubmissionError("labels must map strings to strings", "labels")
        problem = name_problem(key, MAX_LABEL_KEY)
        if problem is not None:
            raise SubmissionError(f"labels: a key {problem}", "labels")
        problem = text_problem(value) or (
            f"is {len(value)} characters, over the limit of {MAX_LABEL_VALUE}"
            if len(value) > MAX_LABEL_VALUE
            else None
        )
        if problem is not None:
            raise SubmissionError(f"labels: the value of {key!r} {problem}", "labels")
    return labels


def _timestamp(not_before: datetime | None) -> float | None:
    """Seconds since the epoch of an aware time the views can format back (see `limits.LATEST`)."""
    if not_before is None:
        return None
    if not isinstance(not_before, datetime):
        raise SubmissionError(f"not_before must be a datetime, not {type(not_before).__name__}", "not_before")
    if not_before.tzinfo is None:
        raise SubmissionError("not_before must be timezone-aware", "not_before")
    try:
        seconds = not_before.timestamp()
    except (OverflowError, ValueError):
        seconds = math.inf
    problem = time_problem(seconds)
    if problem is not None:
        raise SubmissionError(f"not_before {problem}, got {not_before.isoformat()}", "not_before")
    return seconds


async def ensure_schema(store: Store, *, migrate: bool) -> None:
    head = head_revision()
    current = await current_revision(store.engine)
    if current == head:
        return
    if not migrate:
        raise SchemaError(
            f"the database {store.url} is at schema revision {current or 'none'}, this executor needs "
            f"{head}: run `executor migrate` (or unset EXECUTOR_MIGRATE_ON_START=false)"
        )
    await upgrade(store.engine)
