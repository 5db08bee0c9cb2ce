"""The README's example plugins (plugins/examples/) run as documented: loaded with the loader
exactly as a daemon would load them, driven through the real loop over a real SQLite store."""

from __future__ import annotations

import pytest

from executor.core import Phase
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry
from executor.store import Store
from tests.webapi_support import EXAMPLES, Harness, JobServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def test_the_examples_directory_registers_every_example() -> None:
    registry = PluginRegistry()
    load_directory(registry, EXAMPLES)
    ids = {entry.id: list(entry.registered_task_types) for entry in registry.entries}
    assert ids == {
        "example-countdown": ["example-countdown"],
        "example-primes": ["example-primes"],
        "example-remote-job": ["example-remote-job"],
    }


async def test_the_countdown_example_counts_down_round_by_round(store: Store, database_url: str) -> None:
    h = await Harness.build(store, database_url, extra_dirs=(EXAMPLES,), step=1.0)
    try:
        [execution_id, invalid] = await h.submit("example-countdown", [{"count": 3}, {"count": "three"}])
        rounds = await h.drive(lambda: h.finished([execution_id, invalid]))
    finally:
        await h.aclose()

    record = await store.get(execution_id)
    assert (record.phase, record.outputs) == (Phase.SUCCESS, {"rounds": 3})
    assert rounds == 4
    versions = [(e.phase, e.phase_version) for e in await store.events(execution_id)]
    assert versions[-4:] == [(Phase.RUNNING, 0), (Phase.RUNNING, 1), (Phase.RUNNING, 2), (Phase.SUCCESS, 0)]
    assert ((await store.get(invalid)).phase, (await store.get(invalid)).reason) == (
        Phase.PERMANENT_FAILURE,
        "InvalidInput",
    )


async def test_the_remote_job_example_runs_a_job_and_holds_its_quota(
    store: Store, database_url: str, server: JobServer
) -> None:
    server.knobs.complete_after = 0.1
    h = await Harness.build(
        store,
        database_url,
        extra_dirs=(EXAMPLES,),
        plugin_config={
            "example-remote-job": {"resync_interval": 0.05, "resource_quotas": {"example-jobs": 1}}
        },
    )
    try:
        ids = await h.submit("example-remote-job", [{"url": server.url}, {"url": server.url}])
        most_live = 0

        async def done() -> bool:
            nonlocal most_live
            most_live = max(most_live, server.live_jobs())
            return await h.finished(ids)

        await h.drive(done, cache_plugin="example-remote-job")
        records = await h.records(ids)
    finally:
        await h.aclose()
    assert [r.phase for r in records] == [Phase.SUCCESS, Phase.SUCCESS]
    assert {r.outputs["name"] for r in records} == {f"{i}-1" for i in ids}
    assert most_live == 1  # the quota of one: the second job waited for the first
    phases = [e.phase for r in records for e in await store.events(r.id)]
    assert Phase.WAITING_FOR_RESOURCES in phases


def test_the_guide_shows_the_remote_job_example_as_it_is() -> None:
    """Every line of the remote-service plugins guide's example (bodies elided as `...`, comments
    aside) is a line of plugins/examples/remote_job.py, the file the restart tests run in the daemon."""
    section = (EXAMPLES.parent.parent / "docs" / "guides" / "remote-plugins.md").read_text()
    block = section[section.index("```python\n") + len("```python\n") :]
    block = block[: block.index("```")]
    example = {
        line.split("  # ")[0].strip() for line in (EXAMPLES / "remote_job.py").read_text().splitlines()
    }
    shown = [line.split("  # ")[0].strip().removesuffix(" ...") for line in block.splitlines()]
    missing = [line for line in shown if line and line not in example]
    assert missing == []
    assert "class RemoteJobPlugin(AsyncPlugin[Meta, Job]):" in shown
    assert not any("resource_meta_type" in line for line in example)  # the parameters are enough
