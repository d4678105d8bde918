"""ACLs as a production Consul enforces them (`acl.enabled = true`,
`default_policy = "deny"`).

Sources:
- ACL policies API: https://developer.hashicorp.com/consul/api-docs/acl/policies
- ACL tokens API: https://developer.hashicorp.com/consul/api-docs/acl/tokens
  ("Read Self Token": "returns the ACL token details that matches the secret
  ID specified with the X-Consul-Token header")
- ACL rules reference: https://developer.hashicorp.com/consul/docs/secure/acl/rule
  (rules in HCL; `key`, `key_prefix`, `service`, `node_prefix`, ...; an
  exact rule takes precedence over prefix rules, the longest matching prefix
  wins)
- HTTP API structure, "Results Filtered by ACLs":
  https://developer.hashicorp.com/consul/api-docs/api-structure#results-filtered-by-acls
  "most list endpoints support an X-Consul-Results-Filtered-By-ACLs HTTP
  response header. This indicates that the response contains a partial
  subset of results, because some have been filtered out by ACL policies.
  In order to limit information leakage, this header is only present for
  requests authenticated by a valid ACL token."
- Required ACL of each endpoint: the "ACL Required" column of its API page
  (KV Read Key `key:read`, Create/Update Key `key:write`, Register Service
  `service:write`, ...).
- hashicorp/consul acl/errors.go: `errNotFound = "ACL not found"` and
  PermissionDeniedError.Error(): "Permission denied: token with AccessorID
  '<id>' lacks permission '<resource>:<level>' on \"<name>\"", or
  "Permission denied: anonymous token lacks permission ... . The anonymous
  token is used implicitly when a request does not specify a token.";
  agent/http.go answers both with 403 and the error text as body.
"""

from __future__ import annotations

import json
import uuid

import consul
import pytest
from support import FILTERED_HEADER, UUID_RE, raw

NODE = "node-1"

RULES = """
key_prefix "conformance/app/" {
  policy = "write"
}

key_prefix "conformance/app/ro/" {
  policy = "read"
}

key "conformance/app/secret" {
  policy = "deny"
}

service "web" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

session_prefix "" {
  policy = "write"
}
"""

ANONYMOUS_SUFFIX = ". The anonymous token is used implicitly when a request does not specify a token."


def denied(accessor: str, permission: str, name: str) -> str:
    return f"Permission denied: token with AccessorID '{accessor}' lacks permission '{permission}' on \"{name}\""


class AppToken:
    """A policy created from RULES (HCL) and a token holding it."""

    def __init__(self, sandbox):
        self.management = sandbox.client()
        # py-consul's Policy.create JSON-encodes `rules` a second time (it
        # expects a dict of JSON rules), so the HCL text goes through its
        # HTTP layer as the API documents the body.
        response = raw(
            self.management,
            "PUT",
            "/v1/acl/policy",
            body={"Name": "conformance-app", "Description": "conformance suite", "Rules": RULES},
        )
        assert response.code == 200, response
        self.policy = json.loads(response.body)
        self.token = self.management.acl.token.create(
            policies_id=[self.policy["ID"]], description="conformance app token"
        )
        self.secret = self.token["SecretID"]
        self.accessor = self.token["AccessorID"]
        self.client = sandbox.client(token=self.secret)
        self.agent = sandbox.client(NODE, token=self.secret)


@pytest.fixture
def app(sandbox) -> AppToken:
    return AppToken(sandbox)


def seed_services(sandbox) -> None:
    """`web-1` and `db-1` on node-1, both passing; keys inside and outside
    the token's prefix."""
    agent = sandbox.client(NODE)
    for name, port in [("web", 8080), ("db", 5432)]:
        assert agent.agent.service.register(
            name, service_id=f"{name}-1", port=port, check={"CheckID": f"{name}-1-ttl", "Name": "hb", "TTL": "60s"}
        )
        agent.agent.check.ttl_pass(f"{name}-1-ttl")
    c = sandbox.client()
    assert c.kv.put("conformance/app/a", "visible") is True
    assert c.kv.put("conformance/app/ro/x", "read-only") is True
    assert c.kv.put("conformance/other/b", "hidden") is True


