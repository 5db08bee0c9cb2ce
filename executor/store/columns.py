"""The executions and events columns, declared once; the tables and the row codecs come from here.

A column is one `Col`: its SQL type, how its value is stored (`Codec`), and when a round's commit
writes it (`Commit`). From these lists `tables.py` builds the tables, and this module derives, once
at import time, the functions that move records in and out of rows by position: a claimed row to
an `ExecutionRecord`, a submission to the row an insert writes, a round's records to the rows of its
updates, an event to its row and back. Adding a column is one line here (and its migration).

The codecs are generated as Python source and compiled, the way `dataclasses` writes `__init__`:
they run for every row of every round, and a loop over the columns per row cost several times
what the unrolled code does (each column's value is read by position, converted inline, and the
record is built positionally; see `_record_decoder`). The generated source is kept on each function
as `__source__` for reading and debugging.
"""

from __future__ import annotations

import ast
import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, Final, cast

from sqlalchemy import Boolean, Column, Double, Integer, SmallInteger, String, Text, false, text
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.types import TypeEngine

from executor.core.phase import TERMINAL_PHASES, ExecutionError, Phase
from executor.core.records import (
    RECORD_FIELDS,
    EventRecord,
    ExecutionRecord,
    RecordDraft,
    RecordUpdate,
    encode_json,
    frozen_record,
)


class Codec(enum.Enum):
    """How a field's value is stored: the Python expressions that read it from a column's value and
    write it back, with `{v}` standing for the value."""

    #: Stored as it is.
    PLAIN = ("{v}", "{v}")
    #: A boolean: SQLite gives 0 and 1 back.
    FLAG = ("bool({v})", "{v}")
    #: A `Phase`, as its integer value (dictionary lookups: `Phase(value)` and `int(phase)` on an
    #: IntEnum run the enum's machinery for every row).
    PHASE = ("_PHASE_OF[{v}]", "_PHASE_VALUE[{v}]")
    #: A JSON object that is never NULL; the common empty one is built without decoding.
    JSON_OBJECT = ('{{}} if {v} == "{{}}" else _json({v})', '"{{}}" if not {v} else encode_json({v})')
    #: JSON, or NULL for None.
    JSON = ("_json({v}) if {v} is not None else None", "encode_json({v}) if {v} is not None else None")
    #: An `ExecutionError`, as the JSON of its dictionary; NULL for None.
    ERROR = (
        "ExecutionError.from_dict(_json({v})) if {v} else None",
        "encode_json({v}.to_dict()) if {v} else None",
    )

    def decode(self, value: str) -> str:
        return self.value[0].format(v=value)

    def encode(self, value: str) -> str:
        return self.value[1].format(v=value)


class Commit(enum.Enum):
    """Which rounds' commits write a column of `executions`."""

    #: Never: set at submission, or only by statements of their own (abort requests, leases).
    NEVER = "never"
    #: Every commit.
    ALWAYS = "always"
    #: Commits of rounds that changed the plugin's state (`RecordUpdate.state_changed`).
    STATE = "state"
    #: Commits of rounds that changed the outputs (`RecordUpdate.outputs_changed`).
    OUTPUTS = "outputs"
    #: Every commit, by the update statement itself (`next_round_at`: see `statements.py`).
    STATEMENT = "statement"


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    type: TypeEngine[Any] | type[TypeEngine[Any]]
    nullable: bool = True
    codec: Codec = Codec.PLAIN
    commit: Commit = Commit.NEVER
    #: What a commit writes instead of the encoded field, as a Python expression: `{v}` is the
    #: record's field, `{encoded}` its encoding; `item` (the `RecordUpdate`), `record`, `token`,
    #: `now` and `keep_lease` (the record keeps its lease past this commit) are in scope.
    commit_value: str | None = None
    primary_key: bool = False
    server_default: ColumnElement[Any] | TextClause | None = None

    def column(self) -> Column[Any]:
        """The column as the table declares it."""
        return Column(
            self.name,
            self.type,
            primary_key=self.primary_key,
            nullable=self.nullable and not self.primary_key,
            server_default=self.server_default,
        )


