"""Sessions: create/info/list/renew/destroy, TTL expiry, sessions tied to
health checks.

Sources:
- Session API: https://developer.hashicorp.com/consul/api-docs/session
  (hashicorp/consul website/content/api-docs/session.mdx)
- Sessions and distributed locks:
  https://developer.hashicorp.com/consul/docs/automate/session
- hashicorp/consul agent/session_endpoint.go,
  agent/consul/session_endpoint.go, agent/consul/session_ttl.go,
  agent/consul/state/session.go, named in each test.

The server runs with `--session-ttl-min 1s` (Consul's `session_ttl_min`
agent option, default 10s), so TTLs of one second are accepted.
"""

from __future__ import annotations

import json
import time

import consul
import pytest
from consul.std import parse_duration
from support import UUID_RE, raw, wait_until

NODE = "node-1"
TTL = 1.0  # seconds: the lowest TTL the server accepts (--session-ttl-min 1s)
SLACK = 1.5


def create(agent: consul.Consul, body: dict) -> str:
    """PUT /v1/session/create with `body` as given. py-consul 1.8.0 refuses
    TTLs under 10s on the client side (`assert 10 <= ttl`), so short TTLs go
    through its HTTP layer directly."""
    response = raw(agent, "PUT", "/v1/session/create", body=body)
    assert response.code == 200, response
    session_id = json.loads(response.body)["ID"]
    assert UUID_RE.match(session_id), session_id
    return session_id


def alive(c: consul.Consul, session_id: str) -> bool:
    _, info = c.session.info(session_id)
    return info is not None


def test_create_info_list_renew_destroy(sandbox):
    """Create Session answers `{"ID": <uuid>}`; the session belongs to the
    agent's node and, with no checks given, depends on `serfHealth`
    (agent/session_endpoint.go, SessionCreate: `Node:
    s.agent.config.NodeName, Checks: []types.CheckID{structs.SerfCheckID}`;
    Read Session sample: `"NodeChecks": ["serfHealth"]`). Read Session
    answers a one-element list with ID, Name, Node, LockDelay (nanoseconds),
    Behavior and TTL; List Sessions and List Sessions for Node include it.
    Renew Session answers the session in a list, with a TTL at least the
    one asked for. Delete Session answers
    `true`, "If the session UUID does not exist or already expired, a 200 is
    still returned (the operation is idempotent)"; then Read Session answers
    `[]` ("If the session does not exist, an empty JSON list [] is
    returned") and Renew Session answers 404 "Session id '<id>' not found"
    (agent/session_endpoint.go, SessionRenew). (session docs)"""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    session_id = agent.session.create(name="conformance", ttl=10, lock_delay=5)
    assert UUID_RE.match(session_id), session_id

    _, info = server.session.info(session_id)
    assert info["ID"] == session_id
    assert info["Name"] == "conformance"
    assert info["Node"] == NODE
    assert info["TTL"] == "10s"
    assert info["Behavior"] == "release"
    assert info["LockDelay"] == 5_000_000_000
    assert info["NodeChecks"] == ["serfHealth"]
    assert info["CreateIndex"] >= 1

    _, everyone = server.session.list()
    assert session_id in [s["ID"] for s in everyone]
    _, on_node = server.session.node(NODE)
    assert session_id in [s["ID"] for s in on_node]

    renewed = agent.session.renew(session_id)
    assert renewed["ID"] == session_id
    # "Consul may return a TTL value higher than the one specified during
    # session creation" (session docs, Renew Session).
    assert parse_duration(renewed["TTL"]) >= 10

    assert agent.session.destroy(session_id) is True
    assert raw(server, "GET", f"/v1/session/info/{session_id}").body.strip() == "[]"
    assert server.session.info(session_id)[1] is None
    assert agent.session.destroy(session_id) is True, "destroy is idempotent"

    response = raw(agent, "PUT", f"/v1/session/renew/{session_id}")
    assert response.code == 404
    assert response.body.strip() == f"Session id '{session_id}' not found"
    with pytest.raises(consul.NotFound):
        agent.session.renew(session_id)


def test_ttl_outside_the_accepted_range_is_refused(sandbox):
    """A TTL below `session_ttl_min` or above 24h is refused: "Invalid
    Session TTL '<nanoseconds>', must be between [<min>=24h0m0s]"
    (agent/consul/session_endpoint.go, Session.Apply), answered as an error
    of the RPC, status 500 (agent/http.go answers RPC errors that are not
    ACL or not-found errors with 500). Session docs: TTL "between 10s and
    86400s" with the default `session_ttl_min`."""
    agent = sandbox.client(NODE)
    for raw_ttl, nanos in [("500ms", 500_000_000), ("86401s", 86_401_000_000_000)]:
        response = raw(agent, "PUT", "/v1/session/create", body={"TTL": raw_ttl})
        assert response.code == 500, (raw_ttl, response)
        assert f"Invalid Session TTL '{nanos}', must be between [1s=24h0m0s]" in response.body