def test_policy_with_hcl_rules_and_a_token_holding_it(sandbox, app):
    """Create a Policy: `PUT /v1/acl/policy` with Name, Description and Rules
    answers the policy with its ID (policies docs, "Create a Policy" sample
    response); Read a Policy answers the same Rules. Create a Token with
    `Policies: [{"ID": ...}]` answers AccessorID, SecretID, Description and
    the policy links with ID and Name (tokens docs, "Create a Token"). Read
    Self Token with the new secret answers the same token; it needs no
    permission (tokens docs: ACL Required `none`)."""
    assert UUID_RE.match(app.policy["ID"]), app.policy
    assert app.policy["Name"] == "conformance-app"
    assert app.policy["Description"] == "conformance suite"
    assert app.policy["Rules"] == RULES

    read_back = app.management.acl.policy.read(app.policy["ID"])
    assert (read_back["ID"], read_back["Name"], read_back["Rules"]) == (app.policy["ID"], "conformance-app", RULES)

    assert UUID_RE.match(app.accessor) and UUID_RE.match(app.secret)
    assert app.token["Description"] == "conformance app token"
    assert app.token["Policies"] == [{"ID": app.policy["ID"], "Name": "conformance-app"}]

    me = app.client.acl.token.read_self()
    assert me["AccessorID"] == app.accessor
    assert me["SecretID"] == app.secret
    assert me["Description"] == "conformance app token"
    assert me["Policies"] == [{"ID": app.policy["ID"], "Name": "conformance-app"}]

    management = app.management.acl.token.read_self()
    assert management["SecretID"] == sandbox.management_token
    assert management["AccessorID"] != app.accessor


def test_unknown_token_is_403_acl_not_found_everywhere(sandbox):
    """A token that does not exist is refused with 403 "ACL not found" (acl/errors.go,
    errNotFound; agent/http.go): on single-resource endpoints, on list
    endpoints (which filter only for tokens that resolve), and on Read Self
    Token. py-consul raises ACLPermissionDenied for 403."""
    seed_services(sandbox)
    stranger = sandbox.client(token=str(uuid.uuid4()))
    for path in ["/v1/kv/conformance/app/a", "/v1/catalog/services", "/v1/health/service/web", "/v1/acl/token/self"]:
        response = raw(stranger, "GET", path)
        assert response.code == 403, (path, response)
        assert "ACL not found" in response.body, (path, response.body)
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        stranger.kv.get("conformance/app/a")
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        stranger.acl.token.read_self()


def test_single_resource_endpoints_deny_with_consuls_text(sandbox, app):
    """Single-resource endpoints refuse what the token's rules do not grant
    with 403 "Permission denied: token with AccessorID '<accessor>' lacks
    permission '<resource>:<level>' on \"<name>\"" (acl/errors.go): KV Read
    Key needs `key:read`, Create/Update Key `key:write` (KV docs; checked in
    agent/consul/kvs_endpoint.go, KVS.Get and kvsPreApply), Register Service
    `service:write` on the service's name (agent/service docs; agent/acl.go,
    vetServiceRegisterWithAuthorizer). Rule precedence (ACL rules docs): the
    exact `key "conformance/app/secret"` deny beats the `key_prefix
    "conformance/app/"` write; the longer prefix `conformance/app/ro/` (read)
    beats the shorter one (write)."""
    seed_services(sandbox)
    c = app.client

    assert c.kv.put("conformance/app/new", "mine") is True
    assert c.kv.get("conformance/app/a")[1]["Value"] == b"visible"

    cases = [
        ("GET", "/v1/kv/conformance/other/b", None, "key:read", "conformance/other/b"),
        ("GET", "/v1/kv/conformance/other/missing", None, "key:read", "conformance/other/missing"),
        ("PUT", "/v1/kv/conformance/other/b", "x", "key:write", "conformance/other/b"),
        ("PUT", "/v1/kv/conformance/app/secret", "x", "key:write", "conformance/app/secret"),
        ("GET", "/v1/kv/conformance/app/secret", None, "key:read", "conformance/app/secret"),
        ("PUT", "/v1/kv/conformance/app/ro/x", "x", "key:write", "conformance/app/ro/x"),
    ]
    for method, path, body, permission, name in cases:
        response = raw(c, method, path, body=body)
        assert response.code == 403, (method, path, response)
        assert response.body.rstrip("\n") == denied(app.accessor, permission, name), (method, path)

    assert c.kv.get("conformance/app/ro/x")[1]["Value"] == b"read-only", "read under the longer prefix"

    with pytest.raises(consul.ACLPermissionDenied) as failure:
        c.kv.put("conformance/other/b", "x")
    assert str(failure.value).rstrip("\n") == denied(app.accessor, "key:write", "conformance/other/b")

    response = raw(
        app.agent, "PUT", "/v1/agent/service/register", body={"Name": "db", "ID": "db-2", "Port": 5433}
    )
    assert response.code == 403, response
    assert response.body.rstrip("\n") == denied(app.accessor, "service:write", "db")
    assert "db-2" not in sandbox.client(NODE).agent.services()


