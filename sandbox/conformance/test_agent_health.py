"""Agent service registration, TTL checks, health with `passing`, catalog.

Sources:
- Agent service API: https://developer.hashicorp.com/consul/api-docs/agent/service
- Agent check API: https://developer.hashicorp.com/consul/api-docs/agent/check
- Health API: https://developer.hashicorp.com/consul/api-docs/health
- Catalog API: https://developer.hashicorp.com/consul/api-docs/catalog
- hashicorp/consul source files named in each test.
"""

from __future__ import annotations

import consul
from support import check_update, raw, wait_until

NODE = "node-1"


def register_web(agent: consul.Consul, service_id: str, *, ttl: str = "30s", tags=None, port: int = 8080) -> None:
    ok = agent.agent.service.register(
        "web",
        service_id=service_id,
        address="127.0.0.1",
        port=port,
        tags=tags or ["v1"],
        meta={"version": "1.0.0", "instance_id": f"i-{service_id}"},
        check={"CheckID": f"{service_id}-ttl", "Name": f"{service_id} heartbeat", "TTL": ttl},
    )
    assert ok is True


def service_check(checks: list[dict], check_id: str) -> dict:
    found = [c for c in checks if c["CheckID"] == check_id]
    assert len(found) == 1, f"{check_id} in {checks}"
    return found[0]


def test_register_and_deregister_service_with_ttl_check(sandbox):
    """Register Service: `PUT /v1/agent/service/register` answers 200; the
    service appears in `GET /v1/agent/services` keyed by its ID with Service,
    Port, Tags and Meta as registered (agent/service docs, "Register
    Service" and "List Services" sample response), and in
    `GET /v1/catalog/service/:service` on the agent's node (catalog docs,
    "List Nodes for Service"). A TTL check starts `critical` unless a Status
    is given: agent/check docs, `Status` "Specifies the initial status of
    the health check", and hashicorp/consul agent/agent.go, where a service
    check is created with `Status: api.HealthCritical` before an explicit
    Status overrides it. Deregister Service: "If there is an associated
    check, that is also deregistered" (agent/service docs)."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    register_web(agent, "web-1")

    services = agent.agent.services()
    assert "web-1" in services
    web = services["web-1"]
    assert web["ID"] == "web-1"
    assert web["Service"] == "web"
    assert web["Port"] == 8080
    assert web["Tags"] == ["v1"]
    assert web["Meta"] == {"version": "1.0.0", "instance_id": "i-web-1"}

    checks = agent.agent.checks()
    assert checks["web-1-ttl"]["Status"] == "critical"
    assert checks["web-1-ttl"]["ServiceID"] == "web-1"
    assert checks["web-1-ttl"]["ServiceName"] == "web"

    _, nodes = server.catalog.service("web")
    assert [(n["Node"], n["ServiceID"], n["ServicePort"]) for n in nodes] == [(NODE, "web-1", 8080)]

    assert agent.agent.service.deregister("web-1") is True
    assert "web-1" not in agent.agent.services()
    assert "web-1-ttl" not in agent.agent.checks()
    _, nodes = server.catalog.service("web")
    assert nodes == []


def test_service_check_id_defaults_to_service_prefix(sandbox):
    """A service check registered without CheckID gets the ID
    `service:<service id>` (a single check; `service:<id>:<n>` when there are
    several): hashicorp/consul agent/agent.go, addServiceInternal,
    `checkID = fmt.Sprintf("service:%s", service.ID)`. agent/service docs,
    `Check`: "If you don't provide a name or id for the check then they will
    be generated"."""
    agent = sandbox.client(NODE)
    assert agent.agent.service.register("api", service_id="api-1", port=9000, check=consul.Check.ttl("30s")) is True
    assert "service:api-1" in agent.agent.checks()