#: The executions table, in its order: each column is the `ExecutionRecord` field of its name.
EXECUTIONS: Final = (
    Col("id", String(36), primary_key=True),
    Col("task_type", String(255), nullable=False),
    Col("inputs", Text, nullable=False, codec=Codec.JSON_OBJECT),
    Col(
        "outputs",
        Text,
        codec=Codec.JSON,
        commit=Commit.OUTPUTS,
        # The round may have the JSON already (the output writer's text, stored as it is).
        commit_value="item.outputs_json if item.outputs_json is not None else {encoded}",
    ),
    Col("labels", Text, nullable=False, codec=Codec.JSON_OBJECT),
    Col("priority", Integer, nullable=False),
    # Where it stands (Phase as its integer value), and why.
    Col("phase", SmallInteger, nullable=False, codec=Codec.PHASE, commit=Commit.ALWAYS),
    Col("phase_version", Integer, nullable=False, commit=Commit.ALWAYS),
    Col("reason", Text, commit=Commit.ALWAYS),
    Col("error", Text, codec=Codec.ERROR, commit=Commit.ALWAYS),
    Col("info", Text, codec=Codec.JSON, commit=Commit.ALWAYS),
    # The plugin's own state between rounds, JSON, with the version the plugin gave it.
    Col("plugin_state", Text, commit=Commit.STATE),
    Col("plugin_state_version", Integer, nullable=False, commit=Commit.STATE),
    # Budgets and counters.
    Col("attempt", Integer, nullable=False, commit=Commit.ALWAYS),
    Col("max_attempts", Integer, nullable=False),
    Col("system_failures", Integer, nullable=False, commit=Commit.ALWAYS),
    Col("event_seq", Integer, nullable=False, commit=Commit.ALWAYS),
    Col("rounds", Integer, nullable=False, commit=Commit.ALWAYS),
    # Times, as seconds since the epoch.
    Col("created_at", Double, nullable=False),
    Col(
        "updated_at",
        Double,
        nullable=False,
        commit=Commit.ALWAYS,
        commit_value="{v} if {v} is not None else now",
    ),
    Col("next_round_at", Double, nullable=False, commit=Commit.STATEMENT),
    Col("attempt_started_at", Double, commit=Commit.ALWAYS),
    Col("finished_at", Double, commit=Commit.ALWAYS),
    Col("abort_requested", Boolean, nullable=False, codec=Codec.FLAG),
    Col("abort_reason", Text),
    # True once the phase is final and `finalize` has run: the row never needs a round again.
    Col("finalized", Boolean, nullable=False, codec=Codec.FLAG, commit=Commit.ALWAYS),
    # The lease of the replica working on it right now. An attempt that just ended keeps its lease
    # for the clean-up its round runs next, so no other replica runs `abort`/`finalize` meanwhile;
    # every other commit lets it go. A kept lease keeps the row's own expiry (`statements.py`).
    Col("lease_owner", String(255), commit=Commit.ALWAYS, commit_value="{v} if keep_lease else None"),
    Col("lease_token", String(36), commit=Commit.ALWAYS, commit_value="token if keep_lease else None"),
    Col("lease_expires_at", Double, commit=Commit.ALWAYS, commit_value="{v} if keep_lease else None"),
    # The lifecycle (migration 0002): clean-up owed by the current attempt, and per-submission limits.
    Col(
        "abort_owed", Boolean, nullable=False, codec=Codec.FLAG, commit=Commit.ALWAYS, server_default=false()
    ),
    Col("finalize_failures", Integer, nullable=False, commit=Commit.ALWAYS, server_default=text("0")),
    Col("finalize_error", Text, commit=Commit.ALWAYS),
    Col("timeout", Double),
    Col("deadline_at", Double),
    Col("backoff_base", Double),
    Col("backoff_max", Double),
    Col("idempotency_key", String(255)),
    # Migration 0004: the submission's not-before time, kept so every door can show it after the
    # first round has run (`next_round_at` moves on; this does not).
    Col("not_before", Double),
    # Migration 0008: which replicas may claim it (README: Queues and pinning). The claim writes
    # `pinned_host` (with the lease, for a row that asks for a pin); a commit never does.
    Col("queue", String(255), nullable=False, server_default=text("'default'")),
    Col("pin_to_host", Boolean, nullable=False, codec=Codec.FLAG, server_default=false()),
    Col("pinned_host", String(255)),
)

