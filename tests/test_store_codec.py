"""The column map and the codecs derived from it: a record survives the trip through a row of
each real database, every column of the migrated tables is in the map, and the store raises its
own errors, telling a refused value from a database that is away."""

from __future__ import annotations

import string
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from executor.core import Phase
from executor.core.phase import ErrorKind, ExecutionError
from executor.core.records import RECORD_FIELDS, EventRecord, ExecutionRecord
from executor.store import Store, StoreRefused, StoreUnavailable, Submission, is_unavailable
from executor.store.columns import (
    EVENT_COLUMNS,
    EXECUTION_COLUMNS,
    decode_event,
    decode_execution,
    encode_event,
    encode_execution,
)
from executor.store.migrate import upgrade
from executor.store.tables import events, executions

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

# -- records as a database can hold them ------------------------------------------------------------

#: Text both databases store as it is: no NUL (PostgreSQL refuses it), no lone surrogates (not UTF-8).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
short_texts = st.text(string.ascii_letters + string.digits + "-_.é", min_size=1, max_size=36)
int32 = st.integers(-(2**31), 2**31 - 1)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),  # inside JSON anything goes, NUL included: it is escaped
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
errors = st.builds(ExecutionError, code=texts, message=texts, kind=st.sampled_from(list(ErrorKind)))


@st.composite
def records(draw: st.DrawFn) -> ExecutionRecord:
    optional_time = st.none() | times
    return ExecutionRecord(
        id=draw(short_texts),
        task_type=draw(short_texts),
        inputs=draw(json_objects),
        phase=draw(st.sampled_from(list(Phase))),
        phase_version=draw(int32),
        created_at=draw(times),
        next_round_at=draw(times),
        attempt=draw(int32),
        max_attempts=draw(int32),
        system_failures=draw(int32),
        priority=draw(int32),
        labels=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        outputs=draw(st.none() | json_objects),
        reason=draw(st.none() | texts),
        error=draw(st.none() | errors),
        info=draw(st.none() | json_objects),
        plugin_state=draw(st.none() | texts),
        plugin_state_version=draw(int32),
        event_seq=draw(int32),
        rounds=draw(int32),
        attempt_started_at=draw(optional_time),
        updated_at=draw(times),  # NOT NULL in the table: a stored record always has one
        finished_at=draw(optional_time),
        abort_requested=draw(st.booleans()),
        abort_reason=draw(st.none() | texts),
        finalized=draw(st.booleans()),
        abort_owed=draw(st.booleans()),
        finalize_failures=draw(int32),
        finalize_error=draw(st.none() | texts),
        timeout=draw(optional_time),
        deadline_at=draw(optional_time),
        backoff_base=draw(optional_time),
        backoff_max=draw(optional_time),
        idempotency_key=draw(st.none() | short_texts),
        lease_owner=draw(st.none() | short_texts),
        lease_token=draw(st.none() | short_texts),
        lease_expires_at=draw(optional_time),
    )


event_records = st.builds(
    EventRecord,
    execution_id=short_texts,
    seq=int32,
    attempt=int32,
    phase=st.sampled_from(list(Phase)),
    phase_version=int32,
    occurred_at=times,
    reason=st.none() | texts,
    error=st.none() | errors,
    info=st.none() | json_objects,
)

# -- one store per dialect, shared by a property's examples -------------------------------------------


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture
def shared_store(database_url: str, portal: BlockingPortal) -> Iterator[Store]:
    store = Store.from_url(database_url)
    portal.call(upgrade, store.engine)
    try:
        yield store
    finally:
        portal.call(store.close)


async def _through_the_table(store: Store, record: ExecutionRecord, event: EventRecord) -> tuple[Any, ...]:
    async with store.engine.begin() as conn:
        await conn.execute(text("DELETE FROM events"))
        await conn.execute(text("DELETE FROM executions"))
        await conn.execute(executions.insert(), [encode_execution(record)])
        await conn.execute(events.insert(), [dict(zip(EVENT_COLUMNS, encode_event(event), strict=True))])
    return await store.get(record.id), await store.events(event.execution_id)


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(record=records(), event=event_records)
def test_a_record_and_an_event_survive_a_row_of_the_real_database(
    shared_store: Store, portal: BlockingPortal, record: ExecutionRecord, event: EventRecord
) -> None:
    stored, stored_events = portal.call(_through_the_table, shared_store, record, event)
    assert stored == record
    assert stored_events == [event]


