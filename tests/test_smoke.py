from __future__ import annotations

import time

import pytest

from executor.core import Phase
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio


async def test_submit_claim_commit_roundtrip(store: Store) -> None:
    [execution_id] = await store.submit_many([Submission("echo", {"a": 1})], now=time.time())
    claimed = await store.claim(owner="me", token="t1", limit=10, lease_ttl=30, now=time.time() + 1)
    assert [r.id for r in claimed] == [execution_id]
    assert claimed[0].phase is Phase.QUEUED
    again = await store.claim(owner="me", token="t2", limit=10, lease_ttl=30, now=time.time() + 1)
    assert again == []