def test_session_is_invalidated_after_its_ttl_and_releases_its_locks(sandbox):
    """"the session is invalidated if it is not renewed before the TTL
    expires ... sessions may not be reaped for up to double this TTL"
    (session docs, Create Session, `TTL`); Consul arms the timer at TTL x 2
    (agent/consul/session_ttl.go, resetSessionTimer, with
    structs.SessionTTLMultiplier = 2). Invalidation releases the locks the
    session held (sessions docs; agent/consul/state/session.go,
    deleteSessionTxn)."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    before_create = time.monotonic()
    session_id = create(agent, {"Name": "short", "TTL": "1s", "LockDelay": "0s"})
    assert c.kv.put("conformance/ttl-lock", "held", acquire=session_id) is True

    time.sleep(TTL / 2)
    assert alive(c, session_id), "invalidated before its TTL"

    wait_until(lambda: not alive(c, session_id), timeout=2 * TTL + SLACK + 1, what="TTL expiry")
    elapsed = time.monotonic() - before_create
    assert elapsed >= TTL, f"invalidated after {elapsed:.2f}s, before its TTL"
    _, entry = c.kv.get("conformance/ttl-lock")
    assert not entry.get("Session")
    assert entry["Value"] == b"held"


def test_renewal_keeps_a_ttl_session_alive(sandbox):
    """Renew Session "extends the expiration by the TTL" (session docs): a
    session renewed every 0.3s outlives several TTLs, answers the session on
    each renewal, then expires once renewals stop."""
    agent = sandbox.client(NODE)
    session_id = create(agent, {"TTL": "1s"})
    until = time.monotonic() + 3 * 2 * TTL
    while time.monotonic() < until:
        renewed = agent.session.renew(session_id)
        assert renewed["ID"] == session_id
        time.sleep(0.3)
    assert alive(agent, session_id)
    wait_until(lambda: not alive(agent, session_id), timeout=2 * TTL + SLACK + 1, what="expiry after renewals stop")


def register_web_with_ttl_check(agent: consul.Consul) -> None:
    assert agent.agent.service.register(
        "web", service_id="web-1", port=8080, check={"CheckID": "web-1-ttl", "Name": "hb", "TTL": "30s"}
    )


CHECK_FORMS = {
    # Checks (deprecated in 1.7, still accepted): node and service check IDs.
    "Checks": lambda check_id: {"Checks": ["serfHealth", check_id]},
    # Consul 1.7+: NodeChecks and ServiceChecks.
    "ServiceChecks": lambda check_id: {"NodeChecks": ["serfHealth"], "ServiceChecks": [{"ID": check_id}]},
}


@pytest.mark.parametrize("form", sorted(CHECK_FORMS))
def test_session_tied_to_a_check_is_invalidated_when_the_check_goes_critical(sandbox, form):
    """"The contract that Consul provides is that under any of the following
    situations, the session will be invalidated: ... Any of the health
    checks go to the critical state", and with the `release` behavior "any
    of the locks held in association with the session are released"
    (sessions docs; agent/consul/state/catalog.go,
    ensureCheckTxn, deletes the sessions mapped to a check that turns
    critical). Checks are listed with `Checks`, or `NodeChecks` and
    `ServiceChecks` since 1.7 (session docs, Create Session)."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    register_web_with_ttl_check(agent)
    agent.agent.check.ttl_pass("web-1-ttl")
    session_id = create(agent, {"Name": "leader", "LockDelay": "0s", **CHECK_FORMS[form]("web-1-ttl")})
    assert c.kv.put("conformance/leader", "me", acquire=session_id) is True

    agent.agent.check.ttl_warn("web-1-ttl")
    time.sleep(0.3)
    assert alive(c, session_id), "warning is not critical"

    agent.agent.check.ttl_fail("web-1-ttl", notes="process died")
    wait_until(lambda: not alive(c, session_id), timeout=2 * SLACK, what="invalidation on critical")
    _, entry = c.kv.get("conformance/leader")
    assert not entry.get("Session"), "the lock is released with the session"


def test_session_tied_to_a_ttl_check_ends_when_the_check_ttl_expires(sandbox):
    """The leader-lock case of semantics.md: the holder's TTL check stops
    being refreshed, goes critical after its TTL (health check docs, "TTL
    checks"), and the session depending on it is invalidated at once
    (sessions docs), long before the session's own TTL would matter."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    assert agent.agent.service.register(
        "coordinator", service_id="coord-1", port=9000, check={"CheckID": "coord-1-ttl", "Name": "hb", "TTL": "1s"}
    )
    before_pass = time.monotonic()
    agent.agent.check.ttl_pass("coord-1-ttl")
    session_id = create(agent, {"Checks": ["serfHealth", "coord-1-ttl"], "TTL": "60s", "LockDelay": "0s"})
    assert c.kv.put("conformance/coordinator", "me", acquire=session_id) is True
    wait_until(lambda: not alive(c, session_id), timeout=1 + 2 * SLACK, what="invalidation after the check's TTL")
    assert time.monotonic() - before_pass >= 1.0, "invalidated before the check's TTL ran out"
    _, entry = c.kv.get("conformance/coordinator")
    assert not entry.get("Session")


def test_session_cannot_be_created_on_a_critical_or_missing_check(sandbox):
    """Creating a session on a check that is critical fails with "Check
    '<id>' is in critical state", on one that does not exist with "Missing
    check '<id>' registration" (agent/consul/state/session.go,
    validateSessionChecksTxn), answered with status 500 as every RPC error
    of Session.Apply (agent/http.go). A TTL check starts critical
    (agent/agent.go, `Status: api.HealthCritical`)."""
    agent = sandbox.client(NODE)
    register_web_with_ttl_check(agent)
    assert agent.agent.checks()["web-1-ttl"]["Status"] == "critical"

    response = raw(agent, "PUT", "/v1/session/create", body={"Checks": ["serfHealth", "web-1-ttl"]})
    assert response.code == 500, response
    assert "Check 'web-1-ttl' is in critical state" in response.body
    with pytest.raises(consul.ConsulException, match="is in critical state"):
        agent.session.create(checks=["serfHealth", "web-1-ttl"])

    response = raw(agent, "PUT", "/v1/session/create", body={"Checks": ["serfHealth", "no-such-check"]})
    assert response.code == 500, response
    assert "Missing check 'no-such-check' registration" in response.body

    _, sessions = sandbox.client().session.list()
    assert sessions == []
