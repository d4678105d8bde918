# Consul ACL policy of the node agent (`rollgate agent`), role "agent".
#
# Who:   the rollgate agent on every web instance (baked into the AMI).
# Token: consul.token_file in /etc/rollgate/agent.toml (config/agent.toml;
#        consul.token or CONSUL_HTTP_TOKEN work too). In the stack each web
#        instance gets its own token (infra/consul-acl.tf): the node
#        identity of that instance, the service identity `web`, and the
#        Consul role rollgate-agent holding this policy. This file alone is
#        all the rollgate agent's own calls need; it grants nothing on
#        nodes, so one compromised node cannot write another node's checks.
#
# Derived from agent/src/node/** (agent/tests/acl_policy.rs fails when the
# code calls something this file does not grant, or this file grants
# something no call needs). Every call goes to the local Consul agent:
#
#   PUT /v1/agent/service/register?replace-existing-checks   service:write
#   PUT /v1/agent/check/update/:id        (the TTL check)     service:write
#   PUT /v1/agent/service/maintenance/:id (drain)             service:write
#   PUT /v1/agent/service/deregister/:id  (drain)             service:write
#   GET /v1/agent/health/service/id/:id   (the /ready answer) service:read
#
# Change "web" when [agent] service_name changes.

# Register, keep the TTL check true, drain and deregister the instance's
# own `web` service; read its health for the readiness endpoint (write
# includes read).
service "web" {
  policy = "write"
}