#: The events table, in its order: each column is the `EventRecord` field of its name.
EVENTS: Final = (
    Col("execution_id", String(36), primary_key=True),
    # 1, 2, ... per execution: the primary key is what makes a duplicate event impossible.
    Col("seq", Integer, primary_key=True),
    Col("attempt", Integer, nullable=False),
    Col("phase", SmallInteger, nullable=False, codec=Codec.PHASE),
    Col("phase_version", Integer, nullable=False),
    Col("reason", Text),
    Col("error", Text, codec=Codec.ERROR),
    Col("info", Text, codec=Codec.JSON),
    Col("occurred_at", Double, nullable=False),
)

EXECUTION_COLUMNS: Final = tuple(col.name for col in EXECUTIONS)
EVENT_COLUMNS: Final = tuple(col.name for col in EVENTS)

#: What a commit writes, in the order of the values of the rows `commit_rows` builds.
_ALWAYS: Final = tuple(col for col in EXECUTIONS if col.commit is Commit.ALWAYS)
_STATE: Final = tuple(col for col in EXECUTIONS if col.commit is Commit.STATE)
_OUTPUTS: Final = tuple(col for col in EXECUTIONS if col.commit is Commit.OUTPUTS)


def committed_columns(with_state: bool, with_outputs: bool) -> tuple[str, ...]:
    """The columns a commit of one shape of change writes from its rows, in their order there
    (`next_round_at`, the id and the token follow; see `commit_rows`)."""
    columns = _ALWAYS + (_STATE if with_state else ()) + (_OUTPUTS if with_outputs else ())
    return tuple(col.name for col in columns)


# -- the codecs, derived -----------------------------------------------------------------------------

#: A stored phase (its integer value) to the phase; an unknown value raises, as `Phase(value)` does.
_PHASE_OF: dict[int, Phase] = {int(phase): phase for phase in Phase}
_PHASE_VALUE: dict[Phase, int] = {phase: int(phase) for phase in Phase}

_raw_decode = json.JSONDecoder().raw_decode


def _json(text: str) -> Any:
    """`json.loads(text)`, faster for the compact JSON the store writes (see `encode_json`).

    `json.loads` runs two regular expressions around the C scanner, for surrounding whitespace,
    which cost as much as decoding a small object. `raw_decode` decodes from the first character;
    anything it does not take whole (whitespace, trailing text, errors) goes to `json.loads`, so
    the result, or the error, is the same.
    """
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_NAMESPACE: Final[dict[str, Any]] = {
    "_json": _json,
    "_PHASE_OF": _PHASE_OF,
    "_PHASE_VALUE": _PHASE_VALUE,
    "encode_json": encode_json,
    "ExecutionError": ExecutionError,
    "EventRecord": EventRecord,
    "RecordDraft": RecordDraft,
    "frozen_record": frozen_record,
    "TERMINAL_PHASES": TERMINAL_PHASES,
    "Phase": Phase,
}


def _compile(name: str, source: str, namespace: dict[str, Any] | None = None) -> Callable[..., Any]:
    namespace = dict(_NAMESPACE if namespace is None else namespace)
    exec(compile(source, f"<executor.store.columns {name}>", "exec"), namespace)
    function = namespace[name]
    function.__source__ = source
    return cast(Callable[..., Any], function)


def _check_fields(table: str, columns: Sequence[Col], record_fields: Sequence[str]) -> None:
    names = [col.name for col in columns]
    if sorted(names) != sorted(record_fields):
        raise TypeError(
            f"the {table} columns and the record's fields differ: "
            f"columns only {sorted(set(names) - set(record_fields))}, "
            f"fields only {sorted(set(record_fields) - set(names))}"
        )


def _local(col: Col) -> str:
    return f"c_{col.name}"  # never a builtin's name (`id`)


