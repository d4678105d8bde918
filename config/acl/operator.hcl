# Consul ACL policy of an operator using the rollgate CLI, role "operator".
#
# Who:   people running `rollgate plan`, `history`, `approve`, `reject`,
#        `status [--wait]`, `pause`, `resume`, `abort`, `promote`,
#        `publish` and `rollback` (agent/src/ops.rs, agent/src/ops/). Each
#        operator has a token of their own (Consul role
#        rollgate-operator), so Consul's ACLs decide who may
#        approve and Consul's audit trail names them.
# Token: CONSUL_HTTP_TOKEN in the operator's shell, or consul.token_file in
#        the rollgate.toml the CLI reads (consul.token works too).
#
# Derived from agent/src/ops.rs, agent/src/ops/ and the rollout store they use
# (agent/tests/acl_policy.rs fails when code and file drift apart).
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
