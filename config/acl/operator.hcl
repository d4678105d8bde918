# Consul ACL policy of an operator using the rollgate CLI, role "operator".
#
# Who:   people running `rollgate plan`, `history`, `approve`, `reject`,
#        `status [--wait]`, `pause`, `resume`, `abort`, `promote`,
#        `publish` and `rollback` (agent/src/ops.rs, agent/src/ops/), and
#        people using the console (agent/src/console/api.rs), which reads
#        and writes Consul with the operator's own token. Each
#        operator has a token of their own (Consul role
#        rollgate-operator), so Consul's ACLs decide who may
#        approve and Consul's audit trail names them.
# Token: CONSUL_HTTP_TOKEN in the operator's shell, or consul.token_file in
#        the rollgate.toml the CLI reads (consul.token works too); in the
#        console, given at sign-in (kept in an HttpOnly cookie) or sent as
#        X-Consul-Token / Authorization: Bearer to the API.
#
# Derived from agent/src/ops.rs, agent/src/ops/, agent/src/console/api.rs
# and the rollout store they use (agent/tests/acl_policy.rs fails when code
# and file drift apart; agent/tests/acl_roles.rs reads every console route
# with a token made from this file).
# Decisions and commands are written by `PUT /v1/txn` with check-and-set,
# unfenced: key:write on the written key only.
#
# Paths assume consul.kv_prefix = "rollgate" and the service `web` published
# as artifact "acmeinc/web"; repeat the service blocks per service.

# plan, history, status: list the plans (GET ?recurse); approve, reject:
# read a plan and write its decision with check-and-set.
key_prefix "rollgate/services/web/plans/" {
  policy = "write"
}

# status, pause, resume, abort, promote: read the active rollout.
key "rollgate/services/web/rollout" {
  policy = "read"
}

# pause, resume, abort, promote: queue a command for the coordinator
# (created with cas=0).
key_prefix "rollgate/services/web/commands/" {
  policy = "write"
}

# publish: write the artifact's trigger so the coordinator plans at once.
key "rollgate/trigger/acmeinc_web" {
  policy = "write"
}

# publish, rollback: the images that failed a rollout (the revert-loop
# guard), so publish says what the coordinator will do and rollback refuses
# a version that failed (GET ?recurse).
key_prefix "rollgate/services/web/failed/" {
  policy = "read"
}

# rollback, publish --force: allocate the new plan's ID (check-and-set).
key "rollgate/services/web/seq" {
  policy = "write"
}

# Console, a service's page and GET /v1/services[/web]: the stable version
# (the coordinator writes it; an operator only reads it).
key "rollgate/services/web/stable" {
  policy = "read"
}

# Console, a service's timeline chart (/services/web/timeline.svg) once its
# rollout has ended: the finished rollout's archived record. Read only: the
# coordinator archives it.
key_prefix "rollgate/services/web/rollouts/" {
  policy = "read"
}

# Console, GET /v1/outbox: the alert outbox with each receiver's deliveries
# (GET ?recurse). Read only: the coordinator and watcher deliver.
key_prefix "rollgate/outbox/" {
  policy = "read"
}

# Console, GET /v1/services/web/rollout: every instance's Consul checks
# (GET /v1/health/service/web). Without it Consul filters the answer
# (X-Consul-Results-Filtered-By-ACLs) and the page says checks are hidden.
service "web" {
  policy = "read"
}

# The same health answer is filtered by node:read on each instance's node,
# whose names are not known in advance.
node_prefix "" {
  policy = "read"
}
