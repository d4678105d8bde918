"""KV store: put/get/delete, check-and-set, locks with sessions.

Sources:
- KV API: https://developer.hashicorp.com/consul/api-docs/kv
  (hashicorp/consul website/content/api-docs/kv.mdx)
- Sessions: https://developer.hashicorp.com/consul/docs/automate/session
- hashicorp/consul agent/consul/kvs_endpoint.go and
  agent/consul/state/session.go, named in each test.
"""

from __future__ import annotations

import json
import time

from support import raw, wait_until

NODE = "node-1"


def test_put_get_delete(sandbox):
    """Create/Update Key answers `true`; Read Key answers a one-element list
    with Key, Flags, base64 Value, CreateIndex, ModifyIndex and LockIndex;
    a missing key is 404 ("If no key exists at the given path, a 404 is
    returned instead of a 200 response"); Delete Key answers `true` (KV
    docs)."""
    c = sandbox.client()
    assert c.kv.put("conformance/app/config", "v1", flags=42) is True

    response = raw(c, "GET", "/v1/kv/conformance/app/config")
    assert response.code == 200
    [entry] = json.loads(response.body)
    assert entry["Key"] == "conformance/app/config"
    assert entry["Value"] == "djE="  # base64 of "v1"
    assert entry["Flags"] == 42
    assert entry["LockIndex"] == 0
    assert entry["CreateIndex"] == entry["ModifyIndex"] >= 1

    _, entry = c.kv.get("conformance/app/config")
    assert entry["Value"] == b"v1"

    assert c.kv.put("conformance/app/config", "v2") is True
    _, updated = c.kv.get("conformance/app/config")
    assert updated["Value"] == b"v2"
    assert updated["CreateIndex"] == entry["CreateIndex"]
    assert updated["ModifyIndex"] > entry["ModifyIndex"]

    assert c.kv.delete("conformance/app/config") is True
    assert raw(c, "GET", "/v1/kv/conformance/app/config").code == 404
    _, gone = c.kv.get("conformance/app/config")
    assert gone is None


def test_cas_zero_creates_only(sandbox):
    """`cas=0`: "If the index is 0, Consul will only put the key if it does
    not already exist"; the answer is `true` or `false` "indicating whether
    the create/update succeeded" (KV docs, Create/Update Key)."""
    c = sandbox.client()
    assert c.kv.put("conformance/once", "first", cas=0) is True
    assert c.kv.put("conformance/once", "second", cas=0) is False
    _, entry = c.kv.get("conformance/once")
    assert entry["Value"] == b"first"


def test_cas_with_index_sets_only_at_that_modify_index(sandbox):
    """`cas=<index>`: "If the index is non-zero, the key is only set if the
    index matches the ModifyIndex of that key"; for DELETE, "the index must
    be greater than 0 for Consul to take any action ... the key is only
    deleted if the index matches the ModifyIndex of that key" (KV docs)."""
    c = sandbox.client()
    assert c.kv.put("conformance/state", "s1") is True
    _, entry = c.kv.get("conformance/state")
    seen = entry["ModifyIndex"]

    assert c.kv.put("conformance/state", "other", cas=seen + 1000) is False
    assert c.kv.put("conformance/state", "s2", cas=seen) is True
    assert c.kv.put("conformance/state", "s3", cas=seen) is False, "the index is stale now"
    _, entry = c.kv.get("conformance/state")
    assert entry["Value"] == b"s2"

    assert c.kv.delete("conformance/state", cas=seen) is False
    assert c.kv.get("conformance/state")[1] is not None
    assert c.kv.delete("conformance/state", cas=entry["ModifyIndex"]) is True
    assert c.kv.get("conformance/state")[1] is None


def test_acquire_and_release_with_sessions(sandbox):
    """`acquire`: "If the lock is not held and the session is valid, this
    increments the LockIndex and sets the Session value of the key"; "If the
    lock is already held by the given session, then the LockIndex is not
    incremented but the key contents are updated". `release`: "This will
    leave the LockIndex unmodified but will clear the associated Session of
    the key. The key must be held by this session to be unlocked." (KV docs,
    Create/Update Key). A voluntary release arms no lock-delay: only an
    invalidated session's locks get one (hashicorp/consul
    agent/consul/state/session.go, deleteSessionTxn)."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    s1 = agent.session.create(name="leader-a")
    s2 = agent.session.create(name="leader-b")
    key = "conformance/leader"

    assert c.kv.put(key, "a", acquire=s1) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"a")

    assert c.kv.put(key, "b", acquire=s2) is False, "held by another session"
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["Value"]) == (s1, b"a")

    assert c.kv.put(key, "a2", acquire=s1) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"a2")

    assert c.kv.put(key, "x", release=s2) is False, "not held by s2"
    assert c.kv.put(key, "released", release=s1) is True
    _, entry = c.kv.get(key)
    assert not entry.get("Session")
    assert (entry["LockIndex"], entry["Value"]) == (1, b"released")

    assert c.kv.put(key, "b", acquire=s2) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"]) == (s2, 2)


def test_lock_delay_after_the_holding_session_is_invalidated(sandbox):
    """When a session holding a lock is invalidated, its locks are released
    and no other session may acquire them for the session's lock-delay
    (sessions docs, "lock-delay"; hashicorp/consul
    agent/consul/state/session.go applies the delay when the session is
    deleted, and agent/consul/kvs_endpoint.go, kvsPreApply, answers `false`
    to an acquire inside it: "Rejecting lock of key due to lock-delay")."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    holder = agent.session.create(name="holder", lock_delay=2)
    waiter = agent.session.create(name="waiter")
    key = "conformance/delayed"
    assert c.kv.put(key, "held", acquire=holder) is True

    assert agent.session.destroy(holder) is True
    destroyed_at = time.monotonic()
    _, entry = c.kv.get(key)
    assert not entry.get("Session"), "the lock is released with the session"
    assert entry["Value"] == b"held", "behavior=release keeps the key"

    assert c.kv.put(key, "mine", acquire=waiter) is False, "inside lock-delay"
    wait_until(lambda: c.kv.put(key, "mine", acquire=waiter), timeout=6, interval=0.1, what="acquire after lock-delay")
    assert time.monotonic() - destroyed_at >= 2.0 - 0.05
    _, entry = c.kv.get(key)
    assert entry["Session"] == waiter


def test_behavior_delete_removes_held_keys_when_the_session_ends(sandbox):
    """Session `Behavior` `delete` "causes any locks that are held to be
    deleted" when the session is invalidated (session docs, Create Session)."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    session = agent.session.create(name="ephemeral", behavior="delete")
    assert c.kv.put("conformance/ephemeral", "here", acquire=session) is True
    assert agent.session.destroy(session) is True
    assert c.kv.get("conformance/ephemeral")[1] is None