def test_ttl_check_update_pass_warn_fail_with_output(sandbox):
    """TTL Check Update: `PUT /v1/agent/check/update/:check_id` with `Status`
    (passing, warning or critical) and `Output` sets both (agent/check docs,
    "TTL Check Update"); an unknown Status is a 400 "Invalid check status:
    '<status>'" (hashicorp/consul agent/agent_endpoint.go,
    AgentCheckUpdate). TTL Check Pass/Warn/Fail set the status, and their
    `note` "will be passed through to the check's Output field" (agent/check
    docs). The catalog's view (`GET /v1/health/checks/:service`, health
    docs "List Checks for Service") shows the same status and output."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    register_web(agent, "web-1")

    def seen(status: str, output: str) -> None:
        local = agent.agent.checks()["web-1-ttl"]
        assert (local["Status"], local["Output"]) == (status, output)
        _, checks = server.health.checks("web")
        catalog = service_check(checks, "web-1-ttl")
        assert (catalog["Status"], catalog["Output"]) == (status, output)

    for status, output in [("passing", "all good"), ("warning", "slow: p99 900ms"), ("critical", "down: 502")]:
        response = check_update(agent, "web-1-ttl", status, output)
        assert response.code == 200, response
        seen(status, output)

    bad = check_update(agent, "web-1-ttl", "bogus", "x")
    assert bad.code == 400
    assert "Invalid check status: 'bogus'" in bad.body
    seen("critical", "down: 502")

    assert agent.agent.check.ttl_pass("web-1-ttl", notes="ok again") is True
    seen("passing", "ok again")
    assert agent.agent.check.ttl_warn("web-1-ttl", notes="degraded") is True
    seen("warning", "degraded")
    assert agent.agent.check.ttl_fail("web-1-ttl", notes="failed") is True
    seen("critical", "failed")


def test_ttl_check_goes_critical_when_not_updated_in_time(sandbox):
    """A TTL check keeps the state it was last given for its TTL; when the TTL
    passes without an update, the check becomes critical (health check
    docs, "TTL checks":
    https://developer.hashicorp.com/consul/docs/register/health-check/vm).
    The output then reads "TTL expired (last output before timeout
    follows): <last output>": hashicorp/consul agent/checks/check.go,
    CheckTTL.run and CheckTTL.getExpiredOutput."""
    agent = sandbox.client(NODE)
    register_web(agent, "web-1", ttl="1s")
    assert agent.agent.check.ttl_pass("web-1-ttl", notes="alive") is True
    assert agent.agent.checks()["web-1-ttl"]["Status"] == "passing"

    check = wait_until(
        lambda: (c := agent.agent.checks()["web-1-ttl"])["Status"] == "critical" and c,
        timeout=5,
        what="TTL expiry",
    )
    assert check["Output"] == "TTL expired (last output before timeout follows): alive"


def test_health_service_passing_returns_only_instances_with_every_check_passing(sandbox):
    """List Nodes for Service: `GET /v1/health/service/:service` returns every
    instance with its node's and its own checks; with `passing` it
    "Specifies that the server should return only nodes with all checks in
    the passing state" (health docs). Warning is not passing: hashicorp/consul
    agent/health_endpoint.go, filterNonPassing, drops an instance when any
    of its checks has `check.Status != api.HealthPassing`."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    register_web(agent, "web-1")
    register_web(agent, "web-2", port=8081)
    agent.agent.check.ttl_pass("web-1-ttl")
    agent.agent.check.ttl_warn("web-2-ttl")

    _, everyone = server.health.service("web")
    assert sorted(e["Service"]["ID"] for e in everyone) == ["web-1", "web-2"]
    for entry in everyone:
        assert entry["Node"]["Node"] == NODE
        ids = {c["CheckID"] for c in entry["Checks"]}
        assert "serfHealth" in ids, ids
        assert f"{entry['Service']['ID']}-ttl" in ids, ids

    _, passing = server.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["web-1"]

    agent.agent.check.ttl_fail("web-1-ttl")
    _, passing = server.health.service("web", passing=True)
    assert passing == []

    agent.agent.check.ttl_pass("web-1-ttl")
    agent.agent.check.ttl_pass("web-2-ttl")
    _, passing = server.health.service("web", passing=True)
    assert sorted(e["Service"]["ID"] for e in passing) == ["web-1", "web-2"]


def test_catalog_services_lists_every_service_with_its_tags(sandbox):
    """List Services: `GET /v1/catalog/services` answers an object mapping
    each service name to its tags (catalog docs, sample response
    `{"consul": [], "redis": [], "postgresql": ["primary", "secondary"]}`);
    the tags of all instances are merged: hashicorp/consul
    agent/consul/state/catalog.go, Services, which unions the tags of every
    instance of a name."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    register_web(agent, "web-1", tags=["v1"])
    register_web(agent, "web-2", tags=["v2"], port=8081)
    assert agent.agent.service.register("db", service_id="db-1", port=5432) is True

    _, services = server.catalog.services()
    assert sorted(services["web"]) == ["v1", "v2"]
    assert services["db"] == []

    response = raw(server, "GET", "/v1/catalog/services")
    assert response.code == 200
    assert int(response.headers["X-Consul-Index"]) >= 1


def test_service_maintenance_mode_is_a_critical_check_until_disabled(sandbox):
    """Enable Maintenance Mode (`PUT /v1/agent/service/maintenance/:service_id
    ?enable=true&reason=...`, agent/service docs): the service "will be
    marked as unavailable"; Consul adds the critical check
    `_service_maintenance:<service id>` with the reason as its Notes, or
    "Maintenance mode is enabled for this service, but no reason was
    provided. This is a default message." (hashicorp/consul agent/agent.go,
    EnableServiceMaintenance, serviceMaintCheckPrefix,
    defaultServiceMaintReason), so `passing` leaves the instance out;
    `enable=false` removes the check. `enable` is parsed with Go's
    strconv.ParseBool, which takes py-consul's `True`/`False`."""
    agent = sandbox.client(NODE)
    server = sandbox.client()
    register_web(agent, "web-1")
    agent.agent.check.ttl_pass("web-1-ttl")

    assert agent.agent.service.maintenance("web-1", True, reason="draining for 2.0.0") is True
    check = agent.agent.checks()["_service_maintenance:web-1"]
    assert (check["Status"], check["Notes"], check["ServiceID"]) == ("critical", "draining for 2.0.0", "web-1")
    assert server.health.service("web", passing=True)[1] == []

    assert agent.agent.service.maintenance("web-1", False) is True
    assert "_service_maintenance:web-1" not in agent.agent.checks()
    assert [e["Service"]["ID"] for e in server.health.service("web", passing=True)[1]] == ["web-1"]

    assert agent.agent.service.maintenance("web-1", True) is True
    check = agent.agent.checks()["_service_maintenance:web-1"]
    assert check["Notes"] == (
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    )
