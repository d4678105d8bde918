"""Blocking queries.

Source: https://developer.hashicorp.com/consul/api-docs/features/blocking
(hashicorp/consul website/content/api-docs/features/blocking.mdx):
- endpoints that support blocking return `X-Consul-Index`; a request with
  `index` set to it "will hang until a change in the system occurs, or the
  maximum timeout is reached";
- `wait` gives the maximum duration; "A small random amount of additional
  wait time is added to the supplied maximum wait time ... This adds up to
  wait / 16 additional time to the maximum duration";
- "the return of a blocking request is no guarantee of a change".
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from support import raw

NODE = "node-1"
SLACK = 1.5  # scheduling slack on a loaded 2-core machine, in seconds


def in_background(fn):
    pool = ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future, started


def test_kv_blocking_query_returns_when_the_key_changes(sandbox):
    """A blocking read of a key (`GET /v1/kv/:key?index=&wait=`) returns as
    soon as the key changes, with a higher X-Consul-Index, which for a single
    key is its ModifyIndex (blocking queries docs; KV docs, "ModifyIndex ...
    corresponds to the X-Consul-Index header value")."""
    c = sandbox.client()
    assert c.kv.put("conformance/blocking", "one") is True
    index, entry = c.kv.get("conformance/blocking")
    assert int(index) == entry["ModifyIndex"]

    blocked = threading.Event()

    def watch():
        blocked.set()
        return c.kv.get("conformance/blocking", index=index, wait="20s")

    future, started = in_background(watch)
    blocked.wait()
    time.sleep(0.5)
    assert not future.done(), "a blocking query must hang while nothing changes"
    changed_at = time.monotonic()
    assert c.kv.put("conformance/blocking", "two") is True
    new_index, entry = future.result(timeout=10)
    woke_after = time.monotonic() - changed_at
    assert woke_after < SLACK, f"woke {woke_after:.2f}s after the change"
    assert time.monotonic() - started < 20
    assert int(new_index) > int(index)
    assert entry["Value"] == b"two"
    assert int(new_index) == entry["ModifyIndex"]


def test_kv_blocking_query_returns_after_wait_with_the_same_index_when_nothing_changes(sandbox):
    """With no change, a blocking query returns once `wait` has passed (plus
    at most wait/16 of jitter), with the same data and the same
    X-Consul-Index: "It is possible that the timeout was reached" (blocking
    queries docs)."""
    c = sandbox.client()
    assert c.kv.put("conformance/idle", "same") is True
    index, _ = c.kv.get("conformance/idle")

    started = time.monotonic()
    new_index, entry = c.kv.get("conformance/idle", index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0 - 0.01, f"returned after {elapsed:.3f}s, before wait=1s"
    assert elapsed <= 1.0 + 1.0 / 16 + SLACK, f"returned after {elapsed:.3f}s"
    assert new_index == index
    assert entry["Value"] == b"same"


def test_health_blocking_query_wakes_on_a_check_status_change(sandbox):
    """`GET /v1/health/service/:service` supports blocking queries (health
    docs, "List Nodes for Service": Blocking Queries YES): a TTL check going
    from passing to critical wakes a query blocked on the last index, and the
    answer shows the new status."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    assert agent.agent.service.register(
        "web", service_id="web-1", port=8080, check={"CheckID": "web-1-ttl", "Name": "hb", "TTL": "30s"}
    )
    agent.agent.check.ttl_pass("web-1-ttl")
    index, nodes = server.health.service("web")
    assert [c["Status"] for c in nodes[0]["Checks"] if c["CheckID"] == "web-1-ttl"] == ["passing"]

    future, _ = in_background(lambda: server.health.service("web", index=index, wait="20s"))
    time.sleep(0.5)
    assert not future.done()
    changed_at = time.monotonic()
    agent.agent.check.ttl_fail("web-1-ttl", notes="probe failed")
    new_index, nodes = future.result(timeout=10)
    assert time.monotonic() - changed_at < SLACK
    assert int(new_index) > int(index)
    check = [c for c in nodes[0]["Checks"] if c["CheckID"] == "web-1-ttl"][0]
    assert (check["Status"], check["Output"]) == ("critical", "probe failed")


def test_catalog_services_blocking_query_wakes_on_registration(sandbox):
    """`GET /v1/catalog/services` supports blocking queries (catalog docs,
    "List Services": Blocking Queries YES); registering a new service wakes
    it and the new name is in the answer. The index is never below 1
    (hashicorp/consul agent/consul/rpc.go, blockingQuery: "we always set a
    default value of 1")."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    response = raw(server, "GET", "/v1/catalog/services")
    assert response.code == 200
    index = int(response.headers["X-Consul-Index"])
    assert index >= 1

    future, _ = in_background(lambda: server.catalog.services(index=index, wait="20s"))
    time.sleep(0.5)
    assert not future.done()
    assert agent.agent.service.register("late", service_id="late-1", port=7000)
    new_index, services = future.result(timeout=10)
    assert int(new_index) > index
    assert "late" in services
