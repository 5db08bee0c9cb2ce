"""The filters executions are listed, requeued and counted by, as SQL conditions.

Labels and errors are JSON text in their columns; reading a key differs by dialect, so each
condition is an element compiled per dialect (`sqlalchemy.ext.compiler`). Apart from
`statements.py` and `history.py` (which use it), so that both can without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, String, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from executor.core import Phase
from executor.store.tables import executions


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """Which executions a listing, a bulk requeue or a failures count is about. Every field left
    empty matches everything; times are seconds since the epoch (`created_at`)."""

    phases: tuple[Phase, ...] = ()
    task_type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: float | None = None
    created_before: float | None = None
    #: The `code` of the execution's error, exactly.
    error_code: str | None = None
    #: Text the execution's reason contains.
    reason: str | None = None


class _LabelIs(FunctionElement[bool]):
    """`labels[key] = value` for the labels column (JSON text): one label of an execution."""

    name = "label_is"
    type = Boolean()
    inherit_cache = True


@compiles(_LabelIs, "postgresql")
def _label_is_postgresql(element: _LabelIs, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, value = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(CAST({column} AS jsonb) ->> CAST({key} AS TEXT)) = CAST({value} AS TEXT)"


@compiles(_LabelIs, "sqlite")
def _label_is_sqlite(element: _LabelIs, compiler: SQLCompiler, **kw: Any) -> str:
    # json_each rather than json_extract: a key may hold the characters of a JSON path.
    column, key, value = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE key = {key} AND value = {value})"


class _ErrorCode(FunctionElement[str]):
    """The `code` of the error column (JSON text, or NULL)."""

    name = "error_code"
    type = String()
    inherit_cache = True


@compiles(_ErrorCode, "postgresql")
def _error_code_postgresql(element: _ErrorCode, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(CAST({column} AS jsonb) ->> 'code')"


@compiles(_ErrorCode, "sqlite")
def _error_code_sqlite(element: _ErrorCode, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"json_extract({column}, '$.code')"


def error_code_of() -> ColumnElement[str]:
    return _ErrorCode(executions.c.error)


def label_clauses(labels: Mapping[str, str]) -> list[ColumnElement[bool]]:
    """One condition per label: the execution carries every one of them."""
    return [
        _LabelIs(executions.c.labels, literal(key, String()), literal(value, String()))
        for key, value in labels.items()
    ]


def filter_clauses(selection: ExecutionFilter) -> list[ColumnElement[bool]]:
    """The conditions of `selection`, for a WHERE."""
    c = executions.c
    clauses: list[ColumnElement[bool]] = []
    if selection.phases:
        clauses.append(c.phase.in_([int(phase) for phase in selection.phases]))
    if selection.task_type is not None:
        clauses.append(c.task_type == selection.task_type)
    clauses.extend(label_clauses(selection.labels))
    if selection.created_after is not None:
        clauses.append(c.created_at >= selection.created_after)
    if selection.created_before is not None:
        clauses.append(c.created_at < selection.created_before)
    if selection.error_code is not None:
        clauses.append(error_code_of() == literal(selection.error_code, String()))
    if selection.reason is not None:
        clauses.append(_Contains(c.reason, literal(selection.reason, String())))
    return clauses


class _Contains(FunctionElement[bool]):
    """`text` contains `part`, matched as it is (LIKE would read `%` and `_` in it as patterns)."""

    name = "contains_text"
    type = Boolean()
    inherit_cache = True


@compiles(_Contains, "postgresql")
def _contains_postgresql(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    column, part = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(strpos({column}, CAST({part} AS TEXT)) > 0)"


@compiles(_Contains, "sqlite")
def _contains_sqlite(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    column, part = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(instr({column}, {part}) > 0)"