def test_list_and_health_endpoints_filter_and_set_the_header(sandbox, app):
    """List, catalog and health endpoints do not refuse a valid token that
    lacks a permission: they answer 200 without the entries it may not read
    and set `X-Consul-Results-Filtered-By-ACLs: true` (API structure docs,
    "Results Filtered by ACLs"). Catalog List Services needs `service:read`
    per service; health and catalog service nodes need `service:read` and
    `node:read` per entry; KV recursive reads need `key:read` per key
    (agent/consul/kvs_endpoint.go, KVS.List: `reply.QueryMeta
    .ResultsFilteredByACLs = total != len(ent)`); agent List Services sets
    the header itself for a token (agent/agent_endpoint.go,
    AgentServices). Nothing filtered, no header (agent/http.go sets it only
    when true)."""
    seed_services(sandbox)
    c = app.client

    def get(client, path, params=None):
        response = raw(client, "GET", path, params=params)
        assert response.code == 200, (path, response)
        return json.loads(response.body), response.headers.get(FILTERED_HEADER)

    services, header = get(c, "/v1/catalog/services")
    assert "web" in services and "db" not in services
    assert header == "true"

    nodes, header = get(c, "/v1/catalog/service/db")
    assert (nodes, header) == ([], "true")

    entries, header = get(c, "/v1/health/service/db")
    assert (entries, header) == ([], "true")

    entries, header = get(c, "/v1/health/service/db", params=[("passing", "1")])
    assert (entries, header) == ([], "true")

    entries, header = get(c, "/v1/health/service/web")
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    assert header != "true"

    checks, header = get(c, "/v1/health/state/any")
    ids = {chk["CheckID"] for chk in checks}
    assert "web-1-ttl" in ids and "db-1-ttl" not in ids and "serfHealth" in ids
    assert header == "true"

    keys, header = get(c, "/v1/kv/conformance/", params=[("recurse", "1")])
    assert sorted(k["Key"] for k in keys) == ["conformance/app/a", "conformance/app/ro/x"]
    assert header == "true"

    local, header = get(app.agent, "/v1/agent/services")
    assert sorted(local) == ["web-1"]
    assert header == "true"

    # What a client library hands its caller: the filtered data, no error.
    _, typed = c.catalog.services()
    assert "db" not in typed
    _, typed = c.health.service("db", passing=True)
    assert typed == []

    # The management token sees everything and gets no header.
    services, header = get(app.management, "/v1/catalog/services")
    assert {"web", "db"} <= set(services)
    assert header != "true"


def test_anonymous_requests_are_filtered_not_refused(sandbox):
    """A request without a token runs as the anonymous token ("If no token is
    provided for an HTTP request then Consul will use the default ACL token
    if it has been configured. If no default ACL token was configured then
    the anonymous token will be used", API structure docs,
    "Authentication"); with `default_policy = "deny"` list endpoints answer
    200 with everything filtered out, and without the
    X-Consul-Results-Filtered-By-ACLs header, which "is only present for
    requests authenticated by a valid ACL token" (API structure docs;
    agent/consul/rpc.go, maskResultsFilteredByACLs). Single-resource
    endpoints answer 403 "Permission denied: anonymous token lacks
    permission '<p>' on \"<name>\". The anonymous token is used implicitly
    when a request does not specify a token." (acl/errors.go)."""
    seed_services(sandbox)
    anonymous = sandbox.client(token=None)

    for path, empty in [
        ("/v1/catalog/services", None),
        ("/v1/catalog/service/web", []),
        ("/v1/health/service/web", []),
        ("/v1/health/state/any", None),
    ]:
        response = raw(anonymous, "GET", path)
        assert response.code == 200, (path, response)
        assert FILTERED_HEADER not in response.headers, (path, dict(response.headers))
        body = json.loads(response.body)
        if empty is not None:
            assert body == empty, (path, body)
    response = raw(anonymous, "GET", "/v1/catalog/services")
    services = json.loads(response.body)
    assert "web" not in services and "db" not in services
    checks = json.loads(raw(anonymous, "GET", "/v1/health/state/any").body)
    assert not any(chk["ServiceName"] in ("web", "db") for chk in checks)

    response = raw(anonymous, "GET", "/v1/kv/conformance/app/a")
    assert response.code == 403
    assert response.body.rstrip("\n") == (
        "Permission denied: anonymous token lacks permission 'key:read' on \"conformance/app/a\"" + ANONYMOUS_SUFFIX
    )