def _record_decoder() -> Callable[[Sequence[Any]], ExecutionRecord]:
    """A whole row of `executions`, in table order, as a record.

    This runs for every row a claim returns, and costs more than the claim's SQL does: the row is
    unpacked by position (by name cost more than building the record), each value converted
    inline. The record gets its arguments by position too, in the order of its fields: passing
    37 keywords cost a fifth of the record's construction. It is made as a draft, then frozen
    (see `frozen_record`): the frozen constructor alone cost 2.7 µs a row.
    """
    _check_fields("executions", EXECUTIONS, RECORD_FIELDS)
    by_field = {col.name: col for col in EXECUTIONS}
    unpacked = ", ".join(_local(col) for col in EXECUTIONS)
    arguments = ",\n            ".join(
        by_field[name].codec.decode(_local(by_field[name])) for name in RECORD_FIELDS
    )
    source = (
        "def decode_execution(row):\n"
        f"    ({unpacked},) = row\n"
        "    return frozen_record(\n"
        "        RecordDraft(\n"
        f"            {arguments},\n"
        "        )\n"
        "    )\n"
    )
    return _compile("decode_execution", source)


def _names_in(expression: str) -> list[str]:
    return [node.id for node in ast.walk(ast.parse(expression, mode="eval")) if isinstance(node, ast.Name)]


def new_row_encoder(
    name: str, given: Mapping[str, str], parameters: Sequence[str]
) -> Callable[..., dict[str, Any]]:
    """A function of `parameters` that returns a new execution's row by column name: the fields in
    `given`, each a Python expression over the parameters, and `ExecutionRecord`'s defaults for the
    others. Values that do not depend on the parameters are encoded once, here.

    Built like the other codecs rather than as a record then encoded: constructing the frozen
    record by keywords first cost twice the row itself.
    """
    record_fields = {field_.name: field_ for field_ in fields(ExecutionRecord)}
    unknown = set(given) - set(record_fields)
    if unknown:
        raise TypeError(f"{name}: no such fields of ExecutionRecord: {sorted(unknown)}")
    namespace = dict(_NAMESPACE)
    lines, items = [], []
    for col in EXECUTIONS:
        constant = col.name in given and not set(_names_in(given[col.name])) & set(parameters)
        if col.name in given and not constant:
            lines.append(f"    {_local(col)} = {given[col.name]}\n")
            items.append(f"{col.name!r}: {col.codec.encode(_local(col))}")
            continue
        field_ = record_fields[col.name]
        if constant:
            default = eval(given[col.name], dict(_NAMESPACE))
        elif field_.default is not MISSING:
            default = field_.default
        elif field_.default_factory is not MISSING:
            default = field_.default_factory()
        else:
            raise TypeError(f"{name}: ExecutionRecord.{col.name} has no default: give it")
        namespace[f"default_{col.name}"] = eval(
            col.codec.encode("value"), dict(_NAMESPACE), {"value": default}
        )
        items.append(f"{col.name!r}: default_{col.name}")
    source = (
        f"def {name}({', '.join(parameters)}):\n"
        + "".join(lines)
        + "    return {\n"
        + "".join(f"        {item},\n" for item in items)
        + "    }\n"
    )
    return _compile(name, source, namespace)


#: Fields `commit_rows` reads into locals before the row (it decides the lease with them).
_READ_FIRST: Final = ("phase", "finalized", "finalize_failures")


def _committed_value(col: Col, lines: list[str]) -> str:
    """The expression a commit row holds for `col`; a field read more than once is read into a local
    first (`lines`), once."""
    if col.name in _READ_FIRST:
        field_ = _local(col)
        return (col.codec.encode("{v}") if col.commit_value is None else col.commit_value).replace(
            "{v}", field_
        )
    field_ = f"record.{col.name}"
    encoded = col.codec.encode("{v}")
    template = encoded if col.commit_value is None else col.commit_value.replace("{encoded}", encoded)
    if template.count("{v}") > 1:
        lines.append(f"        {_local(col)} = {field_}")
        field_ = _local(col)
    return template.replace("{v}", field_)