@settings(max_examples=200, deadline=None)
@given(record=records(), event=event_records)
def test_the_codecs_are_inverse_on_the_values_they_write(record: ExecutionRecord, event: EventRecord) -> None:
    row = encode_execution(record)
    assert list(row) == list(EXECUTION_COLUMNS)
    assert decode_execution(tuple(row.values())) == record
    assert decode_event(encode_event(event)) == event


# -- the map covers the tables ------------------------------------------------------------------------


async def test_the_column_map_names_every_column_of_the_migrated_tables(store: Store) -> None:
    """The tables are built from the map; this holds the map to what the migrations made, so a
    migration that adds a column the map lacks (or the reverse) fails here."""

    def columns(connection: Any) -> dict[str, list[str]]:
        inspector = inspect(connection)
        return {
            table: [c["name"] for c in inspector.get_columns(table)] for table in ("executions", "events")
        }

    async with store.engine.connect() as conn:
        found = await conn.run_sync(columns)
    assert sorted(found["executions"]) == sorted(EXECUTION_COLUMNS)
    assert sorted(found["events"]) == sorted(EVENT_COLUMNS)
    assert sorted(EXECUTION_COLUMNS) == sorted(RECORD_FIELDS)


def test_a_record_field_without_a_column_is_refused_at_import() -> None:
    from executor.store import columns

    with pytest.raises(TypeError, match="fields only \\['extra'\\]"):
        columns._check_fields("executions", columns.EXECUTIONS, (*RECORD_FIELDS, "extra"))
    with pytest.raises(TypeError, match="columns only \\['id'\\]"):
        columns._check_fields("executions", columns.EXECUTIONS, RECORD_FIELDS[1:])


# -- the store's own errors -----------------------------------------------------------------------------


async def test_a_value_out_of_the_database_range_is_refused_not_an_outage(store: Store) -> None:
    # Beyond 64 bits on SQLite, beyond 32 on PostgreSQL's INTEGER.
    with pytest.raises(StoreRefused) as refused:
        await store.submit(Submission("echo", priority=2**64), now=T0)
    assert not is_unavailable(refused.value)
    assert await store.list_executions() == []


async def test_a_nul_character_is_refused_by_postgres(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    try:
        await upgrade(store.engine)
        with pytest.raises(StoreRefused, match="CharacterNotInRepertoire"):
            await store.submit(Submission("echo", idempotency_key="a\x00b"), now=T0)
    finally:
        await store.close()


async def test_a_database_that_does_not_answer_is_unavailable() -> None:
    store = Store.from_url("postgresql+asyncpg://postgres@127.0.0.1:9/none")  # the discard port
    try:
        calls: list[Callable[[], Any]] = [
            lambda: store.get("x"),
            lambda: store.claim(owner="o", token="t", limit=1, lease_ttl=1, now=T0),
            lambda: store.submit(Submission("echo"), now=T0),
            lambda: store.due_in(T0),
            store.ping,
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as unavailable:
                await call()
            assert is_unavailable(unavailable.value)
    finally:
        await store.close()


async def test_a_sqlite_database_it_cannot_open_is_unavailable() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store.from_url(f"sqlite+aiosqlite:///{Path(directory)}")  # a directory, not a file
        try:
            with pytest.raises(StoreUnavailable, match="OperationalError"):
                await store.get("x")
        finally:
            await store.close()


def test_errors_that_are_not_the_database_pass_unchanged() -> None:
    from executor.store.guard import guarded

    with pytest.raises(KeyError), guarded:
        raise KeyError("a bug")
    assert is_unavailable(ExceptionGroup("round", [StoreUnavailable("away"), ConnectionResetError()]))
    assert not is_unavailable(ExceptionGroup("round", [StoreUnavailable("away"), StoreRefused("no")]))


async def test_an_encoding_failure_is_the_callers_not_the_database(store: Store) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        await store.submit(Submission("echo", {"x": float("nan")}), now=T0)
