"""`/api/v1/schedules` over a real store: declared, refused with the CLI's words, paused, run now."""

from __future__ import annotations

import pytest

from executor.store import Store
from executor.store.schedules import ScheduleStore
from tests.http_support import serve_app

pytestmark = pytest.mark.anyio

API = "/api/v1/schedules"


async def test_schedules_through_the_api(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url)
    http = served.http
    body = {"name": "hourly", "task_type": "echo", "cron": "0 * * * *", "timezone": "Europe/Berlin"}
    created = await http.post(API, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["next_slot"].endswith(":00:00Z")
    assert (await http.post(API, json=body)).status_code == 409

    for bad, words in [
        ({**body, "name": "x", "cron": "0 * *"}, "invalid cron expression"),
        ({**body, "name": "x", "timezone": "Nowhere/Else"}, "unknown time zone"),
        ({**body, "name": "x", "task_type": "nope"}, "unknown task type"),
        ({**body, "name": "x", "misfire": "sometimes"}, "misfire"),
    ]:
        refused = await http.post(API, json=bad)
        assert refused.status_code == 422, refused.text
        assert words in refused.json()["error"]["message"]
    assert [s.name for s in await ScheduleStore(store).all()] == ["hourly"]  # nothing else stored

    paused = await http.post(f"{API}/hourly/pause")
    assert paused.json()["paused"] is True and paused.json()["next_slot"] is None
    assert (await http.post(f"{API}/hourly/resume")).json()["next_slot"] is not None
    run = await http.post(f"{API}/hourly/run-now")
    assert run.status_code == 201
    execution = (await http.get(f"/api/v1/executions/{run.json()['id']}")).json()
    assert execution["labels"]["schedule"] == "hourly"
    one = (await http.get(f"{API}/hourly")).json()
    assert [s["execution_id"] for s in one["slots"]] == [run.json()["id"]]
    assert [s["name"] for s in (await http.get(API)).json()["items"]] == ["hourly"]
    assert (await http.delete(f"{API}/hourly")).status_code == 204
    assert (await http.get(f"{API}/hourly")).status_code == 404