def _commit_rows_builder() -> Callable[
    [Sequence[RecordUpdate], str, float, Mapping[str, str] | None],
    dict[tuple[bool, bool], list[tuple[Any, ...]]],
]:
    """The rows of one update per shape of change (see `statements.Statements.update_round`):
    state and outputs are written only when the round changed them.

    Each row is built as one tuple, each field read once: this runs for every execution of every
    round. A row holds the `committed_columns` of its shape, then `next_round_at` for an abort
    requested while the round ran, `next_round_at` otherwise, the id, and the token the row must
    still hold: `token`, or the one `held` names for it (the lease of an earlier round whose call
    finished late, folded into this commit; a row that keeps its lease then takes `token`'s).
    """
    prelude: list[str] = []
    always = [_committed_value(col, prelude) for col in _ALWAYS]
    state_lines: list[str] = []
    state = [_committed_value(col, state_lines) for col in _STATE]
    outputs_lines: list[str] = []
    outputs = [_committed_value(col, outputs_lines) for col in _OUTPUTS]

    def indented(lines: list[str]) -> str:
        return "".join(f"    {line}\n" for line in lines)

    source = (
        "def commit_rows(updates, token, now, held=None):\n"
        "    groups = {}\n"
        "    held_by = held.get if held else None\n"
        "    for item in updates:\n"
        "        record = item.record\n"
        + "".join(f"        c_{name} = record.{name}\n" for name in _READ_FIRST)
        + "        terminal = c_phase in TERMINAL_PHASES\n"
        "        keep_lease = terminal and not c_finalized and c_finalize_failures == 0\n"
        + "".join(f"{line}\n" for line in prelude)
        + "        heavy = ()\n"
        "        if item.state_changed:\n"
        + indented(state_lines)
        + f"            heavy = ({', '.join(state)},)\n"
        "        if item.outputs_changed:\n"
        + indented(outputs_lines)
        + f"            heavy += ({', '.join(outputs)},)\n"
        "        next_round_at = record.next_round_at\n"
        "        row = (\n" + "".join(f"            {value},\n" for value in always) + "            *heavy,\n"
        "            # An abort requested meanwhile wakes a running execution, not one owing its clean-up.\n"
        "            next_round_at if terminal else now,\n"
        "            next_round_at,\n"
        "            record.id,\n"
        "            token if held_by is None else held_by(record.id, token),\n"
        "        )\n"
        "        shape = (item.state_changed, item.outputs_changed)\n"
        "        group = groups.get(shape)\n"
        "        if group is None:\n"
        "            groups[shape] = group = []\n"
        "        group.append(row)\n"
        "    return groups\n"
    )
    return _compile("commit_rows", source)


_EVENT_FIELDS: Final = tuple(field_.name for field_ in fields(EventRecord))


def _event_encoder() -> Callable[[EventRecord], tuple[Any, ...]]:
    """An event as the positional parameters of its insert, in `EVENT_COLUMNS`' order, built
    directly: a commit inserts at least one event per execution."""
    _check_fields("events", EVENTS, _EVENT_FIELDS)
    lines: list[str] = []
    values = []
    for col in EVENTS:
        field_ = f"event.{col.name}"
        if col.codec.encode("{v}").count("{v}") > 1:
            lines.append(f"    {_local(col)} = {field_}\n")
            field_ = _local(col)
        values.append(col.codec.encode(field_))
    source = "def encode_event(event):\n" + "".join(lines) + f"    return ({', '.join(values)},)\n"
    return _compile("encode_event", source)


def _event_decoder() -> Callable[[Sequence[Any]], EventRecord]:
    """A whole row of `events`, in table order, as an event."""
    by_field = {col.name: col for col in EVENTS}
    unpacked = ", ".join(_local(col) for col in EVENTS)
    arguments = ", ".join(by_field[name].codec.decode(_local(by_field[name])) for name in _EVENT_FIELDS)
    source = f"def decode_event(row):\n    ({unpacked},) = row\n    return EventRecord({arguments})\n"
    return _compile("decode_event", source)


decode_execution: Final = _record_decoder()
commit_rows: Final = _commit_rows_builder()
encode_event: Final = _event_encoder()
decode_event: Final = _event_decoder()


def event_row(event: EventRecord) -> dict[str, Any]:
    """An event as the row an insert writes, by column name."""
    return dict(zip(EVENT_COLUMNS, encode_event(event), strict=True))


#: A whole record as its row, by column name: the inverse of `decode_execution` (for restores and
#: the codec's round-trip test; new executions use `submissions.new_row`).
encode_execution: Final = new_row_encoder(
    "encode_execution", {name: f"record.{name}" for name in RECORD_FIELDS}, ("record",)
)