def test_transaction_with_a_denied_operation_is_rolled_back(sandbox, app):
    """A transaction operation the token may not perform fails the whole
    transaction with 409 and an `Errors` entry carrying the permission-denied
    text for that OpIndex (txn docs; agent/consul/txn_endpoint.go, preCheck
    runs kvsPreApply on every KV operation and reports `err.Error()`);
    nothing is applied."""
    ops = [
        {"KV": {"Verb": "set", "Key": "conformance/app/txn", "Value": "eA=="}},
        {"KV": {"Verb": "set", "Key": "conformance/other/txn", "Value": "eA=="}},
    ]
    response = raw(app.client, "PUT", "/v1/txn", body=ops)
    assert response.code == 409, response
    body = json.loads(response.body)
    assert body["Errors"] == [
        {"OpIndex": 1, "What": denied(app.accessor, "key:write", "conformance/other/txn")}
    ]
    assert app.management.kv.get("conformance/app/txn")[1] is None


DENY_RULES = """
key_prefix "conformance/app/" {
  policy = "deny"
}

service "web" {
  policy = "write"
}

session "node-1" {
  policy = "deny"
}
"""


def test_rules_of_several_policies_merge_with_deny_first(sandbox, app):
    """A token's policies are merged rule by rule, and for the same resource
    deny takes precedence over write, write over read (hashicorp/consul
    acl/policy.go, takesPrecedenceOver: deny > write > list > read; ACL
    rules docs). A second policy that denies `key_prefix "conformance/app/"`
    and grants `service "web"` write turns the app token's prefix write into
    a deny and its service read into a write; `session "node-1"` deny beats
    `session_prefix ""` write, so Create Session on node-1 is refused with
    'session:write' on "node-1" (agent/consul/session_endpoint.go,
    Session.Apply: `SessionWriteAllowed(args.Session.Node)`)."""
    seed_services(sandbox)
    response = raw(app.management, "PUT", "/v1/acl/policy", body={"Name": "conformance-deny", "Rules": DENY_RULES})
    assert response.code == 200, response
    deny_policy = json.loads(response.body)
    token = app.management.acl.token.create(
        policies_id=[app.policy["ID"], deny_policy["ID"]], description="app and deny"
    )
    accessor = token["AccessorID"]
    c = sandbox.client(token=token["SecretID"])
    agent = sandbox.client(NODE, token=token["SecretID"])

    response = raw(c, "GET", "/v1/kv/conformance/app/a")
    assert (response.code, response.body.rstrip("\n")) == (403, denied(accessor, "key:read", "conformance/app/a"))
    response = raw(c, "PUT", "/v1/kv/conformance/app/new", body="x")
    assert (response.code, response.body.rstrip("\n")) == (403, denied(accessor, "key:write", "conformance/app/new"))

    assert agent.agent.service.register("web", service_id="web-9", port=8089) is True

    response = raw(agent, "PUT", "/v1/session/create", body={"Name": "refused"})
    assert (response.code, response.body.rstrip("\n")) == (403, denied(accessor, "session:write", NODE))


def test_every_answer_names_the_default_acl_policy(sandbox):
    """"All API responses for Consul versions after 1.9 will include an HTTP
    response header X-Consul-Default-ACL-Policy set to either "allow" or
    "deny" which mirrors the current value of the agent's
    acl.default_policy option" (API structure docs, "Default ACL Policy";
    agent/http.go sets it before any handler runs). Here the policy is
    deny, on answers that succeed, are filtered or are refused alike."""
    management = sandbox.client()
    anonymous = sandbox.client(token=None)
    for client, path, status in [
        (management, "/v1/status/leader", 200),
        (management, "/v1/catalog/services", 200),
        (anonymous, "/v1/catalog/services", 200),
        (anonymous, "/v1/kv/conformance/app/a", 403),
        (sandbox.client(NODE), "/v1/agent/services", 200),
    ]:
        response = raw(client, "GET", path)
        assert response.code == status, (path, response)
        assert response.headers.get("X-Consul-Default-ACL-Policy") == "deny", (path, dict(response.headers))
